"""The calibrated achievable-compute model against published training runs.

The split is fixed in tests/data/training_runs_public.md (scored row i held out when
i % 3 == 2), the constants were fitted on the other rows by
benchmarks/calibrate_efficiency.py --fit. The bounds below are the errors measured when
the shipped constants were fitted (held-out 6.9%, calibration 10.4%, Korthikanti 4.9%),
rounded up: a change to any formula that makes the published runs worse fails here.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("calibrate_efficiency", ROOT / "benchmarks" / "calibrate_efficiency.py")
cal = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = cal          # dataclasses in the module look themselves up there
_spec.loader.exec_module(cal)

HELD_OUT_MAPE_BOUND = 7.5          # percent; measured 6.9
CALIBRATION_MAPE_BOUND = 11.0      # measured 10.4
KORTHIKANTI_MAPE_BOUND = 5.5       # measured 4.9 (never fitted)


@pytest.fixture(scope="module")
def runs():
    return cal.load_runs()


def test_split_is_the_documented_one(runs):
    scored, skipped = runs
    assert all(r.held_out == (r.index % 3 == 2) for r in scored)
    assert (len(scored), sum(r.held_out for r in scored)) == (77, 25)
    # only rows whose parallel layout is not published are left out
    assert {name for _, name, _ in skipped} == {
        "Llama-2-7B", "Llama-2-13B", "Llama-2-34B (unreleased)", "Llama-2-70B",
        "GPT-3 175B-class (177B with larger vocab), strong scaling"}


def test_held_out_mape_within_bound(runs):
    scored, _ = runs
    assert cal.mape([r for r in scored if r.held_out]) < HELD_OUT_MAPE_BOUND


def test_calibration_mape_within_bound(runs):
    scored, _ = runs
    assert cal.mape([r for r in scored if not r.held_out]) < CALIBRATION_MAPE_BOUND


def test_korthikanti_iteration_times_within_bound():
    errs = []
    for run, t_meas, _ in cal.load_korthikanti():
        est = cal.estimate_training(run.spec, run.hw, run.layout, **run.framework)
        errs.append(abs(t_meas / est.step_time_s - 1.0) * 100)
    assert sum(errs) / len(errs) < KORTHIKANTI_MAPE_BOUND


def test_measured_throughput_conversion_narayanan():
    # row 9 (1T, 3072 GPUs): 163 TFLOP/s per GPU / (96 L h^2 (1 + s/6h + V/16Lh)) per token,
    # times 3072 GPUs = 502 PFLOP/s aggregate in the paper
    scored, _ = cal.load_runs()
    r = next(x for x in scored if x.index == 9)
    L, h, s, V = 128, 25600, 2048, 51200
    per_tok = 96 * L * h * h * (1 + s / (6 * h) + V / (16 * L * h))
    assert r.measured_tokens_per_gpu_s * per_tok * 3072 == pytest.approx(502e15, rel=0.005)


def test_every_published_run_fits_in_memory(runs):
    # Each of these configurations really ran, so the memory estimate of its most loaded
    # GPU must be within the device's capacity (an overestimate of activations, buffers
    # or optimizer states would break this; vTrain's A100 size is unstated, 80 GB taken).
    scored, _ = runs
    kor = [k[0] for k in cal.load_korthikanti()]
    for r in scored + kor:
        est = cal.estimate_training(r.spec, r.hw, r.layout, **r.framework)
        assert est.memory.total <= r.hw.memory_bytes, (r.index, r.name)
