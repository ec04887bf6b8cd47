"""Regenerate the reference flag/key lists the export tests check against (run by hand).

The targets (Megatron-LM, NeMo, torchtitan) need torch and GPUs to import, too heavy for CI,
so their option names are copied here as data, extracted from the projects' own source at a
pinned commit. Each JSON file records its repository, path, tag/commit and extraction date.

Usage (with local clones of the three repositories):

    python tests/data/export_refs/extract.py MEGATRON_LM_CLONE TORCHTITAN_CLONE NEMO_CLONE

- Megatron-LM ``megatron/training/arguments.py`` at tag core_v0.15.0 (the last release whose
  flags are all written as ``add_argument('--flag', ...)``; later releases generate most from
  dataclasses with the same kebab-case names): every flag with its ``type``, ``choices`` and
  ``action`` (the AST of each ``add_argument`` call).
- torchtitan ``torchtitan/config/job_config.py`` at tag v0.2.2 (the last release configured by
  TOML job files): every dataclass section and field, with a field's ``Literal`` choices.
- NeMo ``examples/nlp/language_modeling/conf/megatron_gpt_config.yaml`` (the Hydra config of
  ``megatron_gpt_pretraining.py``): every dotted key path.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from datetime import date
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _show(repo: str, rev: str, path: str) -> tuple[str, str]:
    text = subprocess.run(["git", "-C", repo, "show", f"{rev}:{path}"], check=True, capture_output=True,
                          text=True).stdout
    commit = subprocess.run(["git", "-C", repo, "rev-parse", f"{rev}^{{commit}}"], check=True,
                            capture_output=True, text=True).stdout.strip()
    return text, commit


def megatron_flags(src: str) -> dict:
    out = {}
    for node in ast.walk(ast.parse(src)):
        if not (isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_argument"):
            continue
        names = [a.value for a in node.args if isinstance(a, ast.Constant) and str(a.value).startswith("--")]
        if not names:
            continue
        kw = {k.arg: k.value for k in node.keywords}
        entry = {"type": None, "choices": None, "action": None, "nargs": None}
        if isinstance(kw.get("type"), ast.Name):
            entry["type"] = kw["type"].id
        if isinstance(kw.get("choices"), (ast.List, ast.Tuple)):
            vals = [e.value for e in kw["choices"].elts if isinstance(e, ast.Constant)]
            entry["choices"] = vals if len(vals) == len(kw["choices"].elts) else None
        if isinstance(kw.get("action"), ast.Constant):
            entry["action"] = kw["action"].value
        if isinstance(kw.get("nargs"), ast.Constant):
            entry["nargs"] = kw["nargs"].value
        for n in names:
            out[n] = entry
    return out


def torchtitan_sections(src: str) -> dict:
    tree = ast.parse(src)
    classes = {c.name: c for c in tree.body if isinstance(c, ast.ClassDef)}

    def fields(cls):
        res = {}
        for st in cls.body:
            if isinstance(st, ast.AnnAssign) and isinstance(st.target, ast.Name):
                ann = ast.unparse(st.annotation)
                choices = None
                if ann.startswith("Literal["):
                    choices = [e.value for e in ast.walk(st.annotation) if isinstance(e, ast.Constant)]
                res[st.target.id] = {"annotation": ann, "choices": choices}
        return res

    def expand(cls_name, prefix, out):
        for name, f in fields(classes[cls_name]).items():
            ann = f["annotation"]
            if ann in classes:
                expand(ann, prefix + [name], out)
            else:
                out[".".join(prefix + [name])] = f
    out: dict = {}
    expand("JobConfig", [], out)
    return out


def nemo_paths(text: str) -> list[str]:
    import yaml

    def walk(d, prefix):
        for k, v in d.items():
            p = prefix + [str(k)]
            yield ".".join(p)
            if isinstance(v, dict):
                yield from walk(v, p)
    return sorted(walk(yaml.safe_load(text), []))


#: Keys NeMo's GPT model reads with cfg.get() that the shipped YAML leaves out (Hydra: '+key=...').
NEMO_CODE_KEYS = {
    "model.context_parallel_size": "nemo/collections/nlp/models/language_modeling/megatron_base_model.py:207",
    "model.num_moe_experts": "nemo/collections/nlp/models/language_modeling/megatron_gpt_model.py:2263",
    "model.moe_router_topk": "nemo/collections/nlp/models/language_modeling/megatron_gpt_model.py:2265",
    "model.rotary_base": "nemo/collections/nlp/models/language_modeling/megatron_gpt_model.py:510",
}


def main(megatron: str, torchtitan: str, nemo: str) -> None:
    today = date.today().isoformat()
    src, commit = _show(megatron, "core_v0.15.0", "megatron/training/arguments.py")
    (HERE / "megatron_args.json").write_text(json.dumps({
        "source": "NVIDIA/Megatron-LM megatron/training/arguments.py, tag core_v0.15.0", "commit": commit,
        "extracted": today, "flags": megatron_flags(src)}, indent=1, sort_keys=True) + "\n")
    src, commit = _show(torchtitan, "v0.2.2", "torchtitan/config/job_config.py")
    (HERE / "torchtitan_job_config.json").write_text(json.dumps({
        "source": "pytorch/torchtitan torchtitan/config/job_config.py, tag v0.2.2", "commit": commit,
        "extracted": today, "keys": torchtitan_sections(src)}, indent=1, sort_keys=True) + "\n")
    src, commit = _show(nemo, "HEAD", "examples/nlp/language_modeling/conf/megatron_gpt_config.yaml")
    (HERE / "nemo_megatron_gpt_config_keys.json").write_text(json.dumps({
        "source": "NVIDIA/NeMo examples/nlp/language_modeling/conf/megatron_gpt_config.yaml", "commit": commit,
        "extracted": today, "keys": nemo_paths(src), "code_keys": NEMO_CODE_KEYS}, indent=1) + "\n")


if __name__ == "__main__":
    main(*sys.argv[1:4])
