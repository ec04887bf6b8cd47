"""Portfolio sensitivity: re-planning with one input scaled (tornado, thresholds) and slack."""

from __future__ import annotations

from typing import Any, Mapping, Optional

from optimizer.catalog import Catalog
from optimizer.errors import ClusteroptError
from optimizer.formatting import usd
from optimizer.portfolio_schema import load_portfolio
from optimizer.search.core.threshold import find_threshold
from optimizer.search.portfolio.instance import Instance
from optimizer.search.portfolio.solve import PlanResult, fleet_identity, plan

MAX_JOB_INPUTS = 4


def job_input(job) -> Optional[str]:
    """The dotted path of a job's uncertain workload input, without its index: ``train.tokens``
    (training) or ``serve.requests_per_s`` (serving); None when it is not a number."""
    if job.train is not None:
        return "train.tokens" if isinstance(job.train.tokens, (int, float)) else None
    return "serve.requests_per_s"


def job_cost_shares(pl: dict) -> dict[str, float]:
    """Each job's share of a plan's total cost (USD): its power or rent, plus, on owned GPUs, the
    owned fleet's fixed cost of its GPU type (capex share, hosting, maintenance) split by busy
    GPU-days (n_gpus x duration_days). Fixed cost of a type no job keeps busy is left out, so the
    shares may sum to less than the total."""
    fixed = {f["gpu"]: f["capex_share_usd"] + f["hosting_usd"] + f["maintenance_usd"] for f in pl["fleet"]}
    busy: dict[str, float] = {}
    for r in pl["schedule"]:
        if r["source"] == "owned":
            busy[r["gpu"]] = busy.get(r["gpu"], 0.0) + r["n_gpus"] * r["duration_days"]
    out = {}
    for r in pl["schedule"]:
        share = float(r["cost_usd"])
        if r["source"] == "owned" and busy.get(r["gpu"], 0.0) > 0:
            share += fixed.get(r["gpu"], 0.0) * r["n_gpus"] * r["duration_days"] / busy[r["gpu"]]
        out[r["job"]] = share
    return out


def sensitivity_inputs(portfolio, instance: Instance, pl: Optional[dict] = None,
                       max_jobs: Optional[int] = MAX_JOB_INPUTS) -> list[str]:
    """Default uncertain inputs (issue 7: GPU prices, electricity, tokens, request rate): each
    fleet GPU's prices (``price.<gpu>``: purchase and rent together), electricity
    (``fleet.buy.usd_per_kwh``), each training job's tokens (``jobs[i].train.tokens``) and each
    serving job's request rate (``jobs[i].serve.requests_per_s``).

    With more than ``max_jobs`` jobs (None: no cap) only the ``max_jobs`` jobs with the largest
    cost share in the plan ``pl`` (``job_cost_shares``; without a plan, the cheapest option of
    each job in ``instance``, a lower bound of what it costs) keep their input; ties go to the
    earlier job. Job inputs follow the portfolio's job order."""

    p = load_portfolio(portfolio)
    out = [f"price.{t.name}" for t in instance.gpus] + ["fleet.buy.usd_per_kwh"]
    jobs = [(i, j) for i, j in enumerate(p.jobs) if job_input(j) is not None]
    if max_jobs is not None and len(jobs) > max_jobs:
        if pl is not None:
            shares = job_cost_shares(pl)
        else:
            shares = {jb.name: min((o.cost_usd for o in jb.options), default=0.0) for jb in instance.jobs}
        ranked = sorted(jobs, key=lambda ij: (-shares.get(ij[1].name, 0.0), ij[0]))
        keep = {i for i, _ in ranked[:max_jobs]}
        jobs = [(i, j) for i, j in jobs if i in keep]
    return out + [f"jobs[{i}].{job_input(j)}" for i, j in jobs]


def sensitivity_note(portfolio, inputs: list[str]) -> Optional[str]:
    """A line naming the jobs whose inputs the default analysis left out (MAX_JOB_INPUTS), or None."""

    p = load_portfolio(portfolio)
    left = [j.name for i, j in enumerate(p.jobs)
            if job_input(j) is not None and f"jobs[{i}].{job_input(j)}" not in inputs]
    if not left:
        return None
    return (f"sensitivity: the inputs of the {MAX_JOB_INPUTS} jobs with the largest cost share are perturbed; "
            f"left out: {', '.join(left)} (pass them as inputs to include them)")


def perturbed_plan(portfolio, name: str, factor: float, *, prices: Optional[Mapping[str, float]] = None,
                   **kw) -> PlanResult:
    """Re-plan with one input scaled by ``factor``: a price (``price.<gpu>``, ``purchase.<gpu>``,
    ``rent.<gpu>``) or a numeric dotted field (``fleet.buy.usd_per_kwh``, ``jobs[1].train.tokens``,
    ``jobs[2].serve.requests_per_s``)."""

    p = load_portfolio(portfolio)
    prices = dict(prices or {})
    if name.split(".")[0] in ("price", "purchase", "rent"):      # portfolio fields start fleet. or jobs[
        prices[name] = prices.get(name, 1.0) * factor
        return plan(p, prices=prices, **kw)
    path = name.replace("[", ".").replace("]", "")
    cur: Any = p
    for part in path.split("."):
        cur = cur[int(part)] if part.isdigit() else getattr(cur, part)
    if not isinstance(cur, (int, float)):
        raise ClusteroptError(name, f"is {cur!r}, not a number", "perturb a numeric input")
    return plan(p.with_overrides({path: cur * factor}), prices=prices, **kw)


def plan_sensitivity(portfolio, *, inputs: Optional[list[str]] = None, range_pct: float = 50.0, grid: int = 5,
                     tol_pct: float = 1.0, time_limit_s: float = 10.0, catalog: Catalog) -> list[dict]:
    """Switching thresholds of the plan's fleet: per input and direction, the smallest change
    within ``range_pct`` at which the optimal fleet (owned nodes per type, types rented)
    changes, by re-planning (``core.threshold.find_threshold``: a grid, then bisection).
    Same record shape as the training sensitivity (CONTRACTS.md 'Sensitivity'); ``new_best``
    is the new fleet."""

    p = load_portfolio(portfolio)
    kw = dict(top_k=1, binding=False, time_limit_s=time_limit_s, catalog=catalog)
    base = plan(p, **kw)
    base_key = fleet_identity(base.plan)
    names = inputs or sensitivity_inputs(p, base.instance, base.plan)
    out = []
    for name in names:
        def best_at(f, name=name):
            pl = perturbed_plan(p, name, f, **kw).plan
            key = fleet_identity(pl)
            return key, (None if pl is None else {"fleet": pl["fleet"], "rent": sorted({r["gpu"] for r in pl["rent"]}),
                                                   "total_usd": pl["cost"]["total_usd"]})

        for direction in ("up", "down"):
            out.append(find_threshold(best_at, base_key, name, direction, range_pct=range_pct, grid=grid,
                                      tol_pct=tol_pct))
    return out


def plan_tornado(portfolio, *, inputs: Optional[list[str]] = None, swing_pct: float = 20.0,
                 time_limit_s: float = 10.0, catalog: Catalog) -> list[dict]:
    """Total cost of the re-planned portfolio at -X% and +X% of each input (a fleet plan has no
    fixed 'chosen configuration' to hold: each end is re-optimised), sorted by swing; whether
    the fleet changes at each end."""

    p = load_portfolio(portfolio)
    kw = dict(top_k=1, binding=False, time_limit_s=time_limit_s, catalog=catalog)
    base = plan(p, **kw)
    if base.plan is None:
        return []
    base_key, base_cost = fleet_identity(base.plan), base.plan["cost"]["total_usd"]
    out = []
    for name in inputs or sensitivity_inputs(p, base.instance, base.plan):
        ends, changes = {}, {}
        for direction, f in (("down", 1 - swing_pct / 100), ("up", 1 + swing_pct / 100)):
            pl = perturbed_plan(p, name, f, **kw).plan
            ends[direction] = None if pl is None else pl["cost"]["total_usd"]
            changes[direction] = fleet_identity(pl) != base_key
        swing = None if None in ends.values() else abs(ends["up"] - ends["down"])
        out.append({"input": name, "swing_pct": swing_pct, "low": ends["down"], "high": ends["up"], "swing": swing,
                    "base": base_cost, "changes": changes})
    out.sort(key=lambda e: -(e["swing"] if e["swing"] is not None else float("inf")))
    return out


def _peak_rented_gpus(pl: dict, horizon_days: float) -> int:
    """Most rented GPUs in use at once (all types), over the schedule's grid intervals (training:
    start to the grid end; serving: start to the horizon), as the rented cumulative counts them."""
    spans = [(r["start_day"], r["grid_end_day"] if r["kind"] == "train" else horizon_days, r["n_gpus"])
             for r in pl["schedule"] if r["source"] == "rented"]
    return max((sum(n for a, b, n in spans if a <= t < b) for t, _, _ in spans), default=0)


def plan_slack(result: PlanResult) -> dict:
    """Slack of each fleet limit at the best plan, and which limits bind, from what ``plan``
    computed (the plan's figures and its explanation's binding analysis; nothing is re-solved).

    Returns {'status', 'limits', 'binding', 'binding_undecided', 'lines'}. ``limits`` maps each
    limit the portfolio sets, under the explanation's names, to {'limit', 'used', 'slack', 'unit',
    'binding'}: 'budget' (purchase capex, USD), 'power' (owned IT power, kW, as the power limit
    counts it), 'max_nodes' (owned nodes), 'max_rented_gpus' (peak rented GPUs at once),
    'stock:<gpu>' (owned GPUs of a type with limited stock), 'deadline:<job>' (end day of a training
    job with a deadline, days) and 'horizon' (the last training end, days). ``slack`` = limit - used
    (>= 0 for a feasible plan). ``binding`` is True when dropping the limit alone strictly improves
    the optimum, None when the analysis did not run (``plan(binding=False)``) or ran out of time.
    Without a plan (infeasible or no solution in time) ``limits`` is empty; the explanation then
    says which limits conflict and how far to relax them.
    """
    expl = result.explanation or {}
    binding = expl.get("binding")
    undecided = list(expl.get("binding_undecided", []) or [])
    out = {"status": result.status, "limits": {}, "binding": binding, "binding_undecided": undecided, "lines": []}
    pl, inst = result.plan, result.instance
    if pl is None or inst is None:
        out["lines"].append("no plan: no slack to report; see the explanation for the limits that conflict")
        return out

    def is_binding(name: str) -> Optional[bool]:
        if binding is None or name in undecided:
            return None
        return name in binding

    def add(name: str, limit: float, used: float, unit: str) -> None:
        out["limits"][name] = {"limit": limit, "used": used, "slack": limit - used, "unit": unit,
                               "binding": is_binding(name)}

    owned = {f["gpu"]: f for f in pl["fleet"]}
    if inst.budget_usd is not None:
        add("budget", float(inst.budget_usd), float(pl["cost"]["purchase_usd"]), "usd")
    if inst.max_power_w is not None:
        add("power", inst.max_power_w / 1000.0, float(pl["owned_power_kw"]), "kw")
    if inst.max_nodes is not None:
        add("max_nodes", int(inst.max_nodes), int(sum(f["nodes"] for f in pl["fleet"])), "nodes")
    if inst.max_rented_gpus is not None:
        add("max_rented_gpus", int(inst.max_rented_gpus), _peak_rented_gpus(pl, inst.horizon_days), "gpus")
    for t in inst.gpus:
        if t.available is not None and t.can_buy:
            add(f"stock:{t.name}", int(t.available), int(owned[t.name]["gpus"]) if t.name in owned else 0, "gpus")
    for r in pl["schedule"]:
        if r["kind"] == "train" and r.get("deadline_days") is not None:
            add(f"deadline:{r['job']}", float(r["deadline_days"]), float(r["end_day"]), "days")
    if any(r["kind"] == "train" for r in pl["schedule"]):
        add("horizon", float(inst.horizon_days), float(pl["makespan_days"]), "days")
    fmt = {"usd": usd, "kw": lambda v: f"{v:,.0f} kW", "nodes": lambda v: f"{v:,d} nodes",
           "gpus": lambda v: f"{v:,d} GPUs", "days": lambda v: f"{v:,.1f} days"}
    for name, e in out["limits"].items():
        f = fmt[e["unit"]]
        tag = {True: "binding", False: "not binding", None: "binding not analysed"}[e["binding"]]
        if e["binding"] and e["slack"] > 0:        # why a limit with slack still binds
            tag = "binding: every better plan breaks it"
        out["lines"].append(f"slack: {name.replace(':', ' ')}: {f(e['used'])} of {f(e['limit'])}, "
                            f"{f(e['slack'])} left ({tag})")
    for name in binding or []:
        if name not in out["limits"]:                  # e.g. a precedence rule (after:a->b)
            out["lines"].append(f"binding: {name.replace(':', ' ')}")
    return out


def portfolio_sensitivity(result: PlanResult, portfolio, *, catalog: Catalog, **options) -> dict:
    """Tornado, switching thresholds and slack of a planned portfolio (``clusteropt plan
    --sensitivity``); ``note`` names the jobs whose inputs the default analysis left out."""
    tornado = plan_tornado(portfolio, catalog=catalog, **options)
    out = {"tornado": tornado, "thresholds": plan_sensitivity(portfolio, catalog=catalog), "slack": plan_slack(result),
           # issue 17: where buying the plan's fleet stops beating renting its jobs
           "buy_vs_rent": ((result.plan or {}).get("investment") or {}).get("flips")}
    note = sensitivity_note(portfolio, [e["input"] for e in tornado])
    if note:
        out["note"] = note
    return out
