"""Sensitivity of a solved training scenario: tornado, re-optimised ends, switching thresholds, slack.

Uncertain inputs (CONTRACTS.md names them by the dotted paths sweeps use, or a named input):

    price.<GPU>            that GPU type's $/GPU-hour (rental offer or owned TCO rate)
    efficiency             the achievable-compute scale (multiplies the modelled MFU)
    inter_node_bandwidth   every GPU's scale-out network bandwidth
    train.tokens           tokens to train
    constraints.budget_usd, constraints.deadline_days   (when the scenario sets them)
    pricing.usd_per_kwh    electricity, for owned clusters

Each input is multiplied by (1 + change_pct/100).

- Tornado: the chosen configuration's objective at -X% and +X% (X = ``swing_pct``), sorted by swing.
- Re-optimised: the best configuration at each end, and whether it differs.
- Threshold per input and direction: the smallest change within ``range_pct`` at which the
  best configuration changes, found by parametric re-solving: a grid of ``grid`` steps finds
  the first bracket where the best differs, then bisection narrows it to ``tol_pct``
  percentage points. ``change_pct`` is the bracket's far end (the best has changed there;
  at change_pct - tol_pct toward zero it has not). A switch and switch back inside one grid
  step would be missed: the grid step is stated in the output.
- Slack at the optimum: see explain.binding_summary.

Price, tokens, budget and deadline changes re-price the table (tables.reprice) without
re-estimating; efficiency and bandwidth changes re-estimate only memory-feasible rows
(memory does not depend on them).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from optimizer.search import cpsat
from optimizer.search.tables import (OBJECTIVE_COLUMN_BY_NAME, Table, complete_table, objective_keys, reprice)


def _inputs(scenario, table: Table) -> list[str]:
    names = [f"price.{g.name}" for g in table.gpus]
    names += ["efficiency", "inter_node_bandwidth", "train.tokens"]
    if scenario.constraints.budget_usd is not None:
        names.append("constraints.budget_usd")
    if scenario.constraints.deadline_days is not None:
        names.append("constraints.deadline_days")
    if scenario.pricing.mode == "owned":
        names.append("pricing.usd_per_kwh")
    return names


class _Perturber:
    """Builds the table for an input scaled by a factor (cached)."""

    def __init__(self, spec, scenario, table: Table, efficiency_scale: float = 1.0):
        self.spec, self.scenario, self.table, self.eff = spec, scenario, table, efficiency_scale
        keep = np.nonzero(~table.violations["memory"])[0]
        self.base = table.subset(keep)          # memory-feasible rows only: memory is invariant here
        self.base_index = keep
        self.cache: dict = {}

    def table_for(self, name: str, factor: float) -> tuple[Table, object]:
        key = (name, round(factor, 9))
        if key in self.cache:
            return self.cache[key]
        sc, t = self.scenario, self.base
        if name.startswith("price."):
            gname = name[len("price."):]
            gpus = [replace(g, usd_per_gpu_hour=g.usd_per_gpu_hour * factor,
                            usd_per_instance_hour=g.usd_per_instance_hour * factor) if g.name == gname else g
                    for g in t.gpus]
            out = reprice(t, sc, gpus)
        elif name == "efficiency":
            out = complete_table(self.spec, sc, t.gpus, _layout_cols(t), self.eff * factor)
        elif name == "inter_node_bandwidth":
            gpus = [replace(g, hardware=g.hardware.with_inter_node_bytes_per_s(
                g.hardware.inter_node_bytes_per_s * factor)) for g in t.gpus]
            out = complete_table(self.spec, sc, gpus, _layout_cols(t), self.eff)
        elif name == "pricing.usd_per_kwh":
            from optimizer.search.api import owned_rate
            from optimizer.catalog import load_catalog

            sc = sc.with_overrides({name: sc.pricing.usd_per_kwh * factor})
            cat = load_catalog()
            gpus = []
            for g in t.gpus:
                rate = owned_rate(cat.accelerator(g.name), sc.pricing) if g.offer == "owned" else g.usd_per_gpu_hour
                gpus.append(replace(g, usd_per_gpu_hour=rate, usd_per_instance_hour=rate * g.gpus_per_instance))
            out = reprice(t, sc, gpus)
        else:
            value = _get_dotted(sc, name)
            sc = sc.with_overrides({name: value * factor})
            out = reprice(t, sc)
        self.cache[key] = (out, sc)
        return out, sc


def _layout_cols(t: Table) -> dict:
    keys = ("gpu", "tp", "pp", "dp", "cp", "ep", "zero", "precision", "micro_batch", "recompute",
            "sequence_parallel", "grad_accum", "global_batch", "n_gpus", "n_nodes")
    return {k: t.cols[k] for k in keys}


def _get_dotted(scenario, path: str) -> float:
    cur = scenario
    for k in path.split("."):
        cur = getattr(cur, k)
    return float(cur)


def _best(table: Table, scenario, objective: str):
    """Top-1 by CP-SAT over the rows that can be best (see api.candidate_rows)."""
    from optimizer.search.api import _limits, candidate_rows

    rows = candidate_rows(table, objective, 1)
    if len(rows) == 0:
        return None
    sub = table.subset(rows)
    res = cpsat.solve_top_k(objective_keys(sub, objective), 1, _limits(sub, scenario))
    return int(rows[res.rows[0]]) if res.rows else None


def best_config(p: _Perturber, name: str, factor: float, objective: str):
    t, sc = p.table_for(name, factor)
    r = _best(t, sc, objective)
    return (None if r is None else t.config(r)), t, r


def threshold(p: _Perturber, name: str, direction: str, objective: str, base_cfg: dict, *,
              range_pct: float, grid: int, tol_pct: float) -> dict:
    sign = 1 if direction == "up" else -1
    step = range_pct / grid
    lo = 0.0
    hi = None
    for i in range(1, grid + 1):
        pct = step * i
        if sign < 0 and pct >= 100:
            pct = 99.9
        cfg, _, _ = best_config(p, name, 1 + sign * pct / 100, objective)
        if cfg != base_cfg:
            hi = pct
            break
        lo = pct
    if hi is None:
        return {"input": name, "direction": direction, "change_pct": None, "range_pct": range_pct,
                "new_best": None, "new_status": None, "grid_step_pct": step, "tolerance_pct": tol_pct}
    while hi - lo > tol_pct:
        mid = (lo + hi) / 2
        cfg, _, _ = best_config(p, name, 1 + sign * mid / 100, objective)
        if cfg != base_cfg:
            hi = mid
        else:
            lo = mid
    cfg, _, _ = best_config(p, name, 1 + sign * hi / 100, objective)
    return {"input": name, "direction": direction, "change_pct": sign * hi, "range_pct": range_pct,
            "new_best": cfg, "new_status": "feasible" if cfg is not None else "infeasible",
            "grid_step_pct": step, "tolerance_pct": tol_pct}


def sensitivity(result, scenario, *, swing_pct: float = 20.0, range_pct: float = 50.0, grid: int = 10,
                tol_pct: float = 0.1, inputs: list[str] | None = None) -> dict:
    """Tornado, re-optimised ends, switching thresholds and slack for a solved scenario."""
    from optimizer.search.explain import binding_summary

    table: Table = result.table
    objective = result.objective
    if len(result.configs) == 0:
        return {"tornado": [], "thresholds": [], "slack": {}, "note": "infeasible: nothing to analyse"}
    spec = scenario.spec()
    p = _Perturber(spec, scenario, table)
    base_cfg = {k: result.configs.iloc[0][k] for k in
                ("gpu", "n_gpus", "tp", "pp", "dp", "cp", "ep", "zero", "precision", "micro_batch",
                 "recompute", "sequence_parallel")}
    base_cfg = {k: (v.item() if hasattr(v, "item") else v) for k, v in base_cfg.items()}
    # locate the chosen row among the memory-feasible rows
    r_full = _row_of(table, base_cfg)
    r_base = int(np.nonzero(p.base_index == r_full)[0][0])
    col = OBJECTIVE_COLUMN_BY_NAME[objective]
    base_value = float(table.cols[col][r_full])
    tornado, thresholds = [], []
    for name in inputs or _inputs(scenario, table):
        ends = {}
        for direction, f in (("down", 1 - swing_pct / 100), ("up", 1 + swing_pct / 100)):
            t, sc = p.table_for(name, f)
            cfg, _, rb = best_config(p, name, f, objective)
            ends[direction] = {"factor": f, "objective": float(t.cols[col][r_base]),
                               "best": cfg, "best_objective": None if rb is None else float(t.cols[col][rb]),
                               "changes": cfg != base_cfg}
        tornado.append({"input": name, "low": ends["down"]["objective"], "high": ends["up"]["objective"],
                        "swing": abs(ends["up"]["objective"] - ends["down"]["objective"]),
                        "base": base_value, "reoptimised": ends})
        for direction in ("down", "up"):
            thresholds.append(threshold(p, name, direction, objective, base_cfg,
                                        range_pct=range_pct, grid=grid, tol_pct=tol_pct))
    tornado.sort(key=lambda d: -d["swing"])
    slack = binding_summary(table, scenario, r_full)
    return {"objective": objective, "objective_column": col, "swing_pct": swing_pct, "range_pct": range_pct,
            "tornado": tornado, "thresholds": thresholds, "slack": slack}


def _row_of(table: Table, cfg: dict) -> int:
    for r in range(len(table)):
        if table.config(r) == cfg:
            return r
    raise KeyError(cfg)
