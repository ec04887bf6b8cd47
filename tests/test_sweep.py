"""Sweeps: every point equals a single ``solve`` of the same scenario, infeasible points carry
their explanation, the marginal column is what its definition says, and value specs parse."""

from __future__ import annotations

import math

import pandas as pd
import pytest

import optimizer
from optimizer.errors import ClusteroptError
from optimizer.search.api import solve
from optimizer.search.sweep import parse_values, resolve_path
from optimizer.search.api import sweep
from optimizer.search.train.table import CONFIG_KEYS

BASE = {
    "name": "sweep-8b",
    "model": "llama-3-8b",
    "train": {"tokens": 1e12, "seq_len": 8192, "global_batch_tokens": 4e6},
    "constraints": {"gpus": ["H100-SXM5-80GB", "A100-SXM4-80GB", "L40S"]},
    "search": {"micro_batch": [1, 2], "zero": [1]},
    "objective": "time",
}


def _single(sc_dict_or_obj, values: dict) -> dict:
    sc = optimizer.load_scenario(sc_dict_or_obj).with_overrides(values)
    res = solve(sc, top_k=1)
    out = {"status": res.status}
    if len(res.configs):
        row = res.configs.iloc[0]
        out.update({k: (row[k].item() if hasattr(row[k], "item") else row[k]) for k in CONFIG_KEYS})
        out["cost_usd"] = float(row["cost_usd"])
        out["wall_clock_days"] = float(row["wall_clock_days"])
    else:
        out["explanation"] = "; ".join(res.explanation.get("lines", []))
    return out


@pytest.fixture(scope="module")
def budget_sweep():
    vary = {"constraints.budget_usd": "2e4:5e5:7:log", "pricing.mode": ["on_demand", "spot"]}
    return sweep(BASE, vary, workers=1)


def test_sweep_reproduces_single_solves_point_by_point(budget_sweep):
    df = budget_sweep
    assert len(df) == 14
    assert set(df["status"]) >= {"optimal", "infeasible"}       # the grid crosses the feasibility edge
    for _, r in df.iterrows():
        values = {"constraints.budget_usd": r["constraints.budget_usd"], "pricing.mode": r["pricing.mode"]}
        one = _single(BASE, values)
        assert r["status"] == one["status"], values
        if one["status"] == "infeasible":
            assert r["explanation"] and r["explanation"] == one["explanation"]
            continue
        for k in CONFIG_KEYS:
            assert r[k] == one[k], (values, k)
        assert r["cost_usd"] == pytest.approx(one["cost_usd"], rel=1e-12)
        assert r["wall_clock_days"] == pytest.approx(one["wall_clock_days"], rel=1e-12)


def test_table_changing_axis_in_worker_processes_matches_single_solves():
    vary = {"train.seq_len": [4096, 8192], "constraints.deadline_days": [5.0, 60.0]}
    df = sweep(BASE, vary, workers=2)
    assert list(df["train.seq_len"]) == [4096, 4096, 8192, 8192]
    for _, r in df.iterrows():
        values = {"train.seq_len": int(r["train.seq_len"]), "constraints.deadline_days": r["constraints.deadline_days"]}
        one = _single(BASE, values)
        assert r["status"] == one["status"]
        if one["status"] != "infeasible":
            assert {k: r[k] for k in CONFIG_KEYS} == {k: one[k] for k in CONFIG_KEYS}


def test_marginal_value_is_days_saved_per_extra_million(budget_sweep):
    df = budget_sweep
    for mode, g in df.groupby("pricing.mode", sort=False):
        prev = None
        for i, r in g.iterrows():
            if r["status"] == "infeasible":
                assert math.isnan(r["days_saved_per_extra_musd"])
                continue
            if prev is not None and r["cost_usd"] > prev["cost_usd"]:
                want = (prev["wall_clock_days"] - r["wall_clock_days"]) / ((r["cost_usd"] - prev["cost_usd"]) / 1e6)
                assert r["days_saved_per_extra_musd"] == pytest.approx(want)
            prev = r


def test_more_budget_never_slows_the_fastest_plan(budget_sweep):
    for _, g in budget_sweep.groupby("pricing.mode", sort=False):
        days = g.loc[g["status"] != "infeasible", "wall_clock_days"].to_list()
        assert all(b <= a + 1e-12 for a, b in zip(days, days[1:]))


def test_parse_values():
    assert parse_values("1e6:1e8:3:log") == pytest.approx([1e6, 1e7, 1e8])
    assert parse_values("0:10:3") == [0.0, 5.0, 10.0]
    assert parse_values("30,60,90") == [30, 60, 90]
    assert parse_values("on_demand,spot") == ["on_demand", "spot"]
    assert parse_values("1.5e12") == [1.5e12]
    for bad in ("1:2", "a:b:3", "1:10:0", "-1:10:3:log", "1:10:3:cubic"):
        with pytest.raises(ClusteroptError):
            parse_values(bad)


def test_bare_names_resolve_and_unknown_names_fail():
    sc = optimizer.load_scenario(BASE)
    assert resolve_path(sc, "budget_usd") == "constraints.budget_usd"
    assert resolve_path(sc, "deadline_days") == "constraints.deadline_days"
    assert resolve_path(sc, "tokens") == "train.tokens"
    with pytest.raises(ClusteroptError, match="--vary"):
        resolve_path(sc, "budgett_usd")
    with pytest.raises(ClusteroptError):
        sweep(BASE, {"constraints.budget_usd": ["lots"]})


def test_sweep_returns_a_dataframe_with_one_row_per_point(budget_sweep):
    assert isinstance(budget_sweep, pd.DataFrame)
    assert {"status", "explanation", "gpu", "cost_usd", "wall_clock_days", "n_gpus",
            "days_saved_per_extra_musd"} <= set(budget_sweep.columns)


def test_ray_executor_matches_process_pool():
    pytest.importorskip("ray")
    vary = {"constraints.budget_usd": [3e5, 1e6, 3e6]}
    a = sweep(BASE, vary, workers=1)
    b = sweep(BASE, vary, executor="ray")
    pd.testing.assert_frame_equal(a, b)
