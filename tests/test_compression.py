"""Compression options (issue 9): published quality deltas, 2:4 storage, decode-speed checks."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from optimizer.catalog import load_catalog, load_compression
from optimizer.errors import ClusteroptError
from optimizer.formulas.compression import (compressed_weight_bytes, decode_speedup, decode_step_time_s,
                                            distillation_flop, linear_bytes_per_param, option_quality,
                                            quality_loss_pct, recovery_tokens, sparse_2_4_bytes_per_param,
                                            calibration_gpu_hours)
from optimizer.formulas.serving_memory import weight_bytes_per_gpu
from optimizer.model import get_preset
from optimizer.units import GIB

MEASURED = list(csv.DictReader(open(Path(__file__).parent / "data" / "compression_measurements.csv")))
ROWS = load_compression()


def test_catalog_rows_have_sources():
    assert len(ROWS) >= 12
    assert all(r.source and r.as_of for r in ROWS)
    assert {"weights_int4_awq", "weights_int8_w8a8", "weights_fp8", "kv_fp8", "sparse_2_4",
            "prune_distill"} <= {r.option for r in ROWS}


@pytest.mark.parametrize("option,family,n,expected", [
    ("weights_int4_awq", "llama-2", 7e9, 100 * (5.60 - 5.47) / 5.47),    # AWQ Table 4, Llama-2-7B ppl
    ("weights_int4_awq", "llama-2", 70e9, 100 * (3.41 - 3.32) / 3.32),   # nearest size: the 70B row
    ("weights_int4_gptq", "llama-3.1", 8e9, 1.1),                        # 98.9% recovery
    ("weights_int8_w8a8", "llama-3", 8e9, 0.0),                          # 100.3% recovery: a gain is no loss
    ("prune_distill", "llama-3", 8e9, 100 * (65.3 - 58.7) / 65.3),       # two rows at 8B: the larger loss
])
def test_option_quality(option, family, n, expected):
    q = option_quality(ROWS, option, family, n)
    assert q.quality_loss_pct == pytest.approx(expected, abs=1e-9)
    assert q.exact_family


def test_quality_fallback_and_errors():
    q = option_quality(ROWS, "weights_fp8", "mixtral", 47e9)
    assert not q.exact_family and q.quality_loss_pct >= 0
    with pytest.raises(ClusteroptError, match="no published quality"):
        option_quality(ROWS, "weights_int2", "llama-3", 8e9)


def test_quality_loss_direction():
    assert quality_loss_pct(10.0, 11.0, higher_is_better=False) == pytest.approx(10.0)
    assert quality_loss_pct(50.0, 45.0, higher_is_better=True) == pytest.approx(10.0)


@pytest.mark.parametrize("value_bytes,expected", [(2, 1.125), (1, 0.625), (0.5, 0.375)])
def test_sparse_storage(value_bytes, expected):
    # Mishra et al. 2021 Sec. 3.1: half the values + 2-bit index per kept value
    assert sparse_2_4_bytes_per_param(value_bytes) == pytest.approx(expected)


def test_sparse_weights_smaller_but_dense_parts_kept():
    s = get_preset("llama-3-8b")
    dense = weight_bytes_per_gpu(s)
    sp = compressed_weight_bytes(s, sparse_2_4=True)
    assert sp.embedding == dense.embedding and sp.lm_head == dense.lm_head
    assert sp.attention == pytest.approx(dense.attention * 1.125 / 2)
    assert sp.total == pytest.approx(sp.embedding + sp.attention + sp.ffn + sp.experts + sp.norm + sp.lm_head)


@pytest.mark.parametrize("row", [r for r in MEASURED if r["kind"] == "weights_bytes"], ids=lambda r: r["model"])
def test_weight_memory_against_published(row):
    """Held out (no constant of the memory model was fitted on these): within 10%."""
    pred = compressed_weight_bytes(get_preset(row["model"]), weights=row["option_weights"],
                                   sparse_2_4=row["option_sparse"] == "true").total / GIB
    assert abs(pred / float(row["measured"]) - 1) < 0.10, pred


@pytest.mark.parametrize("row", [r for r in MEASURED if r["kind"] == "decode_speedup"],
                         ids=lambda r: f"{r['gpu']}-{r['option_weights']}-{r['option_sparse']}")
def test_decode_speedup_against_published(row):
    """Held out: the serving efficiencies were fitted on dense rows only. Roofline overstates the
    speed-up of sparse kernels at batch 1 (published: 1.43x / 1.7x; ours 1.68x / 2.73x): bound the
    error at a factor 1.7 and require the right direction."""
    cat = load_catalog()
    acc = cat.accelerator(row["gpu"])
    pred = decode_speedup(get_preset(row["model"]), cat.hardware(row["gpu"]), batch=int(row["batch"]),
                          context_len=int(row["context_len"]),
                          base={"weights": row["base_weights"], "sparse_2_4": row["base_sparse"] == "true"},
                          option={"weights": row["option_weights"], "sparse_2_4": row["option_sparse"] == "true"},
                          sparse_tensor_cores=acc.sparse_2_4)
    meas = float(row["measured"])
    assert pred > 1 and meas > 1
    assert abs(math.log(pred / meas)) < math.log(1.7), pred


def test_sparse_tensor_cores_only_where_present():
    s = get_preset("llama-3-8b")
    hw = load_catalog().hardware("H100-SXM5-80GB")
    # at a compute-bound batch the sparse rate matters; without sparse tensor cores only bytes shrink
    with_tc = decode_step_time_s(s, hw, batch=2048, context_len=256, sparse_2_4=True, sparse_tensor_cores=True)
    without = decode_step_time_s(s, hw, batch=2048, context_len=256, sparse_2_4=True, sparse_tensor_cores=False)
    assert with_tc < without


@settings(max_examples=30, deadline=None)
@given(batch=st.integers(1, 512), ctx=st.integers(16, 8192))
def test_fewer_bytes_never_slower(batch, ctx):
    s = get_preset("llama-3-8b")
    hw = load_catalog().hardware("H100-SXM5-80GB")
    t = [decode_step_time_s(s, hw, batch=batch, context_len=ctx, weights=w) for w in ("bf16", "fp8")]
    assert t[1] <= t[0]
    t4 = decode_step_time_s(s, hw, batch=batch, context_len=ctx, weights="int4")
    assert t4 <= t[0] + 1e-12 or batch > 64     # int4 computes in 16-bit: may lose at large batch


def test_one_off_costs():
    # GPTQ: 175B in ~4 GPU-hours (Frantar et al. 2023): 0.0229 per billion
    assert calibration_gpu_hours(0.0229, 175e9) == pytest.approx(4.0, rel=0.01)
    # Minitron: 94B tokens for an 8.03B teacher
    assert recovery_tokens(11.71, 8.03e9) == pytest.approx(94e9, rel=0.01)
    assert distillation_flop(1e9, 4e9, 8e9) == pytest.approx(1e9 * (24e9 + 16e9))
    assert linear_bytes_per_param("int4", True) == pytest.approx(0.375 + 2.5 / 128)


@pytest.mark.parametrize("preset,family", [("llama-3-70b", "llama-3"), ("llama-3.1-405b", "llama-3"),
                                           ("llama-2-7b", "llama-2"), ("llama-7b", "llama"),
                                           ("mixtral-8x7b", "mixtral")])
def test_quality_family_of_presets(preset, family):
    from optimizer.formulas.compression import quality_family

    assert quality_family(get_preset(preset)) == family


def test_preset_lookup_uses_its_generation():
    from optimizer.formulas.compression import quality_family

    spec = get_preset("llama-3-70b")
    q = option_quality(ROWS, "weights_int4_gptq", quality_family(spec), 70.6e9)
    assert q.exact_family and q.model == "Llama-3.1-8B-Instruct" and q.quality_loss_pct == pytest.approx(1.1)


def test_compression_choices_and_quality_limit():
    from optimizer.formulas.compression import compression_choices, one_off_cost_usd

    opts = ["weights_fp8", "weights_int4_gptq", "kv_fp8", "sparse_2_4"]
    allc = compression_choices(ROWS, opts, "llama-3", 70.6e9)
    assert len(allc) == 3 * 2 * 2 and allc[0].options == () and allc[0].quality_loss_pct == 0
    both = next(c for c in allc if c.options == ("weights_int4_gptq", "kv_fp8"))
    assert both.weights == "int4" and both.kv == "fp8"
    assert both.quality_loss_pct == pytest.approx(1.1 + 6.0)          # additive
    strict = compression_choices(ROWS, opts, "llama-3", 70.6e9, max_loss_pct=1.0)
    assert {c.options for c in strict} == {(), ("weights_fp8",)}         # int4 (1.1%) forbidden at 1%
    loose = compression_choices(ROWS, opts, "llama-3", 70.6e9, max_loss_pct=2.0)
    assert ("weights_int4_gptq",) in {c.options for c in loose}
    sp = next(c for c in allc if c.options == ("sparse_2_4",))
    assert sp.recovery_tokens == pytest.approx(1.619 * 70.6e9)
    # 2:4 recovery on 70B: 1.14e11 tokens x 8 N FLOPs at 400 TFLOP/s per GPU and $2/GPU-hour
    usd = one_off_cost_usd(sp, 2.0, 400e12)
    assert usd == pytest.approx(sp.recovery_flop / 400e12 / 3600 * 2.0)
    with pytest.raises(ClusteroptError, match="unknown option"):
        compression_choices(ROWS, ["weights_int3"], "llama-3", 8e9)
