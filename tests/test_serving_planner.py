"""The serving fleet planner (issue 6): the CP-SAT fleet model against exhaustive enumeration,
each limit with a case that fails without it, mixed fleets, explanations, shipped scenarios."""

from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from optimizer.catalog import load_catalog
from optimizer.errors import ClusteroptError
from optimizer.scenario import list_scenarios, load_scenario
from optimizer.search.serve import fleet as fm
from optimizer.search.serve.table import FLEET_COLUMNS as COLUMNS, REPLICA_KEYS, serving_table
from optimizer.search.serve.problem import reduce_options
from optimizer.search.serve.solve import solve_serving
import functools  # noqa: E402

# The planners take the caller's catalog (issue 18); these tests pass the default one.
_CAT = load_catalog()
solve_serving = functools.partial(solve_serving, catalog=_CAT)



# ----------------------------------------------------------------------------------------
# exhaustive reference for the fleet model
# ----------------------------------------------------------------------------------------

def _exhaustive(p: fm.FleetProblem) -> list[tuple[int, int]]:
    """Keys (primary, GPUs in replicas) of every MINIMAL feasible fleet, sorted, by brute force.

    Minimal: no replica can be removed with the coverage rule still met (coverage only grows
    as replicas are added, so checking single removals is enough). Counts up to U[r] suffice:
    a fleet with more copies of r contains the feasible fleet of U[r] copies of r alone."""
    keys = []
    ranges = [range(p.upper(r) + 1) for r in range(len(p.options))]
    for counts in itertools.product(*ranges):
        if not fm.covers(p, counts):
            continue
        f = fm.fleet_figures(p, counts)
        if fm.violated(p, f, counts):
            continue
        if any(c > 0 and fm.covers(p, counts[:i] + (c - 1,) + counts[i + 1:]) for i, c in enumerate(counts)):
            continue
        keys.append(f.key)
    return sorted(keys)


@st.composite
def fleet_problems(draw, max_options=4):
    n_pools = draw(st.integers(1, 3))
    n_types = draw(st.integers(1, n_pools))
    pool_type = tuple(draw(st.integers(0, n_types - 1)) for _ in range(n_pools))   # pools: GPU type x offer
    n_opt = draw(st.integers(1, max_options))
    opts = tuple(fm.FleetOption(gpu=draw(st.integers(0, n_pools - 1)), n_gpus=draw(st.sampled_from([1, 2, 4])),
                                cap=draw(st.integers(500, 6000))) for _ in range(n_opt))
    spares = draw(st.integers(0, 2))
    demand = draw(st.integers(500, 9000))
    gpi = tuple(draw(st.sampled_from([1, 2, 4, 8])) for _ in range(n_pools))
    price = tuple(draw(st.integers(1000, 90000)) for _ in range(n_pools))
    available = tuple(draw(st.one_of(st.none(), st.integers(0, 24))) for _ in range(n_types))
    p = fm.FleetProblem(options=opts, demand=demand, spares=spares, gpi=gpi, price=price, available=available,
                        pool_type=pool_type,
                        max_gpus=draw(st.one_of(st.none(), st.integers(1, 40))),
                        budget=draw(st.one_of(st.none(), st.integers(5000, 400000))),
                        max_types=draw(st.one_of(st.none(), st.integers(1, 3))),
                        objective=draw(st.sampled_from(["cost", "gpus"])))
    # keep the enumeration small (issue 6: 'small fleets')
    size = math.prod(p.upper(r) + 1 for r in range(n_opt))
    if size > 4000:
        p = dataclasses.replace(p, demand=max(500, demand // 4))
    return p


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fleet_problems())
def test_fleet_model_matches_exhaustive_enumeration(p):
    """The K best fleets CP-SAT returns are the K best minimal feasible fleets by brute force
    (same keys, in order), each feasible, and the status is optimal (proven)."""
    ref = _exhaustive(p)
    k = 3
    res = fm.solve_fleets(p, k, time_limit_s=20)
    got = [f.key for f in res.fleets]
    assert got == ref[:k]
    assert res.status == ("optimal" if ref else "infeasible")
    for f in res.fleets:
        assert fm.covers(p, f.counts)
        assert not fm.violated(p, f, f.counts)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fleet_problems(), st.data())
def test_cutoff_finds_a_strictly_better_fleet_exactly_when_one_exists(p, data):
    """``better_than`` (the explanations' 'is there a strictly better fleet?'): with any key as
    the cutoff, the answer is the best minimal fleet before it by brute force, or none."""
    ref = _exhaustive(p)
    key = data.draw(st.sampled_from(ref + [(0, 0), (10**9, 10**6)]) if ref else st.just((10**9, 10**6)))
    res = fm.solve_fleets(p, 1, time_limit_s=20, better_than=key)
    before = [k for k in ref if k < key]
    assert [f.key for f in res.fleets] == before[:1]
    assert res.status == ("optimal" if before else "infeasible")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fleet_problems(), st.data())
def test_lazy_capacities_give_the_exact_ranking(p, data):
    """Lazy simulated capacities (search/serve/capacity.py): options start at upper bounds and are
    refined only when a fleet uses them; the K fleets returned are those of the problem with
    every capacity exact (some refined to nothing: blocked)."""
    true = [data.draw(st.integers(0, o.cap)) for o in p.options]
    exact = dataclasses.replace(p, options=tuple(
        fm.FleetOption(o.gpu, o.n_gpus, max(c, 1), o.items, blocked=c == 0) for o, c in zip(p.options, true)))
    calls = []

    def refine(i, o):
        calls.append(i)
        return fm.FleetOption(o.gpu, o.n_gpus, max(true[i], 1), o.items, exact=True, blocked=true[i] == 0)

    lazy = dataclasses.replace(p, options=tuple(dataclasses.replace(o, exact=False) for o in p.options),
                               refine=refine)
    want = fm.solve_fleets(exact, 3, time_limit_s=20)
    got = fm.solve_fleets(lazy, 3, time_limit_s=20)
    assert [f.key for f in got.fleets] == [f.key for f in want.fleets]
    assert all(fm.covers(exact, f.counts) for f in got.fleets)    # feasible with the exact capacities
    assert len(calls) == len(set(calls))          # each option refined once


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fleet_problems(max_options=3), st.data())
def test_dominance_reduction_keeps_the_optimum(p, data):
    """Adding options of an existing (GPU type, size) class with LOWER capacity never changes the
    optimum: the reduction serving.reduce_options makes is exact."""
    extra = tuple(fm.FleetOption(o.gpu, o.n_gpus, data.draw(st.integers(1, o.cap))) for o in p.options)
    big = dataclasses.replace(p, options=p.options + extra)
    a = fm.solve_fleets(p, 1).fleets
    b = fm.solve_fleets(big, 1).fleets
    assert [f.key[0] for f in a] == [f.key[0] for f in b]


@given(st.floats(0.01, 500), st.floats(0.05, 1.0), st.lists(st.floats(0.001, 80), min_size=1, max_size=6))
def test_integer_units_are_conservative(rps, util, caps):
    """Capacities round down and demand rounds up, so an integer cover is a real cover."""
    d = fm.demand_units(rps, util)
    c = fm.capacity_units(caps)
    assert d >= rps / util * fm.MILLI - 1e-6
    assert np.all(c <= np.asarray(caps) * fm.MILLI + 1e-6)
    if c.sum() >= d:
        assert sum(caps) >= rps / util * (1 - 1e-12)


# ----------------------------------------------------------------------------------------
# each rule with a case that fails without it
# ----------------------------------------------------------------------------------------

def _p(**kw):
    base = dict(options=(fm.FleetOption(0, 1, 5000),), demand=4000, spares=0, gpi=(1,), price=(10000,),
                available=(None,))
    base.update(kw)
    return fm.FleetProblem(**base)


def test_redundancy_n_plus_1_adds_the_largest_replica():
    # one replica of 5 req/s covers 4 req/s; with n+1 the fleet must survive losing it
    assert fm.solve_fleets(_p()).fleets[0].counts == (1,)
    assert fm.solve_fleets(_p(spares=1)).fleets[0].counts == (2,)


def test_redundancy_removes_the_largest_replica_not_any_replica():
    # big (cap 9, $4) + small (cap 3, $1), demand 6, one spare. {big, small} covers 12 but losing
    # the big one leaves 3 < 6; removing 'any one replica' must mean the largest. Cheapest:
    # three smalls ($3; losing one leaves 6). Without the spare: two smalls.
    opts = (fm.FleetOption(0, 1, 9000), fm.FleetOption(1, 1, 3000))
    p = _p(options=opts, demand=6000, spares=1, gpi=(1, 1), price=(40000, 10000), available=(None, None))
    best = fm.solve_fleets(p).fleets[0]
    assert fm.covers(p, best.counts)
    assert not fm.covers(p, (1, 1))
    # the cheapest: three smalls (cost 3) -> losing one leaves 6 >= 6
    assert best.counts == (0, 3)
    assert fm.solve_fleets(dataclasses.replace(p, spares=0)).fleets[0].counts == (0, 2)


def test_stock_counts_gpus_rented():
    # the cheap type has 2 GPUs of stock in 2-GPU instances: 2 replicas at most, the rest on the dear type
    opts = (fm.FleetOption(0, 1, 1000), fm.FleetOption(1, 1, 1000))
    p = _p(options=opts, demand=4000, gpi=(2, 1), price=(10000, 30000), available=(2, None))
    best = fm.solve_fleets(p).fleets[0]
    assert best.counts == (2, 2)
    unlimited = fm.solve_fleets(dataclasses.replace(p, available=(None, None))).fleets[0]
    assert unlimited.counts == (4, 0)
    # 3 GPUs of stock still allows only one 2-GPU instance
    assert fm.solve_fleets(dataclasses.replace(p, available=(3, None))).fleets[0].counts == (2, 2)


def test_budget_and_max_gpus_cut_fleets():
    p = _p(demand=12000)                        # 3 replicas at $1/hour
    assert fm.solve_fleets(p).fleets[0].cost == 30000
    assert fm.solve_fleets(dataclasses.replace(p, budget=29999)).status == "infeasible"
    assert fm.solve_fleets(dataclasses.replace(p, budget=30000)).status == "optimal"
    assert fm.solve_fleets(dataclasses.replace(p, max_gpus=2)).status == "infeasible"


def test_replicas_share_instances():
    """Replicas of one GPU type pack into whole instances: three TP=4 replicas (12 GPUs) on
    8-GPU instances rent two instances (16 GPUs); a TP=4 and four TP=1 replicas fill one."""
    opts = (fm.FleetOption(0, 4, 1000), fm.FleetOption(0, 1, 200))
    p = _p(options=opts, gpi=(8,), price=(80000,), available=(None,))
    f = fm.fleet_figures(p, (3, 0))
    assert (f.instances, f.gpus, f.gpus_used, f.cost) == ((2,), 16, 12, 160000)
    f = fm.fleet_figures(p, (1, 4))
    assert (f.instances, f.gpus, f.gpus_used) == ((1,), 8, 8)


def test_max_types_limits_distinct_options():
    opts = (fm.FleetOption(0, 1, 3000), fm.FleetOption(1, 1, 2000))
    p = _p(options=opts, demand=5000, gpi=(1, 1), price=(12000, 10000), available=(1, 1))
    assert fm.solve_fleets(p).fleets[0].counts == (1, 1)
    assert fm.solve_fleets(dataclasses.replace(p, max_types=1)).status == "infeasible"


# ----------------------------------------------------------------------------------------
# the planner on scenarios
# ----------------------------------------------------------------------------------------

SERVING = [n for n in list_scenarios() if load_scenario(n).serve is not None and load_scenario(n).train is None]


def test_at_least_four_serving_scenarios_ship():
    assert len(SERVING) >= 4


@pytest.mark.parametrize("name", SERVING)
def test_every_shipped_serving_scenario_solves_or_explains(name):
    sc = load_scenario(name)
    r = solve_serving(sc, time_limit_s=20)
    assert r.status in ("optimal", "infeasible")
    assert r["explanation"]["lines"]
    if r.status == "infeasible":
        assert len(r.configs) == 0 and r.explanation["reason"] != "feasible"
        return
    df = r.configs
    assert list(df.columns) == list(COLUMNS)
    assert list(df["rank"]) == list(range(1, len(df) + 1))
    assert np.all(np.diff(df["objective"]) >= -1e-9)
    serve, cons = sc.serve, sc.constraints
    spares = {"none": 0, "n+1": 1}.get(serve.redundancy, serve.redundancy)
    for _, row in df.iterrows():
        reps = row["replicas"]
        assert all(set(REPLICA_KEYS) <= set(x) for x in reps)
        caps = sorted((x["requests_per_s"] for x in reps for _ in range(x["count"])), reverse=True)
        assert sum(caps[spares:]) >= serve.requests_per_s / serve.max_utilization
        for x in reps:
            if serve.slo.ttft_p99_s is not None:
                assert x["ttft_s"] <= serve.slo.ttft_p99_s
            if serve.slo.itl_p99_s is not None:
                assert x["itl_s"] <= serve.slo.itl_p99_s
            assert 0 < x["memory_headroom"] < 1
        if cons.budget_usd_per_hour is not None:
            assert row["usd_per_hour"] <= cons.budget_usd_per_hour + 1e-9
        if cons.max_gpus is not None:
            assert row["n_gpus"] <= cons.max_gpus
        assert row["n_gpus"] >= row["n_gpus_used"] == sum(x["count"] * x["gpus_per_replica"] for x in reps)
        mtok = serve.requests_per_s * serve.output_tokens.mean * 3600 / 1e6
        assert row["usd_per_mtoken"] == pytest.approx(row["usd_per_hour"] / mtok)
        assert row["utilization"] == pytest.approx(serve.requests_per_s / row["capacity_requests_per_s"])
    # the Pareto front: cheaper points are slower; the cheapest costs what rank 1 costs (cost objective)
    pf = r.pareto
    assert len(pf) >= 1
    assert np.all(np.diff(pf["usd_per_hour"]) > 0) and np.all(np.diff(pf["worst_ttft_s"]) < 0)
    if r.objective == "cost":
        assert pf["usd_per_hour"].iloc[0] == pytest.approx(df["usd_per_hour"].iloc[0])


def test_issue_example_llama3_70b_chat():
    r = solve_serving("llama3-70b-chat", top_k=3)
    assert r.status == "optimal" and len(r.configs) == 3
    best = r.configs.iloc[0]
    assert best["usd_per_hour"] <= 400
    # every GPU type within its stock
    for x in best["replicas"]:
        assert x["gpu"] in ("H100-SXM5-80GB", "L40S", "A100-SXM4-80GB")
    assert r.explanation["reason"] == "feasible"


def _best_usd(sc):
    r = solve_serving(sc, top_k=1)
    return r.configs["usd_per_hour"].iloc[0] if len(r.configs) else math.inf


def test_mixed_fleet_beats_best_single_type():
    """llama3-8b-aws-mixed: AWS rents H100 and A100 by the 8-GPU instance; the optimum mixes
    types and is strictly cheaper than the best fleet of any single type."""
    sc = load_scenario("llama3-8b-aws-mixed")
    r = solve_serving(sc, top_k=1)
    best = r.configs.iloc[0]
    assert len({x["gpu"] for x in best["replicas"]}) >= 2
    singles = [_best_usd(sc.with_overrides({"constraints.gpus": [g]})) for g in sc.constraints.gpus]
    assert best["usd_per_hour"] < min(singles) - 1e-6


def test_stock_rule_binds_on_stock_limited_scenario():
    sc = load_scenario("mixtral-stock-limited")
    r = solve_serving(sc, top_k=1)
    best = r.configs.iloc[0]
    used = {}
    for x in best["replicas"]:
        used[x["gpu"]] = used.get(x["gpu"], 0) + x["count"] * x["gpus_per_replica"]
    for g, n in sc.constraints.available.items():
        assert used.get(g, 0) <= n
    assert "stock" in r.explanation["binding"]
    free = solve_serving(sc.with_overrides({"constraints.available": {}}), top_k=1).configs.iloc[0]
    free_h100 = sum(x["count"] * x["gpus_per_replica"] for x in free["replicas"] if x["gpu"] == "H100-SXM5-80GB")
    assert free_h100 > sc.constraints.available["H100-SXM5-80GB"]       # the rule mattered
    assert free["usd_per_hour"] < best["usd_per_hour"]


def test_redundancy_on_a_scenario():
    sc = load_scenario("mixtral-stock-limited").with_overrides({"constraints.available": {}})
    n1 = solve_serving(sc, top_k=1).configs.iloc[0]
    none = solve_serving(sc.with_overrides({"serve.redundancy": "none"}), top_k=1).configs.iloc[0]
    need = sc.serve.requests_per_s / sc.serve.max_utilization
    assert none["capacity_requests_per_s"] >= need
    assert n1["capacity_after_failures_requests_per_s"] >= need
    assert none["usd_per_hour"] < n1["usd_per_hour"]
    # the 'none' fleet would not survive losing its largest replica
    assert none["capacity_after_failures_requests_per_s"] == none["capacity_requests_per_s"]
    caps = sorted((x["requests_per_s"] for x in none["replicas"] for _ in range(x["count"])), reverse=True)
    assert sum(caps[1:]) < need


def test_budget_infeasible_explains_the_least_budget():
    sc = load_scenario("mixtral-stock-limited")
    best = solve_serving(sc, top_k=1).configs["usd_per_hour"].iloc[0]
    tight = sc.with_overrides({"constraints.budget_usd_per_hour": best - 0.01})
    r = solve_serving(tight, top_k=1)
    assert r.status == "infeasible" and len(r.configs) == 0
    assert "budget" in r.explanation["reason"]
    assert r.explanation["relaxations"]["budget_usd_per_hour"] == pytest.approx(best, abs=1e-3)
    assert any("budget_usd_per_hour" in line for line in r.explanation["lines"])
    again = solve_serving(tight.with_overrides({"constraints.budget_usd_per_hour": best + 1e-3}), top_k=1)
    assert again.status == "optimal"


def test_impossible_slo_names_the_fastest_ttft():
    sc = load_scenario("llama3-70b-chat").with_overrides({"serve.slo.ttft_p99_s": 0.01})
    r = solve_serving(sc, top_k=1)
    assert r.status == "infeasible"
    e = r.explanation
    assert e["options"]["meet_all"] == 0 and e["options"]["meet_ttft"] == 0
    assert ["ttft"] in e["conflicts"]
    assert e["relaxations"]["ttft_p99_s"] >= e["options"]["fastest_ttft_s"] > 0.01
    # the relaxation is exact: at that SLO a fleet exists
    ok = solve_serving(sc.with_overrides({"serve.slo.ttft_p99_s": e["relaxations"]["ttft_p99_s"]}), top_k=1)
    assert ok.status == "optimal"


def test_max_gpus_and_stock_conflict_explained():
    sc = load_scenario("mixtral-stock-limited").with_overrides({"constraints.max_gpus": 4})
    r = solve_serving(sc, top_k=1)
    assert r.status == "infeasible"
    assert "max_gpus" in r.explanation["binding"]
    need = r.explanation["relaxations"]["max_gpus"]
    ok = solve_serving(sc.with_overrides({"constraints.max_gpus": need}), top_k=1)
    assert ok.status == "optimal" and ok.configs["n_gpus"].iloc[0] == need


def test_objectives_gpus_and_cost_per_mtoken():
    sc = load_scenario("llama31-8b-rag")
    by_cost = solve_serving(sc, top_k=1, objective="cost").configs.iloc[0]
    by_mtok = solve_serving(sc, top_k=1, objective="cost_per_mtoken").configs.iloc[0]
    by_gpus = solve_serving(sc, top_k=1, objective="gpus").configs.iloc[0]
    assert by_mtok["usd_per_hour"] == pytest.approx(by_cost["usd_per_hour"])
    assert by_mtok["objective"] == pytest.approx(by_mtok["usd_per_mtoken"])
    assert by_gpus["n_gpus"] <= by_cost["n_gpus"]
    assert by_gpus["objective"] == by_gpus["n_gpus"]
    with pytest.raises(ClusteroptError):
        solve_serving(sc, objective="time")


def test_table_flags_follow_the_documented_rules():
    sc = load_scenario("llama3-70b-chat")
    from optimizer.pricing import gpu_options

    gpus, _ = gpu_options(sc, load_catalog())
    t = serving_table(sc.spec(), sc, gpus)
    c = t.cols
    assert np.array_equal(c["ok_ttft"], c["ttft_s"] <= sc.serve.slo.ttft_p99_s)
    assert np.array_equal(c["ok_itl"], c["itl_s"] <= sc.serve.slo.itl_p99_s)
    assert np.all(c["usd_per_hour"] > 0)
    # the reduction keeps one option per (billing pool, GPUs per replica): the fitting row with most capacity
    feas = np.nonzero(t.feasible)[0]
    red = reduce_options(t, feas)
    keys = {(q, int(c["gpus_per_replica"][r])) for r in feas for q in range(len(t.pools)) if t.fits_pool(int(r), q)}
    assert len(red) == len(keys) == len({(int(q), int(c["gpus_per_replica"][r])) for r, q in zip(red.rows, red.pools)})
    for r, q in zip(red.rows, red.pools):
        same = [x for x in feas if t.fits_pool(int(x), int(q)) and c["gpus_per_replica"][x] == c["gpus_per_replica"][r]]
        assert c["capacity_units"][r] == c["capacity_units"][same].max()
        assert t.pools[q].offer in ("owned", "scenario price") or c["tp"][r] <= t.pools[q].gpus_per_instance
    # a 70B model in bf16 does not fit one 48 GB L40S
    l40s = [g.index for g in gpus if g.name == "L40S"][0]
    rows = (c["gpu"] == l40s) & (c["tp"] == 1) & (c["weights"] == "bf16")
    assert rows.any() and not c["ok_memory"][rows].any()


def test_serve_schema_rejects_negative_spares():
    with pytest.raises(ClusteroptError):
        load_scenario("llama3-70b-chat").with_overrides({"serve.redundancy": -1})
    with pytest.raises(ClusteroptError):
        load_scenario("llama3-70b-chat").with_overrides({"serve.max_replica_types": 0})


def test_billing_pools_one_per_instance_size():
    """Each rented GPU type is billed through the cheapest offer per GPU of each instance size
    its offers come in (catalog/offers.csv), in the scenario's mode and provider."""
    from optimizer.catalog import load_catalog
    from optimizer.pricing import gpu_options
    from optimizer.search.serve.table import billing_pools

    cat = load_catalog()
    sc = load_scenario("llama3-70b-chat").with_overrides({"pricing.provider": "RunPod"})
    gpus, _ = gpu_options(sc, load_catalog())
    pools, types = billing_pools(sc, gpus)
    for g in gpus:
        mine = [p for p, h in zip(pools, types) if h == g.index]
        offers = [o for o in cat.offers(g.name, "RunPod") if o.usd_per_gpu_hour("on_demand") is not None]
        assert sorted(p.gpus_per_instance for p in mine) == sorted({o.gpus_per_instance for o in offers})
        for p in mine:
            same = [o.usd_per_gpu_hour("on_demand") for o in offers if o.gpus_per_instance == p.gpus_per_instance]
            assert p.usd_per_gpu_hour == pytest.approx(min(same))
            assert p.usd_per_instance_hour == pytest.approx(p.usd_per_gpu_hour * p.gpus_per_instance)


@pytest.mark.parametrize("name", ["llama3-70b-chat", "llama3-8b-aws-mixed"])
def test_tp_groups_fit_in_one_rented_instance(name):
    """A TP=4 replica cannot run on 1-GPU rentals: every replica's TP group fits its offer's
    instance, and the instances rented hold every replica's GPUs."""
    r = solve_serving(name, top_k=3)
    t = r.table
    size = {p.offer: p.gpus_per_instance for p in t.pools}
    for _, row in r.configs.iterrows():
        for x in row["replicas"]:
            assert x["tp"] <= size[x["offer"]]
        for inst in row["instances"]:
            used = sum(x["count"] * x["gpus_per_replica"] for x in row["replicas"] if x["offer"] == inst["offer"])
            assert inst["count"] * inst["gpus_per_instance"] >= used > (inst["count"] - 1) * inst["gpus_per_instance"]
        assert row["usd_per_hour"] == pytest.approx(sum(i["usd_per_hour"] for i in row["instances"]))


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_vectorised_table_rows_equal_scalar_estimates(data):
    """Each row of the table (one vectorised estimator call per group) equals a scalar
    estimate_serving call at the documented lengths: mean lengths for throughput and memory,
    p99 lengths for TTFT and ITL, batch cap = max_num_seqs, memory cap = 1 - memory_headroom."""
    from optimizer.formulas.serving import estimate_serving
    from optimizer.pricing import gpu_options

    sc = load_scenario("llama31-8b-rag")
    gpus, _ = gpu_options(sc, load_catalog())
    t = _table_cache(sc, gpus)
    r = data.draw(st.integers(0, len(t) - 1))
    c, g = t.cols, gpus[int(t.cols["gpu"][r])]
    L = t.lengths
    kw = dict(tp=int(c["tp"][r]), pp=int(c["pp"][r]), weights=str(c["weights"][r]), kv=str(c["kv"][r]),
              batch=int(c["batch"][r]), max_num_seqs=int(c["batch"][r]),
              gpu_memory_utilization=1 - sc.constraints.memory_headroom)
    mean = estimate_serving(sc.spec(), g.hardware, prompt_len=L["prompt_mean"], output_len=L["output_mean"], **kw)
    tail = estimate_serving(sc.spec(), g.hardware, prompt_len=L["prompt_p99"], output_len=L["output_p99"], **kw)
    assert c["requests_per_s"][r] == pytest.approx(mean.requests_per_s, rel=1e-12)
    assert c["memory_per_gpu_bytes"][r] == pytest.approx(mean.memory_per_gpu.total, rel=1e-12)
    assert c["ttft_s"][r] == pytest.approx(tail.ttft_s, rel=1e-12)
    assert c["itl_s"][r] == pytest.approx(tail.itl_s, rel=1e-12)
    assert bool(c["ok_memory"][r]) == (bool(mean.fits) and tail.max_concurrent_seqs >= 1)


_TABLES: dict = {}


def _table_cache(sc, gpus):
    if sc.name not in _TABLES:
        _TABLES[sc.name] = serving_table(sc.spec(), sc, gpus)
    return _TABLES[sc.name]


def test_api_solve_dispatches_serving_scenarios():
    import optimizer

    a = optimizer.solve("llama31-8b-rag", top_k=2)
    b = solve_serving("llama31-8b-rag", top_k=2)
    assert a.status == b.status == "optimal"
    assert list(a.configs["usd_per_hour"]) == pytest.approx(list(b.configs["usd_per_hour"]))


def test_no_single_relaxation_reports_the_unlimited_fleet():
    """A100 only, under the stock-limited scenario's budget and stock: neither limit alone can be
    relaxed to a fleet, so the explanation names both conflicts and the fleet without limits."""
    sc = load_scenario("mixtral-stock-limited").with_overrides({"constraints.gpus": ["A100-SXM4-80GB"]})
    r = solve_serving(sc, top_k=1)
    e = r.explanation
    assert r.status == "infeasible"
    assert ["budget"] in e["conflicts"] and ["stock"] in e["conflicts"]
    w = e["relaxations"]["without_limits"]
    assert w["usd_per_hour"] > sc.constraints.budget_usd_per_hour
    assert w["gpus"]["A100-SXM4-80GB"] > sc.constraints.available["A100-SXM4-80GB"]
    free = solve_serving(sc.with_overrides({"constraints.available": {}, "constraints.budget_usd_per_hour": None,
                                            "constraints.max_gpus": None, "serve.max_replica_types": None}), top_k=1)
    assert free.configs["usd_per_hour"].iloc[0] == pytest.approx(w["usd_per_hour"], abs=1e-3)


def test_evaluate_fleet_checks_a_given_fleet():
    """evaluate_fleet (the serving counterpart of api.evaluate) agrees with the solver on its
    fleets and names each broken rule of fleets the solver would not return."""
    from optimizer.search.serve.evaluate import evaluate_fleet as _evaluate_fleet
    evaluate_fleet = functools.partial(_evaluate_fleet, catalog=_CAT)

    sc = load_scenario("mixtral-stock-limited")
    best = solve_serving(sc, top_k=1).configs.iloc[0]
    ev = evaluate_fleet(sc, best["replicas"])
    assert ev["feasible"] and ev["violations"] == []
    assert ev["usd_per_hour"] == pytest.approx(best["usd_per_hour"])
    assert ev["n_gpus"] == best["n_gpus"]
    # one replica fewer: the n+1 rule breaks
    fewer = [dict(x) for x in best["replicas"]]
    fewer[0]["count"] -= 1
    ev = evaluate_fleet(sc, fewer)
    assert not ev["feasible"] and any(v.startswith("capacity:") for v in ev["violations"])
    # a TP=4 H100 replica on RunPod's 1-GPU rental cannot run
    one = [{"gpu": "H100-SXM5-80GB", "tp": 4, "pp": 1, "weights": "fp8", "kv": "fp8", "batch": 64, "count": 1,
            "offer": "RunPod 1x_H100-SXM_COMMUNITY"}]
    ev = evaluate_fleet(sc.with_overrides({"pricing.provider": "RunPod"}), one)
    assert any(v.startswith("offer:") for v in ev["violations"])
    # too many H100 for the stock, and over budget
    many = [{"gpu": "H100-SXM5-80GB", "tp": 1, "pp": 1, "weights": "fp8", "kv": "fp8", "batch": 128, "count": 24}]
    ev = evaluate_fleet(sc, many)
    assert any(v.startswith("stock:") for v in ev["violations"])
    assert any(v.startswith("budget:") for v in ev["violations"])
    with pytest.raises(ClusteroptError):
        evaluate_fleet(sc, [{"gpu": "H100-SXM", "tp": 1}])


def test_pareto_points_are_least_cost_under_their_ttft():
    """Each point of the cost / worst-TTFT front is the cheapest fleet when the TTFT SLO is set
    to that point's worst TTFT (the epsilon-constraint definition of the front)."""
    sc = load_scenario("mixtral-stock-limited").with_overrides({"constraints.available": {},
                                                                 "constraints.budget_usd_per_hour": None,
                                                                 "constraints.max_gpus": None})
    r = solve_serving(sc, top_k=1)
    pf = r.pareto
    assert len(pf) >= 2
    for _, p in pf.head(4).iterrows():
        capped = solve_serving(sc.with_overrides({"serve.slo.ttft_p99_s": float(p["worst_ttft_s"])}),
                               top_k=1, pareto=False, explain=False)
        assert capped.configs["usd_per_hour"].iloc[0] == pytest.approx(p["usd_per_hour"], abs=1e-6)
