"""Co-design (issue 9): choose the model size, the training tokens and the training layout together.

Notation (OR-Tools sample order: data, model, variables, constraints, objective, solve, decode)

    m in M              rungs of the family's ladder (model/families.ladder), N[m] parameters
    d in D[m]           training-token values of rung m (``token_grid``)
    r in R[m]           training layouts of rung m (tables.build_table: the same estimator rows
                        as ``solve``), each with cost c[m,r] and wall-clock t[m,r] PER TOKEN
    x[m,d,r] in {0,1}   the chosen (rung, tokens, layout); sum x = 1
    cost[m,d,r]         = tables.reprice at tokens d (cost and time are linear in d)
    loss[m,d]           = E + A / N[m]^alpha + B / d^beta   (formulas/scaling.predicted_loss)
    serve[m]            lifetime serving cost of rung m: inference tokens x $/token of the
                        cheapest replica meeting the SLOs (``serving_usd_per_token``)
    life[m,d,r]         = cost[m,d,r] + serve[m]

    a[memory], a[stock], a[max_gpus], a[min_gpus]   as in ``api.solve`` (per row)
    a[budget]   => life . x <= budget      (training cost when there is no inference demand)
    a[deadline] => wall-clock . x <= deadline
    a[target_loss] => loss . x <= target_loss        (objective cost / time)
    a[compute] => 6 N d . x <= compute_budget_flop   (optional FLOP budget; tests, approach 3)

    objective loss: min (loss, life, time, row); cost: min (life, time, loss, row);
    time: min (time, life, loss, row); lifetime_flop: min (6 N d + 2 N D_inf, life, row).

Reduction before CP-SAT (exact for the top K): per rung, rows that break a token-independent
rule (memory, stock, GPU counts) are dropped, and so are rows weakly dominated on (cost per
token, time per token) by K others: with d fixed both scale by d, so such a row is beaten by K
rows of the same rung and tokens in every objective. Then the rows are expanded over the token
grid, and ``api.candidate_rows``' rule keeps those that can be in the top K. CP-SAT
(cpsat.solve_top_k) proves the ranking on what remains; every chosen row is re-evaluated by
``api.evaluate`` and must agree.

Integer scales: loss in micro-nats (LOSS_UNITS_PER_NAT), money and time as tables.py,
FLOPs in units of 1e15 (FLOP_UNIT).
"""

from __future__ import annotations

import math
import time as _time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from optimizer.errors import ClusteroptError
from optimizer.formulas import scaling as sc
from optimizer.formulas.params import count_params
from optimizer.model.families import generate, get_family, ladder
from optimizer.search import cpsat
from optimizer.search.api import SolveResult, _limits, evaluate, frame, gpu_options
from optimizer.search.tables import MONEY_UNITS_PER_USD, Table, build_table, reprice
from optimizer.units import SECONDS_PER_HOUR

LOSS_UNITS_PER_NAT = 1_000_000
FLOP_UNIT = 1e15
#: tokens: auto -> tokens per parameter from AUTO_TPP_MIN to AUTO_TPP_MAX, ``step`` apart.
#: 1 to 5,000 spans under-trained runs up to Llama-3-8B's 15T tokens (1,875 per parameter).
AUTO_TPP_MIN = 1.0
AUTO_TPP_MAX = 5000.0
#: Serving defaults when train.inference.serve leaves them out: the issue's example workload.
DEFAULT_PROMPT_TOKENS = 1500
DEFAULT_OUTPUT_TOKENS = 300
DEFAULT_TTFT_S = 1.0
DEFAULT_ITL_S = 0.05
SERVE_BATCHES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
SERVE_TPS = (1, 2, 4, 8)
SERVE_PPS = (1, 2, 4)

OBJECTIVES = ("loss", "cost", "time", "lifetime_flop")

#: Extra columns of a co-design configuration (after api.COLUMNS).
EXTRA_COLUMNS = ("model", "model_params", "train_tokens", "tokens_per_param", "predicted_loss",
                 "train_flop", "inference_cost_usd", "lifetime_cost_usd", "lifetime_flop",
                 "serving_gpu", "serving_tp", "serving_pp", "serving_batch")


# ----------------------------------------------------------------------------------------
# data: rungs, token grids, serving cost
# ----------------------------------------------------------------------------------------

def rungs_of(train) -> list:
    """The ladder of ``train.model`` (one rung when ``params`` is a number)."""
    choice = train.model
    fam = get_family(choice.family)
    if not isinstance(choice.params, str):
        return [generate(fam, float(choice.params))]
    return ladder(fam, choice.min_params, choice.max_params, choice.step)


def token_grid(train, n_params: float, step: float, extra=()) -> np.ndarray:
    """Training-token values tried for a rung of ``n_params``: the number given; ``{min, max}``
    geometric ``step`` apart (both ends included); ``auto``: AUTO_TPP_MIN..AUTO_TPP_MAX tokens per
    parameter. ``extra`` values inside the range are added (the exact tokens reaching target_loss).
    Units: tokens."""
    t = train.tokens
    if isinstance(t, (int, float)):
        return np.array([float(t)])
    lo, hi = (t.min, t.max) if not isinstance(t, str) else (AUTO_TPP_MIN * n_params, AUTO_TPP_MAX * n_params)
    k = int(math.floor(math.log(hi / lo) / math.log(step) + 1e-9))
    vals = list(lo * step ** np.arange(k + 1))
    if vals[-1] < hi * (1 - 1e-9):
        vals.append(hi)
    vals += [float(e) for e in extra if lo <= e <= hi and math.isfinite(e)]
    return np.unique(np.array(vals, dtype=float))


@dataclass(frozen=True)
class ServingChoice:
    """The cheapest replica per token for one rung (``serving_usd_per_token``)."""

    usd_per_token: float          # inf when no option fits and meets the SLOs
    gpu: str = ""
    tp: int = 0
    pp: int = 0
    batch: int = 0


def _serve_params(train) -> tuple[int, int, float, float]:
    s = train.inference.serve if train.inference is not None else None
    prompt = s.prompt_tokens.mean if s is not None and s.prompt_tokens is not None else DEFAULT_PROMPT_TOKENS
    output = s.output_tokens.mean if s is not None and s.output_tokens is not None else DEFAULT_OUTPUT_TOKENS
    slo = s.slo if s is not None else None
    ttft = slo.ttft_p99_s if slo is not None and slo.ttft_p99_s is not None else DEFAULT_TTFT_S
    itl = slo.itl_p99_s if slo is not None and slo.itl_p99_s is not None else DEFAULT_ITL_S
    return int(round(prompt)), int(round(output)), float(ttft), float(itl)


def serving_usd_per_token(spec, gpus, prompt_len: int, output_len: int, ttft_s: float, itl_s: float) -> ServingChoice:
    """Least cost per served token (prompt + output) of one replica of ``spec`` over GPU types,
    TP in SERVE_TPS (within the NVLink domain), PP in SERVE_PPS and batch in SERVE_BATCHES, bf16
    weights and KV, that fits in memory with ``ttft_s`` >= TTFT and ``itl_s`` >= ITL
    (formulas/serving.estimate_serving at the mean lengths). Cost = GPUs x $/GPU-hour / 3600 /
    (requests/s x (prompt + output)). Units: USD per token.
    """
    from optimizer.formulas.serving import estimate_serving

    best = ServingChoice(math.inf)
    batches = np.array(SERVE_BATCHES)
    for g in gpus:
        hw = g.hardware
        for pp in SERVE_PPS:
            found = False
            for tp in SERVE_TPS:
                if tp > max(hw.intra_node_domain, 1) or spec.num_heads % tp or tp * pp > max(hw.gpus_per_node, 1):
                    continue
                try:
                    est = estimate_serving(spec, hw, tp=tp, pp=pp, batch=batches, prompt_len=prompt_len,
                                           output_len=output_len)
                except ClusteroptError:
                    continue
                ok = (np.asarray(est.fits) & (np.asarray(est.ttft_s) <= ttft_s)
                      & (np.asarray(est.itl_s) <= itl_s))
                if not ok.any():
                    continue
                found = True
                tok_s = np.asarray(est.requests_per_s) * (prompt_len + output_len)
                usd = g.usd_per_gpu_hour * tp * pp / SECONDS_PER_HOUR / np.where(ok, tok_s, np.nan)
                i = int(np.nanargmin(usd))
                if usd[i] < best.usd_per_token:
                    best = ServingChoice(float(usd[i]), g.name, tp, pp, int(batches[i]))
            if found:
                break                     # deeper pipelines only when no shallower one fits
    return best


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


def _with_tokens(scenario, tokens: float):
    """The scenario with a numeric train.tokens (no re-validation: only tokens change)."""
    return scenario.model_copy(update={"train": scenario.train.model_copy(update={"tokens": float(tokens)})})


#: Limit families that scale with the training tokens; every other family is a per-layout rule.
_TOKEN_SCALED = ("budget", "deadline")


def _reprice(table: Table, scenario, spec) -> Table:
    """tables.reprice at the scenario's tokens with the rung's spec (pricing that needs the model,
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
    from optimizer.model.spec import ModelSpec
    from optimizer.scenario import Scenario

    spec = ModelSpec.model_validate_json(spec_json)
    scen = Scenario.model_validate_json(scenario_json)
    return _reduce_rung(build_table(spec, scen, list(gpus), efficiency_scale), k)


_SUBSET_CACHE: dict[tuple, tuple] = {}
#: Rungs to build before a process pool is worth its start-up (each rung takes ~0.1 s).
PARALLEL_MIN_RUNGS = 8


def rung_subsets(specs, scenario, gpus, efficiency_scale: float, k: int) -> list[tuple[int, Table | None]]:
    """_reduce_rung of every rung, cached (sweeps over budget and deadline reuse them) and, when
    many rungs are missing, built in worker processes in parallel (only the few reduced rows
    travel back). The same tables and reductions as a sequential build."""
    import os
    from concurrent.futures import ProcessPoolExecutor

    nominal = _with_tokens(scenario, 1e12)
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
            t = _reprice(sub, _with_tokens(scenario, float(grid[i])), spec)
            c = _codesign_columns(t, m, n, float(grid[i]), law, serving, d_inf)
            cache[i] = Table(t.gpus, c, _codesign_flags(c, t.violations, scenario, d_inf, compute_budget_flop))
        return cache[i]

    def loss_ok(i: int) -> bool:
        tl = scenario.train.target_loss
        return tl is None or math.ceil(float(sc.predicted_loss(law, n, grid[i])) * LOSS_UNITS_PER_NAT) <= \
            math.floor(tl * LOSS_UNITS_PER_NAT)

    def any_feasible(i: int) -> bool:
        return bool(block(i).feasible.any())

    if objective == "loss":
        # feasible set is an interval [lo, hi] of indices: loss_ok rises with d, the rest falls
        first = next((i for i in range(len(grid)) if loss_ok(i)), None)
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
        for i in range(len(grid)):
            if not loss_ok(i):
                continue
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
    step = token_step or train.model.step
    specs = rungs_of(train)
    d_inf = train.inference.tokens if train.inference is not None else 0.0
    serve_args = _serve_params(train)
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
    """api._limits, with the budget on lifetime cost when there is inference demand, plus the
    target loss and the optional FLOP budget."""
    out = [lim for lim in _limits(table, scenario) if not (data_inference and lim.family == "budget")]
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


def _candidates(table: Table, keys: list[np.ndarray], k: int) -> np.ndarray:
    """Feasible rows not worse on the primary key than the k-th best feasible row (api.candidate_rows)."""
    from optimizer.offering import best_per_config
    from optimizer.search.tables import CONFIG_KEYS

    # a (model, tokens, layout) on several offers of its GPU counts once, on its best (issue 17)
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


# ----------------------------------------------------------------------------------------
# solve
# ----------------------------------------------------------------------------------------

def solve_codesign(scenario, *, top_k: int | None = None, objective: str | None = None,
                   time_limit_s: float = 30.0, catalog=None, efficiency_scale: float = 1.0,
                   token_step: float | None = None, compute_budget_flop: float | None = None) -> SolveResult:
    """Rank the K best (model size, training tokens, training layout) of a co-design scenario.

    ``objective``: loss (least predicted loss within budget and deadline), cost / time (cheapest
    or fastest reaching ``train.target_loss``), or lifetime_flop (least 6ND + 2N D_inf reaching
    ``target_loss``: Sardana et al. 2024's objective, used to check that paper's example).
    ``token_step``: spacing of the token grid (default: the ladder's step). ``compute_budget_flop``:
    an extra limit 6 N D <= C (the approach-3 check). Columns: api.COLUMNS + EXTRA_COLUMNS; the
    result's ``scaling_law`` attribute and ``explanation['scaling_law']`` name the law.
    """
    from optimizer.scenario import load_scenario

    t0 = _time.perf_counter()
    scenario = load_scenario(scenario)
    train = scenario.train
    if train is None or train.model is None:
        raise ClusteroptError("train.model", "co-design needs train.model with a family",
                              "e.g. train: {model: {family: llama-3, params: auto}}")
    law = sc.law_by_name(train.scaling_law, "train.scaling_law")
    objective = objective or scenario.objective
    if objective not in OBJECTIVES:
        raise ClusteroptError("objective", f"{objective!r} is not a co-design objective", "allowed: " + ", ".join(OBJECTIVES))
    if objective in ("cost", "time", "lifetime_flop") and train.target_loss is None and compute_budget_flop is None:
        # without a loss to reach, the cheapest (fastest) plan is always the smallest model on the
        # fewest tokens: a meaningless answer
        raise ClusteroptError("train.target_loss", f"objective {objective} needs a loss to reach",
                              "give train.target_loss (e.g. 2.1) or use objective: loss")
    if objective == "loss" and scenario.constraints.budget_usd is None and scenario.constraints.deadline_days is None \
            and compute_budget_flop is None and not isinstance(train.tokens, (int, float)):
        raise ClusteroptError("constraints.budget_usd", "objective loss needs a budget or a deadline to spend",
                              "give constraints.budget_usd or constraints.deadline_days")
    k = top_k or scenario.top_k
    gpus, notes = gpu_options(scenario, catalog)
    data = build_codesign_table(scenario, gpus, k=k, objective=objective, efficiency_scale=efficiency_scale,
                                token_step=token_step,
                                compute_budget_flop=compute_budget_flop)
    t_build = _time.perf_counter() - t0
    table = data.table
    d_inf = train.inference.tokens if train.inference is not None else 0.0
    status, chosen, res, rows = "infeasible", np.zeros(0, dtype=np.int64), None, np.zeros(0, dtype=np.int64)
    if len(table):
        keys = codesign_keys(table, objective)
        rows = _candidates(table, keys, k)
        if len(rows):
            sub = table.subset(rows)
            res = cpsat.solve_top_k(codesign_keys(sub, objective), k,
                                    codesign_limits(sub, scenario, d_inf > 0, compute_budget_flop),
                                    time_limit_s=time_limit_s)
            chosen = rows[res.rows] if res.rows else chosen
            status = res.status if len(chosen) else "infeasible"
    configs = codesign_frame(data, chosen, scenario, objective)
    _verify(scenario, data, chosen, efficiency_scale)
    explanation = _explain(data, chosen, scenario, objective, law, notes)
    result = SolveResult(
        scenario=scenario.name, status=status, objective=objective, configs=configs,
        pareto=codesign_frame(data, loss_cost_front(table), scenario, objective, ranked=False),
        explanation=explanation,
        stats={"rungs": len(data.specs), "rows_estimated": data.rows_before, "rows": len(table),
               "feasible_rows": int(table.feasible.sum()) if len(table) else 0,
               "cpsat_rows": int(len(rows)),
               "cpsat_solves": res.n_solves if res else 0, "cpsat_time_s": res.solve_time_s if res else 0.0,
               "build_time_s": t_build, "total_time_s": _time.perf_counter() - t0},
        table=table)
    result.scaling_law = law.name
    return result


def loss_cost_front(table: Table) -> np.ndarray:
    """Feasible rows on the (lifetime cost, predicted loss) Pareto front, cheapest first."""
    if not len(table):
        return np.zeros(0, dtype=np.int64)
    feas = np.nonzero(table.feasible)[0]
    c = table.cols
    order = feas[np.lexsort((c["loss_units"][feas], c["lifetime_cost_units"][feas]))]
    out, best = [], None
    for r in order:
        if best is None or c["loss_units"][r] < best:
            out.append(int(r))
            best = c["loss_units"][r]
    return np.array(out, dtype=np.int64)


def codesign_frame(data: CodesignData, rows, scenario, objective: str, ranked: bool = True) -> pd.DataFrame:
    """api.frame's columns plus EXTRA_COLUMNS; ``objective`` holds the objective's own figure."""
    table = data.table
    rows = np.asarray(rows, dtype=np.int64)
    c = table.cols

    def row_context(r):
        return data.specs[int(c["model_index"][r])], _with_tokens(scenario, float(c["train_tokens"][r]))

    df = frame(table, rows, scenario, "cost", ranked=ranked, row_context=row_context)
    col = {"loss": "predicted_loss", "cost": "lifetime_cost_usd", "time": "wall_clock_days",
           "lifetime_flop": "lifetime_flop"}[objective]
    if len(rows):
        df["objective"] = [float(c[col][r]) for r in rows]
    extra = {name: [] for name in EXTRA_COLUMNS}
    for r in rows:
        m = int(c["model_index"][r])
        s = data.serving[m]
        extra["model"].append(data.specs[m].name)
        for name in ("model_params", "train_tokens", "tokens_per_param", "predicted_loss", "train_flop",
                     "inference_cost_usd", "lifetime_cost_usd", "lifetime_flop"):
            extra[name].append(float(c[name][r]))
        extra["serving_gpu"].append(s.gpu)
        extra["serving_tp"].append(s.tp)
        extra["serving_pp"].append(s.pp)
        extra["serving_batch"].append(s.batch)
    for name in EXTRA_COLUMNS:
        df[name] = extra[name]
    return df


def _verify(scenario, data: CodesignData, rows, efficiency_scale: float) -> None:
    """Re-evaluate each chosen row through api.evaluate at its rung and tokens; fail loudly on
    any disagreement with the table the solver saw."""
    table = data.table
    for r in rows:
        r = int(r)
        spec = data.specs[int(table.cols["model_index"][r])]
        scen = _with_tokens(scenario, float(table.cols["train_tokens"][r]))
        ev = evaluate(scen, table.config(r), _gpus=table.gpus, _spec=spec, efficiency_scale=efficiency_scale)
        for key in ("cost_usd", "wall_clock_days", "memory_per_gpu_bytes"):
            a, b = float(table.cols[key][r]), float(ev[key])
            if not math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9):
                raise RuntimeError(f"co-design table and evaluate disagree on {key} for {table.config(r)}: {a} vs {b}")
        if not ev.feasible:      # co-design limits are at least as strict (budget on lifetime cost)
            raise RuntimeError(f"solver chose a configuration evaluate() finds infeasible: {ev.violations}")


def _explain(data: CodesignData, rows, scenario, objective: str, law, notes: list[str]) -> dict:
    """scaling_law, warnings (outside the fitted range, dense law on an MoE), and for an
    infeasible scenario the limit families that rule out every row."""
    table = data.table
    out: dict = {"scaling_law": law.name, "scaling_law_source": law.source, "notes": list(notes) + data.notes,
                 "warnings": []}
    fam = get_family(scenario.train.model.family)
    if fam.kind == "moe":
        out["warnings"].append(f"{law.name} was fitted on dense models; applied here to the MoE's total parameters")
    if len(rows):
        r = int(rows[0])
        n, d = float(table.cols["model_params"][r]), float(table.cols["train_tokens"][r])
        if bool(sc.outside_fitted_range(law, n, d)):
            f = sc.fitted_range(law)
            out["warnings"].append(
                f"predicted loss is an extrapolation: N = {n:.3g}, D = {d:.3g} lies outside the range {law.name} "
                f"was fitted on (N {f.n_params_min:.2g}-{f.n_params_max:.2g}, D {f.n_tokens_min:.2g}-{f.n_tokens_max:.2g})")
        out["chosen"] = {"model": data.specs[int(table.cols["model_index"][r])].name, "model_params": n,
                         "train_tokens": d, "predicted_loss": float(table.cols["predicted_loss"][r])}
        binding = []
        c = scenario.constraints
        if c.budget_usd is not None:
            spent = float(table.cols["lifetime_cost_usd"][r] if scenario.train.inference else table.cols["cost_usd"][r])
            binding.append({"limit": "budget", "used": spent, "limit_value": c.budget_usd, "share": spent / c.budget_usd})
        if c.deadline_days is not None:
            used = float(table.cols["wall_clock_days"][r])
            binding.append({"limit": "deadline", "used": used, "limit_value": c.deadline_days, "share": used / c.deadline_days})
        out["binding"] = binding
        return out
    out["infeasible"] = True
    reasons = []
    if not len(table):
        reasons.append("no layout of any rung fits in memory or within the GPU-count limits")
    else:
        for fam_name, v in table.violations.items():
            if v.all():
                reasons.append(f"{fam_name}: every (model size, tokens, layout) breaks it")
        if not reasons:
            reasons.append("the limits together rule out every candidate: " + ", ".join(
                f for f, v in table.violations.items() if v.any()))
        if scenario.train.target_loss is not None and table.violations["target_loss"].all():
            best = float(np.min(table.cols["predicted_loss"]))
            reasons.append(f"target_loss {scenario.train.target_loss} is below the best predicted loss {best:.4f} "
                           "in the ladder and token range")
    out["reasons"] = reasons
    return out
