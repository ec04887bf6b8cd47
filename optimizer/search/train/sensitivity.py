"""Sensitivity of a solved training scenario: tornado, re-optimised ends, switching thresholds, slack.

Uncertain inputs (CONTRACTS.md names them by the dotted paths sweeps use, or a named input):

    price.<GPU>               that GPU type's $/GPU-hour (rental offer or owned TCO rate)
    efficiency                the achievable-compute scale (multiplies the modelled MFU)
    inter_node_bandwidth      every GPU's scale-out network bandwidth
    train.tokens              tokens to train
    constraints.budget_usd    total budget
    constraints.deadline_days deadline
    pricing.usd_per_kwh       electricity (moves owned-cluster prices only)

Each input is multiplied by (1 + change_pct/100). Every input appears in the output in both
directions; one the scenario does not set (no budget) or that cannot move the answer
(electricity when GPUs are rented) carries ``change_pct: null`` and a ``note``.

- Tornado: the RE-OPTIMISED best objective at -X% and +X% (X = ``swing_pct``; as the serving
  tornado), sorted by swing; each end also gives its best configuration, whether it differs
  from the base one, and the base configuration's own objective there (``objective``: what
  keeping it would give).
- Threshold per input and direction: the smallest change within ``range_pct`` at which the best
  configuration changes, by parametric re-solving (CP-SAT at every probe): a grid of ``grid``
  steps finds the first probe where the best differs, then bisection narrows the bracket to
  ``tolerance_pct`` percentage points. ``change_pct`` is the bracket's far end (the best has
  changed there); ``unchanged_pct`` its near end (the best is still the base configuration there).
  A switch and switch-back inside one grid step would be missed; ``grid_step_pct`` says how fine
  the grid is.
- Slack at the optimum: explain.binding_summary (memory headroom, budget and deadline slack,
  binding limits).

Speed. Each probe works only on the rows that can be best somewhere in the range, which is
exact: every input moves each row's objective, cost and wall-clock monotonically (a price, the
tokens or electricity raise them; efficiency and bandwidth lower them; budget and deadline move
only their limit), so a row's figures at the two ends of the range bound it in between. A row
feasible at both ends is feasible throughout and caps the objective at its worse end; a row
whose better end is above that cap is beaten by it at every factor. Efficiency and bandwidth
first narrow the rows from the base table alone (Perturber._prefilter: step time T is monotone
and T x f non-decreasing), so only those rows are re-estimated at the ends. Every probe checks
the kept rows' figures against their end values and falls back to all rows if one ever fails
(``monotonicity_fallbacks`` in the output). Memory never depends on these inputs, so only
memory-feasible rows are considered at all.
"""

from __future__ import annotations

from dataclasses import replace
import numpy as np

from optimizer.pricing import owned_rate
from optimizer.search.core import cpsat
from optimizer.search.core.threshold import check_ranges, find_threshold, select_inputs, tornado_entry
from optimizer.search.train.explain import binding_summary
from optimizer.search.train.solve import candidate_rows, solver_limits
from optimizer.search.train.space import PRECISIONS, RECOMPUTES
from optimizer.search.train.table import (CONFIG_KEYS, OBJECTIVE_COLUMN_BY_NAME, Table, complete_table,
                                          objective_keys, reprice)

#: Inputs that change estimator figures (step time); all others only re-price.
REESTIMATE_INPUTS = ("efficiency", "inter_node_bandwidth")

SENSITIVITY_DEFAULTS = {"swing_pct": 20.0, "range_pct": 50.0, "grid": 10, "tolerance_pct": 0.1}


def inputs_of(scenario, table: Table) -> list[tuple[str, str | None]]:
    """Every uncertain input of the issue, with a note when it cannot move the answer."""
    c, pricing = scenario.constraints, scenario.pricing
    # one price input per GPU type, however many offers it is rented through (issue 17)
    out: list[tuple[str, str | None]] = [(f"price.{n}", None) for n in dict.fromkeys(g.name for g in table.gpus)]
    out += [("efficiency", None), ("inter_node_bandwidth", None), ("train.tokens", None)]
    out.append(("constraints.budget_usd", None if c.budget_usd is not None else "no budget in this scenario"))
    out.append(("constraints.deadline_days",
                None if c.deadline_days is not None else "no deadline in this scenario"))
    owned = pricing.mode == "owned" and any(g.offer == "owned" for g in table.gpus)
    out.append(("pricing.usd_per_kwh", None if owned else
                "GPUs are rented: electricity is inside the rental price"))
    return out


def _layout_cols(t: Table) -> dict:
    keys = ("gpu", "tp", "pp", "dp", "cp", "ep", "zero", "precision", "micro_batch", "recompute",
            "sequence_parallel", "grad_accum", "global_batch", "n_gpus", "n_nodes")
    return {k: t.cols[k] for k in keys}


def _get_dotted(scenario, path: str) -> float:
    cur = scenario
    for k in path.split("."):
        cur = getattr(cur, k)
    return float(cur)


class Perturber:
    """Tables and best configurations for one input scaled by a factor (cached).

    ``span`` is the largest |change| (as a fraction) any probe will use; it bounds the row
    pruning (see ``_scales`` and the module docstring).
    """

    def __init__(self, spec, scenario, table: Table, objective: str, *, efficiency_scale: float = 1.0,
                 span: float = 0.5, keep_row: int | None = None):
        self.spec, self.scenario, self.eff, self.objective = spec, scenario, efficiency_scale, objective
        self.col = OBJECTIVE_COLUMN_BY_NAME[objective]
        keep = np.nonzero(~table.violations["memory"])[0]
        self.base = table.subset(keep)           # memory-feasible rows: memory is invariant here
        self.base_index = keep
        self.span = span
        self.keep_local = None if keep_row is None else int(np.nonzero(keep == keep_row)[0][0])
        self.cache: dict = {}
        self.pruned: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}  # name -> (rows, lo, hi)
        self.fallbacks: list[str] = []

    # -- factors ---------------------------------------------------------------------------
    def _ends(self) -> tuple[float, float]:
        return max(1e-3, 1.0 - self.span), 1.0 + self.span

    def _estimate(self, name: str, factor: float, rows: np.ndarray) -> Table:
        t = self.base.subset(rows)
        if name == "efficiency":
            return complete_table(self.spec, self.scenario, t.gpus, _layout_cols(t), self.eff * factor)
        gpus = [replace(g, hardware=g.hardware.with_inter_node_bytes_per_s(
            g.hardware.inter_node_bytes_per_s * factor)) for g in t.gpus]
        return complete_table(self.spec, self.scenario, gpus, _layout_cols(t), self.eff)

    def _prefilter(self) -> np.ndarray:
        """Rows that can be best anywhere in the span under an efficiency or bandwidth factor f,
        from the base table alone (before any re-estimation).

        Step time T is non-increasing in f and T x f non-decreasing (each part is compute/f,
        communication/f, a constant, or an exposed part max(0, comm - window/f)), so T(f) / T(1)
        lies in [1/(1+s), 1/(1-s)]; wall-clock and cost are sums of terms a + b T with a >= 0
        (a minimum over storage tiers of such sums where the tier is chosen), which keeps those
        bounds. A row surely feasible throughout caps the objective; rows whose lower bound
        exceeds the cap, or that break a limit f cannot move, cannot be best.
        """
        lo_f, hi_f = self._ends()
        lo_s, hi_s = 1.0 / hi_f, 1.0 / lo_f
        c, viol = self.base.cols, self.base.violations
        static_ok = np.ones(len(self.base), dtype=bool)
        for fam, v in viol.items():
            if fam not in ("budget", "deadline"):
                static_ok &= ~v
        cons = self.scenario.constraints
        sure, maybe = static_ok.copy(), static_ok.copy()
        for col, limit in (("wall_clock_days", cons.deadline_days), ("cost_usd", cons.budget_usd)):
            if limit is not None:
                sure &= c[col] * hi_s <= limit * (1 - 1e-9)
                maybe &= c[col] * lo_s <= limit * (1 + 1e-9)
        obj = c[self.col].astype(float)
        o_lo, o_hi = (obj, obj) if self.col == "n_gpus" else (obj * lo_s, obj * hi_s)
        cap = o_hi[sure].min() if sure.any() else np.inf
        keep = maybe & (o_lo <= cap * (1 + 1e-9))
        if self.keep_local is not None:
            keep[self.keep_local] = True
        return np.nonzero(keep)[0]

    def _rows_for(self, name: str) -> np.ndarray:
        """Rows that can be best for some factor within the span (exact; module docstring).

        Every input moves each row's objective, wall-clock and cost monotonically (prices,
        tokens and electricity raise them, efficiency and bandwidth lower them; budget and
        deadline move only the limit), so the values at the two ends of the span bound every
        probe in between. Re-estimated inputs start from ``_prefilter``."""
        if name in self.pruned:
            return self.pruned[name][0]
        pre = self._prefilter() if name in REESTIMATE_INPUTS else np.arange(len(self.base))
        (a, _), (b, _) = (self._build(name, f, pre) for f in self._ends())
        va, vb = a.cols[self.col], b.cols[self.col]
        lo, hi = np.minimum(va, vb), np.maximum(va, vb)
        both = a.feasible & b.feasible
        either = a.feasible | b.feasible
        bound = hi[both].min() if both.any() else np.inf
        keep = either & (lo <= bound)
        if self.keep_local is not None:
            keep[np.searchsorted(pre, self.keep_local)] = True
        rows = pre[keep]
        self.pruned[name] = (rows, lo[keep], hi[keep])
        return rows

    def _build(self, name: str, factor: float, rows: np.ndarray) -> tuple[Table, object]:
        sc = self.scenario
        if name in REESTIMATE_INPUTS:
            return self._estimate(name, factor, rows), sc
        t = self.base.subset(rows)
        if name.startswith("price."):
            gname = name[len("price."):]
            gpus = [replace(g, usd_per_gpu_hour=g.usd_per_gpu_hour * factor,
                            usd_per_instance_hour=g.usd_per_instance_hour * factor) if g.name == gname else g
                    for g in t.gpus]
            return reprice(t, sc, gpus), sc
        if name == "pricing.usd_per_kwh":
            sc = sc.with_overrides({name: sc.pricing.usd_per_kwh * factor})
            gpus = []
            for g in t.gpus:
                rate = owned_rate(g.accelerator, sc.pricing) if g.offer == "owned" else g.usd_per_gpu_hour
                gpus.append(replace(g, usd_per_gpu_hour=rate, usd_per_instance_hour=rate * g.gpus_per_instance))
            return reprice(t, sc, gpus), sc
        sc = sc.with_overrides({name: _get_dotted(sc, name) * factor})
        return reprice(t, sc), sc

    def table_for(self, name: str, factor: float) -> tuple[Table, object, np.ndarray]:
        """(table, scenario, local rows of self.base the table holds) at this factor."""
        key = (name, round(factor, 9))
        if key in self.cache:
            return self.cache[key]
        rows = self._rows_for(name)
        out, sc = self._build(name, factor, rows)
        _, lo, hi = self.pruned[name]
        v = out.cols[self.col]
        slack = 1e-9 * np.maximum(np.abs(hi), 1.0)
        if np.any(v < lo - slack) or np.any(v > hi + slack):        # a bound failed: no pruning
            self.fallbacks.append(name)
            rows = np.arange(len(self.base))
            self.pruned[name] = (rows, np.full(len(rows), -np.inf), np.full(len(rows), np.inf))
            out, sc = self._build(name, factor, rows)
        self.cache[key] = (out, sc, rows)
        return self.cache[key]

    def best(self, name: str, factor: float):
        """(best 12-key configuration or None, table, row in that table or None)."""

        t, sc, _ = self.table_for(name, factor)
        rows = candidate_rows(t, self.objective, 1)
        if len(rows) == 0:
            return None, t, None
        sub = t.subset(rows)
        res = cpsat.solve_top_k(objective_keys(sub, self.objective), 1, solver_limits(sub, sc))
        if not res.rows:
            return None, t, None
        r = int(rows[res.rows[0]])
        return t.config(r), t, r

    def value_of(self, name: str, factor: float, local_row: int) -> float:
        t, _, rows = self.table_for(name, factor)
        pos = np.searchsorted(rows, local_row)
        return float(t.cols[self.col][pos])

    def feasible_at(self, name: str, factor: float, local_row: int) -> bool:
        """Whether the row still meets every limit at this factor (a longer run may miss the deadline)."""
        t, _, rows = self.table_for(name, factor)
        return bool(t.feasible[np.searchsorted(rows, local_row)])


def threshold(p: Perturber, name: str, direction: str, base_cfg: dict, *, range_pct: float, grid: int,
              tol_pct: float, note: str | None = None) -> dict:
    """The smallest change at which the best training configuration changes (find_threshold)."""
    def best_at(f):
        cfg = p.best(name, f)[0]
        return cfg, cfg

    return find_threshold(best_at, base_cfg, name, direction, range_pct=range_pct, grid=grid, tol_pct=tol_pct,
                          note=note, down_cap_pct=100.0 * p.span)


def training_sensitivity(result, scenario, *, swing_pct: float = 20.0, range_pct: float = 50.0, grid: int = 10,
                tol_pct: float = 0.1, inputs: list[str] | None = None, efficiency_scale: float = 1.0) -> dict:
    """Tornado, re-optimised ends, switching thresholds and slack for a solved training scenario."""

    check_ranges(swing_pct, range_pct, grid, tol_pct)
    table: Table = result.table
    objective = result.objective
    if len(result.configs) == 0:
        return {"objective": objective, "tornado": [], "thresholds": [], "slack": {},
                "note": "infeasible: nothing to analyse; see the explanation"}
    base_cfg = {k: result.configs.iloc[0][k] for k in CONFIG_KEYS}
    base_cfg = {k: (v.item() if hasattr(v, "item") else v) for k, v in base_cfg.items()}
    r_full = _row_of(table, base_cfg, offer=result.configs.iloc[0].get("offer"))
    all_inputs = select_inputs(inputs_of(scenario, table), inputs)
    span = max(swing_pct, range_pct) / 100.0
    p = Perturber(scenario.spec(), scenario, table, objective, efficiency_scale=efficiency_scale,
                  span=span, keep_row=r_full)
    local = p.keep_local
    col = OBJECTIVE_COLUMN_BY_NAME[objective]
    base_value = float(table.cols[col][r_full])
    tornado, thresholds = [], []
    for name, note in all_inputs:
        ends = {}
        for direction, f in (("down", 1 - swing_pct / 100), ("up", 1 + swing_pct / 100)):
            if note:
                ends[direction] = {"factor": f, "objective": base_value, "best": base_cfg,
                                   "best_objective": base_value, "changes": False, "kept_feasible": True}
                continue
            cfg, t, rb = p.best(name, f)
            ends[direction] = {"factor": f, "objective": p.value_of(name, f, local), "best": cfg,
                               "best_objective": None if rb is None else float(t.cols[col][rb]),
                               "changes": cfg != base_cfg, "kept_feasible": p.feasible_at(name, f, local)}
        tornado.append(tornado_entry(name, ends, base_value, note))      # re-solved at each end
        for direction in ("down", "up"):
            thresholds.append(threshold(p, name, direction, base_cfg, range_pct=range_pct, grid=grid,
                                        tol_pct=tol_pct, note=note))
    tornado.sort(key=lambda d: -d["swing"])
    slack = binding_summary(table, scenario, r_full)
    slack["memory_headroom"] = float(result.configs.iloc[0]["memory_headroom"])
    inv = ((result.configs.iloc[0].get("system") or {}).get("tco") or {}).get("investment") \
        if result.configs.iloc[0].get("interconnect") == "owned" else None
    return {"objective": objective, "objective_column": col, "base_objective": base_value,
            "base_config": base_cfg, "swing_pct": swing_pct, "range_pct": range_pct,
            "tolerance_pct": tol_pct, "grid_step_pct": range_pct / grid,
            "tornado": tornado, "thresholds": thresholds, "slack": slack,
            "monotonicity_fallbacks": sorted(set(p.fallbacks)),
            # issue 17: where buying the best configuration's cluster stops beating renting it
            "buy_vs_rent": None if inv is None else {"npv_usd": inv["npv_usd"], "years": inv["years"],
                                                     "at_discount_rate": inv["discount_rate"], **inv["flips"]}}


def _row_of(table: Table, cfg: dict, offer: str | None = None) -> int:
    """The table row of a 12-key configuration (vectorised match), on the option of ``offer``
    when given (a layout has one row per offer of its GPU; issue 17)."""
    c = table.cols
    idx = [g.index for g in table.gpus if g.name == cfg["gpu"] and (offer is None or g.offer == offer)]
    ok = np.isin(c["gpu"], idx)
    for k in ("n_gpus", "tp", "pp", "dp", "cp", "ep", "zero", "micro_batch"):
        ok &= c[k] == cfg[k]
    ok &= c["precision"] == PRECISIONS.index(cfg["precision"])
    ok &= c["recompute"] == RECOMPUTES.index(cfg["recompute"])
    ok &= c["sequence_parallel"].astype(bool) == bool(cfg["sequence_parallel"])
    hits = np.nonzero(ok)[0]
    if len(hits) == 0:
        raise KeyError(cfg)
    return int(hits[0])
