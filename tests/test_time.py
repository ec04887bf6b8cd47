"""Step-time parts (optimizer/formulas/time.py, efficiency.py) and FLOP accounting."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from optimizer.formulas import time as T
from optimizer.formulas.efficiency import (CALIBRATED, REFERENCE_PEAK_HIGH_FLOP_PER_S,
                                           REFERENCE_PEAK_LOW_FLOP_PER_S, gemm_efficiency,
                                           gemm_efficiency_max)
from optimizer.formulas.training import hardware_flops_per_token, model_flops_per_token
from optimizer.model.spec import ModelSpec
from optimizer.units import TERA


def gpt_no_bias(layers, hidden, heads, vocab=51200, seq=2048) -> ModelSpec:
    # Narayanan's eq. 3 counts weight matrices only: no biases, tied head
    return ModelSpec(name="gpt", vocab_size=vocab, hidden_size=hidden, num_layers=layers, num_heads=heads,
                     ffn_kind="mlp", ffn_size=4 * hidden, norm_kind="layernorm", position="learned",
                     max_position_embeddings=seq, tie_word_embeddings=True)


@pytest.mark.parametrize("pp, v, m, expected", [
    (8, 1, 64, 7 / 64),      # Narayanan 2021 Sec. 2.2.1: (p - 1)/m
    (8, 2, 64, 7 / 128),     # Sec. 2.2.2: interleaving with v chunks divides it by v
    (1, 1, 16, 0.0),
    (64, 1, 512, 63 / 512),  # the 1T run of Narayanan Table 1 at micro-batch 1
])
def test_bubble_fraction(pp, v, m, expected):
    assert T.pipeline_bubble_fraction(pp, v, m) == pytest.approx(expected)


@pytest.mark.parametrize("layers, hidden, heads", [(96, 12288, 96), (128, 25600, 160), (24, 2304, 24)])
def test_hardware_flops_full_recompute_equal_narayanan_eq3(layers, hidden, heads):
    # Narayanan et al. 2021 eq. 3: 96 B s l h^2 (1 + s/6h + V/16lh) per iteration, per token / (B s)
    s, V = 2048, 51200
    spec = gpt_no_bias(layers, hidden, heads, V, s)
    eq3 = 96 * layers * hidden ** 2 * (1 + s / (6 * hidden) + V / (16 * layers * hidden))
    got = hardware_flops_per_token(spec, s, recompute="full", flash_attention=False)
    assert float(got) == pytest.approx(eq3, rel=1e-9)
    # model FLOPs: 72 l h^2 (1 + s/6h + V/12lh) (Korthikanti Sec. 5 / Megatron's MFU; no flash kernel)
    mf = 72 * layers * hidden ** 2 * (1 + s / (6 * hidden) + V / (12 * layers * hidden))
    assert float(model_flops_per_token(spec, s, flash_attention=False)) == pytest.approx(mf, rel=1e-9)


def test_korthikanti_175b_mfu_from_paper_iteration_time():
    # Independent check of the MFU numerator: 175B, 64 x 2048 tokens in 13.75 s on 64 A100s
    # is 51.4% MFU in Korthikanti et al. 2022 (Table 4 time, MFU table); Megatron ran no flash kernel
    spec = gpt_no_bias(96, 12288, 96)
    mfu = float(model_flops_per_token(spec, 2048, flash_attention=False)) * 64 * 2048 / 13.75 / 64 / (312 * TERA)
    assert mfu == pytest.approx(0.514, abs=0.001)


@pytest.mark.parametrize("s", [2048, 8192, 131072, 1048576])
def test_with_flash_mfu_counts_the_causal_half_and_never_exceeds_hfu(s):
    """Issue 20: at 1M tokens with CP, counting s x s scores gave MFU 1.03, above HFU. With a
    causal flash kernel the numerator counts the causal half (mean context (s+1)/2), so the
    attention term is (s+1)/(2s) of the full count and MFU's numerator <= HFU's for every recompute."""
    spec = gpt_no_bias(24, 2304, 24, 51200, s)
    full = float(model_flops_per_token(spec, s, flash_attention=False))
    causal = float(model_flops_per_token(spec, s, flash_attention=True))
    # the difference is the attention GEMMs' non-causal half: 3 passes x 4 s h l FLOPs x (1 - (s+1)/2s)
    attn_full = 3 * 4 * s * 2304 * 24
    assert full - causal == pytest.approx(attn_full * (1 - (s + 1) / (2 * s)), rel=1e-9)
    for rec in ("none", "selective", "full"):
        assert causal <= float(hardware_flops_per_token(spec, s, recompute=rec, flash_attention=True))


def test_gemm_efficiency_saturates_in_tokens():
    lo = gemm_efficiency(312 * TERA, 256)
    hi = gemm_efficiency(312 * TERA, 65536)
    assert lo < hi < CALIBRATED.eta_max_low_peak
    assert gemm_efficiency(312 * TERA, CALIBRATED.tokens_half) == pytest.approx(CALIBRATED.eta_max_low_peak / 2)


def test_gemm_efficiency_max_interpolates_between_reference_devices():
    c = CALIBRATED
    assert gemm_efficiency_max(REFERENCE_PEAK_LOW_FLOP_PER_S) == pytest.approx(c.eta_max_low_peak)
    assert gemm_efficiency_max(REFERENCE_PEAK_HIGH_FLOP_PER_S) == pytest.approx(c.eta_max_high_peak)
    assert gemm_efficiency_max(100 * TERA) == pytest.approx(c.eta_max_low_peak)      # held outside
    assert gemm_efficiency_max(2250 * TERA) == pytest.approx(c.eta_max_high_peak)
    mid = gemm_efficiency_max(np.sqrt(312 * 989.4) * TERA)                             # geometric middle
    assert mid == pytest.approx((c.eta_max_low_peak + c.eta_max_high_peak) / 2)


def test_exposed_is_excess_over_window():
    assert T.exposed_s(3.0, 1.0) == 2.0
    assert T.exposed_s(1.0, 3.0) == 0.0


def test_gemm_time_fp8_runs_linear_layers_at_fp8_peak():
    kw = dict(peak_bf16_flop_per_s=989e12, tokens=4096)
    bf16 = T.gemm_time_s(1e12, 0.0, peak_linear_flop_per_s=989e12, **kw)
    fp8 = T.gemm_time_s(1e12, 0.0, peak_linear_flop_per_s=1978e12, **kw)
    assert fp8 == pytest.approx(bf16 * 989 / 1978)
    # attention stays at the bf16 peak
    att = T.gemm_time_s(0.0, 1e12, peak_linear_flop_per_s=1978e12, **kw)
    assert att == pytest.approx(bf16)


def test_attention_context_causal_flash_halves():
    spec = gpt_no_bias(2, 256, 4)
    assert T.attention_context(spec, 4096, causal_skip=True) == 2048
    assert T.attention_context(spec, 4096, causal_skip=False) == 4096


@settings(max_examples=50, deadline=None)
@given(pp=st.integers(1, 128), v=st.integers(1, 8), m=st.integers(1, 4096))
def test_bubble_shrinks_with_more_microbatches_and_chunks(pp, v, m):
    b = T.pipeline_bubble_fraction(pp, v, m)
    assert T.pipeline_bubble_fraction(pp, v, m + 1) <= b
    assert T.pipeline_bubble_fraction(pp, v + 1, m) <= b
