"""Co-design (issue 9): choose the model size, the training tokens and the training layout together.

Notation (OR-Tools sample order: data, model, variables, constraints, objective, solve, decode)

    m in M              rungs of the family's ladder (model/families.ladder), N[m] parameters
    d in D[m]           training-token values of rung m (``token_grid``)
    r in R[m]           training layouts of rung m (train.table.build_table: the same estimator rows
                        as ``solve``), each with cost c[m,r] and wall-clock t[m,r] PER TOKEN
    x[m,d,r] in {0,1}   the chosen (rung, tokens, layout); sum x = 1
    cost[m,d,r]         = train.table.reprice at tokens d (cost and time are linear in d)
    loss[m,d]           = E + A / N[m]^alpha + B / d^beta   (formulas/scaling.predicted_loss)
    serve[m]            lifetime serving cost of rung m: inference tokens x $/token of the
                        cheapest replica meeting the SLOs (``serving_usd_per_token``)
    life[m,d,r]         = cost[m,d,r] + serve[m]

    a[memory], a[stock], a[max_gpus], a[min_gpus]   as in ``train.solve.solve_training`` (per row)
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
grid, and ``train.solve.candidate_rows``' rule keeps those that can be in the top K. CP-SAT
(cpsat.solve_top_k) proves the ranking on what remains; every chosen row is re-evaluated by
``train.evaluate.evaluate_training`` and must agree.

Integer scales: loss in micro-nats (LOSS_UNITS_PER_NAT), money and time as core/scales.py,
FLOPs in units of 1e15 (FLOP_UNIT).
"""

from __future__ import annotations

import time as _time
import numpy as np
import pandas as pd

from optimizer.search.core.frame import check_agreement
from optimizer.errors import ClusteroptError
from optimizer.formulas import scaling as sc
from optimizer.pricing import gpu_options
from optimizer.scenario import load_scenario
from optimizer.search.codesign.explain import explain_codesign
from optimizer.search.codesign.space import EXTRA_COLUMNS, OBJECTIVES
from optimizer.search.codesign.table import (CodesignData, build_codesign_table, candidates, codesign_keys,
                                             codesign_limits, with_tokens)
from optimizer.search.core import cpsat
from optimizer.search.core.result import SolveResult
from optimizer.search.train.evaluate import evaluate_training
from optimizer.search.train.frame import layout_frame
from optimizer.search.train.table import Table

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
    ``token_step``: spacing of the token grid (default: space.TOKEN_STEP, 0.2%). ``compute_budget_flop``:
    an extra limit 6 N D <= C (the approach-3 check). Columns: train.frame.LAYOUT_COLUMNS + EXTRA_COLUMNS; the
    result's ``scaling_law`` attribute and ``explanation['scaling_law']`` name the law.
    """

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
        rows = candidates(table, keys, k)
        if len(rows):
            sub = table.subset(rows)
            res = cpsat.solve_top_k(codesign_keys(sub, objective), k,
                                    codesign_limits(sub, scenario, d_inf > 0, compute_budget_flop),
                                    time_limit_s=time_limit_s)
            chosen = rows[res.rows] if res.rows else chosen
            status = res.status if len(chosen) else "infeasible"
    configs = codesign_frame(data, chosen, scenario, objective)
    verify_solution(scenario, data, chosen, efficiency_scale)
    explanation = explain_codesign(data, chosen, scenario, objective, law, notes)
    result = SolveResult(
        workload="codesign",
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
    """train.frame.layout_frame's columns plus EXTRA_COLUMNS; ``objective`` holds the objective's own figure."""
    table = data.table
    rows = np.asarray(rows, dtype=np.int64)
    c = table.cols

    def row_context(r):
        return data.specs[int(c["model_index"][r])], with_tokens(scenario, float(c["train_tokens"][r]))

    df = layout_frame(table, rows, scenario, "cost", ranked=ranked, row_context=row_context)
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


def verify_solution(scenario, data: CodesignData, rows, efficiency_scale: float) -> None:
    """Re-evaluate each chosen row through evaluate_training at its rung and tokens; fail loudly on
    any disagreement with the table the solver saw."""
    table = data.table
    for r in rows:
        r = int(r)
        spec = data.specs[int(table.cols["model_index"][r])]
        scen = with_tokens(scenario, float(table.cols["train_tokens"][r]))
        ev = evaluate_training(scen, table.config(r), gpus=table.gpus, spec=spec, efficiency_scale=efficiency_scale)
        for key in ("cost_usd", "wall_clock_days", "memory_per_gpu_bytes"):
            check_agreement("evaluate_training", key, table.cols[key][r], ev[key], table.config(r))
        if not ev.feasible:      # co-design limits are at least as strict (budget on lifetime cost)
            raise RuntimeError(f"solver chose a configuration evaluate_training() finds infeasible: {ev.violations}")
