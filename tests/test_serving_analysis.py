"""Sweeps and sensitivity of serving scenarios (issue 6: 'the same sensitivity, sweeps ... as
training scenarios'): every point equals a direct solve; thresholds bracket a real switch."""

from __future__ import annotations

import pytest

from optimizer.scenario import load_scenario
from optimizer.search.serve.solve import solve_serving
from optimizer.search.serve.sensitivity import fleet_key, serving_sensitivity
from optimizer.search.api import sweep
from optimizer.catalog import load_catalog  # noqa: E402
import functools  # noqa: E402

# The planners take the caller's catalog (issue 18); these tests pass the default one.
_CAT = load_catalog()
solve_serving = functools.partial(solve_serving, catalog=_CAT)


NAME = "llama3-8b-aws-mixed"


def _best(sc):
    r = solve_serving(sc, top_k=1, pareto=False, explain=False)
    return r.configs.iloc[0] if len(r.configs) else None


def test_sweep_points_equal_direct_solves():
    sc = load_scenario(NAME)
    rates = [100, 300]
    df = sweep(sc, workers=1, vary={"serve.requests_per_s": rates, "serve.redundancy": ["none", "n+1"]})
    assert len(df) == 4
    for _, row in df.iterrows():
        direct = _best(sc.with_overrides({"serve.requests_per_s": row["serve.requests_per_s"],
                                          "serve.redundancy": row["serve.redundancy"]}))
        assert row["status"] == "optimal"
        assert row["usd_per_hour"] == pytest.approx(direct["usd_per_hour"])
        assert row["gpu"] == direct["gpu"]
    # more demand never costs less; n+1 never costs less than none
    for red in ("none", "n+1"):
        sub = df[df["serve.redundancy"] == red].sort_values("serve.requests_per_s")
        assert list(sub["usd_per_hour"]) == sorted(sub["usd_per_hour"])
    for q in rates:
        sub = df[df["serve.requests_per_s"] == q].set_index("serve.redundancy")
        assert sub.at["n+1", "usd_per_hour"] >= sub.at["none", "usd_per_hour"]


def test_sweep_reports_infeasible_points_with_explanation():
    df = sweep(load_scenario("mixtral-stock-limited"), {"constraints.budget_usd_per_hour": [10, 60]}, workers=1)
    assert list(df["status"]) == ["infeasible", "optimal"]
    assert "budget" in df["explanation"].iloc[0]


def test_sensitivity_thresholds_bracket_a_switch():
    sc = load_scenario(NAME)
    res = solve_serving(sc, top_k=1)
    base = fleet_key(res.configs.iloc[0]["replicas"])
    s = serving_sensitivity(res, sc, inputs=["serve.requests_per_s", "price.A100-SXM4-80GB",
                                             "constraints.budget_usd_per_hour"], range_pct=40, grid=8)
    names = {(t["input"], t["direction"]) for t in s["thresholds"]}
    assert names == {(n, d) for n in ("serve.requests_per_s", "price.A100-SXM4-80GB",
                                      "constraints.budget_usd_per_hour") for d in ("up", "down")}
    budget = [t for t in s["thresholds"] if t["input"] == "constraints.budget_usd_per_hour"]
    assert all(t["change_pct"] is None and t["note"] for t in budget)
    up = next(t for t in s["thresholds"] if t["input"] == "serve.requests_per_s" and t["direction"] == "up")
    assert up["change_pct"] is not None and 0 < up["change_pct"] <= 40
    q = sc.serve.requests_per_s
    before = _best(sc.with_overrides({"serve.requests_per_s": q * (1 + up["unchanged_pct"] / 100)}))
    after = _best(sc.with_overrides({"serve.requests_per_s": q * (1 + up["change_pct"] / 100)}))
    assert fleet_key(before["replicas"]) == base
    assert fleet_key(after["replicas"]) != base
    assert up["change_pct"] - up["unchanged_pct"] <= s["tolerance_pct"] + 1e-9
    # the tornado's ends are re-optimised objectives: more demand costs at least as much
    t = next(e for e in s["tornado"] if e["input"] == "serve.requests_per_s")
    assert t["low"] <= t["base"] <= t["high"]
