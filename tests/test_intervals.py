"""Prediction intervals of training throughput (issue 15): regimes, the shipped table, and
coverage on runs held out of the intervals (80% intervals must cover 70-90% of them)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from optimizer.catalog import load_step_time_intervals
from hypothesis import given, settings
from hypothesis import strategies as st

from optimizer.errors import ClusteroptError
from optimizer.formulas import intervals as IV

DATA = Path(__file__).resolve().parent / "data"
#: The leave-one-source-out residuals the shipped intervals come from: issue 14's per-run file
#: when it is there (its step-time model), else this issue's first version.
RESIDUALS = DATA / "loso_results.csv" if (DATA / "loso_results.csv").exists() else DATA / "step_time_loso_residuals.csv"


@pytest.mark.parametrize("kw,regime", [
    (dict(params_total=8e9, cp=2, ep=2, zero=3, precision="fp8"), "cp"),          # cp first
    (dict(params_total=47e9, moe=True, zero=3, precision="fp8"), "moe"),
    (dict(params_total=70e9, zero=3, precision="fp8"), "zero3_fsdp"),
    (dict(params_total=70e9, zero=1, precision="fp8", tp=8, pp=8), "fp8"),
    (dict(params_total=175e9, tp=8, pp=8), "3d_gt100b"),
    (dict(params_total=175e9, tp=8, pp=1), "other"),                              # not 3D
    (dict(params_total=7e9, tp=2), "small_lt10b"),
    (dict(params_total=30e9), "other"),
])
def test_regime_precedence(kw, regime):
    assert IV.regime_of(**kw) == regime


def test_shipped_table_is_the_one_its_residuals_give():
    # catalog/step_time_intervals.csv is written from tests/data/step_time_loso_residuals.csv by
    # benchmarks/calibrate_efficiency.py --write-intervals; a hand edit of either breaks this
    shipped = load_step_time_intervals()
    again = IV.intervals_from_residuals(IV.read_residuals(RESIDUALS), method="", as_of="")
    for reg in (*IV.REGIMES, IV.POOLED):
        assert shipped[reg].log_ratio_p10 == pytest.approx(again[reg].log_ratio_p10, abs=1e-3)
        assert shipped[reg].log_ratio_p90 == pytest.approx(again[reg].log_ratio_p90, abs=1e-3)
        assert shipped[reg].n_runs == again[reg].n_runs


def test_80pct_intervals_cover_70_to_90pct_of_held_out_sources():
    # each source's runs against intervals built from the other sources only
    cov, n = IV.nested_coverage(IV.read_residuals(RESIDUALS))
    assert n >= 150
    assert 0.70 <= cov <= 0.90


def test_interval_keys_mirror_days_and_cost():
    iv = IV.Interval("other", math.log(0.8), math.log(1.1))
    k = IV.interval_keys(tokens_per_s=1000.0, interval=iv, train_days=10.0, wall_clock_days=11.0, cost_usd=5e5)
    assert k["tokens_per_s_p10"] == pytest.approx(800.0)
    assert k["tokens_per_s_p90"] == pytest.approx(1100.0)
    assert k["train_days_p90"] == pytest.approx(12.5)          # as slow as the p10 throughput
    assert k["train_days_p10"] == pytest.approx(10 / 1.1)
    assert k["wall_clock_days_p90"] == pytest.approx(11 / 0.8)
    assert k["cost_usd_p90"] == pytest.approx(5e5 / 0.8)


@settings(max_examples=60, deadline=None)
@given(lo=st.floats(-1.0, 0.5), w=st.floats(0.0, 1.5), q1=st.floats(0.01, 0.99), q2=st.floats(0.01, 0.99))
def test_quantiles_are_monotone_and_exact_at_p10_p90(lo, w, q1, q2):
    iv = IV.Interval("other", lo, lo + w)
    assert IV.log_ratio_quantile(iv, 0.1) == iv.log_ratio_p10
    assert IV.log_ratio_quantile(iv, 0.9) == iv.log_ratio_p90
    a, b = sorted((q1, q2))
    assert IV.log_ratio_quantile(iv, a) <= IV.log_ratio_quantile(iv, b) + 1e-12
    # a deadline that holds with higher confidence needs at least as much time
    assert IV.slow_factor(iv, b) >= IV.slow_factor(iv, a) - 1e-12


def test_bad_table_is_one_clean_error(tmp_path):
    p = tmp_path / "iv.csv"
    rows = ["regime,n_runs,n_sources,log_ratio_p10,log_ratio_p90,method,as_of"]
    rows += [f"{r},5,2,-0.1,0.1,m,2026" for r in IV.REGIMES if r != "fp8"] + ["fp8,5,2,0.3,0.1,m,2026", "all,5,2,-0.1,0.1,m,2026"]
    p.write_text("\n".join(rows) + "\n")
    with pytest.raises(ClusteroptError, match="p10"):
        load_step_time_intervals(str(p))
    with pytest.raises(ClusteroptError, match="confidence"):
        IV.log_ratio_quantile(IV.Interval("other", -0.1, 0.1), 1.0)


def test_calibrated_interval_keeps_only_the_within_source_share_of_its_regime():
    """A profile removes the user's bias: what is left of a regime's spread is its within-source
    share (pooled within-source sd over the pooled sd); a wider profile is cut to that, a
    narrower one is kept as it is."""
    from optimizer.formulas.intervals import Z90, Interval, calibrated_interval

    pooled = Interval("all", -2 * Z90 * 0.2 / 2, 2 * Z90 * 0.2 / 2)          # pooled sd 0.2
    regime = Interval("fp8", -0.1, 0.3)                                      # width 0.4
    wide = Interval("calibrated", -0.3, 0.5)                                 # width 0.8, centre 0.1
    cut = calibrated_interval(wide, regime, pooled, within_sd_log=0.15)
    assert cut.width == pytest.approx(0.4 * 0.15 / 0.2)                      # 0.3 < the regime's 0.4
    assert (cut.log_ratio_p10 + cut.log_ratio_p90) / 2 == pytest.approx(0.1)
    narrow = Interval("calibrated", 0.0, 0.1)
    assert calibrated_interval(narrow, regime, pooled, within_sd_log=0.15) is narrow
    # a within-source sd above the pooled sd never widens the regime
    assert calibrated_interval(wide, regime, pooled, within_sd_log=0.5).width == pytest.approx(0.4)
