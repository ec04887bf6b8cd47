"""Why a scenario has no feasible configuration, and which limits bind when it has one.

All answers are exact over the candidate table (the same rows CP-SAT chooses from):

- conflicts: the minimal sets of limit families that no row satisfies together (every
  subset of the at most six families is checked; a set is listed when it is infeasible and
  all its proper subsets are feasible) - the table analogue of CP-SAT's infeasible core;
- least relaxation of each limit: the smallest budget / deadline / GPU count / stock that
  some row meeting every other limit needs;
- the smallest need against the limit: the least memory per GPU any layout needs, per GPU type;
- binding limits at an optimum: a family binds when dropping it would give a strictly
  better optimum.
"""

from __future__ import annotations


import numpy as np

from optimizer.search.core.conflicts import minimal_subsets_failing
from optimizer.search.train.system import host_memory_parts
from optimizer.search.train.table import LIMIT_FAMILIES, Table, lex_best, limits_of, objective_keys
from optimizer.formatting import usd
from optimizer.search.core.conflicts import binding_line
from optimizer.units import GB, GIB

_HUMAN = {"memory": "memory per GPU", "budget": "budget", "budget_per_hour": "budget per hour",
          "deadline": "deadline", "stock": "GPU stock",
          "max_gpus": "GPU count limit", "min_gpus": "minimum GPU count", "host_memory": "host memory per node"}


#: The slack key of each limit family (binding_summary's 'slack'; serving: serving_explain).
_SLACK_KEY = {"memory": "memory_bytes", "budget": "budget_usd", "deadline": "deadline_days", "max_gpus": "max_gpus",
              "stock": "stock", "max_types": "max_replica_types"}


def _usd(x: float) -> str:
    return usd(x)


def describe_violation(table: Table, r: int, scenario, family: str) -> str:
    """One line: what row r needs against the limit it breaks."""
    c, cons = table.cols, scenario.constraints
    g = table.gpus[int(c["gpu"][r])]
    if family == "memory":
        cap = g.hardware.memory_bytes
        allowed = cap * (1 - cons.memory_headroom)
        return (f"memory: needs {c['memory_per_gpu_bytes'][r] / GB:.1f} GB per GPU; {g.name} has "
                f"{cap / GB:.1f} GB ({cap / GIB:.0f} GiB), {allowed / GB:.1f} GB after "
                f"{cons.memory_headroom:.0%} headroom")
    if family == "budget":
        return f"budget: costs {_usd(c['cost_usd'][r])}; budget is {_usd(cons.budget_usd)}"
    if family == "budget_per_hour":
        rate = float(c["n_gpus"][r] * c["usd_per_gpu_hour"][r])
        return (f"budget_per_hour: {int(c['n_gpus'][r])} x {g.name} cost ${rate:,.2f}/hour; "
                f"budget is ${cons.budget_usd_per_hour:,.2f}/hour")
    if family == "deadline":
        return f"deadline: takes {c['wall_clock_days'][r]:.1f} days; deadline is {cons.deadline_days:g} days"
    if family == "stock":
        if getattr(g, "choice", None) is not None:
            o = g.choice.offer
            return (f"offer: {g.offer} places at most {g.available} GPUs in one job ({o.interconnect}); "
                    f"needs {int(c['n_gpus'][r])}")
        return f"stock: needs {int(c['n_gpus'][r])} x {g.name}; {g.available} available"
    if family == "max_gpus":
        return f"max_gpus: needs {int(c['n_gpus'][r])} GPUs; limit is {cons.max_gpus}"
    if family == "min_gpus":
        return f"min_gpus: uses {int(c['n_gpus'][r])} GPUs; minimum is {cons.min_gpus}"
    if family == "host_memory":
        return _describe_host_memory(table, r, scenario)
    raise KeyError(family)


def _describe_host_memory(table: Table, r: int, scenario) -> str:
    """What a node's host RAM must hold (issue 10) against what the node type has."""

    c = table.cols
    g = table.gpus[int(c["gpu"][r])]
    host_id, ram, parts = host_memory_parts(scenario, g, {k: c[k][r] for k in
                                                          ("tp", "pp", "dp", "cp", "ep", "zero")})
    sysm = scenario.system
    big = ", ".join(f"{k.replace('_', ' ')} {v / GB:,.0f} GB" for k, v in parts.items() if v >= 0.05 * c["host_memory_bytes"][r])
    hint = "; ZeRO-Offload holds 14 bytes per parameter a GPU updates: raise zero, tp or pp, or set system.offload_optimizer: false" \
        if sysm.offload_optimizer else ""
    return (f"host_memory: needs {c['host_memory_bytes'][r] / GB:,.0f} GB of host RAM per node ({big}); "
            f"{host_id} has {ram / GB:,.0f} GB, {c['host_memory_capacity_bytes'][r] / GB:,.0f} GB after "
            f"{sysm.host_memory_headroom:.0%} headroom{hint}")


def _active_families(table: Table) -> list[str]:
    return [f for f in LIMIT_FAMILIES if table.violations[f].any()]


def _ok_except(table: Table, skip: set[str]) -> np.ndarray:
    ok = np.ones(len(table), dtype=bool)
    for f in LIMIT_FAMILIES:
        if f not in skip:
            ok &= ~table.violations[f]
    return ok


def minimal_conflicts(table: Table) -> list[list[str]]:
    """Minimal sets of limit families that no row of the table meets together."""
    def some_row_meets(fams) -> bool:
        ok = np.ones(len(table), dtype=bool)
        for f in fams:
            ok &= ~table.violations[f]
        return bool(ok.any())

    fams = _active_families(table)
    return minimal_subsets_failing(some_row_meets, fams)


def relaxations(table: Table, scenario) -> dict:
    """Least relaxation of each limit that makes the scenario feasible, all others kept."""
    c, cons = table.cols, scenario.constraints
    out = {}
    rows = np.nonzero(_ok_except(table, {"budget"}))[0]
    if cons.budget_usd is not None and len(rows):
        out["budget_usd"] = float(c["cost_usd"][rows].min())
    rows = np.nonzero(_ok_except(table, {"budget_per_hour"}))[0]
    if cons.budget_usd_per_hour is not None and len(rows):
        out["budget_usd_per_hour"] = float((c["n_gpus"][rows] * c["usd_per_gpu_hour"][rows]).min())
    rows = np.nonzero(_ok_except(table, {"deadline"}))[0]
    if cons.deadline_days is not None and len(rows):
        out["deadline_days"] = float(c["wall_clock_days"][rows].min())
    rows = np.nonzero(_ok_except(table, {"max_gpus"}))[0]
    if cons.max_gpus is not None and len(rows):
        out["max_gpus"] = int(c["n_gpus"][rows].min())
    rows = np.nonzero(_ok_except(table, {"stock"}))[0]
    stock = {}
    given = {k.lower() for k in cons.available}
    for g in table.gpus:
        if g.available is None or not ({g.name.lower()} & given or g.choice is None):
            continue                  # an offer's reach is not stock the user can relax (issue 17)
        rg = rows[c["gpu"][rows] == g.index]
        if len(rg):
            stock[g.name] = int(c["n_gpus"][rg].min())
    if stock:
        out["available"] = stock
    rows = np.nonzero(_ok_except(table, {"memory"}))[0]
    if len(rows):
        need = c["memory_per_gpu_bytes"][rows] / np.array([table.gpus[int(i)].hardware.memory_bytes for i in c["gpu"][rows]])
        if need.min() <= 1.0:          # some layout fits the raw capacity: a smaller headroom suffices
            out["memory_headroom"] = float(1.0 - need.min())
    return out


def smallest_memory_need(table: Table, within: np.ndarray | None = None) -> list[dict]:
    """Per GPU type, the layout needing the least memory per GPU (among ``within`` rows, if given)."""
    out = []
    c = table.cols
    ok = np.ones(len(table), dtype=bool) if within is None else within
    for g in table.gpus:
        rows = np.nonzero((c["gpu"] == g.index) & ok)[0]
        if not len(rows):
            continue
        r = rows[np.argmin(c["memory_per_gpu_bytes"][rows])]
        out.append({"gpu": g.name, "min_memory_per_gpu_bytes": float(c["memory_per_gpu_bytes"][r]),
                    "capacity_bytes": int(g.hardware.memory_bytes), "config": table.config(int(r))})
    return out


def explain_infeasible(table: Table, scenario, spec) -> dict:
    """A structured explanation with one-line sentences under 'lines'."""
    lines: list[str] = []
    if len(table) == 0:
        lines.append("no layout passes the hard rules: check search pins (tp/pp/dp/micro_batch), the global "
                     "batch against micro_batch x dp, and that the listed GPUs have prices")
        return {"reason": "no candidate layouts", "conflicts": [], "relaxations": {}, "lines": lines}
    conflicts = minimal_conflicts(table)
    rel = relaxations(table, scenario)
    cons = scenario.constraints
    for conf in conflicts:
        lines.append("conflict: " + " + ".join(_HUMAN[f] for f in conf) + " cannot all be met")
    mem = smallest_memory_need(table)
    for conf in conflicts:
        if "memory" not in conf:
            continue
        others = [f for f in conf if f != "memory"]
        within = np.ones(len(table), dtype=bool)
        for f in others:
            within &= ~table.violations[f]
        where = (" within the " + " and ".join(_HUMAN[f] for f in others)) if others else ""
        for m in smallest_memory_need(table, within):
            allowed = m["capacity_bytes"] * (1 - cons.memory_headroom)
            lines.append(f"memory: the smallest layout{where} needs {m['min_memory_per_gpu_bytes'] / GB:.1f} GB "
                         f"per GPU; {m['gpu']} has {m['capacity_bytes'] / GB:.1f} GB "
                         f"({allowed / GB:.1f} GB after {cons.memory_headroom:.0%} headroom)")
    for conf in conflicts:
        if "host_memory" not in conf:
            continue
        c = table.cols
        within = np.ones(len(table), dtype=bool)
        for f in conf:
            if f != "host_memory":
                within &= ~table.violations[f]
        rows = np.nonzero(within)[0]
        if len(rows):
            r = int(rows[np.argmin(c["host_memory_bytes"][rows] - c["host_memory_capacity_bytes"][rows])])
            hint = (" (ZeRO-Offload is on: raise zero, tp or pp, or set system.offload_optimizer: false)"
                    if scenario.system.offload_optimizer else "")
            lines.append(f"host memory: the smallest layout needs {c['host_memory_bytes'][r] / GB:,.0f} GB of host RAM "
                         f"per node; its node has {c['host_memory_capacity_bytes'][r] / GB:,.0f} GB after "
                         f"{scenario.system.host_memory_headroom:.0%} headroom{hint}")
    if "budget_usd" in rel:
        lines.append(f"relax budget_usd from {_usd(cons.budget_usd)} to {_usd(rel['budget_usd'])} (all else kept)")
    if "budget_usd_per_hour" in rel:
        lines.append(f"relax budget_usd_per_hour from ${cons.budget_usd_per_hour:,.2f} to "
                     f"${rel['budget_usd_per_hour']:,.2f} (all else kept)")
    if "deadline_days" in rel:
        lines.append(f"relax deadline_days from {cons.deadline_days:g} to {rel['deadline_days']:.1f} (all else kept)")
    if "max_gpus" in rel:
        lines.append(f"relax max_gpus from {cons.max_gpus} to {rel['max_gpus']} (all else kept)")
    for g, n in rel.get("available", {}).items():
        lines.append(f"relax available.{g} to {n} (all else kept)")
    if "memory_headroom" in rel and cons.memory_headroom > rel["memory_headroom"]:
        lines.append(f"relax memory_headroom from {cons.memory_headroom:.0%} to {rel['memory_headroom']:.1%} (all else kept)")
    binding = sorted({f for conf in conflicts for f in conf}, key=LIMIT_FAMILIES.index)
    lines = list(dict.fromkeys(lines))          # one GPU's offers give the same line (issue 17)
    seen_gpu = set()
    mem = [m for m in mem if not (m["gpu"] in seen_gpu or seen_gpu.add(m["gpu"]))]
    return {"reason": "; ".join(" + ".join(conf) for conf in conflicts) or "infeasible",
            "conflicts": conflicts, "binding": binding, "relaxations": rel,
            "smallest_memory_need": mem, "lines": lines}


def binding_summary(table: Table, scenario, r: int) -> dict:
    """Slack of each limit at the chosen row, and which limits bind (dropping them improves the optimum)."""
    c, cons = table.cols, scenario.constraints
    g = table.gpus[int(c["gpu"][r])]
    lim = limits_of(scenario, table.gpus)
    slack = {"memory_bytes": float(lim["memory_cap"][int(c["gpu"][r])] - c["memory_units"][r])}
    if cons.budget_usd is not None:
        slack["budget_usd"] = float(cons.budget_usd - c["cost_usd"][r])
    if cons.budget_usd_per_hour is not None:
        slack["budget_usd_per_hour"] = float(cons.budget_usd_per_hour - c["n_gpus"][r] * c["usd_per_gpu_hour"][r])
    if cons.deadline_days is not None:
        slack["deadline_days"] = float(cons.deadline_days - c["wall_clock_days"][r])
    if cons.max_gpus is not None:
        slack["max_gpus"] = int(cons.max_gpus - c["n_gpus"][r])
    if g.available is not None:
        slack["stock"] = int(g.available - c["n_gpus"][r])
    objective = scenario.objective

    keys = objective_keys(table, objective)
    best = tuple(int(k[r]) for k in keys[:-1])
    binding = []
    for f in _active_families(table):
        alt = lex_best(table, np.nonzero(_ok_except(table, {f}))[0], objective)
        if alt is not None and tuple(int(k[alt]) for k in keys[:-1]) < best:
            binding.append(f)
    lines = [binding_line(_HUMAN[f], {k: slack[k]} if (k := _SLACK_KEY.get(f, f)) in slack else None)
             for f in binding]
    if not binding:
        lines.append("no limit binds: the optimum is the best layout regardless of the limits")
    return {"reason": "feasible", "binding": binding, "slack": slack, "lines": lines}
