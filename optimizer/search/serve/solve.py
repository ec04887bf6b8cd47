"""The serving fleet planner (issue 6): replica options that meet the SLOs, then the cheapest
fleet of them that carries the request rate (serve/fleet.py), ranked, explained, with a
cost/latency Pareto front.

serving_table(spec, scenario, gpus) -> ServingTable   one row per replica option, every figure
solve_serving(scenario, ...)         -> core.result.SolveResult ranked fleets, pareto, explanation

How a replica option is checked (one row = GPU type, TP, PP, weight format, KV format, batch
cap B; B is also the engine's ``max_num_seqs``, so the profile run is sized by it):

- Throughput: the sustainable requests/s of one replica is ``estimate_serving``'s
  ``requests_per_s`` with B sequences in flight at the MEAN prompt and output lengths
  (continuous batching steady state, Little's law). The fleet model rounds it DOWN to
  milli-requests/s.
- Utilisation headroom (queueing): the fleet's summed capacity must be at least
  requests_per_s / ``serve.max_utilization`` (rounded UP), so with requests spread in
  proportion to capacity no replica runs above max_utilization of its sustainable rate and
  the admission queue stays short; the in-engine wait behind other prompts' prefills is in
  the TTFT below (B in flight is the most a replica holds at its cap).
- TTFT p99: ``ttft_s`` with B sequences in flight, all at the p99 prompt and p99 output
  lengths (a conservative tail: every neighbour is a long request too), <= ``slo.ttft_p99_s``.
- ITL p99: the decode pass time ``itl_s`` at B sequences with the p99 context (p99 prompt +
  half the p99 output, the mean over the request's life) <= ``slo.itl_p99_s``. Stalls from
  chunked-prefill passes are in ``tpot_s`` (reported, not checked).
- Memory: the KV pool (vLLM sizing, ``gpu_memory_utilization`` = 1 - constraints.memory_headroom,
  0.9 by default as in vLLM) holds B sequences at the mean lengths, and at least one at the p99
  lengths. ``memory_per_gpu_bytes`` is the use at B mean-length sequences.
- Quality (issue 9, whenever ``serve.quality`` is set): the row's variant (serve/compression.py:
  the model, weight and KV formats, 2:4 sparsity) loses at most ``serve.quality.max_loss_pct`` of
  the published quality for the model family. Without ``search.compression`` the formats of
  search.weights / search.kv carry their default options' published losses (int4: the most
  conservative int4 method for the family; compression.FORMAT_OPTIONS). A rule of its
  own ('quality'), so explanations name it.

Compression (issue 9). With ``search.compression`` each row carries a *variant* (columns
``variant``, ``compression``, ``quality_loss_pct``, ``sparse_2_4``): the scenario's model or a
smaller pruned/distilled family member, in the formats its options set; ``search.weights`` /
``search.kv`` then only filter the variants. Without it every row still carries the quality loss
of its formats (label 'none', no one-off work). One-off work (calibration GPU-hours, recovery and
distillation tokens, priced by serve/compression.py) is paid once per fleet per item, however
many options share it, and amortised over ``serve.horizon_days``: a fleet's ``usd_per_hour`` (and
so the cost objective, the budget and $/M tokens) INCLUDES ``one_off_usd_per_hour``;
``gpu_usd_per_hour`` is the instances alone, ``one_off_usd`` the undiscounted total. A fleet's
``quality_loss_pct`` is the largest over its replicas.

Offers and price. A rented replica runs inside instances of one offer, and its TP group must
fit in one instance (TP over NVLink; pipeline stages may span instances): a TP=4 replica cannot
run on 1-GPU rentals. So each GPU type is billed through *pools*, one per instance size its
offers come in (the cheapest offer per GPU of that size, in the scenario's pricing mode and
provider), and each replica option is offered to the fleet model once per pool it fits. Owned
GPUs and scenario-given prices form one pool with no instance rule. The FLEET is billed in whole
instances: replicas in one pool share instances, and the pool rents ceil(GPUs in its replicas /
GPUs per instance) instances (an 8-GPU instance holds two TP=4 replicas, or a TP=4 and four TP=1
replicas). A replica's ``usd_per_hour`` is its pro-rata share: GPUs x its pool's $/GPU-hour.
Stock (``constraints.available``) and ``max_gpus`` count the GPUs rented, over all pools of a type.

Search space (scenario ``search:``): compression (above; when given it sets the formats),
weights (default bf16, fp8: the formats that do not change model quality much; pin int8/int4
to search them), kv (default bf16, fp8), tp (default powers of
two within the GPU's NVLink domain and node, dividing the heads), pp (default 1; when no PP = 1
option of a GPU type fits in memory, 2, 4 and 8 are tried for it), batch (default 1, 2, 4, ...,
1024). Per (pool, GPUs per replica) only the option with the largest capacity meeting every
rule is given to the fleet model (ties: lower quality loss, TTFT, ITL, memory): any fleet using
another option of that class costs the same, takes the same GPUs and covers no more, so the
optimum is unchanged (the redundancy rule included: sum_r min(cap[r], t) x[r] only grows with cap).
With one-off items the class is (pool, GPUs per replica, priced items), and an option is dropped
when one of its pool and size needs a subset of its items and has at least its capacity.
"""

from __future__ import annotations


import time
import numpy as np
import pandas as pd

from optimizer.errors import ClusteroptError
from optimizer.pricing import commitment_notes, gpu_options, gpu_types
from optimizer.scenario import load_scenario
from optimizer.search.core.pareto import pareto_indices
from optimizer.search.core.result import SolveResult
from optimizer.search.serve import explain as sx, fleet as fm
from optimizer.search.serve.evaluate import verify_solution
from optimizer.search.serve.problem import (SPOT_REPLACE_S, fleet_frame, fleet_problem, fleet_record, reduce_options,
                                            spot_spares)
from optimizer.search.serve.table import PARETO_MAX_POINTS, PARETO_TIME_S, SERVE_OBJECTIVES, ServingTable, serving_table

# ----------------------------------------------------------------------------------------
# solve
# ----------------------------------------------------------------------------------------

def solve_serving(scenario, *, top_k: int | None = None, objective: str | None = None,
                  time_limit_s: float = 30.0, catalog=None, table: ServingTable | None = None,
                  pareto: bool = True, explain: bool = True):
    """The K cheapest minimal fleets meeting the serving scenario, proven by CP-SAT (fleet.py).

    Returns ``optimizer.search.core.result.SolveResult`` with ``configs`` (one row per fleet, FLEET_COLUMNS),
    ``pareto`` (cost vs worst p99 TTFT), ``explanation`` (binding limits, or why infeasible and
    what relaxation fixes it), ``stats`` and ``table`` (the ServingTable).

    ``table``: a ServingTable already built for this scenario's model, lengths, SLOs, search
    space and GPU list (sweeps and sensitivity reuse one across request rates, limits and
    prices); ``pareto=False`` skips tracing the front, ``explain=False`` the binding-limit and
    relaxation solves (the explanation then holds only 'reason' and empty 'lines').

    configs columns (FLEET_COLUMNS): rank, objective (in the objective's unit), usd_per_hour (whole
    instances plus amortised one-off compression work), usd_per_mtoken (per million output tokens
    at the demanded rate), gpu_usd_per_hour (instances alone), one_off_usd (compression work, paid
    once), one_off_usd_per_hour (over serve.horizon_days), quality_loss_pct (largest over the
    replicas; without search.compression the published loss of the formats, bf16 = 0), n_gpus (rented),
    n_gpus_used (in replicas), n_replicas, gpu ('H100-SXM5-80GB x8 + A100-SXM4-80GB x8', GPUs
    rented per type), capacity_requests_per_s (sum of sustainable rates),
    capacity_after_failures_requests_per_s (without the k largest replicas), utilization
    (demand / capacity), output_tokens_per_s (capacity), worst_ttft_s, worst_itl_s,
    memory_per_gpu_bytes and memory_capacity_bytes (of the replica with least headroom),
    min_memory_headroom, replicas (list of dicts, REPLICA_KEYS), instances (list of dicts: gpu,
    offer, gpus_per_instance, count, usd_per_hour).
    """

    t0 = time.perf_counter()
    scenario = load_scenario(scenario)
    if scenario.serve is None:
        raise ClusteroptError("serve", "this scenario has no 'serve' block", "a serving workload")
    objective = objective or scenario.objective
    if objective not in SERVE_OBJECTIVES:
        raise ClusteroptError("objective", f"{objective!r} is not a serving objective",
                              "allowed: " + ", ".join(SERVE_OBJECTIVES))
    k = top_k or scenario.top_k
    spec = scenario.spec()
    if table is None:
        gpus, notes = gpu_options(scenario, catalog)
        gpus = gpu_types(gpus, scenario, catalog)      # one per type: serving bills through pools
        table = serving_table(spec, scenario, gpus)
    else:
        notes = []
    t_table = time.perf_counter() - t0
    rows = reduce_options(table, np.nonzero(table.feasible)[0])
    problem = fleet_problem(table, rows, scenario, objective)
    res = fm.solve_fleets(problem, k, time_limit_s=time_limit_s)
    problem = res.problem or problem          # lazy simulated capacities: as refined
    # spot (issue 17): keep spares for the expected preemptions of the best fleet's spot instances,
    # and plan again with them until the count settles (a fleet with them needs no more)
    extra = 0
    for _ in range(4):
        need = spot_spares(table, rows, res.fleets[0]) if res.fleets else 0
        if need <= extra:
            break
        extra = need
        problem = fleet_problem(table, rows, scenario, objective, extra_spares=extra)
        res = fm.solve_fleets(problem, k, time_limit_s=time_limit_s)
        problem = res.problem or problem
    records = [dict(fleet_record(table, rows, f, scenario, objective), spot_spare_replicas=extra)
               for f in res.fleets]
    verify_solution(spec, scenario, table, records)
    # CONTRACTS.md: 'feasible' when a limit stopped the search - also when the time limit came
    # before any fleet was found (nothing was proven impossible, so no conflict is explained)
    timed_out = not records and res.status not in ("optimal", "infeasible")
    status = res.status if records else ("feasible" if timed_out else "infeasible")

    if timed_out:
        explanation = {"reason": "time limit", "lines": [
            f"the CP-SAT time limit ({time_limit_s:g} s) was reached before any fleet was found or "
            "proven impossible; raise --time-limit"]}
    elif not explain:
        explanation = {"reason": "feasible" if records else status, "lines": []}
    elif records:
        explanation = sx.binding_summary(table, rows, problem, res.fleets[0], scenario)
    else:
        explanation = sx.explain_infeasible(table, rows, problem, scenario)
    spot_note = ([f"spot: {extra} spare replica(s) kept for the expected preemptions of the spot replicas "
                  f"(99th percentile of the instances down at once; {SPOT_REPLACE_S:g} s to replace one)"]
                 if extra else [])
    explanation["notes"] = (notes + table.notes + commitment_notes(table.pools) + spot_note
                            + explanation.get("notes", []))
    front = (pareto_fleets(table, scenario, time_limit_s=min(PARETO_TIME_S, time_limit_s / 3)) if pareto
             else fleet_frame([], ranked=False))
    return SolveResult(
        workload="serve",
        scenario=scenario.name, status=status, objective=objective, configs=fleet_frame(records), pareto=front,
        explanation=explanation,
        stats={"rows": len(table), "feasible_rows": int(table.feasible.sum()), "cpsat_options": len(rows),
               "cpsat_solves": res.n_solves, "cpsat_time_s": res.solve_time_s, "table_time_s": t_table,
               "pareto_complete": bool(front.attrs.get("complete", False))},
        table=table)


def pareto_fleets(table: ServingTable, scenario, *, time_limit_s: float = 10.0,
                  max_points: int = PARETO_MAX_POINTS) -> pd.DataFrame:
    """The cost ($/hour) vs worst replica p99 TTFT front of feasible fleets, exact by the
    epsilon-constraint method: solve the least-cost fleet using only options with TTFT <= t,
    lower t to just below that fleet's worst TTFT, repeat; then drop dominated points."""
    feas = np.nonzero(table.feasible)[0]
    c = table.cols
    if len(feas) == 0:                            # nothing feasible (or no option at all: tp: [3])
        front = pd.DataFrame()
        front.attrs["complete"] = True
        return front
    levels = np.unique(c["ttft_s"][feas])
    recs, t = [], np.inf
    t0 = time.perf_counter()
    complete = False
    while len(recs) < max_points and time.perf_counter() - t0 < time_limit_s:
        rows = reduce_options(table, feas[c["ttft_s"][feas] <= t])
        if len(rows) == 0:
            complete = True
            break
        p = fleet_problem(table, rows, scenario, "cost")
        res = fm.solve_fleets(p, 1, time_limit_s=max(0.1, time_limit_s - (time.perf_counter() - t0)))
        if not res.fleets:
            complete = res.status == "infeasible"
            break
        rec = fleet_record(table, rows, res.fleets[0], scenario, "cost")
        recs.append(rec)
        lower = levels[levels < rec["worst_ttft_s"]]
        if not len(lower):
            complete = True
            break
        t = lower[-1]
    keep = pareto_indices(np.array([r["usd_per_hour"] for r in recs]),
                          np.array([r["worst_ttft_s"] for r in recs])) if recs else []
    df = fleet_frame([recs[i] for i in keep], ranked=False)
    df.attrs["complete"] = complete
    return df
