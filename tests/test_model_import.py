"""config.json import, presets and load_model (issue 2).

Expected counts are never outputs of our code: they come from the real Hugging Face
model classes instantiated on the meta device (tests/data/*.json say how).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from optimizer.errors import ClusteroptError
from optimizer.formulas.params import count_params
from optimizer.model import (SUPPORTED_MODEL_TYPES, ModelSpec, from_hf_config, get_preset, list_presets,
                             load_model)
from optimizer.model.hf import spec_from_hf_dict

DATA = Path(__file__).parent / "data"
PUBLIC = json.loads((DATA / "params_public.json").read_text())
PRESET_REF = json.loads((DATA / "presets_reference_counts.json").read_text())["counts"]
VARIANTS = json.loads((DATA / "params_variants_reference.json").read_text())["cases"]


# Every row of shared/validation/params_public.json: counts of the transformers 5.24 class
# named in hf_class, built from that config_json (the file's 'what' says how).
@pytest.mark.parametrize("row", PUBLIC["models"], ids=[m["name"] for m in PUBLIC["models"]])
def test_public_configs_exact(row):
    counts = count_params(spec_from_hf_dict(row["config_json"], name=row["name"]))
    assert counts.total == row["total_params"]
    assert counts.active == (row["active_params"] or row["total_params"])
    assert counts.embedding == row["embedding_params"]
    assert counts.lm_head_tied == row["lm_head_tied"]
    if not row["lm_head_tied"]:
        assert counts.lm_head == row["lm_head_params"]   # Phi-2 includes its 51,200 bias entries


# One case per architecture switch (Falcon layouts, OPT projections, BERT heads, MoE
# placement, minimal configs that rely on class defaults, ...), reference = real class.
@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_flag_variants_exact(name):
    case = VARIANTS[name]
    ref = case["reference"]
    counts = count_params(spec_from_hf_dict(case["config"], name=name))
    assert counts.total == ref["total"]
    assert counts.embedding == ref["embedding"]
    if ref["active"] is not None:
        assert counts.active == ref["active"]


@pytest.mark.parametrize("info", list_presets(), ids=lambda p: p.name)
def test_every_preset_matches_reference_count(info):
    ref = PRESET_REF[info.name]
    counts = count_params(get_preset(info.name))
    assert counts.total == ref["total"]
    assert counts.active == (ref["active"] or ref["total"])
    assert counts.embedding == ref["embedding"]
    assert info.params_total == ref["total"]          # the number `clusteropt models` shows
    assert info.params_active == ref["active"]


def test_preset_catalogue_covers_the_issue():
    presets = list_presets()
    assert len(presets) >= 30
    for p in presets:
        assert p.source and p.as_of and p.family, p.name
    families = {p.family for p in presets}
    for fam in ("gpt2", "gpt3", "opt", "pythia", "bloom", "falcon", "llama", "mistral", "mixtral", "qwen2",
                "gemma", "gemma2", "phi3", "deepseek-v3", "t5", "bert"):
        assert fam in families
    for name in ("llama-3-8b", "LLAMA-3-70B", "llama-3.1-405b", "Mixtral-8x7B", "gpt-3-175b", "deepseek-v3",
                 "gpt2-xl", "bert-base-uncased"):
        assert isinstance(get_preset(name), ModelSpec)


def test_published_headline_counts():
    # Mixtral-8x7B: the issue's figure for active parameters per token.
    assert count_params(get_preset("mixtral-8x7b")).active == 12_879_925_248
    # DeepSeek-V3 report (Liu et al. 2024, abstract): 671B total, 37B activated; the
    # transformers class holds no MTP module and keeps e_score_correction_bias as a buffer.
    c = count_params(get_preset("deepseek-v3"))
    assert round(c.total / 1e9) == 671 and round(c.active / 1e9) in (37, 38)
    # Llama 3.1 405B: Meta's model card quotes 405B; GPT-3: paper Table 2.1 quotes 175.0B
    # (174.6B for this config: the paper rounds).
    assert round(count_params(get_preset("llama-3.1-405b")).total / 1e9) == 406
    assert abs(count_params(get_preset("gpt-3-175b")).total / 175.0e9 - 1) < 0.003


def test_unknown_preset_suggests_close_names():
    with pytest.raises(ClusteroptError) as err:
        get_preset("llama-3-80b")
    assert "did you mean" in str(err.value) and "llama-3-70b" in str(err.value)


def test_unsupported_model_type_lists_supported():
    with pytest.raises(ClusteroptError) as err:
        spec_from_hf_dict({"model_type": "mamba", "hidden_size": 768})
    msg = str(err.value)
    assert "model_type" in msg and "mamba" in msg
    for t in SUPPORTED_MODEL_TYPES:
        assert t in msg


@pytest.mark.parametrize("model_type, cfg, missing", [
    ("llama", {"hidden_size": 64, "num_attention_heads": 4, "vocab_size": 100}, "num_hidden_layers"),
    ("gpt2", {"n_embd": 64, "n_layer": 2, "vocab_size": 100}, "n_head"),
    ("t5", {"d_model": 64, "num_layers": 2, "num_heads": 4}, "vocab_size"),
    ("bloom", {"n_layer": 2, "n_head": 4, "vocab_size": 100}, "hidden_size"),
])
def test_missing_structural_size_is_named(model_type, cfg, missing):
    with pytest.raises(ClusteroptError) as err:
        spec_from_hf_dict({"model_type": model_type, **cfg})
    assert missing in str(err.value)


def test_unsupported_head_class_is_named():
    cfg = {"model_type": "llama", "architectures": ["LlamaForSequenceClassification"], "hidden_size": 64,
           "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 100}
    with pytest.raises(ClusteroptError, match="LlamaForCausalLM"):
        spec_from_hf_dict(cfg)


def test_invalid_sizes_in_config_are_reported_with_field():
    cfg = {"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
           "num_key_value_heads": 3, "vocab_size": 100}
    with pytest.raises(ClusteroptError, match="num_kv_heads"):
        spec_from_hf_dict(cfg)
    with pytest.raises(ClusteroptError, match="num_hidden_layers"):
        spec_from_hf_dict({**cfg, "num_key_value_heads": 2, "num_hidden_layers": 0})


def test_load_model_from_config_json_path_and_folder(tmp_path):
    row = PUBLIC["models"][0]
    folder = tmp_path / "gpt2"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(row["config_json"]))
    for ref in (str(folder / "config.json"), folder, str(folder)):
        spec = load_model(ref)
        assert count_params(spec).total == row["total_params"]
    assert from_hf_config(folder / "config.json").model_type == "gpt2"


def test_load_model_from_architecture_yaml_and_dicts(tmp_path):
    fields = {"name": "tiny", "vocab_size": 1000, "hidden_size": 64, "num_layers": 2, "num_heads": 4,
              "num_kv_heads": 2, "ffn_size": 128,
              "moe": {"num_experts": 4, "experts_per_token": 1, "expert_ffn_size": 32}}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(fields))
    from_yaml = load_model(str(path))
    assert from_yaml == load_model(fields)
    assert from_yaml.moe.num_experts == 4
    hf_like = {"model_type": "mistral", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 8,
               "vocab_size": 1000, "intermediate_size": 128}
    assert load_model(hf_like).num_kv_heads == 8        # MistralConfig's default num_key_value_heads
    assert load_model("Llama-3-8B") is get_preset("llama-3-8b")   # cached


def test_load_model_errors_are_one_line_with_field(tmp_path):
    with pytest.raises(ClusteroptError, match="no such file"):
        load_model(str(tmp_path / "nope.yaml"))
    with pytest.raises(ClusteroptError, match="did you mean"):
        load_model("mixtral-8x8b")
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"name": "x", "vocab_size": 10, "hidden_size": 64, "num_layers": 2,
                                   "num_heads": 4, "ffn_size": 8, "norm_kind": "batchnorm"}))
    with pytest.raises(ClusteroptError) as err:
        load_model(str(bad))
    assert "norm_kind" in str(err.value) and "rmsnorm" in str(err.value)
    assert "\n" not in str(err.value)


def test_legacy_lm_class_name_counts_as_the_lm_class():
    # Falcon-7B's config once named its remote-code class 'RWForCausalLM'; the weights are
    # those of FalconForCausalLM (params_public row 'Falcon-7B').
    row = next(m for m in PUBLIC["models"] if m["name"] == "Falcon-7B")
    cfg = {**row["config_json"], "architectures": ["RWForCausalLM"]}
    assert count_params(spec_from_hf_dict(cfg)).total == row["total_params"]
