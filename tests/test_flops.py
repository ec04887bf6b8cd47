"""FLOPs per token (formulas/flops.py) against published formulas (issue 2).

1 multiply-add = 2 FLOPs throughout. The published formulas count full attention
(every query sees all s keys), so they are compared with ``causal=False``.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from optimizer.errors import ClusteroptError
from optimizer.formulas import flops as F
from optimizer.formulas.params import count_params
from optimizer.model import get_preset, spec_from_hf_dict


def _gpt(l: int, h: int, heads: int, V: int, s: int):
    """A Megatron/GPT-style dense model (FFN 4h, MHA, learned positions) as a gpt2 config."""
    return spec_from_hf_dict({"model_type": "gpt2", "n_embd": h, "n_layer": l, "n_head": heads,
                              "vocab_size": V, "n_positions": s})


# Narayanan et al. 2021 (SC21), Table 1 rows (l, h, heads; V = 51200, s = 2048) and the
# GPT-3 175B shape (Brown et al. 2020, Table 2.1; V = 50257).
MEGATRON_ROWS = [
    (96, 12288, 96, 50257, 2048),     # GPT-3 175B
    (24, 2304, 24, 51200, 2048),      # 1.7B
    (128, 25600, 160, 51200, 2048),   # 1T
]


@pytest.mark.parametrize("l, h, heads, V, s", MEGATRON_ROWS)
def test_megatron_eq3_with_full_recompute(l, h, heads, V, s):
    # Eq. 3: F = 96 B s l h^2 (1 + s/6h + V/16lh) per iteration of B sequences, with
    # activation recomputation; divide by B*s for FLOPs per token.
    expected = 96 * l * h * h * (1 + s / (6 * h) + V / (16 * l * h))
    got = F.hardware_train_flops_per_token(_gpt(l, h, heads, V, s), s, "full", flash_attention=False, causal=False)
    assert got == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("l, h, heads, V, s", MEGATRON_ROWS)
def test_palm_6n_plus_12lsd(l, h, heads, V, s):
    # PaLM App. B / Chinchilla App. F: 6N + 12 L s d per token (model FLOPs, full attention),
    # N = matmul weights = 12 l h^2 (attention 4h^2 + FFN 8h^2) + V h (LM head).
    spec = _gpt(l, h, heads, V, s)
    n_matmul = 12 * l * h * h + V * h
    assert F.train_flops_per_token(spec, s, causal=False) == pytest.approx(6 * n_matmul + 12 * l * s * h, rel=1e-12)
    # with N = all parameters the approximation is off only by the embedding and position
    # lookups, norms and biases (0.3% at 1.7B, 0.02% at 175B)
    n_all = count_params(spec).total
    assert F.train_flops_per_token(spec, s, causal=False) == pytest.approx(6 * n_all + 12 * l * s * h, rel=5e-3)


@pytest.mark.parametrize("name", ["llama-3-8b", "llama-3.1-405b", "mixtral-8x7b", "mixtral-8x22b",
                                  "deepseek-v3", "deepseek-v2-lite", "phi-3-medium", "gemma-2-9b"])
def test_matmul_weights_equal_active_params_less_lookups_and_norms(name):
    # These families have no biases and no learned positions, so the weights a token
    # multiplies by are exactly the active parameters minus the embedding lookup and the
    # norm weights (independent code path: formulas/params.py). Tied heads multiply by the
    # embedding matrix again.
    spec = get_preset(name)
    c = count_params(spec)
    tied_head = spec.vocab_size * spec.hidden_size if spec.tie_word_embeddings else 0
    assert F.matmul_weights(spec).total == c.active - c.embedding - c.norm + tied_head


def test_moe_counts_active_experts_only():
    mixtral = get_preset("mixtral-8x7b")
    dense_twin = mixtral.model_copy(update={"moe": None})            # one 14336-wide FFN per layer
    diff = F.forward_flops_per_token(mixtral, 4096).matmul - F.forward_flops_per_token(dense_twin, 4096).matmul
    h, f, L = 4096, 14336, 32
    assert diff == 2 * L * (h * 8 + 3 * h * f)                       # router + one more expert (top-2)


@pytest.mark.parametrize("s", [1, 2, 7, 2048])
def test_causal_convention_halves_attention(s):
    spec = get_preset("llama-3-8b")
    causal = F.forward_flops_per_token(spec, s, causal=True).attention
    full = F.forward_flops_per_token(spec, s, causal=False).attention
    assert causal == pytest.approx(full * (s + 1) / (2 * s))
    # QK^T + AV: 2 * heads * 2 * head_dim FLOPs per key, 32 layers
    assert full == 32 * 2 * 32 * (128 + 128) * s


@pytest.mark.parametrize("name, s", [("llama-3-8b", 300), ("mistral-7b", 5000), ("gemma-2-9b", 4500),
                                     ("deepseek-v2-lite", 200)])
def test_prefill_equals_sum_of_decode_steps(name, s):
    # Causal prefill does the work of s decode steps at contexts 1..s (sliding windows cap
    # both the same way); with all logits, the LM head runs for every position.
    spec = get_preset(name)
    steps = sum(F.decode_flops_per_token(spec, c) for c in range(1, s + 1))
    assert F.prefill_flops(spec, s, all_logits=True) == pytest.approx(steps, rel=1e-12)
    lm = 2 * F.matmul_weights(spec).lm_head
    assert F.prefill_flops(spec, s) == pytest.approx(steps - (s - 1) * lm, rel=1e-12)


def test_decode_grows_by_the_kv_read_per_token():
    spec = get_preset("llama-2-70b")
    step = F.decode_flops_per_token(spec, 1001) - F.decode_flops_per_token(spec, 1000)
    assert step == 80 * 2 * 64 * (128 + 128)
    assert F.decode_flops_per_token(spec, 1) == 2 * F.matmul_weights(spec).total + 80 * 2 * 64 * 256


def test_mla_attention_uses_its_own_head_dims():
    # DeepSeek-V3: 128 heads, q/k head dim 128 + 64 (nope + rope), v head dim 128.
    spec = get_preset("deepseek-v3")
    full = F.forward_flops_per_token(spec, 1000, causal=False).attention
    assert full == 61 * 2 * 128 * (192 + 128) * 1000


def test_recompute_ordering_and_identities():
    spec = get_preset("llama-3-70b")
    s = 8192
    fwd = F.forward_flops_per_token(spec, s)
    none = F.hardware_train_flops_per_token(spec, s, "none", flash_attention=False)
    sel = F.hardware_train_flops_per_token(spec, s, "selective", flash_attention=False)
    full = F.hardware_train_flops_per_token(spec, s, "full", flash_attention=False)
    assert none == F.train_flops_per_token(spec, s) == 3 * fwd.total
    assert sel == pytest.approx(none + fwd.attention)                 # Korthikanti: attention core again
    lm_head = 2 * F.matmul_weights(spec).lm_head
    assert full == pytest.approx(none + fwd.total - lm_head)         # layers' forward again, not the head
    flash_none = F.hardware_train_flops_per_token(spec, s, "none", flash_attention=True)
    flash_sel = F.hardware_train_flops_per_token(spec, s, "selective", flash_attention=True)
    assert flash_none == flash_sel == pytest.approx(none + fwd.attention / 2)   # QK^T again (d_qk = d_v)


def test_encoder_decoder_and_encoder():
    t5 = get_preset("t5-base")
    p = count_params(t5)
    fwd = F.forward_flops_per_token(t5, 512)
    # one source + one target token: all layers' weights once, plus the head
    assert fwd.matmul == 2 * (p.attention + p.ffn + t5.vocab_size * t5.hidden_size)
    with pytest.raises(ClusteroptError, match="encoder"):
        F.decode_flops_per_token(get_preset("bert-base"), 10)


def test_bad_inputs_raise():
    spec = get_preset("gpt2-124m")
    with pytest.raises(ClusteroptError, match="recompute"):
        F.hardware_train_flops_per_token(spec, 1024, "partial")
    with pytest.raises(ClusteroptError, match="seq_len"):
        F.forward_flops_per_token(spec, 0)
    with pytest.raises(ClusteroptError, match="context_len"):
        F.decode_flops_per_token(spec, 0)


@settings(max_examples=40, deadline=None)
@given(s=st.integers(1, 20000), extra=st.integers(1, 5000), causal=st.booleans())
def test_forward_and_prefill_grow_with_length(s, extra, causal):
    spec = get_preset("mistral-7b")                       # sliding window 4096
    a = F.forward_flops_per_token(spec, s, causal)
    b = F.forward_flops_per_token(spec, s + extra, causal)
    assert b.total >= a.total and b.matmul == a.matmul
    assert F.prefill_flops(spec, s + extra) > F.prefill_flops(spec, s)
    assert F.mean_context(s, True, 4096) <= F.mean_context(s, False, 4096) <= 4096
