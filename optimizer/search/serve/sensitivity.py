"""Sensitivity for serving scenarios (and the sweep grouping rule), in the shapes sweep.py and sensitivity.py give
for training (so the CLI and JSON can render both the same way).

Sweeps of serving scenarios run through sweep.sweep (one pipeline), which groups points by
TABLE_FREE below so that they share one replica table.

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


from dataclasses import replace

from optimizer.scenario import load_scenario
from optimizer.search.core.threshold import check_ranges, find_threshold, select_inputs, tornado_entry
from optimizer.search.serve.solve import solve_serving
from optimizer.search.serve.table import serving_table

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

    def best_at(f):
        key, _, fleet = p.best(name, f)
        return key, fleet

    return find_threshold(best_at, base_key, name, direction, range_pct=range_pct, grid=grid, tol_pct=tol_pct,
                          note=note)


def serving_sensitivity(result, scenario, *, swing_pct: float = 20.0, range_pct: float = 50.0, grid: int = 10,
                        tol_pct: float = 0.1, inputs: list[str] | None = None) -> dict:
    """Tornado, switching thresholds and slack for a solved serving scenario (module docstring)."""

    scenario = load_scenario(scenario)

    check_ranges(swing_pct, range_pct, grid, tol_pct)
    if len(result.configs) == 0:
        return {"objective": result.objective, "tornado": [], "thresholds": [], "slack": {},
                "note": "infeasible: nothing to analyse; see the explanation"}
    best = result.configs.iloc[0]
    base_key, base_value = fleet_key(best["replicas"]), float(best["objective"])
    all_inputs = select_inputs(_inputs(scenario, result.table), inputs)
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
        tornado.append(tornado_entry(name, ends, base_value, note))
        for direction in ("down", "up"):
            thresholds.append(_threshold(p, name, direction, base_key, range_pct=range_pct, grid=grid,
                                         tol_pct=tol_pct, note=note))
    tornado.sort(key=lambda d: -d["swing"])
    return {"objective": result.objective, "base_objective": base_value, "base_fleet": compact_fleet(best["replicas"]),
            "swing_pct": swing_pct, "range_pct": range_pct, "tolerance_pct": tol_pct, "grid_step_pct": range_pct / grid,
            "tornado": tornado, "thresholds": thresholds,
            # the same nesting as training's (explain.binding_summary under 'slack')
            "slack": {k: result.explanation.get(k) for k in ("slack", "binding", "lines") if k in result.explanation}}
