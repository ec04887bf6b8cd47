"""Issue 19: current architectures from config.json, their per-layer kinds, FLOPs, KV/state
memory, Hub ids, estimate defaults; issue 20: config.json errors as one line.

Exact parameter counts of every new architecture are checked against the transformers 5.24
classes built on the meta device in test_model_import.py (its parametrised preset and
flag-variant cases; tests/data/params_refcount.py says how the references were made). Here:
that each architecture is covered there, and what the count alone cannot show.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from optimizer.catalog import load_catalog
from optimizer.cli import main
from optimizer.errors import ClusteroptError
from optimizer.search.estimate import estimate
from optimizer.formulas import flops as F
from optimizer.formulas import serving as S
from optimizer.formulas import serving_memory as SM
from optimizer.formulas.params import count_params
from optimizer.formulas.ssm import mamba_mixer_flops_per_token, mamba_state_bytes_per_seq
from optimizer.model import SUPPORTED_MODEL_TYPES, get_preset, list_presets, load_model
from optimizer.model.hf import spec_from_hf_dict

DATA = Path(__file__).parent / "data"
VARIANTS = json.loads((DATA / "params_variants_reference.json").read_text())["cases"]
PRESET_REF = json.loads((DATA / "presets_reference_counts.json").read_text())["counts"]

# The issue's list: model_type -> a preset of it (all counted exactly in test_model_import.py).
ISSUE_19 = {
    "qwen3": "qwen3-8b", "qwen3_moe": "qwen3-30b-a3b", "gemma3_text": "gemma-3-1b", "gemma3": "gemma-3-27b",
    "olmo2": "olmo-2-7b", "olmoe": "olmoe-1b-7b", "phimoe": "phi-3.5-moe", "gpt_oss": "gpt-oss-20b",
    "llama4": "llama-4-scout", "cohere": "command-r", "granite": "granite-3.0-8b", "jamba": "jamba-v0.1",
}


@pytest.mark.parametrize("model_type, preset", sorted(ISSUE_19.items()))
def test_each_architecture_is_imported_and_has_reference_counts(model_type, preset):
    assert model_type in SUPPORTED_MODEL_TYPES
    spec = get_preset(preset)
    assert spec.model_type == model_type
    assert preset in PRESET_REF                                    # meta-device count exists
    assert count_params(spec).total == PRESET_REF[preset]["total"]
    # at least one synthetic flag case of the type (or its text type) has a reference count too
    types = {c["config"]["model_type"] for c in VARIANTS.values()}
    assert model_type in types


# Published headline sizes (model cards / papers) agree with the exact counts to their rounding.
@pytest.mark.parametrize("preset, total_b, active_b", [
    ("qwen3-8b", 8.2, None),            # Qwen3-8B card: 8.2B
    ("qwen3-30b-a3b", 30.5, 3.3),       # Qwen3-30B-A3B card: 30.5B total, 3.3B activated
    ("olmoe-1b-7b", 6.9, 1.3),          # OLMoE paper Table 1: 6.9B total, 1.3B active
    ("phi-3.5-moe", 41.9, 6.6),         # Phi-3.5-MoE card: 42B total, 6.6B active
    ("gpt-oss-120b", 116.8, None),      # gpt-oss model card Table 1: 116.8B total
    ("gpt-oss-20b", 20.9, None),        # 20.9B total
    ("jamba-v0.1", 51.6, 12.1),         # Jamba paper: 52B total, 12B active
    ("command-r", 35.0, None),          # Command-R card: 35B
])
def test_headline_sizes(preset, total_b, active_b):
    c = count_params(get_preset(preset))
    assert abs(c.total / 1e9 - total_b) <= 0.051 * max(1.0, total_b / 10)
    if active_b is not None:
        assert abs(c.active / 1e9 - active_b) < 0.06


def test_gpt_oss_active_excludes_the_embedding_in_the_model_card():
    # The gpt-oss card's 3.61B / 5.13B active parameters leave out the 579M embedding table;
    # our active count includes it (a token passes through the lookup).
    for preset, card in (("gpt-oss-20b", 3.61e9), ("gpt-oss-120b", 5.13e9)):
        c = count_params(get_preset(preset))
        assert abs((c.active - c.embedding) - card) / card < 0.005


def test_layer_patterns():
    g = get_preset("gemma-3-27b")                    # 5 local : 1 global (Gemma 3 report, Sec. 2.1)
    kinds = [g.layer_kind(i) for i in range(g.num_layers)]
    assert [i for i, k in enumerate(kinds) if k == "full_attention"] == list(range(5, 62, 6))
    assert g.sliding_window == 1024 and g.qk_norm and g.vision is not None
    o = get_preset("gpt-oss-20b")                    # alternating banded / dense
    assert [o.layer_kind(i) for i in range(4)] == ["sliding_attention", "full_attention"] * 2
    assert o.attention_sinks and o.moe.router_bias and o.moe.expert_bias
    s = get_preset("llama-4-scout")                  # 3 chunked (RoPE) : 1 global (NoPE)
    assert [s.layer_kind(i) for i in range(8)] == (["chunked_attention"] * 3 + ["full_attention"]) * 2
    assert s.moe.num_shared_experts == 1 and all(s.is_moe_layer(i) for i in range(s.num_layers))
    j = get_preset("jamba-v0.1")                     # attention 1 in 8 at offset 4, MoE every other layer
    assert [i for i in range(32) if j.layer_kind(i) != "mamba"] == [4, 12, 20, 28]
    assert j.moe_layers() == tuple(range(1, 32, 2))
    q = get_preset("qwen3-30b-a3b")
    assert q.qk_norm and q.qk_norm_shape == "head" and len(q.moe_layers()) == 48
    assert get_preset("olmo-2-7b").qk_norm_shape == "proj"


@pytest.mark.parametrize("s, c", [(1, 4), (4, 4), (5, 4), (13, 4), (100, 7), (8192, 8192), (10000, 8192)])
def test_chunked_mean_context_against_brute_force(s, c):
    brute = sum((i - 1) % c + 1 for i in range(1, s + 1)) / s
    assert F.mean_chunked_context(s, True, c) == pytest.approx(brute)
    assert F.mean_chunked_context(s, False, c) == pytest.approx(sum(min(c, s - (i // c) * c) for i in range(s)) / s)


def test_prefill_and_decode_mixer_flops_agree_with_the_scalar_formulas():
    for preset in ("gemma-3-27b", "llama-4-scout", "jamba-v0.1", "gpt-oss-20b"):
        spec = get_preset(preset)
        for n in (100, 1024, 9000):
            scalar = F.decode_flops_per_token(spec, n) - 2.0 * (F.matmul_weights(spec).total)
            assert S.decode_attention_flops(spec, n) == pytest.approx(scalar, rel=1e-9)
            fwd = F.forward_flops_per_token(spec, n)
            assert S.prompt_attention_flops(spec, n) == pytest.approx(n * fwd.attention, rel=1e-9)


def test_mamba_layers_cost_the_same_per_token_at_any_length():
    j = get_preset("jamba-v0.1")
    a, b = F.forward_flops_per_token(j, 4096), F.forward_flops_per_token(j, 65536)
    per_key = F.attention_score_flops(j, 1.0)           # QK^T + AV of one key, one layer
    # only the 4 attention layers grow: causal mean context (s+1)/2
    assert b.attention - a.attention == pytest.approx(4 * per_key * (65536 - 4096) / 2)
    assert b.matmul == a.matmul
    # Mamba mixer (Gu & Dao 2023): conv 2 K E + scan 7 E N + 3 E with E = 8192, N = 16, K = 4
    assert mamba_mixer_flops_per_token(j.mamba) == 2 * 4 * 8192 + 7 * 8192 * 16 + 3 * 8192


def test_jamba_kv_cache_and_state():
    j = get_preset("jamba-v0.1")
    # 4 attention layers x 2 (K, V) x 8 KV heads x 128 x 2 bytes = 16,384 bytes per token
    assert SM.kv_cache_bytes_per_token(j) == 16384
    # conv (K-1 = 3) + SSM (N = 16) states of 8192 channels, bf16: 311,296 bytes per Mamba layer
    assert mamba_state_bytes_per_seq(j.mamba, 2.0) == 311296
    state = 28 * 311296
    for ctx in (1, 1000, 200_000):
        assert SM.kv_cache_bytes_per_seq(j, ctx, block_size=None) == 16384 * ctx + state
    assert SM.kv_cache_bytes_per_seq(j, 1000, tp=4, block_size=None) == 16384 / 4 * 1000 + state / 4


def test_sliding_and_chunked_layers_hold_at_most_their_window():
    g = get_preset("gemma-3-27b")
    per_layer = 2 * 16 * 128 * 2                       # K and V, 16 KV heads of 128, bf16
    ctx = 32768
    assert SM.kv_cache_bytes_per_seq(g, ctx, block_size=None) == per_layer * (10 * ctx + 52 * 1024)
    s = get_preset("llama-4-scout")
    per_layer = 2 * 8 * 128 * 2
    assert SM.kv_cache_bytes_per_seq(s, 100_000, block_size=None) == per_layer * (12 * 100_000 + 36 * 8192)


@pytest.mark.parametrize("model_type, preset", sorted(ISSUE_19.items()))
def test_estimate_runs_on_each_config_json(tmp_path, model_type, preset):
    from optimizer.model.registry import _raw_presets

    cfg = _raw_presets()[preset]["config"]
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    data = estimate(str(path), catalog=load_catalog(), gpu="H100", tp=1)
    t = data["train"]
    assert data["params"]["total"] == PRESET_REF[preset]["total"]
    assert list(t)[0] == "fits" and 0 < t["mfu"] <= 1 and t["step_time_s"] > 0
    assert data["flops_per_token"]["forward"] > 0


def test_estimate_cli_on_a_jamba_config_file(tmp_path, capsys):
    from optimizer.model.registry import _raw_presets

    path = tmp_path / "config.json"
    path.write_text(json.dumps(_raw_presets()["jamba-v0.1"]["config"]))
    with pytest.raises(SystemExit) as e:
        main(["estimate", str(path), "--gpu", "H100:8", "--tp", "8", "--serve", "--json"])
    out, _ = capsys.readouterr()
    data = json.loads(out)
    assert e.value.code == 0 and data["serve"]["kv_cache_bytes_per_seq"] > 0


# --- Hub ids (offline) ---------------------------------------------------------------

@pytest.mark.parametrize("hub_id, preset", [
    ("meta-llama/Meta-Llama-3-8B", "llama-3-8b"), ("meta-llama/meta-llama-3-8b", "llama-3-8b"),
    ("mistralai/Mixtral-8x7B-v0.1", "mixtral-8x7b"), ("Qwen/Qwen3-30B-A3B", "qwen3-30b-a3b"),
    ("openai/gpt-oss-20b", "gpt-oss-20b"), ("ai21labs/Jamba-v0.1", "jamba-v0.1"),
])
def test_hub_id_of_a_preset_resolves_offline(hub_id, preset):
    assert load_model(hub_id) == get_preset(preset)


def test_every_cited_hub_repo_resolves_to_its_preset():
    from optimizer.model.registry import hub_ids

    ids = hub_ids()
    assert len(ids) >= 70
    for info in list_presets():
        if "Hugging Face repo " in info.source:
            repo = info.source.split("Hugging Face repo ", 1)[1].split(",")[0].split(" ")[0].lower()
            assert ids[repo] == info.name


def test_unknown_hub_id_says_to_pass_a_local_config(capsys):
    with pytest.raises(ClusteroptError, match="pass its local path"):
        load_model("someone/private-model")
    with pytest.raises(SystemExit) as e:
        main(["estimate", "meta-llama/Meta-Llama-3-8B-Instruct"])
    _, err = capsys.readouterr()
    assert e.value.code == 2 and err.count("\n") == 1
    assert err.startswith("error: model:") and "config.json" in err and "did you mean" in err


# --- defaults ----------------------------------------------------------------------------

def test_estimate_uses_the_family_training_length_and_says_so():
    cat = load_catalog()
    d = estimate("llama-3.1-8b", catalog=cat)              # context 131,072; pre-trained at 8,192
    assert d["seq_len"] == 8192 and "Dubey et al. 2024" in d["seq_len_source"]
    assert d["flops_per_token"]["seq_len"] == 8192
    assert estimate("llama-3.1-8b", catalog=cat, seq_len=2048)["seq_len_source"] == "--seq-len"
    j = estimate("jamba-v0.1", catalog=cat)                # no published length: stated fallback
    assert j["seq_len"] == 4096 and "no published pre-training length" in j["seq_len_source"]
    assert estimate("gpt2-124m", catalog=cat)["seq_len"] == 1024     # never above the context


def test_a_layout_that_does_not_fit_says_so_first(capsys):
    with pytest.raises(SystemExit):
        main(["estimate", "llama-3-70b", "--gpu", "A100"])
    out, _ = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0] == "fits: false"
    assert any(line.split() == ["fits", "false"] for line in lines)         # in the figure table too
    assert "A100 means the 40 GB card" in out
    with pytest.raises(SystemExit):
        main(["estimate", "llama-3-70b", "--gpu", "A100", "--json"])
    data = json.loads(capsys.readouterr()[0])
    assert list(data)[0] == "fits" and data["fits"] is False                   # first in csv/markdown too
    assert list(data["train"])[0] == "fits" and data["train"]["fits"] is False
    assert data["train"]["gpu"] == "A100-SXM4-40GB" and data["notes"]


def test_serving_without_a_quality_limit_searches_lossless_formats():
    from optimizer.scenario import Quality, load_scenario
    from optimizer.search.serve.compression import compression_plan

    sc = load_scenario("llama3-8b-api")
    assert sc.serve.quality is None
    spec = load_model(sc.model)
    plan = compression_plan(spec, sc, [])
    assert plan.variants and all(v.quality_loss_pct == 0 for v in plan.variants)
    assert any("no serve.quality limit" in n and "fp8" in n for n in plan.notes)
    allowed = sc.model_copy(update={"serve": sc.serve.model_copy(update={"quality": Quality(max_loss_pct=10)})})
    plan = compression_plan(spec, allowed, [])
    assert any(v.quality_loss_pct > 0 for v in plan.variants)


# --- issue 20: config.json errors are one line --------------------------------------------

BASE = {"model_type": "mixtral", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "vocab_size": 100, "intermediate_size": 96}


@pytest.mark.parametrize("cfg, field", [
    ({**BASE, "num_local_experts": 2, "num_experts_per_tok": 4}, "experts_per_token"),
    ({**BASE, "model_type": "qwen3_moe", "num_experts": 4, "num_experts_per_tok": 8}, "experts_per_token"),
    ({**BASE, "architectures": [123]}, "architectures"),
    ({**BASE, "architectures": "MixtralForCausalLM"}, "architectures"),
    ({**BASE, "model_type": ["llama"]}, "model_type"),
    ({**BASE, "model_type": "gpt_oss", "layer_types": ["sliding_attention"]}, "layer_types"),
    ({**BASE, "model_type": "jamba", "attn_layer_offset": 9}, "attn_layer_offset"),
    ({"model_type": "gemma3", "text_config": "x"}, "text_config"),
])
def test_inconsistent_config_is_one_clusteropt_error(cfg, field):
    with pytest.raises(ClusteroptError) as e:
        spec_from_hf_dict(cfg)
    msg = str(e.value)
    assert field in msg and "\n" not in msg


@pytest.mark.parametrize("content", [b"\xff\xfe{\x00}\x00", b'{"model_type": "llama", "x": "\xe9"}', b"\x00\x01\x02"])
def test_non_utf8_config_json_exits_2_with_one_line(tmp_path, capsys, content):
    path = tmp_path / "config.json"
    path.write_bytes(content)
    with pytest.raises(SystemExit) as e:
        main(["estimate", str(path)])
    out, err = capsys.readouterr()
    assert e.value.code == 2 and out == "" and err.count("\n") == 1 and err.startswith("error: model:")


def test_bad_moe_fields_in_a_config_file_exit_2(tmp_path, capsys):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**BASE, "num_local_experts": 2, "num_experts_per_tok": 4}))
    with pytest.raises(SystemExit) as e:
        main(["estimate", str(path)])
    _, err = capsys.readouterr()
    assert e.value.code == 2 and err.count("\n") == 1 and err.startswith("error: config.json")


@pytest.mark.parametrize("preset", ["gemma-3-27b", "llama-4-scout", "jamba-v0.1", "gpt-oss-20b"])
def test_serving_weights_hold_every_parameter_once(preset):
    # bf16, one GPU: 2 bytes for each parameter the reference class holds, vision tower included
    spec = get_preset(preset)
    assert SM.weight_bytes_per_gpu(spec).total == 2 * PRESET_REF[preset]["total"]


def test_special_model_files_are_refused(tmp_path):    # size caps: optimizer.inputs (issue 20)
    import os

    fifo = tmp_path / "config.json"
    os.mkfifo(fifo)                                   # reading it would block forever
    with pytest.raises(ClusteroptError, match="not a file"):
        load_model(str(fifo))
    with pytest.raises(ClusteroptError, match="not a file"):
        load_model("/dev/zero")


def test_mamba_layers_keep_their_own_activations():
    from optimizer.formulas.memory import activation_bytes_per_layer, layer_activation_bytes
    from optimizer.formulas.ssm import mamba_activation_bytes_per_token

    j = get_preset("jamba-v0.1")
    s, b = 4096, 1
    flags = dict(sequence_parallel=False, recompute="selective", flash_attention=True)
    # Mamba mixer: x,z (2E) + conv out (E) + x_proj out (R + 2N) + Delta (E) + y (E), bf16;
    # E = 8192, R = 256, N = 16 -> 2 (5 x 8192 + 256 + 32) = 82,496 bytes per token
    assert mamba_activation_bytes_per_token(j.mamba) == 82496
    # attention layer of the same shapes (Korthikanti Table 2 terms): Q, K, V, out-proj input
    # 2sb(4096 + 1024 + 1024 + 4096) and flash's log-sum-exp 4asb
    attn_part = 2 * s * b * (4096 + 1024 + 1024 + 4096) + 4 * 32 * s * b
    plain = activation_bytes_per_layer(s, b, 4096, 32, 1, q_width=4096, kv_width=1024, v_width=1024,
                                       kv_heads=8, ffn_size=14336, gated_ffn=True, recompute="selective",
                                       flash_attention=True)
    # dense layers: 12 of 16 are Mamba (attention at 4, 12, 20, 28); MoE layers: all 16
    dense = layer_activation_bytes(j, s, b, 1, 1, moe=False, **flags)
    assert dense == pytest.approx(plain + 12 / 16 * (82496 * s * b - attn_part))
    moe = layer_activation_bytes(j, s, b, 1, 1, moe=True, **flags)
    moe_attn = layer_activation_bytes(get_preset("mixtral-8x7b"), s, b, 1, 1, moe=True, **flags)
    assert moe > moe_attn                     # a Mamba mixer keeps more than GQA attention here
