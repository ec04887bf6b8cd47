"""Why a serving scenario has no feasible fleet, and which limits bind when it has one.

The same shape as search/explain.py gives for training (keys 'reason', 'conflicts', 'binding',
'relaxations', 'lines'), computed exactly by re-solving the fleet model (fleet.py) with limit
families dropped:

- replica rules (memory, ttft, itl, quality) are checked per option: when no option meets them
  all, the minimal sets of rules no option meets together are the conflicts, and the least SLO that
  some option meets (fastest TTFT, lowest ITL among the options that fit) is the relaxation;
- the quality limit (serve.quality.max_loss_pct, with or without search.compression: without it
  the formats of search.weights / search.kv carry their default options' published losses,
  compression.format_quality): the least limit for which a fleet meeting every other
  rule and limit exists (bisection over the options' losses); when it exceeds the scenario's, the
  quality limit binds and is named, with the formats' figures when no compression option is listed;
- fleet limits (budget, stock, max_gpus, max_types): a set is a conflict when no fleet meets it
  and every proper subset is met; the least relaxation of each limit is the optimum of the fleet
  model for that figure with the limit dropped and all others kept (the smallest
  budget_usd_per_hour, max_gpus, available[g], number of replica types that becomes feasible);
- the least TTFT / ITL SLO for which a fleet meeting every limit exists (bisection over the
  options' values: allowing more options never removes a fleet);
- at an optimum, a limit binds when dropping it gives a strictly better fleet (each check is the
  fleet model with the limit dropped and the optimum's key as a cutoff: 'is there a fleet
  strictly before it?', proven either way).
"""

from __future__ import annotations

import dataclasses


import numpy as np

from optimizer.search.core.conflicts import binding_line, minimal_subsets_failing
from optimizer.search.core.scales import MONEY_UNITS_PER_USD
from optimizer.search.serve import fleet as fm
from optimizer.search.serve.compression import amortised_usd_per_hour
from optimizer.search.serve.problem import fleet_problem, reduce_options
from optimizer.units import GB

_HUMAN = {"memory": "memory per GPU", "ttft": "TTFT p99 SLO", "itl": "ITL p99 SLO", "budget": "budget per hour",
          "stock": "GPU stock", "max_gpus": "GPU count limit", "max_types": "replica-type limit",
          "capacity": "provider capacity (pricing.capacity)",
          "redundancy": "redundancy", "offer": "an offer whose instance holds the TP group",
          "quality": "quality limit (serve.quality.max_loss_pct)"}


def _ok_quality(table) -> np.ndarray:
    c = table.cols
    return c["ok_quality"] if "ok_quality" in c else np.ones(len(table), bool)


def _rows(table, ok_memory=True, ok_ttft=True, ok_itl=True, ok_quality=True) -> np.ndarray:
    c = table.cols
    ok = (c["capacity_units"] > 0) & c["ok_offer"]
    if ok_quality:
        ok = ok & _ok_quality(table)
    if ok_memory:
        ok = ok & c["ok_memory"]
    if ok_ttft:
        ok = ok & c["ok_ttft"]
    if ok_itl:
        ok = ok & c["ok_itl"]
    return np.nonzero(ok)[0]


def _active(problem: fm.FleetProblem) -> list[str]:
    out = []
    if problem.budget is not None:
        out.append("budget")
    if any(a is not None for a in problem.available):
        out.append("stock")
    if problem.max_gpus is not None:
        out.append("max_gpus")
    if problem.max_types is not None and problem.max_types < len(problem.options):
        out.append("max_types")
    if problem.capacity:
        out.append("capacity")
    return out


def _feasible(problem: fm.FleetProblem, families) -> bool:
    return bool(fm.solve_fleets(problem, 1, families=tuple(families), time_limit_s=10.0).fleets)


def _problem_for(table, rows, scenario, objective="cost") -> fm.FleetProblem:
    return fleet_problem(table, reduce_options(table, rows), scenario, objective)


def option_summary(table) -> dict:
    """How many options meet each replica rule, and the best figures any option reaches."""
    c = table.cols
    n = len(table)
    mem = c["ok_memory"] if n else np.zeros(0, bool)
    out = {"options": n, "meet_memory": int(mem.sum()), "meet_ttft": int(c["ok_ttft"].sum()) if n else 0,
           "meet_itl": int(c["ok_itl"].sum()) if n else 0, "meet_quality": int(_ok_quality(table).sum()) if n else 0,
           "meet_all": int(table.feasible.sum()) if n else 0}
    fit = np.nonzero(mem)[0]
    if len(fit):
        r = fit[np.argmin(c["ttft_s"][fit])]
        out["fastest_ttft_s"] = float(c["ttft_s"][r])
        out["fastest_ttft_option"] = table.replica(int(r))
        r = fit[np.argmin(c["itl_s"][fit])]
        out["lowest_itl_s"] = float(c["itl_s"][r])
        out["lowest_itl_option"] = table.replica(int(r))
    return out


def _smallest_slo(table, scenario, key: str) -> float | None:
    """Least value of the ``key`` SLO ('ttft_s' or 'itl_s') for which some fleet meets every
    limit, the other SLO and memory kept. Bisection over the options' values (monotone)."""
    c = table.cols
    if key == "quality_loss_pct":
        keep = c["ok_ttft"] & c["ok_itl"]
    else:
        keep = (c["ok_itl"] if key == "ttft_s" else c["ok_ttft"]) & _ok_quality(table)
    base = np.nonzero(c["ok_memory"] & keep & c["ok_offer"] & (c["capacity_units"] > 0))[0]
    if not len(base):
        return None
    levels = np.unique(c[key][base])

    def ok(level):
        rows = base[c[key][base] <= level]
        return _feasible(_problem_for(table, rows, scenario), fm.FAMILIES)

    if not ok(levels[-1]):
        return None
    lo, hi = 0, len(levels) - 1
    while lo < hi:
        mid = (lo + hi) // 2
        if ok(levels[mid]):
            hi = mid
        else:
            lo = mid + 1
    return float(levels[lo])


def _fleet_relaxations(problem: fm.FleetProblem, table) -> dict:
    out = {}
    fams = set(fm.FAMILIES)
    if problem.budget is not None:
        v = fm.minimise(problem, "cost", families=tuple(fams - {"budget"}))
        if v is not None:
            out["budget_usd_per_hour"] = v / MONEY_UNITS_PER_USD
    if problem.max_gpus is not None:
        v = fm.minimise(problem, "gpus", families=tuple(fams - {"max_gpus"}))
        if v is not None:
            out["max_gpus"] = int(v)
    stock = {}
    for g, a in enumerate(problem.available):
        if a is None:
            continue
        others = {h for h, b in enumerate(problem.available) if b is not None and h != g}
        v = fm.minimise(problem, "gpus_of", gpu=g, stock_only=others)
        if v is not None and v > a:
            stock[table.gpus[g].name] = int(v)
    if stock:
        out["available"] = stock
    if problem.max_types is not None:
        for m in range(problem.max_types + 1, len(problem.options) + 1):
            if _feasible(dataclasses.replace(problem, max_types=m), fm.FAMILIES):
                out["max_replica_types"] = m
                break
    if problem.spares > 0 and _feasible(dataclasses.replace(problem, spares=0), fm.FAMILIES):
        out["redundancy"] = "none"
    caps = _capacity_relaxations(problem)
    if caps:
        out["capacity"] = caps
    return out


def _capacity_relaxations(problem: fm.FleetProblem) -> dict[str, int]:
    """For each pricing.capacity cap: the fewest GPUs a fleet meeting every other limit rents
    under it, when that is more than the cap (issue 17: how far to relax the cap alone)."""
    out = {}
    for i, (key, limit, pools) in enumerate(problem.capacity):
        others = dataclasses.replace(problem, capacity=problem.capacity[:i] + problem.capacity[i + 1:])
        v = fm.minimise(others, "gpus_in", pools=pools)
        if v is not None and v > limit:
            out[key] = int(v)
    return out


def explain_infeasible(table, rows, problem: fm.FleetProblem, scenario) -> dict:
    """A structured explanation with one-line sentences under 'lines' (module docstring)."""
    slo, cons = scenario.serve.slo, scenario.constraints
    lines: list[str] = []
    summary = option_summary(table)
    if len(table) == 0:
        lines.append("no replica option passes the hard rules: check search pins (tp, pp, weights, kv, batch) "
                     "and that the listed GPUs have prices")
        return {"reason": "no candidate replica options", "conflicts": [], "binding": [], "relaxations": {},
                "options": summary, "lines": lines}
    rel: dict = {}
    if len(rows) == 0:
        c = table.cols
        flags = {"memory": c["ok_memory"] & (c["capacity_units"] > 0), "ttft": c["ok_ttft"], "itl": c["ok_itl"],
                 "offer": c["ok_offer"], "quality": _ok_quality(table)}
        conflicts = minimal_subsets_failing(lambda s: bool(np.logical_and.reduce([flags[f] for f in s]).any()),
                                       ["memory", "ttft", "itl", "offer", "quality"])
        for cf in conflicts:
            lines.append("conflict: no replica option meets " + " + ".join(_HUMAN[f] for f in cf))
        if summary["meet_memory"] == 0:
            for g in table.gpus:
                rg = np.nonzero(c["gpu"] == g.index)[0]
                if len(rg):
                    r = rg[np.argmin(c["weights_per_gpu_bytes"][rg])]
                    lines.append(f"memory: the smallest option on {g.name} holds {c['weights_per_gpu_bytes'][r] / GB:.1f} GB "
                                 f"of weights per GPU (tp={int(c['tp'][r])}, pp={int(c['pp'][r])}, {c['weights'][r]}); "
                                 f"{g.name} has {g.hardware.memory_bytes / GB:.1f} GB")
        binding = sorted({f for cf in conflicts for f in cf}, key=["memory", "ttft", "itl", "offer", "quality"].index)
    else:
        families = _active(problem)
        conflicts = minimal_subsets_failing(lambda s: _feasible(problem, s), families)
        if not conflicts and problem.spares > 0:
            conflicts = [["redundancy"]]
        for cf in conflicts:
            lines.append("conflict: " + (f"the {_HUMAN[cf[0]]} cannot be met" if len(cf) == 1 else
                                         " + ".join(_HUMAN[f] for f in cf) + " cannot all be met"))
        rel.update(_fleet_relaxations(problem, table))
        if not any(k in rel for k in ("budget_usd_per_hour", "max_gpus", "available", "max_replica_types",
                                      "redundancy", "capacity")):
            free = fm.solve_fleets(problem, 1, families=(), time_limit_s=10.0).fleets
            if free:
                f = free[0]
                by_type: dict = {}
                for q, m in enumerate(f.instances):
                    if m:
                        name = table.gpus[problem.type_of(q)].name
                        by_type[name] = by_type.get(name, 0) + m * problem.gpi[q]
                rel["without_limits"] = {"usd_per_hour": f.cost / MONEY_UNITS_PER_USD, "n_gpus": f.gpus,
                                         "gpus": by_type, "replica_types": sum(1 for x in f.counts if x)}
        binding = sorted({f for cf in conflicts for f in cf})
    if slo.ttft_p99_s is not None:
        v = _smallest_slo(table, scenario, "ttft_s")
        if v is not None and v > slo.ttft_p99_s:
            rel["ttft_p99_s"] = v
    if slo.itl_p99_s is not None:
        v = _smallest_slo(table, scenario, "itl_s")
        if v is not None and v > slo.itl_p99_s:
            rel["itl_p99_s"] = v
    quality = scenario.serve.quality
    if quality is not None and "ok_quality" in table.cols and not table.cols["ok_quality"].all():
        v = _smallest_slo(table, scenario, "quality_loss_pct")
        if v is not None and v > quality.max_loss_pct:
            rel["max_loss_pct"] = v
            if "quality" not in binding:
                binding = binding + ["quality"]
    slo_matters = len(rows) == 0 or "ttft_p99_s" in rel or "itl_p99_s" in rel
    if "fastest_ttft_s" in summary and slo_matters:
        o = summary["fastest_ttft_option"]
        lines.append(f"fastest p99 TTFT any option reaches: {summary['fastest_ttft_s']:.3f} s ({_opt(o)})"
                     + (f"; SLO {slo.ttft_p99_s:g} s" if slo.ttft_p99_s is not None else ""))
        o = summary["lowest_itl_option"]
        lines.append(f"lowest ITL any option reaches: {summary['lowest_itl_s'] * 1e3:.1f} ms ({_opt(o)})"
                     + (f"; SLO {slo.itl_p99_s * 1e3:g} ms" if slo.itl_p99_s is not None else ""))
    lines.append(f"options meeting each rule: memory {summary['meet_memory']}, TTFT {summary['meet_ttft']}, "
                 f"ITL {summary['meet_itl']}, quality {summary['meet_quality']}, all {summary['meet_all']} "
                 f"of {summary['options']}")
    if "budget_usd_per_hour" in rel:
        lines.append(f"relax budget_usd_per_hour from ${cons.budget_usd_per_hour:,.2f} to "
                     f"${rel['budget_usd_per_hour']:,.2f} (all else kept)")
    if "max_gpus" in rel:
        lines.append(f"relax max_gpus from {cons.max_gpus} to {rel['max_gpus']} (all else kept)")
    for g, n in rel.get("available", {}).items():
        lines.append(f"relax available.{g} to {n} (all else kept)")
    if "max_replica_types" in rel:
        lines.append(f"relax serve.max_replica_types from {problem.max_types} to {rel['max_replica_types']} (all else kept)")
    if "redundancy" in rel:
        lines.append("drop redundancy (serve.redundancy: none) and a fleet exists (all else kept)")
    for key, n in rel.get("capacity", {}).items():
        lines.append(f"relax pricing.capacity.{key} from {scenario.pricing.capacity[key]} to {n} GPUs (all else kept)")
    if "without_limits" in rel:
        w = rel["without_limits"]
        lines.append("no single limit's relaxation suffices; without the budget, stock, GPU-count and replica-type "
                     f"limits the cheapest fleet costs ${w['usd_per_hour']:,.2f}/hour on "
                     + " + ".join(f"{g} x{n}" for g, n in w["gpus"].items()))
    if "ttft_p99_s" in rel:
        lines.append(f"relax slo.ttft_p99_s from {slo.ttft_p99_s:g} to {rel['ttft_p99_s']:.3f} s (all else kept)")
    if "itl_p99_s" in rel:
        lines.append(f"relax slo.itl_p99_s from {slo.itl_p99_s:g} to {rel['itl_p99_s']:.4f} s (all else kept)")
    if "max_loss_pct" in rel:
        lines.append(f"quality limit binds: relax serve.quality.max_loss_pct from {quality.max_loss_pct:g} to "
                     f"{rel['max_loss_pct']:.2f}% (all else kept) and a fleet exists")
    plan = getattr(table, "plan", None)
    if "quality" in binding and plan is not None and not plan.compression:
        figs = [f"{f} {slot} {q.quality_loss_pct:.2f}% ({q.option})"
                for (slot, f), q in sorted(plan.format_quality.items()) if q is not None]
        if figs:
            lines.append("quality: without search.compression each format carries its default option's published "
                         "loss for the family: " + ", ".join(figs) + " (weight and KV losses add)")
    return {"reason": "; ".join(" + ".join(cf) for cf in conflicts) or "infeasible", "conflicts": conflicts,
            "binding": binding, "relaxations": rel, "options": _plain_summary(summary), "lines": lines}


def _opt(o: dict) -> str:
    return f"{o['gpu']} tp={o['tp']} pp={o['pp']} {o['weights']}/{o['kv']} batch {o['batch']}"


def _plain_summary(summary: dict) -> dict:
    return {k: v for k, v in summary.items() if not k.endswith("_option")} | {
        k: _opt(v) for k, v in summary.items() if k.endswith("_option")}


def binding_summary(table, rows, problem: fm.FleetProblem, best: fm.Fleet, scenario) -> dict:
    """Slack of each limit at the best fleet, and which limits bind (dropping them gives a
    strictly better fleet, same objective)."""
    cons = scenario.constraints
    usd = sum(m * p.usd_per_instance_hour for p, m in zip(table.pools, best.instances))
    if table.plan is not None and table.plan.one_offs:      # amortised one-off work, as the budget counts it

        paid = [i for r, x in zip(rows.rows, best.counts) if x for i in table.variant(int(r)).items]
        usd += amortised_usd_per_hour(table.plan.one_off_usd(paid), table.plan.horizon_hours)
    slack: dict = {}
    if cons.budget_usd_per_hour is not None:
        slack["budget_usd_per_hour"] = float(cons.budget_usd_per_hour - usd)
    if cons.max_gpus is not None:
        slack["max_gpus"] = int(cons.max_gpus - best.gpus)
    stock = {g.name: int(g.available - sum(best.instances[q] * problem.gpi[q] for q in problem.pools_of(h)))
             for h, g in enumerate(table.gpus) if g.available is not None}
    if stock:
        slack["stock"] = stock
    if problem.max_types is not None:
        slack["max_replica_types"] = int(problem.max_types - sum(1 for x in best.counts if x))
    if problem.capacity:
        used = fm.capacity_used(problem, best.instances)
        slack["capacity"] = {key: int(limit - used[key]) for key, limit, _ in problem.capacity}
    binding = []
    for f in _active(problem):
        alt = fm.solve_fleets(problem, 1, families=tuple(set(fm.FAMILIES) - {f}), time_limit_s=10.0,
                              better_than=best.key)
        if alt.fleets and alt.fleets[0].key < best.key:
            binding.append(f)
    if problem.spares > 0:
        alt = fm.solve_fleets(dataclasses.replace(problem, spares=0), 1, time_limit_s=10.0, better_than=best.key)
        if alt.fleets and alt.fleets[0].key < best.key:
            binding.append("redundancy")
    slo = scenario.serve.slo
    for rule in ("ttft", "itl", "quality"):
        if rule == "quality" and (scenario.serve.quality is None or "ok_quality" not in table.cols):
            continue
        if rule != "quality" and getattr(slo, f"{rule}_p99_s") is None:
            continue
        loose = _rows(table, ok_ttft=rule != "ttft", ok_itl=rule != "itl", ok_quality=rule != "quality")
        if len(loose) == int(table.feasible.sum()):
            continue
        alt = fm.solve_fleets(_problem_for(table, loose, scenario, problem.objective), 1, time_limit_s=10.0,
                              better_than=best.key)
        if alt.fleets and alt.fleets[0].key < best.key:
            binding.append(rule)
    keys = {"budget": "budget_usd_per_hour", "max_gpus": "max_gpus", "max_types": "max_replica_types"}
    lines = [binding_line(_HUMAN[f], {keys[f]: slack[keys[f]]} if keys.get(f) in slack else None, "fleet")
             for f in binding]
    if "capacity" in binding:
        lines.append("capacity: the fleet rents " + ", ".join(
            f"{limit - slack['capacity'][key]} of the {limit} GPUs pricing.capacity.{key} allows"
            for key, limit, _ in problem.capacity) + "; without these caps a cheaper fleet exists")
    if not binding:
        lines.append("no limit binds: the optimum is the cheapest fleet regardless of the limits")
    return {"reason": "feasible", "binding": binding, "slack": slack, "lines": lines,
            "options": _plain_summary(option_summary(table))}
