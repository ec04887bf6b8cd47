"""``solve_training``: the K best distinct feasible training configurations, proven by CP-SAT.

It ranks rows of the candidate table (table.py); each returned row is re-evaluated by
``evaluate_training`` (the same table code) and the solve fails loudly if they disagree."""

from __future__ import annotations

import numpy as np

from optimizer.search.core.frame import check_agreement
from optimizer.errors import ClusteroptError
from optimizer.pricing import best_per_config, commitment_notes, gpu_options
from optimizer.scenario import load_scenario
from optimizer.search.core import cpsat
from optimizer.search.core.pareto import pareto_front
from optimizer.search.core.result import SolveResult
from optimizer.search.train.evaluate import evaluate_training
from optimizer.search.train.explain import binding_summary, explain_infeasible
from optimizer.search.train.frame import OBJECTIVE_COLUMN, layout_frame
from optimizer.search.train.table import CONFIG_KEYS, Table, build_table, limits_of, objective_keys

# ----------------------------------------------------------------------------------------
# solve
# ----------------------------------------------------------------------------------------

def solver_limits(table: Table, scenario) -> list[cpsat.Limit]:
    """The scenario's limits as CP-SAT linear constraints over the rows (see cpsat notation)."""
    lim = limits_of(scenario, table.gpus)
    c = table.cols
    out = [cpsat.Limit("memory", c["memory_units"] - lim["memory_cap"][c["gpu"]], 0)]
    if lim["budget"] is not None:
        out.append(cpsat.Limit("budget", c["budget_units"], lim["budget"]))
    if lim["budget_per_hour"] is not None:
        out.append(cpsat.Limit("budget_per_hour", c["rate_units"], lim["budget_per_hour"]))
    if lim["deadline"] is not None:
        out.append(cpsat.Limit("deadline", c["deadline_units"], lim["deadline"]))
    for g in table.gpus:
        if g.available is not None:
            out.append(cpsat.Limit("stock", np.where(c["gpu"] == g.index, c["n_gpus"], 0), g.available, g.name))
    if lim["max_gpus"] is not None:
        out.append(cpsat.Limit("max_gpus", c["n_gpus"], lim["max_gpus"]))
    out.append(cpsat.Limit("min_gpus", -c["n_gpus"], -lim["min_gpus"]))
    return out


def candidate_rows(table: Table, objective: str, k: int) -> np.ndarray:
    """Rows that can be in the top-K: feasible, and not worse on the primary key than the
    K-th best feasible row (ties kept). Exact: any other row is beaten by K rows."""
    feas = best_offer_rows(table, np.nonzero(table.feasible)[0], objective)
    if len(feas) <= k:
        return feas
    primary = objective_keys(table, objective)[0][feas]
    kth = np.partition(primary, k - 1)[k - 1]
    return feas[primary <= kth]


def best_offer_rows(table: Table, rows: np.ndarray, objective: str) -> np.ndarray:
    """Of ``rows``, each configuration's best row: the same layout on several offers (issue 17)
    counts once, on the offer best for the objective (pricing.best_per_config)."""
    names: dict = {}
    name_idx = np.array([names.setdefault(g.name, len(names)) for g in table.gpus], dtype=np.int64)
    c = table.cols
    cfg = [name_idx[c["gpu"]]] + [c[k] for k in CONFIG_KEYS if k != "gpu"]
    return best_per_config(cfg, objective_keys(table, objective), rows)


def solve_training(scenario, *, top_k: int | None = None, objective: str | None = None,
          time_limit_s: float = 30.0, catalog=None, efficiency_scale: float = 1.0,
          table: Table | None = None, full_table: Table | None = None,
          deterministic: bool = False) -> SolveResult:
    """Rank the K best distinct feasible configurations of a training scenario, proven by CP-SAT.

    ``table`` (optional): a candidate table already built for this scenario (sweeps re-price one
    table for many points). ``full_table``: the same with every GPU count (``build_table(...,
    gpu_count_limits=False)``), which explanations of infeasibility need; built when missing.
    """
    scenario = load_scenario(scenario)
    objective = objective or scenario.objective
    if objective not in OBJECTIVE_COLUMN:
        raise ClusteroptError("objective", f"{objective!r} is not a training objective", "allowed: cost, time, gpus")
    k = scenario.top_k if top_k is None else top_k
    spec = scenario.spec()
    notes: list[str] = []
    if table is None:
        gpus, notes = gpu_options(scenario, catalog)
        table = build_table(spec, scenario, gpus, efficiency_scale)
    rows = candidate_rows(table, objective, k)
    sub = table.subset(rows)
    res = cpsat.solve_top_k(objective_keys(sub, objective), k, solver_limits(sub, scenario), time_limit_s=time_limit_s,
                            deterministic=deterministic)
    chosen = rows[res.rows] if res.rows else np.zeros(0, dtype=np.int64)
    status = res.status if len(chosen) else "infeasible"
    if res.status == "unknown" or (len(chosen) < min(k, len(rows)) and res.status != "optimal"):
        # the time limit stopped CP-SAT before it ranked K rows: every candidate row meets every
        # limit, so complete the ranking from the table's own order (not proven by CP-SAT)
        keys = [key[rows] for key in objective_keys(table, objective)]
        order = rows[np.lexsort(keys[::-1])]
        chosen = np.concatenate([chosen, order[~np.isin(order, chosen)]])[:k]
        status = "feasible" if len(chosen) else "infeasible"
        notes.append(f"CP-SAT {'deterministic ' if deterministic else ''}time limit ({time_limit_s:g} s) reached "
                     "before the ranking was proven; the configurations are the best by sorting the candidate "
                     "table (status 'feasible', not proven)")
    elif res.limit_reached:
        notes.append(f"CP-SAT {'deterministic ' if deterministic else ''}time limit ({time_limit_s:g} s) reached "
                     "before every solve was proven (status 'feasible')" + (
                         "" if deterministic else "; on a busy machine the ranking may differ run to run "
                         "(--deterministic bounds CP-SAT's work instead of the wall clock)"))
    configs = layout_frame(table, chosen, scenario, objective)
    verify_solution(scenario, table, chosen, spec, efficiency_scale, objective)
    if len(chosen):
        explanation = binding_summary(table, scenario, int(chosen[0]))
    else:
        # the table left out rows breaking GPU-count limits; explanations need them all
        full = full_table if full_table is not None else build_table(
            spec, scenario, table.gpus, efficiency_scale, gpu_count_limits=False)
        explanation = explain_infeasible(full, scenario, spec)
    explanation["notes"] = (notes + commitment_notes(table.gpus) + explanation.get("notes", [])
                            + confidence_note(table, scenario, objective))
    return SolveResult(
        scenario=scenario.name, status=status, objective=objective, configs=configs,
        pareto=layout_frame(table, pareto_front(table), scenario, objective, ranked=False),
        explanation=explanation,
        stats={"rows": len(table), "feasible_rows": int(table.feasible.sum()), "cpsat_rows": len(rows),
               "cpsat_solves": res.n_solves, "cpsat_time_s": res.solve_time_s,
               "time_limit_s": time_limit_s, "deterministic": bool(deterministic),
               "time_limit_reached": bool(res.limit_reached or res.status == "unknown"),
               "cpsat_deterministic_time": res.deterministic_time},
        table=table)


def confidence_note(table: Table, scenario, objective: str) -> list[str]:
    """With ``constraints.confidence``: whether it binds - configurations that meet the deadline
    and budget at the central estimate but not at the confidence quantile, and whether the
    best of those would otherwise have ranked first."""
    q = scenario.constraints.confidence
    if q is None or not len(table):
        return []
    lim = limits_of(scenario, table.gpus)
    c = table.cols
    excl = np.zeros(len(table), dtype=bool)
    for fam, central, at_q in (("budget", "cost_units", "budget_units"), ("deadline", "time_units", "deadline_units")):
        if lim[fam] is not None:
            excl |= (c[central] <= lim[fam]) & (c[at_q] > lim[fam])
    for fam, v in table.violations.items():
        if fam not in ("budget", "deadline"):
            excl &= ~v
    if not excl.any():
        return [f"confidence {q:g}: does not bind (every configuration meeting the deadline and budget at the "
                "central estimate meets them at that quantile too)"]
    cand = np.nonzero(excl | table.feasible)[0]
    keys = [k[cand] for k in objective_keys(table, objective)]
    best = int(cand[np.lexsort(keys[::-1])[0]])
    line = (f"confidence {q:g} binds: {int(excl.sum())} configuration(s) meet the deadline and budget at the central "
            f"estimate but not at the {q:g} quantile")
    if excl[best]:
        line += (f"; without it the best would be {table.gpus[int(c['gpu'][best])].name} x{int(c['n_gpus'][best])} "
                 f"(wall-clock {float(c['wall_clock_days'][best]):.1f} d, "
                 f"{float(c['wall_clock_days_p90'][best]):.1f} d at p90)")
    return [line]


def verify_solution(scenario, table: Table, rows, spec, efficiency_scale: float, objective: str = "cost") -> None:
    """Re-evaluate each chosen row through evaluate_training(); fail loudly on any disagreement."""
    for r in rows:
        ev = evaluate_training(scenario, table.config(int(r)), gpus=table.gpus, spec=spec,
                               efficiency_scale=efficiency_scale, objective=objective)
        for key in ("cost_usd", "wall_clock_days", "memory_per_gpu_bytes", "goodput"):
            check_agreement("evaluate_training", key, table.cols[key][r], ev[key], table.config(int(r)))
        if not ev.feasible:
            raise RuntimeError(f"solver chose a configuration evaluate_training() finds infeasible: {ev.violations}")
