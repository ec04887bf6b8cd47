"""Fleet procurement planner (issue 7): CP-SAT plans against exhaustive enumeration, each limit
guarded by a case that fails without it, explanations, the cost conventions, shipped portfolios."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given, settings, strategies as st

from optimizer.errors import ClusteroptError
from optimizer.search.portfolio import (GpuType, Instance, Job, Option, explain_infeasible_instance, interval_of,
                                        solve_instance, total_cost_units)


# ----------------------------------------------------------------------------------------
# exhaustive enumeration: every option choice x every start slot, the least owned fleet each
# ----------------------------------------------------------------------------------------

def enumerate_plans(inst: Instance):
    """Yield (cost_units, makespan_slots, gpus, nodes, rented) for every feasible schedule,
    computed directly from the rules (no CP-SAT)."""
    H, G = inst.horizon_slots, len(inst.gpus)
    for choice in itertools.product(*[range(len(j.options)) for j in inst.jobs]):
        opts = [job.options[k] for job, k in zip(inst.jobs, choice)]
        ranges = [[job.release] if job.kind == "serve" else range(job.release, H - o.slots + 1)
                  for job, o in zip(inst.jobs, opts)]
        for starts in itertools.product(*ranges):
            ok = True
            for j, job in enumerate(inst.jobs):
                if job.kind != "train":
                    continue
                end = starts[j] + opts[j].slots
                if job.deadline is not None and end > job.deadline:
                    ok = False
                if any(starts[j] < starts[i] + opts[i].slots for i in job.after):
                    ok = False
            if not ok:
                continue
            owned = [[0] * (H + 1) for _ in range(G)]
            rented = [[0] * (H + 1) for _ in range(G)]
            for j, o in enumerate(opts):
                s, e = interval_of(inst, j, o, starts[j])
                prof = owned if o.owned else rented
                for t in range(s, e):
                    prof[o.gpu][t] += o.n_gpus
            if inst.max_rented_gpus is not None and max(sum(rented[g][t] for g in range(G)) for t in range(H + 1)) > inst.max_rented_gpus:
                continue
            nodes = [-(-max(owned[g]) // inst.gpus[g].gpus_per_node) for g in range(G)]
            if any(n and not inst.gpus[g].can_buy for g, n in enumerate(nodes)):
                continue
            capex = sum(inst.node_capex_units(g) * n for g, n in enumerate(nodes))
            if inst.budget_units() is not None and capex > inst.budget_units():
                continue
            if inst.max_power_w is not None and sum(t.gpus_per_node * t.it_w_per_gpu * n for t, n in zip(inst.gpus, nodes)) > inst.max_power_w:
                continue
            if inst.max_nodes is not None and sum(nodes) > inst.max_nodes:
                continue
            if any(t.available is not None and n * t.gpus_per_node > t.available for t, n in zip(inst.gpus, nodes)):
                continue
            cost = total_cost_units(inst, choice, nodes)
            ends = [starts[j] + o.slots for j, o in enumerate(opts) if inst.jobs[j].kind == "train"]
            gpus = sum(n * t.gpus_per_node for n, t in zip(nodes, inst.gpus)) + sum(max(rented[g]) for g in range(G))
            used_rent = tuple(any(not o.owned and o.gpu == g for o in opts) for g in range(G))
            yield cost, max(ends, default=0), gpus, tuple(nodes), used_rent


def brute_key(row, objective):
    cost, ms, gpus = row[:3]
    return {"total_cost": (cost,), "makespan": (ms, cost), "gpus": (gpus, cost)}[objective]


def contains(fleet, other) -> bool:
    """fleet contains other: at least as many nodes of every type, rents every type other rents."""
    (n1, r1), (n2, r2) = fleet, other
    return all(a >= b for a, b in zip(n1, n2)) and all(a or not b for a, b in zip(r1, r2))


@st.composite
def instances(draw):
    n_gpu = draw(st.integers(1, 2))
    gpus = []
    for g in range(n_gpu):
        can_buy = draw(st.booleans()) if g else True
        can_rent = draw(st.booleans()) or not can_buy
        gpus.append(GpuType(
            name=f"G{g}", gpus_per_node=draw(st.sampled_from([1, 2, 4])), can_buy=can_buy,
            purchase_usd_per_node=draw(st.integers(1, 100)) * 10.0, fixed_usd_per_node=draw(st.integers(0, 60)) * 1.0,
            it_w_per_gpu=draw(st.integers(1, 10)) * 100,
            available=draw(_maybe(st.integers(0, 8))),
            rent_offer="offer" if can_rent else None, rent_usd_per_gpu_hour=1.0))
    H = draw(st.integers(3, 6))
    n_jobs = draw(st.integers(1, 3))
    jobs = []
    for j in range(n_jobs):
        kind = "serve" if j == n_jobs - 1 and draw(st.integers(0, 3)) == 0 else "train"
        opts = []
        for _ in range(draw(st.integers(1, 3))):
            g = draw(st.integers(0, n_gpu - 1))
            owned = gpus[g].can_buy if gpus[g].rent_offer is None else (draw(st.booleans()) if gpus[g].can_buy else False)
            slots = draw(st.integers(1, 2))
            opts.append(Option(gpu=g, owned=owned, n_gpus=draw(st.integers(1, 4)), slots=slots,
                               cost_usd=draw(st.integers(0, 40)) * 1.0, duration_days=slots))
        release = draw(st.integers(0, 1))
        deadline = draw(_maybe(st.integers(1, H)))
        after = tuple(i for i in range(j) if jobs[i].kind == "train" and draw(st.integers(0, 2)) == 0) if kind == "train" else ()
        jobs.append(Job(name=f"j{j}", kind=kind, options=tuple(opts), release=release,
                        deadline=deadline if kind == "train" else None, after=after))
    return Instance(name="random", gpus=tuple(gpus), jobs=tuple(jobs), horizon_slots=H, step_days=1.0,
                    horizon_days=float(H),
                    budget_usd=draw(_maybe(st.integers(0, 1500).map(float))),
                    max_power_w=draw(_maybe(st.integers(0, 8000))),
                    max_nodes=draw(_maybe(st.integers(0, 6))),
                    max_rented_gpus=draw(_maybe(st.integers(1, 8))))


def _maybe(strategy):
    """None (no limit) two times in three, else a drawn limit."""
    return st.one_of(st.none(), st.none(), strategy)


@settings(max_examples=60, deadline=None)
@given(instances(), st.sampled_from(["total_cost", "makespan", "gpus"]))
def test_plan_equals_exhaustive_enumeration(inst, objective):
    rows = list(enumerate_plans(inst))
    res = solve_instance(inst, objective, top_k=2, time_limit_s=20, workers=1, binding=False)
    if not rows:
        assert res["status"] == "infeasible" and not res["solutions"]
        return
    assert res["status"] == "optimal"
    best = min(brute_key(r, objective) for r in rows)
    first = res["solutions"][0]
    assert first.objective == best
    # the second fleet: the best schedule whose least fleet does not contain the first fleet
    f1 = first.key
    rest = [brute_key(r, objective) for r in rows if not contains((r[3], r[4]), f1)]
    if rest:
        assert len(res["solutions"]) == 2 and res["solutions"][1].objective == min(rest)
    else:
        assert len(res["solutions"]) == 1


# ----------------------------------------------------------------------------------------
# each limit, by a case whose optimum breaks it when the limit is ignored
# ----------------------------------------------------------------------------------------

OWN = GpuType(name="X", gpus_per_node=8, purchase_usd_per_node=1000.0, fixed_usd_per_node=100.0, it_w_per_gpu=1000,
              rent_offer="cloud", rent_usd_per_gpu_hour=1.0)


def _inst(jobs, **kw):
    base = dict(name="t", gpus=(OWN,), jobs=tuple(jobs), horizon_slots=4, step_days=1.0, horizon_days=4.0)
    base.update(kw)
    return Instance(**base)


def _job(name, *opts, **kw):
    return Job(name=name, kind=kw.pop("kind", "train"), options=tuple(opts), **kw)


def test_precedence_orders_jobs():
    # Two 2-slot jobs; makespan 2 if they overlap (renting both), 4 when b must follow a.
    a = _job("a", Option(0, False, 8, 2, 10.0))
    b = _job("b", Option(0, False, 8, 2, 10.0), after=(0,))
    res = solve_instance(_inst([a, b]), "makespan", binding=False, workers=1)
    sol = res["solutions"][0]
    assert sol.starts[1] >= sol.starts[0] + 2
    assert sol.objective[0] == 4
    free = solve_instance(_inst([a, _job("b", Option(0, False, 8, 2, 10.0))]), "makespan", binding=False, workers=1)
    assert free["solutions"][0].objective[0] == 2          # without the rule the optimum overlaps them


def test_deadline_forces_the_fast_option():
    slow_cheap, fast_dear = Option(0, False, 8, 4, 10.0), Option(0, False, 32, 1, 50.0)
    dl = solve_instance(_inst([_job("a", slow_cheap, fast_dear, deadline=2)]), binding=False, workers=1)
    assert dl["solutions"][0].choice == [1]
    free = solve_instance(_inst([_job("a", slow_cheap, fast_dear)]), binding=False, workers=1)
    assert free["solutions"][0].choice == [0]


def _owned_vs_rented():
    # Owning costs 100 (fixed) + 1 (power); renting 500: buying wins unless a limit forbids it.
    return [_job("a", Option(0, True, 8, 4, 1.0), Option(0, False, 8, 4, 500.0))]


@pytest.mark.parametrize("limit", [dict(budget_usd=999.0), dict(max_power_w=7999), dict(max_nodes=0)])
def test_fleet_limit_forces_renting(limit):
    free = solve_instance(_inst(_owned_vs_rented()), binding=False, workers=1)["solutions"][0]
    assert free.nodes == [1] and free.choice == [0]
    res = solve_instance(_inst(_owned_vs_rented(), **limit), binding=True, workers=1)
    sol = res["solutions"][0]
    assert sol.nodes == [0] and sol.choice == [1]
    assert res["binding"] == [next(iter({"budget_usd": "budget", "max_power_w": "power", "max_nodes": "max_nodes"}[k]
                                        for k in limit))]


def test_stock_limits_owned_gpus():
    from dataclasses import replace

    inst = _inst(_owned_vs_rented(), gpus=(replace(OWN, available=4),))
    sol = solve_instance(inst, binding=False, workers=1)["solutions"][0]
    assert sol.nodes == [0]


def test_owned_capacity_is_shared_over_time():
    # Two 8-GPU jobs of 2 slots in a 4-slot horizon share one owned node one after the other.
    jobs = [_job("a", Option(0, True, 8, 2, 1.0)), _job("b", Option(0, True, 8, 2, 1.0))]
    sol = solve_instance(_inst(jobs), binding=False, workers=1)["solutions"][0]
    assert sol.nodes == [1]
    assert abs(sol.starts[0] - sol.starts[1]) >= 2


def test_serving_holds_capacity_for_the_whole_horizon():
    # A serving job from slot 0 holds its 8 GPUs to the end: a training job needs another node.
    jobs = [_job("chat", Option(0, True, 8, 4, 1.0), kind="serve"), _job("a", Option(0, True, 8, 1, 1.0))]
    sol = solve_instance(_inst(jobs), binding=False, workers=1)["solutions"][0]
    assert sol.nodes == [2]


# ----------------------------------------------------------------------------------------
# explanations
# ----------------------------------------------------------------------------------------

def test_explains_a_deadline_that_no_option_meets():
    inst = _inst([_job("a", Option(0, False, 8, 3, 10.0), Option(0, False, 16, 2, 10.0), deadline=1)])
    assert solve_instance(inst, binding=False, workers=1)["status"] == "infeasible"
    ex = explain_infeasible_instance(inst, workers=1)
    assert ex["conflicts"] == [["deadline:a"]]
    assert ex["relaxations"]["jobs.a.deadline_days"] == pytest.approx(2.0)   # the faster option's 2 slots
    assert {"reason", "lines", "relaxations"} <= set(ex)
    assert any("deadline" in ln for ln in ex["lines"])


def test_explains_a_budget_with_the_least_capex():
    from dataclasses import replace

    only_own = replace(OWN, rent_offer=None)
    inst = _inst([_job("a", Option(0, True, 16, 2, 1.0))], gpus=(only_own,), budget_usd=1500.0)
    ex = explain_infeasible_instance(inst, workers=1)
    assert ex["conflicts"] == [["budget"]]
    assert ex["relaxations"]["budget_usd"] == pytest.approx(2000.0)         # two nodes of $1,000


def test_explains_a_job_without_options():
    ex = explain_infeasible_instance(_inst([_job("a", notes=("no layout fits in memory",))]))
    assert "a" in ex["reason"] and any("memory" in ln for ln in ex["lines"])
