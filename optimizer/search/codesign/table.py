"""Co-design tables: per rung, the training rows reduced exactly and expanded over the token grid;
the CP-SAT keys and limits over them."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from cachetools import LRUCache
import numpy as np

from optimizer.formulas import scaling as sc
from optimizer.formulas.params import count_params
from optimizer.model.spec import ModelSpec
from optimizer.pricing import best_per_config
from optimizer.scenario import Scenario
from optimizer.search.codesign.space import (FLOP_UNIT, LOSS_UNITS_PER_NAT, TOKEN_STEP, ServingChoice, rungs_of,
                                             serve_params, serving_usd_per_token, token_grid)
from optimizer.search.core import cpsat
from optimizer.search.core.scales import MONEY_UNITS_PER_USD
from optimizer.search.train.solve import solver_limits
from optimizer.search.train.table import CONFIG_KEYS, Table, build_table, reprice
import os
from concurrent.futures import ProcessPoolExecutor

# ----------------------------------------------------------------------------------------
# tables
# ----------------------------------------------------------------------------------------

def _k_skyline(cost: np.ndarray, time: np.ndarray, k: int) -> np.ndarray:
    """Indices of the first k Pareto layers of (cost, time), lowest both best: a superset of the
    rows weakly dominated by fewer than k others (a row in layer j > k has a chain of j - 1 >= k
    rows dominating it), so keeping them loses no top-k row. Vectorised: k passes of a running
    minimum over rows sorted by (cost, time)."""
    remaining = np.lexsort((time, cost))
    keep = []
    for _ in range(k):
        if len(remaining) == 0:
            break
        t = time[remaining]
        prev_min = np.concatenate(([np.inf], np.minimum.accumulate(t)[:-1]))
        front = t < prev_min
        keep.append(remaining[front])
        remaining = remaining[~front]
    return np.sort(np.concatenate(keep)) if keep else np.zeros(0, dtype=np.int64)


def with_tokens(scenario, tokens: float):
    """The scenario with a numeric train.tokens (no re-validation: only tokens change)."""
    return scenario.model_copy(update={"train": scenario.train.model_copy(update={"tokens": float(tokens)})})


#: Limit families that scale with the training tokens; every other family is a per-layout rule.
_TOKEN_SCALED = ("budget", "deadline")


def _reprice(table: Table, scenario, spec) -> Table:
    """train.table.reprice at the scenario's tokens with the rung's spec (pricing that needs the model,
    e.g. checkpoint sizes, must not call scenario.spec(): a co-design scenario has no one model)."""
    return reprice(table, scenario, spec=spec)


def _reduce_rung(tab: Table, k: int) -> tuple[int, Table | None]:
    """(rows estimated, the rung's rows that can hold a top-k plan at any token count): rows
    breaking a limit that does not scale with tokens go, and of the rest the k-skyline of cost
    and time at the nominal token count (the ordering holds for every count)."""
    ok = np.ones(len(tab), dtype=bool)
    for fam, v in tab.violations.items():
        if fam not in _TOKEN_SCALED:
            ok &= ~v
    idx = np.nonzero(ok)[0]
    if len(idx) == 0:
        return len(tab), None
    sub = tab.subset(idx)
    keep = _k_skyline(sub.cols["cost_usd"], sub.cols["wall_clock_days"], k)
    return len(tab), sub.subset(keep)


def _rung_subset_job(spec_json: str, scenario_json: str, gpus: tuple, efficiency_scale: float, k: int):
    """Worker-process entry point: build one rung's table and return only its reduced rows."""

    spec = ModelSpec.model_validate_json(spec_json)
    scen = Scenario.model_validate_json(scenario_json)
    return _reduce_rung(build_table(spec, scen, list(gpus), efficiency_scale), k)


_SUBSET_CACHE: LRUCache = LRUCache(maxsize=512)     # least recently used rungs go first (cachetools)
#: Rungs to build before a process pool is worth its start-up (each rung takes ~0.1 s).
PARALLEL_MIN_RUNGS = 8


def rung_subsets(specs, scenario, gpus, efficiency_scale: float, k: int) -> list[tuple[int, Table | None]]:
    """_reduce_rung of every rung, cached (sweeps over budget and deadline reuse them) and, when
    many rungs are missing, built in worker processes in parallel (only the few reduced rows
    travel back). The same tables and reductions as a sequential build."""

    nominal = with_tokens(scenario, 1e12)
    nominal = nominal.model_copy(update={"constraints": nominal.constraints.model_copy(
        update={"budget_usd": None, "deadline_days": None})})
    sc_json = nominal.model_dump_json()
    gkey = tuple((g.name, g.usd_per_gpu_hour, g.gpus_per_instance, g.available) for g in gpus)
    keys = [(spec.model_dump_json(), sc_json, gkey, efficiency_scale, k) for spec in specs]
    missing = [i for i, key in enumerate(keys) if key not in _SUBSET_CACHE]
    workers = min(os.cpu_count() or 1, len(missing))
    if len(missing) >= PARALLEL_MIN_RUNGS and workers > 1:
        try:
            with ProcessPoolExecutor(max_workers=workers) as ex:
                futs = {i: ex.submit(_rung_subset_job, keys[i][0], sc_json, tuple(gpus), efficiency_scale, k)
                        for i in missing}
                for i, f in futs.items():
                    _SUBSET_CACHE[keys[i]] = f.result()
        except (OSError, RuntimeError):                 # no processes here: build them in this one
            pass
    for i in missing:
        if keys[i] not in _SUBSET_CACHE:
            _SUBSET_CACHE[keys[i]] = _rung_subset_job(keys[i][0], sc_json, tuple(gpus), efficiency_scale, k)
    return [_SUBSET_CACHE[key] for key in keys]


def _codesign_columns(t: Table, m: int, n: float, d: float, law, serving: "ServingChoice", d_inf: float) -> dict:
    """The co-design columns of one (rung, tokens) block and their integer views."""
    c = dict(t.cols)
    rows = len(t)
    loss = float(sc.predicted_loss(law, n, d))
    c["model_index"] = np.full(rows, m, dtype=np.int64)
    c["model_params"] = np.full(rows, n)
    c["train_tokens"] = np.full(rows, d)
    c["tokens_per_param"] = np.full(rows, d / n)
    c["predicted_loss"] = np.full(rows, loss)
    c["loss_units"] = np.full(rows, int(math.ceil(loss * LOSS_UNITS_PER_NAT)), dtype=np.int64)
    c["train_flop"] = np.full(rows, sc.FLOP_PER_PARAM_PER_TRAIN_TOKEN * n * d)
    c["inference_cost_usd"] = np.full(rows, serving.usd_per_token * d_inf if d_inf > 0 else 0.0)
    c["lifetime_cost_usd"] = c["cost_usd"] + c["inference_cost_usd"]
    c["lifetime_flop"] = c["train_flop"] + sc.FLOP_PER_PARAM_PER_INFER_TOKEN * n * d_inf
    finite = np.isfinite(c["lifetime_cost_usd"])
    c["lifetime_cost_units"] = np.ceil(np.where(finite, c["lifetime_cost_usd"], 0.0) * MONEY_UNITS_PER_USD).astype(np.int64)
    c["lifetime_flop_units"] = np.ceil(c["lifetime_flop"] / FLOP_UNIT).astype(np.int64)
    c["train_flop_units"] = np.ceil(c["train_flop"] / FLOP_UNIT).astype(np.int64)
    return c


def _codesign_flags(c: dict, base: dict, scenario, d_inf: float, compute_budget_flop) -> dict:
    """Violation flags per row: the table's own, the budget on lifetime cost with inference
    demand, serving (no replica meets the SLOs), target_loss and the FLOP budget. The same
    integer comparisons as the CP-SAT limits (codesign_limits)."""
    v = dict(base)
    n = len(c["loss_units"])
    finite = np.isfinite(c["lifetime_cost_usd"])
    v["serving"] = ~finite
    budget = scenario.constraints.budget_usd
    if d_inf > 0 and budget is not None:
        v["budget"] = ~finite | (c["lifetime_cost_units"] > int(math.floor(budget * MONEY_UNITS_PER_USD)))
    tl = scenario.train.target_loss
    v["target_loss"] = (c["loss_units"] > int(math.floor(tl * LOSS_UNITS_PER_NAT))) if tl is not None \
        else np.zeros(n, dtype=bool)
    v["compute"] = (c["train_flop_units"] > int(math.floor(compute_budget_flop / FLOP_UNIT))) \
        if compute_budget_flop is not None else np.zeros(n, dtype=bool)
    return v


def _rung_parts(sub: Table, scenario, spec, m: int, n: float, grid: np.ndarray, serving, d_inf: float, law,
                objective: str, k: int, compute_budget_flop) -> list[Table]:
    """The (rung, tokens) blocks of one rung that can hold a top-k row.

    Per layout, cost, time and training FLOPs grow with d and the loss falls, so 'some layout of
    the rung is feasible at d' is monotone: true up to a largest d. Objective loss: rows at d below
    the k-th largest feasible d are each beaten by >= k rows at larger feasible d (lower loss), so
    only those k values are repriced (found by bisection). Objectives cost, time, lifetime_flop:
    every key grows with d, so only the k smallest feasible d are kept. When no d is feasible the
    first value is kept, for the explanation."""
    cache: dict[int, Table] = {}

    def block(i: int) -> Table:
        if i not in cache:
            t = _reprice(sub, with_tokens(scenario, float(grid[i])), spec)
            c = _codesign_columns(t, m, n, float(grid[i]), law, serving, d_inf)
            cache[i] = Table(t.gpus, c, _codesign_flags(c, t.violations, scenario, d_inf, compute_budget_flop))
        return cache[i]

    # target_loss over the whole (fine) grid at once: the same integer comparison as the CP-SAT
    # limit, ceil(loss x units) <= floor(target x units)
    tl = scenario.train.target_loss
    if tl is None:
        ok_loss = np.ones(len(grid), dtype=bool)
    else:
        ok_loss = np.ceil(np.asarray(sc.predicted_loss(law, n, grid), dtype=float) * LOSS_UNITS_PER_NAT) \
            <= math.floor(tl * LOSS_UNITS_PER_NAT)

    def any_feasible(i: int) -> bool:
        return bool(block(i).feasible.any())

    if objective == "loss":
        # feasible set is an interval [lo, hi] of indices: loss_ok rises with d, the rest falls
        first = int(np.argmax(ok_loss)) if ok_loss.any() else None
        if first is None or not any_feasible(first):
            return [block(first if first is not None else len(grid) - 1)]
        lo, hi = first, len(grid) - 1            # lo feasible; find the largest feasible index
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if any_feasible(mid):
                lo = mid
            else:
                hi = mid - 1
        idx = range(max(first, lo - k + 1), lo + 1)
    else:
        idx, kept = [], 0
        for i in np.nonzero(ok_loss)[0]:
            i = int(i)
            idx.append(i)
            if not any_feasible(i):
                break
            kept += 1
            if kept >= k:
                break
        if not idx:
            idx = [len(grid) - 1]
    return [block(i) for i in idx]


@dataclass
class CodesignData:
    """The expanded candidate table and what the decoder needs."""

    table: Table                      # one row per (rung, tokens, layout); extra columns included
    specs: list                       # rung m -> ModelSpec
    serving: list                     # rung m -> ServingChoice
    law: object
    notes: list = field(default_factory=list)
    rows_before: int = 0


def build_codesign_table(scenario, gpus, *, k: int, objective: str = "loss", efficiency_scale: float = 1.0,
                         token_step: float | None = None, compute_budget_flop: float | None = None) -> CodesignData:
    """Every rung's layouts (reduced, see module docstring) expanded over its token grid, with the
    co-design columns: model_index, model_params, train_tokens, tokens_per_param, predicted_loss,
    train_flop, inference_cost_usd, lifetime_cost_usd, lifetime_flop and their integer views."""
    train = scenario.train
    law = sc.law_by_name(train.scaling_law, "train.scaling_law")
    step = token_step or TOKEN_STEP
    specs = rungs_of(train)
    d_inf = train.inference.tokens if train.inference is not None else 0.0
    serve_args = serve_params(train)
    parts, servings, notes = [], [], []
    rows_before = 0
    reduced = rung_subsets(specs, scenario, gpus, efficiency_scale, k)
    for m, spec in enumerate(specs):
        n = float(count_params(spec).total)
        n_rows, sub = reduced[m]
        rows_before += n_rows
        if sub is None:
            servings.append(ServingChoice(math.inf))
            continue
        serving = serving_usd_per_token(spec, gpus, *serve_args) if d_inf > 0 else ServingChoice(0.0)
        servings.append(serving)
        extra = []
        if train.target_loss is not None and isinstance(law, sc.ChinchillaLaw):
            extra.append(float(sc.tokens_for_loss(law, n, train.target_loss)) * (1 + 1e-9))
        grid = token_grid(train, n, step, extra)
        parts += _rung_parts(sub, scenario, spec, m, n, grid, serving, d_inf, law, objective, k, compute_budget_flop)
    if not parts:
        return CodesignData(Table(list(gpus), {}, {}), specs, servings, law, notes, rows_before)
    cols = {key: np.concatenate([p.cols[key] for p in parts]) for key in parts[0].cols}
    viol = {key: np.concatenate([p.violations[key] for p in parts]) for key in parts[0].violations}
    return CodesignData(Table(list(gpus), cols, viol), specs, servings, law, notes, rows_before)


# ----------------------------------------------------------------------------------------
# model: keys and limits
# ----------------------------------------------------------------------------------------

def codesign_keys(table: Table, objective: str) -> list[np.ndarray]:
    """Lexicographic integer keys (primary first, canonical row order last)."""
    c = table.cols
    order = np.arange(len(table), dtype=np.int64)
    life, t, loss = c["lifetime_cost_units"], c["time_units"], c["loss_units"]
    if objective == "loss":
        return [loss, life, t, order]
    if objective == "time":
        return [t, life, loss, order]
    if objective == "lifetime_flop":
        return [c["lifetime_flop_units"], life, order]
    return [life, t, loss, order]


def codesign_limits(table: Table, scenario, data_inference: bool, compute_budget_flop) -> list[cpsat.Limit]:
    """train.solve.solver_limits, with the budget on lifetime cost when there is inference demand, plus the
    target loss and the optional FLOP budget."""
    out = [lim for lim in solver_limits(table, scenario) if not (data_inference and lim.family == "budget")]
    c = table.cols
    budget = scenario.constraints.budget_usd
    if data_inference and budget is not None:
        out.append(cpsat.Limit("budget", c["lifetime_cost_units"], int(math.floor(budget * MONEY_UNITS_PER_USD))))
    if scenario.train.target_loss is not None:
        out.append(cpsat.Limit("target_loss", c["loss_units"],
                               int(math.floor(scenario.train.target_loss * LOSS_UNITS_PER_NAT))))
    if compute_budget_flop is not None:
        out.append(cpsat.Limit("compute", c["train_flop_units"], int(math.floor(compute_budget_flop / FLOP_UNIT))))
    return out


def candidates(table: Table, keys: list[np.ndarray], k: int) -> np.ndarray:
    """Feasible rows not worse on the primary key than the k-th best feasible row (train.solve.candidate_rows).
    A (model, tokens, layout) on several offers of its GPU counts once, on its best (issue 17)."""
    c = table.cols
    names: dict = {}
    name_idx = np.array([names.setdefault(g.name, len(names)) for g in table.gpus], dtype=np.int64)
    cfg = [name_idx[c["gpu"]], c["model_index"], c["train_tokens"]] + [c[x] for x in CONFIG_KEYS if x != "gpu"]
    feas = best_per_config(cfg, keys, np.nonzero(table.feasible)[0])
    if len(feas) <= k:
        return feas
    primary = keys[0][feas]
    kth = np.partition(primary, k - 1)[k - 1]
    return feas[primary <= kth]
