"""Presets (well-known models stored as data files) and ``load_model``, the one way in.

Each preset is ``presets/<name>.json``: the model's published Hugging Face ``config.json``
keys under ``config`` (so presets go through ``from_hf_config``, one code path), plus
``name``, ``aliases``, ``family``, ``source``, ``as_of`` and the reference parameter count
(``params_total``, ``params_active`` for MoE) computed by instantiating the transformers
class on the meta device; tests check that our count equals it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Optional

from pydantic import ValidationError

from optimizer.errors import ClusteroptError, from_pydantic, unknown_name
from optimizer.inputs import load_json, load_yaml, read_text
from optimizer.model.hf import from_hf_config, spec_from_hf_dict
from optimizer.model.spec import ModelSpec

PRESETS_DIR = Path(__file__).parent / "presets"


@dataclass(frozen=True)
class PresetInfo:
    name: str
    family: str
    params_total: int                 # reference count (transformers class on the meta device)
    source: str                       # where the config comes from (hub repo or paper table)
    aliases: tuple[str, ...] = ()
    as_of: str = ""                   # date of the source (YYYY-MM or YYYY-MM-DD)
    params_active: Optional[int] = None   # MoE: parameters used per token
    model_type: str = ""
    notes: str = ""


@lru_cache(maxsize=1)
def _raw_presets() -> dict[str, dict]:
    """All preset files, parsed once, by lower-case name."""
    out: dict[str, dict] = {}
    for path in sorted(PRESETS_DIR.glob("*.json")):
        data = json.loads(path.read_text())
        out[data["name"].lower()] = data
    return out


@lru_cache(maxsize=1)
def _index() -> dict[str, str]:
    """Lower-case name or alias -> canonical lower-case name."""
    idx: dict[str, str] = {}
    for key, data in _raw_presets().items():
        idx[key] = key
        for alias in data.get("aliases", ()):
            idx.setdefault(alias.lower(), key)
    return idx


def list_presets() -> list[PresetInfo]:
    """Every bundled preset, in name order."""
    return [PresetInfo(name=d["name"], family=d["family"], params_total=d["params_total"], source=d["source"],
                       aliases=tuple(d.get("aliases", ())), as_of=d.get("as_of", ""),
                       params_active=d.get("params_active"), model_type=d["config"]["model_type"],
                       notes=d.get("notes", ""))
            for d in _raw_presets().values()]


def preset_names() -> list[str]:
    return [d["name"] for d in _raw_presets().values()]


@lru_cache(maxsize=None)
def _preset_spec(key: str) -> ModelSpec:
    d = _raw_presets()[key]
    return spec_from_hf_dict(d["config"], name=d["name"], source=d["source"],
                             where=f"presets/{d['name']}.json:config")


def get_preset(name: str) -> ModelSpec:
    """The ModelSpec of a preset by name or alias (case-insensitive); unknown -> did-you-mean."""
    key = _index().get(str(name).strip().lower())
    if key is None:
        raise unknown_name("model", "model", str(name), preset_names())
    return _preset_spec(key)


def _spec_fields() -> set[str]:
    return set(ModelSpec.model_fields)


def spec_from_dict(data: dict, where: str = "model", name: str = "") -> ModelSpec:
    """A dict of ModelSpec fields, or a Hugging Face-like config with ``model_type``."""
    if not isinstance(data, dict):
        raise ClusteroptError(where, f"expected a mapping of model fields, got {type(data).__name__}",
                              "a mapping of ModelSpec fields or a config.json with model_type")
    keys = set(data)
    if "model_type" in data and not keys <= _spec_fields():
        return spec_from_hf_dict(data, name=name, where=where, source=where)
    for key in sorted(keys - _spec_fields()):
        raise unknown_name(f"{where}.{key}", "model field", str(key), sorted(_spec_fields()))
    fields = dict(data)
    if name and "name" not in fields:
        fields["name"] = name
    try:
        return ModelSpec(**fields)
    except ValidationError as exc:
        raise from_pydantic(exc, prefix=where) from None
    except TypeError as exc:
        raise ClusteroptError(where, " ".join(str(exc).split()), "ModelSpec fields only") from None


def _load_path(path: Path) -> ModelSpec:
    if path.is_dir():
        return from_hf_config(path)
    suffix = path.suffix.lower()
    text = read_text(path, "model", "config.json or architecture YAML")
    if suffix == ".json":
        data = load_json(text, "model", str(path))
    else:
        data = load_yaml(text, "model", str(path), "model")
    return spec_from_dict(data, where=path.name, name=path.stem if path.stem != "config" else path.parent.name)


def load_model(ref: Any) -> ModelSpec:
    """Resolve what a user gave as 'the model' into a ModelSpec.

    Accepts a ModelSpec (returned as is), a preset name or alias, a path to a Hugging Face
    ``config.json`` (or its folder), a path to an architecture YAML/JSON of ModelSpec
    fields, or a dict of either kind.
    """
    if isinstance(ref, ModelSpec):
        return ref
    if isinstance(ref, dict):
        return spec_from_dict(ref)
    if isinstance(ref, Path):
        if not ref.exists():
            raise ClusteroptError("model", f"no such file {str(ref)!r}",
                                  "an existing config.json or architecture YAML, or a preset name")
        return _load_path(ref)
    if not isinstance(ref, str) or not ref.strip():
        raise ClusteroptError("model", f"expected a preset name, a file path or a mapping, got {ref!r}",
                              "e.g. llama-3-8b (clusteropt models), path/to/config.json")
    key = _index().get(ref.strip().lower())
    if key is not None:
        return _preset_spec(key)
    path = Path(ref).expanduser()
    if path.exists():
        return _load_path(path)
    if "/" in ref or "\\" in ref or path.suffix.lower() in (".json", ".yaml", ".yml"):
        raise ClusteroptError("model", f"no such file {ref!r}",
                              "give a preset name (clusteropt models), a config.json or an architecture YAML")
    raise unknown_name("model", "model", ref, preset_names())
