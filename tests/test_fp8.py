"""fp8 training: the linear GEMMs' efficiency ratio against published bf16/fp8 pairs.

Data: tests/data/fp8_training_pairs.csv (same model, GPUs and layout, once in bf16 and once
in fp8; sources in fp8_training_pairs.md). The split is fixed there (model groups in file
order, odd group index held out) and ``FP8_GEMM_EFFICIENCY_RATIO`` was fitted on the other
groups by benchmarks/calibrate_efficiency.py --fit-fp8. The bounds below are the errors
measured at that fit, rounded up: held-out speed-up MAPE 3.7% (worst pair 7.1%),
calibration 1.7%; without the ratio (1.0) the speed-ups were over-predicted by 20-25%.
"""

from __future__ import annotations

import csv
import importlib.util
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from optimizer.formulas import time as T
from optimizer.formulas.efficiency import (CALIBRATED, FP8_GEMM_EFFICIENCY_RATIO, gemm_efficiency,
                                           linear_gemm_efficiency_ratio)

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("calibrate_efficiency", ROOT / "benchmarks" / "calibrate_efficiency.py")
cal = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = cal
_spec.loader.exec_module(cal)

HELD_OUT_RATIO_MAPE_BOUND = 4.5      # percent; measured 3.7
HELD_OUT_RATIO_PAIR_BOUND = 8.0      # every held-out pair's speed-up; worst measured 7.1
CALIBRATION_RATIO_MAPE_BOUND = 2.5   # measured 1.7
HELD_OUT_FP8_THROUGHPUT_BOUND = 6.0  # fp8 tokens/s per GPU of the held-out pairs; measured 5.0
UNCORRECTED = replace(CALIBRATED, fp8_gemm_ratio=1.0)   # fp8 GEMMs as efficient as bf16's (before)


@pytest.fixture(scope="module")
def pairs():
    return cal.load_fp8_pairs()


@pytest.fixture(scope="module")
def scored(pairs):
    return [p for p in pairs if cal.fp8_bf16_ok(p)]


def test_pairs_have_sources_and_match_layouts(pairs):
    # every row names its page, table and date; the two runs of a pair differ only in precision
    with open(ROOT / "tests" / "data" / "fp8_training_pairs.csv") as f:
        rows = list(csv.DictReader(f))
    assert all(r["url"].startswith("https://") and r["table"] and r["as_of"] for r in rows)
    assert len(rows) == 2 * len(pairs) == 64
    for p in pairs:
        assert (p.bf16.layout.precision, p.fp8.layout.precision) == ("bf16", "fp8")
        assert replace(p.bf16.layout, precision="fp8") == p.fp8.layout, p.pair_id
        assert p.bf16.spec == p.fp8.spec and p.bf16.hw == p.fp8.hw


def test_split_is_the_documented_one(pairs, scored):
    groups = list(dict.fromkeys(p.group for p in pairs))
    assert all(p.held_out == (groups.index(p.group) % 2 == 1) for p in pairs)
    assert {p.group for p in pairs if p.held_out} == {"llama31-70b", "nemotron4-15b", "mpt-3b"}
    # only the attention-bound long-sequence MPT pairs, whose bf16 run the model misses, are not scored
    assert {p.pair_id for p in pairs} - {p.pair_id for p in scored} == {
        "mpt-3b-32768", "mpt-3b-8192", "mpt-1b-32768"}
    assert (sum(not p.held_out for p in scored), sum(p.held_out for p in scored)) == (14, 15)


def test_published_speedups_are_those_of_the_sources(pairs):
    # Llama 3.1 70B on 64 H100: step 14.72 s bf16, 11.01 s fp8 (dgxc-benchmarking 24.09)
    p = next(p for p in pairs if p.pair_id == "llama31-70b-64")
    assert p.measured_ratio == pytest.approx(14.72 / 11.01, rel=1e-3)
    # MPT-3b, 512 tokens, 8 H100: 27965 vs 36527 tokens/s/GPU (llm-foundry tables)
    p = next(p for p in pairs if p.pair_id == "mpt-3b-512")
    assert p.measured_ratio == pytest.approx(36527 / 27965)


def test_held_out_speedups_within_tolerance(scored):
    held = [p for p in scored if p.held_out]
    errs = {p.pair_id: cal.ratio_ape(p) for p in held}
    assert max(abs(e) for e in errs.values()) < HELD_OUT_RATIO_PAIR_BOUND, errs
    assert cal.ratio_mape(held) < HELD_OUT_RATIO_MAPE_BOUND
    assert cal.mape([p.fp8 for p in held]) < HELD_OUT_FP8_THROUGHPUT_BOUND


def test_calibration_speedups_within_bound(scored):
    assert cal.ratio_mape([p for p in scored if not p.held_out]) < CALIBRATION_RATIO_MAPE_BOUND


def test_ratio_fixes_the_overpredicted_speedups(scored):
    # fp8 GEMMs at bf16's efficiency predicted 1.6-1.8x where 1.3-1.55x was measured
    held = [p for p in scored if p.held_out]
    assert min(cal.ratio_ape(p, UNCORRECTED) for p in held) > 10.0
    assert cal.ratio_mape(held) < cal.ratio_mape(held, UNCORRECTED) / 4


def test_mpt3b_fp8_row_error_improves():
    # training_runs_public.csv row 30, the only fp8 run of the main calibration set (+38.8% before)
    runs, _ = cal.load_runs()
    row = next(r for r in runs if r.index == 30)
    assert row.layout.precision == "fp8"
    before, after = cal.ape(row, UNCORRECTED), cal.ape(row)
    assert before > 35.0
    assert abs(after) < 0.6 * abs(before)


def test_bf16_predictions_do_not_depend_on_the_fp8_ratio(pairs):
    runs, _ = cal.load_runs()
    bf16 = [r for r in runs if r.layout.precision == "bf16"] + [p.bf16 for p in pairs]
    for r in bf16:
        assert cal.predict(r) == cal.predict(r, UNCORRECTED), r.name


def test_fit_reproduces_the_shipped_ratio(scored):
    fitted = cal.fit_fp8_ratio([p for p in scored if not p.held_out])
    assert fitted.fp8_gemm_ratio == pytest.approx(FP8_GEMM_EFFICIENCY_RATIO, abs=0.005)
    assert CALIBRATED.fp8_gemm_ratio == FP8_GEMM_EFFICIENCY_RATIO


def test_gemm_time_fp8_linear_at_ratio_of_bf16_efficiency():
    # independent: 1 TFLOP of linear GEMMs at 4096 tokens; bf16 at eta x 989.4 TFLOP/s,
    # fp8 at 0.77 eta x 1978.9 TFLOP/s; attention stays bf16 under fp8
    kw = dict(peak_bf16_flop_per_s=989.4e12, tokens=4096)
    eta = float(gemm_efficiency(989.4e12, 4096))
    bf16 = T.gemm_time_s(1e12, 0.0, peak_linear_flop_per_s=989.4e12, **kw)
    fp8 = T.gemm_time_s(1e12, 0.0, peak_linear_flop_per_s=1978.9e12, precision="fp8", **kw)
    assert bf16 == pytest.approx(1e12 / (989.4e12 * eta))
    assert fp8 == pytest.approx(1e12 / (1978.9e12 * eta * FP8_GEMM_EFFICIENCY_RATIO))
    att = T.gemm_time_s(0.0, 1e12, peak_linear_flop_per_s=1978.9e12, precision="fp8", **kw)
    assert att == pytest.approx(bf16)
    assert linear_gemm_efficiency_ratio("bf16") == 1.0
    assert linear_gemm_efficiency_ratio("fp8") == FP8_GEMM_EFFICIENCY_RATIO


@settings(max_examples=60, deadline=None)
@given(lin=st.floats(1e9, 1e15), att=st.floats(0.0, 1e15), tokens=st.integers(1, 1 << 20),
       r1=st.floats(0.3, 1.0), r2=st.floats(0.3, 1.0))
def test_fp8_gemm_time_falls_as_ratio_rises_and_beats_bf16_above_half(lin, att, tokens, r1, r2):
    kw = dict(peak_bf16_flop_per_s=989.4e12, tokens=tokens)
    t = lambda r: T.gemm_time_s(lin, att, peak_linear_flop_per_s=1978.9e12, precision="fp8",  # noqa: E731
                                constants=replace(CALIBRATED, fp8_gemm_ratio=r), **kw)
    lo, hi = sorted((r1, r2))
    assert t(hi) <= t(lo) * (1 + 1e-12)
    bf16 = T.gemm_time_s(lin, att, peak_linear_flop_per_s=989.4e12, **kw)
    # a device with twice the bf16 peak in fp8: fp8 GEMMs are faster exactly when the ratio > 1/2
    if lo > 0.5:
        assert t(lo) < bf16
