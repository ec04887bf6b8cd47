"""Why a portfolio has no plan: minimal sets of limits and the least relaxations."""

from __future__ import annotations

import time
from typing import Any, Optional
from ortools.sat.python import cp_model

from optimizer.search.core.scales import PLAN_MONEY_UNITS_PER_USD
from optimizer.search.portfolio.instance import Instance
from optimizer.search.portfolio.model import PlanModel, make_solver

# ----------------------------------------------------------------------------------------
# explanations of infeasibility
# ----------------------------------------------------------------------------------------

def _limit_lhs(model: PlanModel, name: str):
    """The quantity that limit ``name`` caps, and how to show its least value."""
    inst = model.inst
    if name == "budget":
        return model.capex_expr(), lambda v: ("budget_usd", v / PLAN_MONEY_UNITS_PER_USD)
    if name == "power":
        return model.power_expr(), lambda v: ("max_power_kw", v / 1000.0)
    if name == "max_nodes":
        return sum(model.nodes), lambda v: ("max_nodes", int(v))
    if name == "max_rented_gpus" and model.rent_total is not None:
        return model.rent_total, lambda v: ("fleet.rent.max_gpus", int(v))
    if name.startswith("stock:"):
        g = next(i for i, t in enumerate(inst.gpus) if t.name == name[6:])
        return inst.gpus[g].gpus_per_node * model.nodes[g], lambda v: (f"available.{inst.gpus[g].name}", int(v))
    if name.startswith("deadline:"):
        j = next(i for i, jb in enumerate(inst.jobs) if jb.name == name[9:])
        return model.end[j], lambda v: (f"jobs[{j}].deadline_days", v * inst.step_days)
    if name == "horizon":
        return model.makespan, lambda v: ("horizon_days", v * inst.step_days)
    return None, None


def _relax_together(model: PlanModel, names: list[str], drop: list[str], t_end: float, workers: int) -> Optional[dict]:
    """One verified joint relaxation of the limits ``drop`` (every other limit kept): each limit's
    least value in turn (lexicographic, in the order given), all met by one schedule. None: no
    schedule within the time left; {} values for 'drop'-only limits (precedence)."""
    cm = model.m.clone()
    for x in names:
        cm.add(model.lits[x] == (0 if x in drop else 1))
    out: dict[str, Any] = {}
    for n in drop:
        expr, show = _limit_lhs(model, n)
        if expr is None:
            out[n] = "drop"
            continue
        cm.minimize(expr)
        sv = make_solver(max(0.1, t_end - time.perf_counter()), workers)
        st = sv.solve(cm)
        if st not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
            return None
        v = int(round(sv.objective_value))
        cm.add(expr <= v)                        # later limits are minimised with this one held
        key, val = show(v)
        out[key] = val
    if "horizon" in drop:                        # a longer horizon alone would coarsen the automatic grid
        out["time_step_days"] = model.inst.step_days
    return out


def _shown(key: str, val) -> str:
    if val == "drop":
        return f"drop {key.replace('after:', 'start_after ')}"
    if key == "time_step_days":
        return f"time_step_days kept at {val:g} (so the grid stays)"
    num = f"${val:,.0f}" if key.endswith("_usd") else (f"{val:,}" if isinstance(val, int) else f"{val:,.2f}")
    return f"{key} to {num}"


#: Most relaxation sets (minimal correction sets) an explanation enumerates.
MAX_RELAX_SETS = 4


def explain_infeasible_instance(inst: Instance, *, time_limit_s: float = 10.0, workers: int = 2) -> dict:
    """Why an instance is infeasible, over the enforcement literals of its limit families.

    ``relax_sets``: minimal relaxation sets S (minimal correction sets): dropping every limit of S
    makes the portfolio feasible, dropping any proper subset of S does not. Each is found by one
    CP-SAT solve that keeps as many limits as possible while keeping at least one limit of every
    set already found (the kept limits are then a maximal feasible subset; its complement is a
    new minimal S), smallest first, at most MAX_RELAX_SETS.
    ``conflicts``: an irreducible infeasible subset (CP-SAT's sufficient assumptions, then a deletion
    filter): these limits alone, every other dropped, cannot all be met - the meaning
    ``conflicts`` has in every planner (search/explain.py). Every S contains a member of it.
    ``relaxations``: for the first S, the least value of each of its limits (lexicographic, all
    met by one schedule, every limit outside S kept); ``relaxation_sets`` the same for each S.

    Same dict shape as search/explain.py: reason, conflicts, binding, relaxations, lines (plus
    relax_sets and relaxation_sets)."""
    lines: list[str] = []
    empty = [job for job in inst.jobs if not job.options]
    if empty:
        for job in empty:
            why = "; ".join(job.notes) or "no GPU option for it in the fleet"
            lines.append(f"job {job.name}: no option - {why}")
        return {"reason": "no options for " + ", ".join(j.name for j in empty), "relax_sets": [], "conflicts": [],
                "binding": [], "relaxations": {}, "relaxation_sets": [], "lines": lines}
    t_end = time.perf_counter() + time_limit_s
    model = PlanModel(inst, "total_cost")
    names = list(model.lits)

    def feasible_with(active: list[str]) -> Optional[bool]:
        """Feasible with exactly the limits ``active`` enforced (None: undecided in time)."""
        c = model.m.clone()
        for n in names:
            c.add(model.lits[n] == (1 if n in active else 0))
        s = make_solver(max(0.1, t_end - time.perf_counter()), workers)
        st = s.solve(c)
        return None if st not in (cp_model.OPTIMAL, cp_model.FEASIBLE, cp_model.INFEASIBLE) else st != cp_model.INFEASIBLE

    nothing = {"relax_sets": [], "conflicts": [], "binding": [], "relaxations": {}, "relaxation_sets": []}
    # core: CP-SAT's sufficient assumptions, then drop every member not needed (deletion filter)
    c = model.m.clone()
    c.add_assumptions([model.lits[n] for n in names])
    s = make_solver(max(0.1, t_end - time.perf_counter()), 1)
    st = s.solve(c)
    if st != cp_model.INFEASIBLE:
        return {"reason": "feasible" if st in (cp_model.OPTIMAL, cp_model.FEASIBLE) else "unknown",
                **nothing, "lines": lines}
    if feasible_with([]) is False:
        lines.append("infeasible with every limit dropped: some job fits no option within the horizon grid")
        return {"reason": "infeasible", **nothing, "lines": lines}
    idx = {model.lits[n].index: n for n in names}
    core = [idx[i] for i in s.sufficient_assumptions_for_infeasibility() if i in idx] or list(names)
    for n in list(core):
        trial = [x for x in core if x != n]
        if feasible_with(trial) is False:
            core = trial
    # relaxation sets: keep as many limits as possible, at least one of each set already found
    sets: list[list[str]] = []
    undecided = False
    while len(sets) < MAX_RELAX_SETS and time.perf_counter() < t_end:
        cm = model.m.clone()
        for S in sets:
            cm.add_bool_or([model.lits[n] for n in S])
        cm.maximize(sum(model.lits[n] for n in names))
        sv = make_solver(max(0.1, t_end - time.perf_counter()), workers)
        st = sv.solve(cm)
        if st == cp_model.INFEASIBLE:
            break
        if st not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
            undecided = True
            break
        kept = [n for n in names if sv.value(model.lits[n])]
        if st != cp_model.OPTIMAL:               # not proven largest: grow it to a maximal feasible set
            for n in names:
                if n not in kept and feasible_with(kept + [n]):
                    kept.append(n)
        sets.append([n for n in names if n not in kept])
    rsets = [_relax_together(model, names, S, t_end, workers) for S in sets]

    def pretty(ns):
        return " + ".join(n.replace(":", " ") for n in ns)

    lines.append(f"conflict: {pretty(core)} " + ("cannot all be met" if len(core) > 1 else "cannot be met")
                 + (" (even with every other limit dropped)" if len(core) < len(names) else ""))
    for S, r in zip(sets, rsets):
        how = ", ".join(_shown(k, v) for k, v in r.items()) if r else "values not found within the time limit"
        if len(S) == 1:
            lines.append(f"relax {how} (all else kept)")
        else:
            lines.append(f"relax {pretty(S)} together: {how} (all else kept); none of them alone suffices")
    if sets and all(len(S) > 1 for S in sets):
        lines.append("no single limit's relaxation makes the portfolio feasible")
    if undecided or len(sets) == MAX_RELAX_SETS:
        lines.append("other combinations of limits may also restore feasibility (not enumerated)")
    first = sets[0] if sets else core
    return {"reason": " + ".join(first), "relax_sets": sets, "conflicts": [core], "binding": first,
            "relaxations": dict(rsets[0] or {}) if rsets else {}, "relaxation_sets": [dict(r or {}) for r in rsets],
            "lines": lines}
