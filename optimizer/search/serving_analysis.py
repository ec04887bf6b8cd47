"""Sweeps and sensitivity for serving scenarios, in the shapes sweep.py and sensitivity.py give
for training (so the CLI and JSON can render both the same way).

serving_sweep(scenario, vary)         -> DataFrame, one row per grid point, the rows sweep.sweep
                                         gives (sweep._point_row: varied values, status, the best
                                         fleet's scalar columns, 'fleet' on one line, explanation),
                                         plus the marginal $/hour per unit of the first varied input
serving_sensitivity(result, scenario) -> dict: tornado, thresholds (CONTRACTS.md 'Sensitivity'
                                         keys: input, direction, change_pct, range_pct, new_best),
                                         slack

Reuse. The replica table depends on the model, the lengths, the SLOs, the search space, the GPU
list and pricing, not on the request rate, redundancy, utilisation cap or limits: points that
change only those (TABLE_FREE) share one table and re-solve only the fleet model. Price inputs
re-price the billing pools of a shared table; 'efficiency' (the estimator's achievable
fractions, serving_time.HBM_EFFICIENCY etc., scaled together) rebuilds it.

Sensitivity inputs: price.<GPU> for each eligible type, serve.requests_per_s,
constraints.budget_usd_per_hour (noted when unset), efficiency. A threshold is the smallest
change within range_pct at which the best fleet (its replica options and counts) changes: a grid
of ``grid`` steps finds the first probe where it differs, bisection narrows it to tol_pct
(as sensitivity.threshold does). The tornado gives, at -swing and +swing, the re-optimised best
fleet's objective (and whether the fleet changed).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import replace
from typing import Any

import pandas as pd

from optimizer.errors import ClusteroptError

#: Paths whose change leaves the replica table as it is (only the fleet model is re-solved).
TABLE_FREE = ("serve.requests_per_s", "serve.redundancy", "serve.max_utilization", "serve.max_replica_types",
              "constraints.budget_usd_per_hour", "constraints.max_gpus", "constraints.available", "top_k",
              "objective")


def _table_free(path: str) -> bool:
    return any(path == p or path.startswith(p + ".") for p in TABLE_FREE)


def fleet_key(replicas: list[dict]) -> tuple:
    """A fleet's identity: its replica options (with offer) and counts."""
    return tuple(sorted((x["gpu"], x["tp"], x["pp"], x["weights"], x["kv"], x["batch"], x["offer"], x["count"])
                        for x in replicas))


def compact_fleet(replicas: list[dict]) -> list[dict]:
    keys = ("gpu", "tp", "pp", "weights", "kv", "batch", "offer", "count")
    return [{k: x[k] for k in keys} for x in replicas]


# ----------------------------------------------------------------------------------------
# sweeps
# ----------------------------------------------------------------------------------------

def serving_sweep(scenario, vary: dict[str, Any], *, objective: str | None = None, top_k: int = 1) -> pd.DataFrame:
    """Solve the grid of ``vary`` (path -> list of values, or a 'start:stop:n:log' string) for a
    serving scenario. Points differing only in TABLE_FREE paths share one replica table."""
    from optimizer.scenario import load_scenario
    from optimizer.search.serving import solve_serving
    from optimizer.search.sweep import _point_row, parse_values, resolve_path

    scenario = load_scenario(scenario)
    axes = {}
    for path, vals in vary.items():
        p = resolve_path(scenario, path)
        axes[p] = parse_values(vals, f"--vary {path}") if isinstance(vals, str) else list(vals)
    names = list(axes)
    table_paths = [n for n in names if not _table_free(n)]
    tables: dict[tuple, Any] = {}
    rows = []
    for combo in itertools.product(*axes.values()):
        values = dict(zip(names, combo))
        sc = scenario.with_overrides(values)
        key = tuple(repr(values[n]) for n in table_paths)
        res = solve_serving(sc, objective=objective, top_k=top_k, table=tables.get(key), pareto=False)
        tables.setdefault(key, res.table)
        rows.append(_point_row(values, res))
    df = pd.DataFrame(rows)
    _add_marginal(df, names[0] if names else None, names[1:])
    return df


def _add_marginal(df: pd.DataFrame, first: str | None, others: list[str]) -> None:
    """$/hour added per unit of the first varied input between consecutive feasible points
    (e.g. per extra request/s), within each combination of the other inputs."""
    df["marginal_usd_per_hour_per_unit"] = math.nan
    if first is None or "usd_per_hour" not in df:
        return
    groups = df.groupby([df[o].astype(str) for o in others], sort=False) if others else [(None, df)]
    for _, g in groups:
        prev = None
        for i in g.index:
            if df.at[i, "status"] == "infeasible":
                continue
            if prev is not None:
                try:
                    dx = float(df.at[i, first]) - float(df.at[prev, first])
                except (TypeError, ValueError):
                    return
                if dx:
                    df.at[i, "marginal_usd_per_hour_per_unit"] = (df.at[i, "usd_per_hour"] - df.at[prev, "usd_per_hour"]) / dx
            prev = i


# ----------------------------------------------------------------------------------------
# sensitivity
# ----------------------------------------------------------------------------------------

class _Probe:
    """Best fleets for one input scaled by a factor (tables cached)."""

    def __init__(self, scenario, result):
        self.scenario, self.base_table = scenario, result.table
        self.objective = result.objective
        self.cache: dict = {}
        self.tables: dict = {}

    def best(self, name: str, factor: float):
        """(fleet key or None, objective or None, compact fleet or None)."""
        from optimizer.search.serving import solve_serving

        key = (name, round(factor, 9))
        if key in self.cache:
            return self.cache[key]
        sc, table = self.scenario, self.base_table
        if name.startswith("price."):
            gname = name[len("price."):]
            pools = [replace(p, usd_per_gpu_hour=p.usd_per_gpu_hour * factor,
                             usd_per_instance_hour=p.usd_per_instance_hour * factor) if p.name == gname else p
                     for p in table.pools]
            table = replace(table, pools=pools)
        elif name == "efficiency":
            from optimizer.search.serving import serving_table

            f = round(factor, 9)
            if f not in self.tables:
                self.tables[f] = serving_table(sc.spec(), sc, table.gpus, efficiency_scale=factor)
            table = self.tables[f]
        else:
            cur = sc
            for k in name.split("."):
                cur = getattr(cur, k)
            sc = sc.with_overrides({name: float(cur) * factor})
        res = solve_serving(sc, top_k=1, table=table, pareto=False, explain=False, objective=self.objective)
        if len(res.configs):
            row = res.configs.iloc[0]
            out = (fleet_key(row["replicas"]), float(row["objective"]), compact_fleet(row["replicas"]))
        else:
            out = (None, None, None)
        self.cache[key] = out
        return out


def _inputs(scenario, table) -> list[tuple[str, str | None]]:
    out: list[tuple[str, str | None]] = [(f"price.{g.name}", None) for g in table.gpus]
    out.append(("serve.requests_per_s", None))
    out.append(("constraints.budget_usd_per_hour",
                None if scenario.constraints.budget_usd_per_hour is not None else "no budget in this scenario"))
    out.append(("efficiency", None))
    return out


def _threshold(p: _Probe, name: str, direction: str, base_key, *, range_pct: float, grid: int, tol_pct: float,
               note: str | None) -> dict:
    sign = 1 if direction == "up" else -1
    step = range_pct / grid
    out = {"input": name, "direction": direction, "change_pct": None, "range_pct": range_pct, "new_best": None,
           "unchanged_pct": None, "new_status": None, "grid_step_pct": step, "tolerance_pct": tol_pct}
    if note:
        out["note"] = note
        return out
    cap = range_pct if sign > 0 else min(range_pct, 99.9)
    lo, hi = 0.0, None
    for i in range(1, grid + 1):
        pct = min(step * i, cap)
        if p.best(name, 1 + sign * pct / 100)[0] != base_key:
            hi = pct
            break
        lo = pct
        if pct >= cap:
            break
    if hi is None:
        return out
    while hi - lo > tol_pct:
        mid = (lo + hi) / 2
        if p.best(name, 1 + sign * mid / 100)[0] != base_key:
            hi = mid
        else:
            lo = mid
    k, _, fleet = p.best(name, 1 + sign * hi / 100)
    out.update(change_pct=sign * hi, unchanged_pct=sign * lo, new_best=fleet,
               new_status="feasible" if k is not None else "infeasible")
    return out


def serving_sensitivity(result, scenario, *, swing_pct: float = 20.0, range_pct: float = 50.0, grid: int = 10,
                        tol_pct: float = 0.1, inputs: list[str] | None = None) -> dict:
    """Tornado, switching thresholds and slack for a solved serving scenario (module docstring)."""
    from optimizer.scenario import load_scenario

    scenario = load_scenario(scenario)
    for fld, v, lo, hi in (("swing_pct", swing_pct, 0, 99.9), ("range_pct", range_pct, 0, 1000)):
        if not lo < v <= hi:
            raise ClusteroptError(f"sensitivity.{fld}", f"{v!r}", f"a percentage in ({lo}, {hi}]")
    if len(result.configs) == 0:
        return {"objective": result.objective, "tornado": [], "thresholds": [], "slack": {},
                "note": "infeasible: nothing to analyse; see the explanation"}
    best = result.configs.iloc[0]
    base_key, base_value = fleet_key(best["replicas"]), float(best["objective"])
    all_inputs = _inputs(scenario, result.table)
    if inputs is not None:
        known = {n for n, _ in all_inputs}
        bad = [n for n in inputs if n not in known]
        if bad:
            raise ClusteroptError("sensitivity.inputs", f"unknown {bad}", "allowed: " + ", ".join(sorted(known)))
        all_inputs = [(n, note) for n, note in all_inputs if n in inputs]
    p = _Probe(scenario, result)
    tornado, thresholds = [], []
    for name, note in all_inputs:
        ends = {}
        for direction, f in (("down", 1 - swing_pct / 100), ("up", 1 + swing_pct / 100)):
            if note:
                ends[direction] = {"factor": f, "best_objective": base_value, "best": compact_fleet(best["replicas"]),
                                   "changes": False}
                continue
            k, v, fleet = p.best(name, f)
            ends[direction] = {"factor": f, "best_objective": v, "best": fleet, "changes": k != base_key}
        lo_v, hi_v = ends["down"]["best_objective"], ends["up"]["best_objective"]
        swing = abs(hi_v - lo_v) if lo_v is not None and hi_v is not None else math.inf
        entry = {"input": name, "low": lo_v, "high": hi_v, "swing": swing, "base": base_value, "reoptimised": ends}
        if note:
            entry["note"] = note
        tornado.append(entry)
        for direction in ("down", "up"):
            thresholds.append(_threshold(p, name, direction, base_key, range_pct=range_pct, grid=grid,
                                         tol_pct=tol_pct, note=note))
    tornado.sort(key=lambda d: -d["swing"])
    return {"objective": result.objective, "base_objective": base_value, "base_fleet": compact_fleet(best["replicas"]),
            "swing_pct": swing_pct, "range_pct": range_pct, "tolerance_pct": tol_pct, "grid_step_pct": range_pct / grid,
            "tornado": tornado, "thresholds": thresholds,
            # the same nesting as training's (explain.binding_summary under 'slack')
            "slack": {k: result.explanation.get(k) for k in ("slack", "binding", "lines") if k in result.explanation}}
