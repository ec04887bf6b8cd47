"""``plan``: the portfolio planner's entry point, its decode, and the checks on every plan."""

from __future__ import annotations

import math
import time
from dataclasses import replace, dataclass, field
from typing import Any, Mapping, Optional
import numpy as np

from optimizer.catalog import Catalog
from optimizer.errors import ClusteroptError
from optimizer.formulas.investment import OwnedPlanMoney
from optimizer.portfolio_schema import BuySpec, load_portfolio
from optimizer.search.core.result import AttrMapping
from optimizer.search.portfolio.explain import explain_infeasible_instance
from optimizer.search.portfolio.instance import (HOURS_PER_DAY, Instance, OBJECTIVES, build_instance, interval_of,
                                                 rent_offer_for)
from optimizer.search.portfolio.model import Solution, solve_instance
from optimizer.search.train.evaluate import evaluate_training

# ----------------------------------------------------------------------------------------
# decode: a plan as plain data
# ----------------------------------------------------------------------------------------

def plan_detail(inst: Instance, sol: Solution, binding: list[str] = ()) -> dict:
    """The fleet, rentals, schedule, cost split and utilisation of one solution (plain data)."""
    dt = inst.step_days
    H_days = inst.horizon_days
    fleet, rent, schedule = [], [], []
    busy = [0.0] * len(inst.gpus)              # owned GPU-days
    power_usd = rent_usd = 0.0
    for j, job in enumerate(inst.jobs):
        o = job.options[sol.choice[j]]
        t = inst.gpus[o.gpu]
        if job.kind == "serve":
            start = job.release * dt if job.release * dt > 0 else 0.0
            start_day, end_day = start, H_days
        else:
            start_day = sol.starts[j] * dt
            end_day = start_day + o.duration_days
        rec = {"job": job.name, "kind": job.kind, "gpu": t.name, "source": "owned" if o.owned else "rented",
               "n_gpus": o.n_gpus, "n_nodes": -(-o.n_gpus // t.gpus_per_node),
               "start_day": start_day, "end_day": end_day, "duration_days": o.duration_days,
               "grid_end_day": (sol.starts[j] + o.slots) * dt if job.kind == "train" else H_days,
               "deadline_days": job.deadline_days, "cost_usd": o.cost_usd}
        rec.update({k: v for k, v in o.detail.items()})
        schedule.append(rec)
        if o.owned:
            busy[o.gpu] += o.n_gpus * o.duration_days
            power_usd += o.cost_usd
        else:
            rent_usd += o.cost_usd
            chosen = rent_offer_for(t, o.n_gpus, o.duration_days * HOURS_PER_DAY)
            if "rent_offer" in o.detail:          # timed and billed on one offer (issue 17)
                chosen = (o.cost_usd, o.detail["rent_offer"], o.detail["rent_usd_per_gpu_hour"])
            rent.append({"job": job.name, "gpu": t.name, "n_gpus": o.n_gpus, "start_day": start_day, "end_day": end_day,
                         "hours": o.duration_days * HOURS_PER_DAY, "usd": o.cost_usd,
                         "offer": chosen[1] if chosen else t.rent_offer,
                         "usd_per_gpu_hour": chosen[2] if chosen else t.rent_usd_per_gpu_hour})
    capex_share = hosting = maint = purchase = 0.0
    power_kw = 0.0
    util = {}
    for g, n in enumerate(sol.nodes):
        if n <= 0:
            continue
        t = inst.gpus[g]
        gpus = n * t.gpus_per_node
        fleet.append({"gpu": t.name, "nodes": n, "gpus": gpus, "purchase_usd": n * t.purchase_usd_per_node,
                      "capex_share_usd": n * t.capex_share_usd_per_node, "hosting_usd": n * t.hosting_usd_per_node,
                      "maintenance_usd": n * t.maintenance_usd_per_node,
                      "it_power_kw": gpus * t.it_w_per_gpu / 1000.0,
                      "utilization": busy[g] / (gpus * H_days)})
        util[t.name] = busy[g] / (gpus * H_days)
        capex_share += n * t.capex_share_usd_per_node
        hosting += n * t.hosting_usd_per_node
        maint += n * t.maintenance_usd_per_node
        purchase += n * t.purchase_usd_per_node
        power_kw += gpus * t.it_w_per_gpu / 1000.0
    owned_gpus = sum(f["gpus"] for f in fleet)
    opex = power_usd + hosting + maint
    ends = [r["end_day"] for r in schedule if r["kind"] == "train"]
    investment = plan_investment(inst, sol) if owned_gpus else None
    return {
        "npv_usd": None if investment is None else investment["npv_usd"],
        "payback_years": None if investment is None else investment["payback_years"],
        "roi_pct": None if investment is None else investment["roi_pct"],
        "investment": investment,
        "fleet": fleet,
        "rent": rent,
        "schedule": schedule,
        "cost": {"capex_usd": capex_share, "opex_usd": opex, "rent_usd": rent_usd,
                 "total_usd": capex_share + opex + rent_usd, "purchase_usd": purchase,
                 "power_usd": power_usd, "hosting_usd": hosting, "maintenance_usd": maint},
        "owned_gpus": owned_gpus,
        "owned_power_kw": power_kw,
        "utilization": {"overall": (sum(busy) / (owned_gpus * H_days)) if owned_gpus else None, **util},
        "makespan_days": max(ends) if ends else 0.0,
        "binding": list(binding),
        "objective_units": list(sol.objective),
        "status": sol.status,
    }


def plan_investment(inst: Instance, sol: Solution) -> Optional[dict]:
    """NPV, payback, ROI and buy-versus-rent flip points of the plan's owned fleet against renting
    the same jobs (formulas/investment.py). The horizon's owned work is taken as the fleet's
    steady yearly load: rent of the owned jobs (each on its cheapest runnable offer), their power
    and the fleet's hosting are scaled to a year (x 365.25 / horizon days); maintenance is a share
    of capex; the fleet lives ``fleet.buy.years``. None when an owned job could not be rented
    (no rented alternative to compare with)."""
    buy = inst.buy if inst.buy is not None else BuySpec()
    per_year = 365.25 / inst.horizon_days
    rent_alt = power = 0.0
    for j, job in enumerate(inst.jobs):
        o = job.options[sol.choice[j]]
        if not o.owned:
            continue
        alt = rent_offer_for(inst.gpus[o.gpu], o.n_gpus, o.duration_days * HOURS_PER_DAY)
        if alt is None:
            return None
        rent_alt += alt[0]
        power += o.cost_usd
    owned = [(inst.gpus[g], n) for g, n in enumerate(sol.nodes) if n > 0]
    capex_gpus = sum(n * t.gpu_purchase_usd_per_node for t, n in owned)
    capex = sum(n * t.purchase_usd_per_node for t, n in owned)
    hosting = sum(n * t.hosting_usd_per_node for t, n in owned)
    money = OwnedPlanMoney(capex_gpus_usd=capex_gpus, capex_other_usd=capex - capex_gpus,
                           rent_usd_per_year=rent_alt * per_year, power_usd_per_year=power * per_year,
                           hosting_usd_per_year=hosting * per_year,
                           maintenance_pct_per_year=buy.maintenance_pct_per_year,
                           staff_usd_per_year=buy.staff_usd_per_year, years=buy.years,
                           discount_rate=buy.discount_rate, residual_pct=buy.residual_pct)
    f = money.figures()
    return {"npv_usd": f.npv_usd, "payback_years": f.payback_years, "roi_pct": f.roi_pct, "irr": f.irr,
            "capex_usd": f.capex_usd, "residual_usd": f.residual_usd, "rent_usd_per_year": f.rent_usd_per_year,
            "owned_opex_usd_per_year": f.owned_opex_usd_per_year, "staff_usd_per_year": f.staff_usd_per_year,
            "saving_usd_per_year": f.saving_usd_per_year, "discount_rate": f.discount_rate, "years": f.years,
            "residual_pct": buy.residual_pct, "flips": money.flips()}


def verify(inst: Instance, sol: Solution) -> None:
    """Check a decoded solution against the rules directly (not through CP-SAT); raise on any miss."""
    H = inst.horizon_slots
    for j, job in enumerate(inst.jobs):
        o = job.options[sol.choice[j]]
        s, e = interval_of(inst, j, o, sol.starts[j])
        if job.kind == "train":
            if s < job.release or e > H:
                raise RuntimeError(f"{job.name}: runs [{s},{e}) outside [{job.release},{H}]")
            if job.deadline is not None and e > job.deadline:
                raise RuntimeError(f"{job.name}: ends at slot {e} after its deadline {job.deadline}")
            for i in job.after:
                oi = inst.jobs[i].options[sol.choice[i]]
                if s < sol.starts[i] + oi.slots:
                    raise RuntimeError(f"{job.name}: starts before {inst.jobs[i].name} ends")
    for g, t in enumerate(inst.gpus):
        use = np.zeros(H + 1, dtype=np.int64)
        for j, job in enumerate(inst.jobs):
            o = job.options[sol.choice[j]]
            if o.owned and o.gpu == g:
                s, e = interval_of(inst, j, o, sol.starts[j])
                use[s:e] += o.n_gpus
        if use.max(initial=0) > sol.nodes[g] * t.gpus_per_node:
            raise RuntimeError(f"{t.name}: {use.max()} GPUs busy at once on {sol.nodes[g] * t.gpus_per_node} owned")
    if inst.max_rented_gpus is not None:
        use = np.zeros(H + 1, dtype=np.int64)
        for j, job in enumerate(inst.jobs):
            o = job.options[sol.choice[j]]
            if not o.owned:
                s, e = interval_of(inst, j, o, sol.starts[j])
                use[s:e] += o.n_gpus
        if use.max(initial=0) > inst.max_rented_gpus:
            raise RuntimeError(f"{use.max()} rented GPUs at once > fleet.rent.max_gpus {inst.max_rented_gpus}")
    b = inst.budget_units()
    if b is not None and sum(inst.node_capex_units(g) * n for g, n in enumerate(sol.nodes)) > b:
        raise RuntimeError("capex over budget")
    if inst.max_power_w is not None and sum(t.gpus_per_node * t.it_w_per_gpu * n for t, n in zip(inst.gpus, sol.nodes)) > inst.max_power_w:
        raise RuntimeError("owned fleet over the power limit")
    if inst.max_nodes is not None and sum(sol.nodes) > inst.max_nodes:
        raise RuntimeError("owned fleet over max_nodes")
    for t, n in zip(inst.gpus, sol.nodes):
        if t.available is not None and n * t.gpus_per_node > t.available:
            raise RuntimeError(f"{t.name}: {n * t.gpus_per_node} owned > {t.available} available")


def verify_layouts(inst: Instance, sol: Solution) -> None:
    """Re-evaluate each chosen training layout through ``evaluate_training`` (the scalar path): it must
    be feasible and take the duration the model used. Raise on any disagreement."""

    if not inst.sources:
        return
    for j, job in enumerate(inst.jobs):
        o = job.options[sol.choice[j]]
        if job.kind != "train" or "config" not in o.detail:
            continue
        gpus = inst.sources["gpu_options"]
        if "rent_offer" in o.detail:        # a rental: timed on its offer's option (issue 17)
            gpus = [replace(g, index=0) for g in inst.sources.get("rent_options", {}).get(j, [])
                    if g.offer == o.detail["rent_offer"]][:1]
        ev = evaluate_training(inst.sources["scenarios"][j], o.detail["config"], gpus=gpus)
        bad = [v for v in ev.violations if not v.startswith("deadline")]
        if bad or not math.isclose(ev.wall_clock_days, o.duration_days, rel_tol=1e-9, abs_tol=1e-9):
            raise RuntimeError(f"{job.name}: evaluate_training() disagrees with the option table for {o.detail['config']}: "
                               f"{ev.wall_clock_days} vs {o.duration_days} days; {bad}")


def total_cost_units(inst: Instance, choice, nodes) -> int:
    """The integer total_cost objective of a choice of options and node counts (cents)."""
    return (sum(inst.node_fixed_units(g) * n for g, n in enumerate(nodes))
            + sum(job.options[k].cost_units for job, k in zip(inst.jobs, choice)))


# ----------------------------------------------------------------------------------------
# public entry points
# ----------------------------------------------------------------------------------------

@dataclass
class PlanResult(AttrMapping):
    portfolio: str
    status: str                          # optimal | feasible | infeasible | unknown
    objective: str
    plan: Optional[dict]
    alternatives: list[dict]
    explanation: dict
    stats: dict = field(default_factory=dict)
    instance: Any = None                 # the Instance solved (re-solve with build_instance(prices=...))
    sensitivity: Optional[Any] = None    # plan_sensitivity's {tornado, thresholds}, when asked for
    slack: Optional[dict] = None         # plan_slack's limits at the best plan (set by api.plan)


def plan(portfolio, *, top_k: Optional[int] = None, objective: Optional[str] = None, time_limit_s: float = 30.0,
         catalog: Catalog, prices: Optional[Mapping[str, float]] = None, binding: bool = True,
         workers: int = 2) -> PlanResult:
    """Plan a portfolio: the fleet to buy, what to rent and when, each job's schedule and layout.

    ``top_k`` distinct fleets are ranked (default: the portfolio's ``top_k``); ``objective`` is
    total_cost, makespan or gpus (default: the portfolio's). ``prices`` scales catalog prices
    (``purchase.<gpu>``, ``rent.<gpu>``, ``price.<gpu>`` -> factor) so that a sensitivity
    routine can re-solve with perturbed prices; option tables are cached between calls.
    """

    p = load_portfolio(portfolio, catalog)
    objective = objective or p.objective
    if objective not in OBJECTIVES:
        raise ClusteroptError("objective", f"unknown objective {objective!r}", "allowed: " + ", ".join(OBJECTIVES))
    from optimizer.inputs import integer, number

    k = p.top_k if top_k is None else integer("top_k", top_k, 1, 100)
    time_limit_s = min(number("time_limit_s", time_limit_s, gt=0, allow_inf=True), 86400.0)
    t0 = time.perf_counter()
    inst = build_instance(p, catalog=catalog, prices=prices)
    t_build = time.perf_counter() - t0
    res = solve_instance(inst, objective, k, time_limit_s=time_limit_s, workers=workers, binding=binding)
    sols = res["solutions"]
    for s in sols:
        verify(inst, s)
        verify_layouts(inst, s)
    plans = [plan_detail(inst, s, res["binding"] if i == 0 else ()) for i, s in enumerate(sols)]
    for i, pl in enumerate(plans):
        pl["rank"] = i + 1
    notes = list(inst.notes) + [n for job in inst.jobs for n in job.notes]
    if sols and binding:
        explanation = _binding_explanation(res["binding"], res.get("binding_undecided", []))
    elif sols:
        explanation = {"reason": "feasible", "binding": None, "lines": []}
    elif res["status"] != "infeasible":
        explanation = {"reason": "time limit", "binding": None, "relaxations": {},
                       "lines": [f"no plan found within {time_limit_s:g} s; raise the time limit or coarsen time_step_days"]}
    else:
        full = build_instance(p, catalog=catalog, prices=prices, prune=False)
        explanation = explain_infeasible_instance(full, time_limit_s=max(5.0, time_limit_s / 2), workers=workers)
    explanation["notes"] = notes + [f"time grid: {inst.step_days * 24:g} h slots" if inst.step_days < 1
                                    else f"time grid: {inst.step_days:g}-day slots; durations rounded up, deadlines down"]
    stats = {"build_s": t_build, "solve_s": res["solve_time_s"], "total_s": time.perf_counter() - t0,
             "options": sum(len(j.options) for j in inst.jobs), "jobs": len(inst.jobs), "slots": inst.horizon_slots,
             "step_days": inst.step_days, "options_per_job": {j.name: len(j.options) for j in inst.jobs}}
    return PlanResult(portfolio=p.name, status=res["status"], objective=objective, plan=plans[0] if plans else None,
                      alternatives=plans[1:], explanation=explanation, stats=stats, instance=inst)


def _binding_explanation(binding: list[str], undecided: list[str] = ()) -> dict:
    lines = [f"binding: {b.replace(':', ' ')} (without it the optimum would improve)" for b in binding]
    if undecided:
        lines.append("binding or not, undecided within the time limit: " + ", ".join(undecided))
    elif not binding:
        lines.append("no limit binds: the plan is the best fleet regardless of the limits")
    return {"reason": "feasible", "binding": list(binding), "binding_undecided": list(undecided), "lines": lines}


def plan_separately(portfolio, **kw) -> dict:
    """Each job planned on its own (its own fleet, the same fleet rules and horizon), for
    comparison with the joint plan. Precedence is kept: jobs are planned in precedence order
    and a job starts no earlier than its predecessors' planned ends (``from_day``).
    Returns {'jobs': {name: PlanResult}, 'total_usd': sum or None, 'status': worst status}."""

    p = load_portfolio(portfolio)
    names = [j.name for j in p.jobs]
    order: list[str] = []
    while len(order) < len(names):               # precedence order (the schema rejects cycles)
        for j in p.jobs:
            if j.name not in order and all(a in order for a in j.start_after):
                order.append(j.name)
    out, ends, total, status = {}, {}, 0.0, "optimal"
    for name in order:
        j = p.job(name)
        release = max([j.from_day] + [ends[a] for a in j.start_after if ends.get(a) is not None])
        data = p.model_dump(mode="python", exclude_none=True)
        data["base_dir"] = p.base_dir
        data["name"] = f"{p.name}/{j.name}"
        data["horizon_days"] = p.horizon()
        data["jobs"] = [j.model_dump(mode="python", exclude_none=True) | {"start_after": [], "from_day": release}]
        try:
            r = plan(data, top_k=1, binding=False, **kw)
        except ClusteroptError:                   # e.g. the predecessors end after this job's deadline
            r = None
        out[name] = r
        if r is None or r.plan is None:
            status, ends[name] = "infeasible", None
            continue
        ends[name] = max(x["end_day"] for x in r.plan["schedule"])
        total += r.plan["cost"]["total_usd"]
        if r.status != "optimal" and status == "optimal":
            status = r.status
    return {"jobs": out, "total_usd": total if status != "infeasible" else None, "status": status}


def fleet_identity(pl: Optional[dict]) -> Optional[tuple]:
    """A plan's fleet: owned nodes per type and the types rented (None for no plan)."""
    if pl is None:
        return None
    return (tuple(sorted((f["gpu"], f["nodes"]) for f in pl["fleet"])), tuple(sorted({r["gpu"] for r in pl["rent"]})))


#: Most jobs whose own inputs (training tokens, serving request rate) the default sensitivity
#: analysis perturbs: each input costs the tornado 2 re-plans and the thresholds up to about
#: 2 x (grid + bisection) re-plans. Beyond it, the jobs with the largest cost share are kept
