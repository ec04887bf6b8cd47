"""The training search (issue 4): CP-SAT top-K against exhaustive enumeration through evaluate(),
explanations that really relax, determinism, and monotone properties."""

import itertools

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import optimizer
import optimizer.pricing
from optimizer.catalog import load_catalog
from optimizer.search.train.evaluate import evaluate_training
from optimizer.search.train.solve import solve_training
from optimizer.scenario import list_scenarios
from optimizer.errors import ClusteroptError
from optimizer.search.api import solve

SMALL_GPUS = ["H100-SXM5-80GB", "A100-SXM4-80GB", "L40S"]


def small_scenario(**over):
    sc = {
        "name": "small", "model": "llama-2-7b",
        "train": {"tokens": 2e10, "seq_len": 2048, "global_batch": 32},
        "constraints": {"gpus": SMALL_GPUS, "max_gpus": 32},
        "search": {"tp": [1, 2, 4], "pp": [1, 2], "micro_batch": [1, 2], "zero": [0, 1, 3],
                   "recompute": ["none", "full"], "precision": ["bf16"]},
        "objective": "cost", "top_k": 6,
    }
    for k, v in over.items():
        if isinstance(v, dict):
            sc[k] = {**sc.get(k, {}), **v}
        else:
            sc[k] = v
    return optimizer.load_scenario(sc)


def exhaustive(scenario):
    """Every configuration of the pinned space, kept by the documented search rules, evaluated
    one by one through evaluate(); feasible ones sorted by the objective's keys."""
    s, g = scenario.search, scenario.train.global_batch
    out = []
    gpus = optimizer.pricing.gpu_options(scenario, load_catalog())[0]
    names = list(dict.fromkeys(g.name for g in gpus))      # a GPU has one option per offer (issue 17)
    for name, tp, pp, mb, zero, rec in itertools.product(names, s.tp, s.pp, s.micro_batch, s.zero, s.recompute):
        for dp in range(1, g // mb + 1):
            if g % (mb * dp):
                continue
            if dp == 1 and zero != min(s.zero):
                continue                   # documented search rule: ZeRO stages identical at dp = 1
            cfg = {"gpu": name, "n_gpus": tp * pp * dp, "tp": tp, "pp": pp, "dp": dp, "cp": 1, "ep": 1,
                   "zero": zero, "precision": "bf16", "micro_batch": mb, "recompute": rec,
                   "sequence_parallel": tp > 1}
            ev = evaluate_training(scenario, cfg, gpus=gpus)
            if ev.feasible:
                out.append(ev)
    key = {"cost": lambda e: (e.cost_usd, e.wall_clock_days, e.config["n_gpus"]),
           "time": lambda e: (e.wall_clock_days, e.cost_usd, e.config["n_gpus"]),
           "gpus": lambda e: (e.config["n_gpus"], e.cost_usd, e.wall_clock_days)}[scenario.objective]
    return sorted(out, key=key)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(objective=st.sampled_from(["cost", "time", "gpus"]),
       budget=st.one_of(st.none(), st.floats(2e3, 4e4)),
       deadline=st.one_of(st.none(), st.floats(0.5, 20)),
       max_gpus=st.sampled_from([4, 8, 16, 32]),
       gpus=st.sets(st.sampled_from(SMALL_GPUS), min_size=1, max_size=3))
def test_top_k_matches_exhaustive_enumeration(objective, budget, deadline, max_gpus, gpus):
    sc = small_scenario(objective=objective, constraints={
        "budget_usd": budget, "deadline_days": deadline, "max_gpus": max_gpus, "gpus": sorted(gpus)})
    res = solve(sc)
    ref = exhaustive(sc)
    col = {"cost": "cost_usd", "time": "wall_clock_days", "gpus": "n_gpus"}[objective]
    got = list(res.configs[col])
    want = [getattr(e, col) if col != "n_gpus" else e.config["n_gpus"] for e in ref][: sc.top_k]
    assert got == pytest.approx(want, rel=1e-9)
    assert res.status == ("optimal" if ref else "infeasible")
    assert len(set(map(tuple, res.configs[["gpu", "n_gpus", "tp", "pp", "dp", "zero", "micro_batch",
                                           "recompute"]].values.tolist()))) == len(res.configs)


def test_same_input_same_output():
    a, b = solve(small_scenario()), solve(small_scenario())
    assert a.configs.equals(b.configs)


def test_result_is_readable_as_mapping_and_attributes():
    r = solve(small_scenario())
    assert r["status"] == r.status == "optimal"
    assert list(r["configs"]["rank"]) == list(range(1, len(r.configs) + 1))
    for k in ("pareto", "explanation"):
        assert r[k] is getattr(r, k)


def test_budget_relaxation_is_exactly_the_least_that_works():
    sc = small_scenario(constraints={"budget_usd": 50.0})
    res = solve(sc)
    assert res.status == "infeasible"
    need = res.explanation["relaxations"]["budget_usd"]
    assert "budget" in res.explanation["binding"]
    assert any("relax budget_usd" in line for line in res.explanation["lines"])
    assert solve(sc.with_overrides({"constraints.budget_usd": need * 1.0001})).status == "optimal"
    assert solve(sc.with_overrides({"constraints.budget_usd": need * 0.999})).status == "infeasible"


def test_memory_infeasibility_names_the_need_against_the_capacity():
    sc = optimizer.load_scenario({
        "name": "too-big", "model": "llama-3.1-405b",
        "train": {"tokens": 1e12, "seq_len": 8192, "global_batch": 64},
        "constraints": {"gpus": ["A100-SXM4-80GB"], "max_gpus": 8},
        "search": {"zero": [0]}})
    res = solve(sc)
    assert res.status == "infeasible"
    assert ["memory", "max_gpus"] in res.explanation["conflicts"]
    text = " ".join(res.explanation["lines"])
    assert "memory: the smallest layout within the GPU count limit needs" in text and "A100-SXM4-80GB has 85.9 GB" in text
    n = res.explanation["relaxations"]["max_gpus"]
    assert solve(sc.with_overrides({"constraints.max_gpus": n})).status == "optimal"


def test_evaluate_reports_violations_and_figures():
    sc = small_scenario(constraints={"budget_usd": 1.0})
    ev = optimizer.evaluate(sc, {"gpu": "h100", "n_gpus": 6, "tp": 4, "pp": 1, "dp": 2, "cp": 1, "ep": 1,
                                 "zero": 1, "precision": "bf16", "micro_batch": 1, "recompute": "none",
                                 "sequence_parallel": True})
    assert not ev.feasible
    assert any(v.startswith("dp x tp x pp x cp = 8 != n_gpus = 6") for v in ev.violations)
    assert any(v.startswith("budget:") for v in ev.violations)
    assert ev["cost_usd"] > 0 and 0 < ev.mfu < 1 and ev.memory_per_gpu_bytes > 0


def test_evaluate_rejects_unknown_gpu_with_suggestion():
    with pytest.raises(ClusteroptError) as e:
        optimizer.evaluate(small_scenario(), {"gpu": "H100-SXM6", "n_gpus": 1, "tp": 1, "pp": 1, "dp": 1, "cp": 1,
                                              "ep": 1, "zero": 0, "precision": "bf16", "micro_batch": 1,
                                              "recompute": "none", "sequence_parallel": False})
    assert "did you mean" in str(e.value) and str(e.value).startswith("config.gpu")


@settings(max_examples=8, deadline=None)
@given(factor=st.floats(1.0, 3.0))
def test_more_memory_never_removes_a_feasible_configuration(factor):
    from dataclasses import replace

    from optimizer.pricing import gpu_options
    from optimizer.search.train.table import build_table

    sc = small_scenario()
    gpus, _ = gpu_options(sc, load_catalog())
    big = [replace(g, hardware=replace(g.hardware, memory_bytes=int(g.hardware.memory_bytes * factor))) for g in gpus]
    t0, t1 = build_table(sc.spec(), sc, gpus), build_table(sc.spec(), sc, big)
    assert np.all(t1.feasible[t0.feasible])


@settings(max_examples=8, deadline=None)
@given(factor=st.floats(1.0, 5.0))
def test_a_higher_price_never_lowers_a_cost(factor):
    from dataclasses import replace

    from optimizer.pricing import gpu_options
    from optimizer.search.train.table import build_table, reprice

    sc = small_scenario()
    gpus, _ = gpu_options(sc, load_catalog())
    t0 = build_table(sc.spec(), sc, gpus)
    dear = [replace(g, usd_per_gpu_hour=g.usd_per_gpu_hour * factor,
                    usd_per_instance_hour=g.usd_per_instance_hour * factor) for g in gpus]
    t1 = reprice(t0, sc, dear)
    assert np.all(t1.cols["cost_usd"] >= t0.cols["cost_usd"] - 1e-9)
    cat = load_catalog()
    assert (solve_training(sc, table=t1, catalog=cat).configs["cost_usd"].iloc[0]
            >= solve_training(sc, table=t0, catalog=cat).configs["cost_usd"].iloc[0] - 1e-9)


@pytest.mark.parametrize("name", list_scenarios())
def test_every_shipped_scenario_solves_to_optimal(name):
    res = solve(name)
    assert res.status == "optimal", res.explanation
    top = res.configs.iloc[0]
    assert top["memory_per_gpu_bytes"] <= top["memory_capacity_bytes"]
    # issue 17: every configuration of the top-K is priced on an offer that can run its layout,
    # and names that offer with its interconnect (serving fleets: each billing pool's offer)
    if "interconnect" in res.configs.columns:
        from test_offers_search import check_offers_run_layouts

        check_offers_run_layouts(res.configs)
        assert res.configs["interconnect"].notna().all()
    if "instances" in res.configs.columns:
        for fleet in res.configs.to_dict(orient="records"):
            assert fleet["usd_per_1k_requests"] > 0 and fleet["usd_per_month"] > 0
            assert all(i["offer"] for i in fleet["instances"])
