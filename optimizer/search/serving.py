"""The serving fleet planner (issue 6): replica options that meet the SLOs, then the cheapest
fleet of them that carries the request rate (search/fleet.py), ranked, explained, with a
cost/latency Pareto front.

serving_table(spec, scenario, gpus) -> ServingTable   one row per replica option, every figure
solve_serving(scenario, ...)         -> api.SolveResult ranked fleets, pareto, explanation

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
- Quality (issue 9, whenever ``serve.quality`` is set): the row's variant (serving_compression.py:
  the model, weight and KV formats, 2:4 sparsity) loses at most ``serve.quality.max_loss_pct`` of
  the published quality for the model family. Without ``search.compression`` the formats of
  search.weights / search.kv carry their default options' published losses (int4: the most
  conservative int4 method for the family; serving_compression.FORMAT_OPTIONS). A rule of its
  own ('quality'), so explanations name it.

Compression (issue 9). With ``search.compression`` each row carries a *variant* (columns
``variant``, ``compression``, ``quality_loss_pct``, ``sparse_2_4``): the scenario's model or a
smaller pruned/distilled family member, in the formats its options set; ``search.weights`` /
``search.kv`` then only filter the variants. Without it every row still carries the quality loss
of its formats (label 'none', no one-off work). One-off work (calibration GPU-hours, recovery and
distillation tokens, priced by serving_compression.py) is paid once per fleet per item, however
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

import math
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from optimizer.errors import ClusteroptError
from optimizer.formulas.investment import usd_per_1k_requests, usd_per_month
from optimizer.search import fleet as fm
from optimizer.search.pareto import pareto_indices
from optimizer.search.serving_compression import CompressionPlan, Variant, amortised_usd_per_hour, compression_plan
from optimizer.search.space import GpuOption, tp_values

DEFAULT_WEIGHTS = ("bf16", "fp8")
DEFAULT_KV = ("bf16", "fp8")
MAX_BATCH = 1024
PP_FALLBACK = (2, 4, 8)
#: Default cap on distinct replica options in one fleet (operability: each option is its own
#: deployment to build, monitor and scale). ``serve.max_replica_types`` overrides it.
DEFAULT_MAX_REPLICA_TYPES = 3
SERVE_OBJECTIVES = ("cost", "cost_per_mtoken", "gpus")
#: Most solves, and seconds, spent tracing the cost / worst-TTFT Pareto front; when either runs
#: out the front is cut short at its fast end and ``pareto.attrs['complete']`` is False.
PARETO_MAX_POINTS = 40
PARETO_TIME_S = 5.0

#: Column order of the configs DataFrame (one row per fleet), defined once.
COLUMNS = ("rank", "objective", "usd_per_hour", "usd_per_mtoken", "usd_per_1k_requests", "usd_per_month",
           "spot_spare_replicas", "gpu_usd_per_hour", "one_off_usd",
           "one_off_usd_per_hour", "quality_loss_pct", "n_gpus", "n_gpus_used", "n_replicas",
           "gpu", "capacity_requests_per_s", "capacity_after_failures_requests_per_s", "utilization",
           "output_tokens_per_s", "worst_ttft_s", "worst_itl_s", "memory_per_gpu_bytes", "memory_capacity_bytes",
           "min_memory_headroom", "replicas", "instances")
REPLICA_KEYS = ("gpu", "tp", "pp", "weights", "kv", "batch", "count", "gpus_per_replica", "ttft_s", "itl_s",
                "tpot_s", "memory_per_gpu_bytes", "memory_headroom", "max_concurrent_seqs", "requests_per_s",
                "output_tokens_per_s", "usd_per_hour", "offer", "model", "compression", "sparse_2_4",
                "quality_loss_pct")
RULES = ("memory", "ttft", "itl", "quality")
NO_INSTANCE_RULE = ("owned", "scenario price")


# ----------------------------------------------------------------------------------------
# the option table
# ----------------------------------------------------------------------------------------

@dataclass
class ServingTable:
    """One row per replica option; ``cols`` are equal-length numpy arrays (units in the names)."""

    gpus: list[GpuOption]
    cols: dict[str, np.ndarray]
    lengths: dict[str, int]
    notes: list[str] = field(default_factory=list)
    pools: list[GpuOption] = field(default_factory=list)     # billing pools (index = pool index)
    pool_type: list[int] = field(default_factory=list)       # GPU type (index into gpus) per pool
    efficiency_scale: float = 1.0                            # estimator efficiencies x this
    plan: CompressionPlan | None = None                      # models, variants, one-off items

    def __len__(self) -> int:
        return len(self.cols["gpu"])

    @property
    def feasible(self) -> np.ndarray:
        c = self.cols
        ok = c["ok_memory"] & c["ok_ttft"] & c["ok_itl"] & c["ok_offer"] & (c["capacity_units"] > 0)
        return ok & c["ok_quality"] if "ok_quality" in c else ok

    def variant(self, r: int) -> Variant:
        return self.plan.variants[int(self.cols["variant"][r])]

    def spec_of(self, r: int):
        return self.plan.models[self.variant(r).model]

    def fits_pool(self, r: int, pool: int) -> bool:
        """Row r's TP group fits in one instance of the pool (always, for owned or given prices)."""
        p = self.pools[pool]
        return (self.pool_type[pool] == int(self.cols["gpu"][r])
                and pool_fits(p, int(self.cols["tp"][r]), int(self.cols["gpus_per_replica"][r])))

    def replica(self, r: int, count: int = 1, pool: int | None = None) -> dict:
        c, g = self.cols, self.gpus[int(self.cols["gpu"][r])]
        v = self.variant(r)
        out = {"gpu": g.name, "tp": int(c["tp"][r]), "pp": int(c["pp"][r]), "weights": str(c["weights"][r]),
               "kv": str(c["kv"][r]), "batch": int(c["batch"][r]), "count": int(count),
               "gpus_per_replica": int(c["gpus_per_replica"][r]), "model": self.plan.models[v.model].name,
               "compression": v.label, "sparse_2_4": bool(v.sparse_2_4), "quality_loss_pct": float(v.quality_loss_pct)}
        for k in ("ttft_s", "itl_s", "tpot_s", "memory_per_gpu_bytes", "memory_headroom", "max_concurrent_seqs",
                  "requests_per_s", "output_tokens_per_s", "usd_per_hour"):
            out[k] = float(c[k][r])
        out["offer"] = g.offer
        if pool is not None:
            p = self.pools[pool]
            out["offer"] = p.offer
            out.update(_offer_keys(p, None))
            out["usd_per_hour"] = float(c["gpus_per_replica"][r] * p.usd_per_gpu_hour)
        return out


def _lengths(serve) -> dict[str, int]:
    """Integer token lengths the estimator takes (rounded up: never shorter than stated)."""
    pm, om = serve.prompt_tokens.mean, serve.output_tokens.mean
    return {"prompt_mean": math.ceil(pm), "output_mean": math.ceil(om),
            "prompt_p99": math.ceil(serve.prompt_tokens.p99 or pm), "output_p99": math.ceil(serve.output_tokens.p99 or om)}


def batch_ladder(search) -> list[int]:
    if search.batch is not None:
        return sorted(set(int(b) for b in search.batch))
    out, b = [], 1
    while b <= MAX_BATCH:
        out.append(b)
        b *= 2
    return out


def _efficiencies(scale: float) -> dict:
    """The estimator's achievable fractions scaled by ``scale`` (sensitivity's 'efficiency'
    input), each capped at 1."""
    from optimizer.formulas import serving_time as st

    return {"hbm_efficiency": min(1.0, st.HBM_EFFICIENCY * scale),
            "compute_efficiency": min(1.0, st.COMPUTE_EFFICIENCY * scale),
            "low_precision_compute_efficiency": min(1.0, st.LOW_PRECISION_COMPUTE_EFFICIENCY * scale)}


def _evaluate_group(spec, g: GpuOption, *, tp, pp, weights, kv, batches, lengths, gmu, efficiency_scale=1.0,
                    sparse_2_4=False, variant=0):
    """ONE vectorised estimate_serving call for all batch caps of a (GPU, TP, PP, formats) group:
    the first half of the arrays at the mean lengths, the second at the p99 lengths. ``variant``
    indexes the table's CompressionPlan.variants (model, formats, 2:4 sparsity)."""
    from optimizer.formulas.serving import estimate_serving

    b = np.asarray(batches, dtype=np.int64)
    n = len(b)
    bb = np.concatenate([b, b])
    prompt = np.concatenate([np.full(n, lengths["prompt_mean"]), np.full(n, lengths["prompt_p99"])])
    output = np.concatenate([np.full(n, lengths["output_mean"]), np.full(n, lengths["output_p99"])])
    e = estimate_serving(spec, g.hardware, tp=tp, pp=pp, weights=weights, kv=kv, batch=bb, prompt_len=prompt,
                         output_len=output, gpu_memory_utilization=gmu, max_num_seqs=bb, sparse_2_4=sparse_2_4,
                         **_efficiencies(efficiency_scale))
    mean, tail = slice(0, n), slice(n, 2 * n)
    arr = lambda v: np.broadcast_to(np.asarray(v, dtype=float), (2 * n,))  # noqa: E731
    n_gpus = tp * pp
    mem = arr(e.memory_per_gpu.total)[mean]
    return {
        "gpu": np.full(n, g.index), "tp": np.full(n, tp), "pp": np.full(n, pp),
        "weights": np.full(n, weights, dtype=object), "kv": np.full(n, kv, dtype=object), "batch": b,
        "variant": np.full(n, variant), "sparse_2_4": np.full(n, bool(sparse_2_4)),
        "gpus_per_replica": np.full(n, n_gpus),
        "requests_per_s": arr(e.requests_per_s)[mean], "output_tokens_per_s": arr(e.output_tokens_per_s)[mean],
        "ttft_mean_s": arr(e.ttft_s)[mean], "ttft_s": arr(e.ttft_s)[tail], "itl_s": arr(e.itl_s)[tail],
        "tpot_s": arr(e.tpot_s)[tail],
        "memory_per_gpu_bytes": mem, "memory_headroom": 1.0 - mem / g.hardware.memory_bytes,
        "weights_per_gpu_bytes": arr(e.memory_per_gpu.weights)[mean],
        "kv_cache_capacity_bytes": arr(e.kv_cache_capacity_bytes)[mean],
        "max_concurrent_seqs": arr(e.max_concurrent_seqs)[mean],
        "ok_memory": np.asarray(np.broadcast_to(e.fits, (2 * n,)))[mean] & (arr(e.max_concurrent_seqs)[tail] >= 1),
        "usd_per_hour": np.full(n, n_gpus * g.usd_per_gpu_hour),
    }


def _offer_keys(p: GpuOption, scenario) -> dict:
    """CONTRACTS.md 'Offers and money': the pool's provider, instance_type, region, interconnect,
    offer_max_gpus, offer_as_of and pricing mode."""
    from optimizer.search.api import offer_keys, r_scenario_mode

    return offer_keys(p, r_scenario_mode(scenario) if scenario is not None else "on_demand")


def _serving_pools(sized: list[GpuOption]) -> list[GpuOption]:
    """Replicas are independent, so a pool's fabric and reach matter only to a replica larger
    than one instance: per instance size (and spot or not) the cheapest pool, plus the cheapest
    cluster pool of the type when it is not that one. Every other pool costs more for the same
    replicas. Ties: the first in offer_choices' order (price, then offer key)."""
    best: dict[tuple, GpuOption] = {}
    cluster = None
    for q in sized:
        spot = q.choice is not None and q.choice.preemptions_per_instance_hour > 0
        k = (q.gpus_per_instance, spot)
        if k not in best or q.usd_per_gpu_hour < best[k].usd_per_gpu_hour:
            best[k] = q
        if q.choice is not None and q.choice.offer.interconnect == "cluster" and (
                cluster is None or q.usd_per_gpu_hour < cluster.usd_per_gpu_hour):
            cluster = q
    out = list(best.values())
    if cluster is not None and all(cluster is not q for q in out):
        out.append(cluster)
    return sorted(out, key=lambda q: (q.gpus_per_instance, q.usd_per_gpu_hour, q.offer))


def pool_fits(p: GpuOption, tp, gpus_per_replica):
    """A replica fits a pool's offer (issue 17): its TP group inside one instance, and the whole
    replica inside one instance unless the offer is a cluster (pipeline stages across instances
    need its fabric). Owned GPUs and scenario prices have no instance rule. Arrays broadcast."""
    if p.offer in NO_INSTANCE_RULE:
        return np.ones(np.shape(tp), dtype=bool) if np.ndim(tp) else True
    cluster = getattr(getattr(p, "choice", None), "offer", None) is not None and p.choice.offer.interconnect == "cluster"
    ok = np.asarray(tp) <= p.gpus_per_instance
    if not cluster:
        ok = ok & (np.asarray(gpus_per_replica) <= p.gpus_per_instance)
    return ok if np.ndim(ok) else bool(ok)


def billing_pools(scenario, gpus: list[GpuOption], catalog=None) -> tuple[list[GpuOption], list[int]]:
    """The pools each GPU type is billed through (module docstring): for a rented type, the
    cheapest offer per GPU of each instance size among its offers in the scenario's pricing mode
    (and provider); for owned GPUs or a scenario-given price, the option itself. Returns the pools
    (GpuOption with the pool's offer, index = pool index) and each pool's GPU type index."""
    from dataclasses import replace

    from optimizer.catalog import load_catalog

    from optimizer.formulas.offers import committed_billed_hours
    from optimizer.offering import offer_choices

    cat = catalog or load_catalog()
    pricing = scenario.pricing
    horizon_h = scenario.serve.horizon_days * 24.0 if scenario.serve is not None else 0.0
    pools: list[GpuOption] = []
    types: list[int] = []
    for g in gpus:
        if g.offer in NO_INSTANCE_RULE or pricing.modes == ("owned",):
            sized = [g]
        else:
            # issue 17: every undominated (offer, mode); a commitment costs its whole terms spread
            # over the service's horizon (serve.horizon_days), spot carries its preemption rate
            sized = []
            for ch in offer_choices(cat, g.name, pricing)[0]:
                share = (float(committed_billed_hours(horizon_h, ch.term_hours)) / horizon_h
                         if ch.term_hours > 0 and horizon_h > 0 else 1.0)
                sized.append(replace(g, gpus_per_instance=ch.gpus_per_instance,
                                     usd_per_gpu_hour=ch.usd_per_gpu_hour * share,
                                     usd_per_instance_hour=ch.usd_per_instance_hour * share, offer=ch.label,
                                     choice=ch))
            sized = _serving_pools(sized) or [g]
        for q in sized:
            pools.append(replace(q, index=len(pools)))
            types.append(g.index)
    return pools, types


def serving_table(spec, scenario, gpus: list[GpuOption], catalog=None, efficiency_scale: float = 1.0) -> ServingTable:
    """Every replica option of the scenario's search space with its figures and rule flags
    (module docstring). One vectorised estimator call per (GPU, weights, KV, TP, PP) group."""
    serve, search = scenario.serve, scenario.search
    if serve is None:
        raise ClusteroptError("serve", "this scenario has no 'serve' block", "a serving workload")
    lengths = _lengths(serve)
    batches = batch_ladder(search)
    gmu = 1.0 - scenario.constraints.memory_headroom
    plan = compression_plan(spec, scenario, gpus)
    parts: list[dict] = []
    notes: list[str] = list(plan.notes)
    for g in gpus:
        hw = g.hardware
        domain = max(1, min(hw.intra_node_domain, max(hw.gpus_per_node, 1)))
        for m, mspec in enumerate(plan.models):
            variants = [(i, v) for i, v in enumerate(plan.variants) if v.model == m]
            tps = tp_values(mspec, search, domain)
            if not tps:
                notes.append(f"{g.name}: no TP value divides the heads of {mspec.name} within its {domain}-GPU "
                             "domain; left out")
                continue
            pps = list(search.pp) if search.pp is not None else [1]
            got = _evaluate_gpu(mspec, g, tps, pps, variants, batches, lengths, gmu, notes, efficiency_scale)
            if search.pp is None and not any(p["ok_memory"].any() for p in got):
                more = [p for p in PP_FALLBACK if p <= mspec.num_layers]
                got += _evaluate_gpu(mspec, g, [max(tps)], more, variants, batches, lengths, gmu, notes,
                                     efficiency_scale)
            parts += got
    keys = list(parts[0]) if parts else ["gpu"]
    cols = {k: (np.concatenate([p[k] for p in parts]) if parts else np.zeros(0, dtype=np.int64)) for k in keys}
    if parts:
        slo = serve.slo
        cols["ok_ttft"] = cols["ttft_s"] <= slo.ttft_p99_s if slo.ttft_p99_s is not None else np.ones(len(cols["gpu"]), bool)
        cols["ok_itl"] = cols["itl_s"] <= slo.itl_p99_s if slo.itl_p99_s is not None else np.ones(len(cols["gpu"]), bool)
        cols["capacity_units"] = fm.capacity_units(cols["requests_per_s"])
        loss = np.array([v.quality_loss_pct for v in plan.variants], dtype=float)
        cols["quality_loss_pct"] = loss[cols["variant"]]
        cols["compression"] = np.array([v.label for v in plan.variants], dtype=object)[cols["variant"]]
        limit = plan.quality_limit_pct
        cols["ok_quality"] = (cols["quality_loss_pct"] <= limit + 1e-12 if limit is not None
                              else np.ones(len(cols["gpu"]), bool))
    else:
        for k in ("ok_memory", "ok_ttft", "ok_itl", "ok_quality"):
            cols[k] = np.zeros(0, dtype=bool)
        cols["capacity_units"] = np.zeros(0, dtype=np.int64)
        cols["quality_loss_pct"] = np.zeros(0)
        cols["variant"] = np.zeros(0, dtype=np.int64)
    pools, pool_type = billing_pools(scenario, gpus, catalog)
    table = ServingTable(gpus=gpus, cols=cols, lengths=lengths, notes=notes, pools=pools, pool_type=pool_type,
                         efficiency_scale=efficiency_scale, plan=plan)
    # the offer rule and each row's price at its cheapest eligible pool
    n = len(table)
    ok_offer = np.zeros(n, dtype=bool)
    usd = np.full(n, np.inf)
    for q, p in enumerate(pools):
        fit = (cols["gpu"] == pool_type[q]) if n else np.zeros(0, bool)
        if n and p.offer not in NO_INSTANCE_RULE:
            fit &= pool_fits(p, cols["tp"], cols["gpus_per_replica"])
        ok_offer |= fit
        usd = np.where(fit, np.minimum(usd, cols["gpus_per_replica"] * p.usd_per_gpu_hour), usd) if n else usd
    cols["ok_offer"] = ok_offer
    if n:
        cols["usd_per_hour"] = usd
        for g in gpus:
            if np.any((cols["gpu"] == g.index) & ~ok_offer):
                big = int(cols["tp"][(cols["gpu"] == g.index) & ~ok_offer].min())
                notes.append(f"{g.name}: no offer has an instance of {big} or more GPUs, so replicas with "
                             f"TP >= {big} cannot be rented")
    return table


def _evaluate_gpu(spec, g, tps, pps, variants, batches, lengths, gmu, notes, efficiency_scale=1.0) -> list[dict]:
    """Groups of one GPU type and model: every PP, variant (index, Variant) and TP."""
    out = []
    for pp in pps:
        for i, v in variants:
            for tp in tps:
                try:
                    out.append(_evaluate_group(spec, g, tp=int(tp), pp=int(pp), weights=v.weights, kv=v.kv,
                                               batches=batches, lengths=lengths, gmu=gmu,
                                               efficiency_scale=efficiency_scale, sparse_2_4=v.sparse_2_4,
                                               variant=i))
                except ClusteroptError as e:
                    notes.append(f"{g.name} tp={tp} pp={pp} {v.label} {v.weights}/{v.kv}: {e}; left out")
    return out


# ----------------------------------------------------------------------------------------
# from the table to the fleet model
# ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Candidates:
    """The fleet model's options: table row and billing pool of each."""

    rows: np.ndarray
    pools: np.ndarray

    def __len__(self) -> int:
        return len(self.rows)


def _items(table: ServingTable, r: int) -> tuple[int, ...]:
    """The priced one-off items row r needs (free ones, such as fp8 round-to-nearest, left out)."""
    if table.plan is None:
        return ()
    return tuple(sorted(i for i in set(table.variant(r).items) if table.plan.one_offs[i].usd > 0))


def reduce_options(table: ServingTable, rows: np.ndarray) -> Candidates:
    """Every (row, pool) pair the row fits, reduced to one per (pool, GPUs per replica, one-off
    items): the pair with the largest capacity (ties: lower quality loss, TTFT, ITL, memory, then
    row order). Exact for the fleet optimum (module docstring): options with the same pool, GPUs
    and one-off items cost a fleet the same. Then a kept pair is dropped when another of the same
    pool and GPUs needs a subset of its items and has at least its capacity (it never costs a
    fleet more and covers no less)."""
    c = table.cols
    rows = np.asarray(rows, dtype=np.int64)
    if len(rows) == 0:
        return Candidates(rows, rows.copy())
    order = np.lexsort((rows, c["memory_per_gpu_bytes"][rows], c["itl_s"][rows], c["ttft_s"][rows],
                        c["quality_loss_pct"][rows], -c["capacity_units"][rows]))
    out_r, out_p, seen = [], [], set()
    for q in range(len(table.pools)):
        for i in order:
            r = int(rows[i])
            if not table.fits_pool(r, q):
                continue
            key = (q, int(c["gpus_per_replica"][r]), _items(table, r))
            if key not in seen:
                seen.add(key)
                out_r.append(r)
                out_p.append(q)
    keep = []
    for j, (r, q) in enumerate(zip(out_r, out_p)):
        mine, cap, n = set(_items(table, r)), c["capacity_units"][r], c["gpus_per_replica"][r]
        dominated = any(k != j and out_p[k] == q and c["gpus_per_replica"][out_r[k]] == n
                        and set(_items(table, out_r[k])) < mine and c["capacity_units"][out_r[k]] >= cap
                        for k in range(len(out_r)))
        if not dominated:
            keep.append(j)
    return Candidates(np.array([out_r[j] for j in keep], dtype=np.int64),
                      np.array([out_p[j] for j in keep], dtype=np.int64))


def spares_of(serve) -> int:
    r = serve.redundancy
    return 0 if r == "none" else 1 if r == "n+1" else int(r)


def max_types_of(serve) -> int | None:
    v = getattr(serve, "max_replica_types", DEFAULT_MAX_REPLICA_TYPES)
    return v


#: Time to replace a preempted spot replica, s: reschedule + warm-up of a restart (the training
#: defaults of formulas/reliability.py: 300 s + 120 s; ASSUMPTIONS stated there).
SPOT_REPLACE_S = 420.0


def spot_spares(table: ServingTable, cand: Candidates, f: fm.Fleet) -> int:
    """Extra spare replicas a fleet keeps for the expected preemptions of its spot instances
    (issue 17). A preemption takes one instance, and with it every replica on it, so the spot
    instances down at once are counted (formulas.preemption.spare_replicas: Poisson, 99th
    percentile, SPOT_REPLACE_S to replace one) and each stands for the most replicas an instance
    of those pools holds (GPUs per instance / GPUs per replica, at least 1)."""
    from optimizer.formulas.preemption import spare_replicas

    instances, rate, per_instance = 0, 0.0, 1
    for q, m in enumerate(f.instances):
        p = table.pools[q]
        lam = getattr(getattr(p, "choice", None), "preemptions_per_instance_hour", 0.0)
        if m and lam > 0:
            instances += int(m)
            rate = max(rate, lam)
            for i, cnt in enumerate(f.counts):
                if cnt and int(cand.pools[i]) == q:
                    gpr = int(table.cols["gpus_per_replica"][int(cand.rows[i])])
                    per_instance = max(per_instance, p.gpus_per_instance // max(gpr, 1))
    if not instances:
        return 0
    return spare_replicas(instances, rate, SPOT_REPLACE_S / 3600.0) * per_instance


def fleet_problem(table: ServingTable, cand: Candidates, scenario, objective: str,
                  extra_spares: int = 0) -> fm.FleetProblem:
    c, cons, serve = table.cols, scenario.constraints, scenario.serve
    opts = tuple(fm.FleetOption(int(q), int(c["gpus_per_replica"][r]), int(c["capacity_units"][r]),
                                _items(table, int(r)))
                 for r, q in zip(cand.rows, cand.pools))
    plan = table.plan
    one_off = tuple(fm.usd_units(amortised_usd_per_hour(o.usd, plan.horizon_hours)) if o.usd > 0 else 0
                    for o in plan.one_offs) if plan is not None else ()
    return fm.FleetProblem(
        options=opts, demand=fm.demand_units(serve.requests_per_s, serve.max_utilization),
        spares=spares_of(serve) + extra_spares, gpi=tuple(int(p.gpus_per_instance) for p in table.pools),
        price=tuple(fm.usd_units(p.usd_per_instance_hour) for p in table.pools),
        available=tuple(g.available for g in table.gpus), pool_type=tuple(table.pool_type),
        max_gpus=cons.max_gpus,
        budget=(math.floor(cons.budget_usd_per_hour * fm.USD_UNITS + 1e-9)
                if cons.budget_usd_per_hour is not None else None),
        max_types=max_types_of(serve), objective="gpus" if objective == "gpus" else "cost", one_off=one_off)


# ----------------------------------------------------------------------------------------
# decoding a fleet into a row
# ----------------------------------------------------------------------------------------

def _demand_mtokens_per_hour(serve) -> float:
    return serve.requests_per_s * serve.output_tokens.mean * 3600.0 / 1e6


def fleet_record(table: ServingTable, cand: Candidates, f: fm.Fleet, scenario, objective: str) -> dict:
    serve, c = scenario.serve, table.cols
    used = [(int(cand.rows[i]), int(cand.pools[i]), n) for i, n in enumerate(f.counts) if n > 0]
    gpu_usd = sum(m * p.usd_per_instance_hour for p, m in zip(table.pools, f.instances))
    one_off = table.plan.one_off_usd(i for r, _, _ in used for i in table.variant(r).items)
    one_off_h = amortised_usd_per_hour(one_off, table.plan.horizon_hours)
    usd = gpu_usd + one_off_h
    caps = sorted((float(c["requests_per_s"][r]) for r, _, n in used for _ in range(n)), reverse=True)
    capacity = sum(caps)
    after = sum(caps[spares_of(serve):])
    rented = {}
    for q, m in enumerate(f.instances):
        if m:
            name = table.gpus[table.pool_type[q]].name
            rented[name] = rented.get(name, 0) + m * table.pools[q].gpus_per_instance
    per_type = [f"{name} x{n}" for name, n in rented.items()]
    replicas = [table.replica(r, n, pool=q) for r, q, n in used]
    instances = [{"gpu": table.gpus[table.pool_type[q]].name, "offer": p.offer, "gpus_per_instance": p.gpus_per_instance,
                  "count": int(m), "usd_per_hour": float(m * p.usd_per_instance_hour), **_offer_keys(p, scenario)}
                 for q, (p, m) in enumerate(zip(table.pools, f.instances)) if m]
    rec = {
        "usd_per_hour": float(usd),
        "usd_per_mtoken": float(usd / _demand_mtokens_per_hour(serve)),
        "usd_per_1k_requests": float(usd_per_1k_requests(usd, serve.requests_per_s)),
        "usd_per_month": float(usd_per_month(usd)), "spot_spare_replicas": 0,
        "gpu_usd_per_hour": float(gpu_usd), "one_off_usd": float(one_off), "one_off_usd_per_hour": float(one_off_h),
        "quality_loss_pct": max(x["quality_loss_pct"] for x in replicas),
        "n_gpus": int(f.gpus), "n_gpus_used": int(f.gpus_used), "n_replicas": int(sum(f.counts)),
        "gpu": " + ".join(per_type), "capacity_requests_per_s": float(capacity),
        "capacity_after_failures_requests_per_s": float(after),
        "utilization": float(serve.requests_per_s / capacity),
        "output_tokens_per_s": float(sum(float(c["output_tokens_per_s"][r]) * n for r, _, n in used)),
        "worst_ttft_s": max(x["ttft_s"] for x in replicas), "worst_itl_s": max(x["itl_s"] for x in replicas),
        "min_memory_headroom": min(x["memory_headroom"] for x in replicas), "replicas": replicas,
        "instances": instances,
    }
    # the fleet's tightest replica: most memory used per GPU relative to its GPU
    tight = min(replicas, key=lambda x: x["memory_headroom"])
    rec["memory_per_gpu_bytes"] = tight["memory_per_gpu_bytes"]
    rec["memory_capacity_bytes"] = int(next(g for g in table.gpus if g.name == tight["gpu"]).hardware.memory_bytes)
    rec["objective"] = {"cost": rec["usd_per_hour"], "cost_per_mtoken": rec["usd_per_mtoken"],
                        "gpus": float(rec["n_gpus"])}[objective]
    return rec


def frame(records: list[dict], ranked: bool = True) -> pd.DataFrame:
    recs = [dict(r, rank=i + 1) for i, r in enumerate(records)]
    df = pd.DataFrame.from_records(recs, columns=list(COLUMNS))
    return df if ranked else df.drop(columns=["rank"])


def evaluate_replica(spec, scenario, gpu: GpuOption, replica: dict, efficiency_scale: float = 1.0) -> dict:
    """One replica option's figures by a scalar estimator call (the check on the table). ``spec``
    is the model the replica serves; ``replica['sparse_2_4']`` (default False) its 2:4 sparsity."""
    g = _evaluate_group(spec, gpu, tp=replica["tp"], pp=replica["pp"], weights=replica["weights"],
                        kv=replica["kv"], batches=[replica["batch"]], lengths=_lengths(scenario.serve),
                        gmu=1.0 - scenario.constraints.memory_headroom, efficiency_scale=efficiency_scale,
                        sparse_2_4=bool(replica.get("sparse_2_4", False)))
    return {k: (v[0].item() if hasattr(v[0], "item") else v[0]) for k, v in g.items()}


def _verify(spec, scenario, table: ServingTable, records: list[dict]) -> None:
    """Re-evaluate each chosen replica alone and check the fleet in floats; fail loudly on disagreement."""
    serve = scenario.serve
    by_name = {g.name: g for g in table.gpus}
    slo = serve.slo
    models = {m.name: m for m in table.plan.models}
    limit = table.plan.quality_limit_pct
    for rec in records:
        for rep in rec["replicas"]:
            ev = evaluate_replica(models[rep["model"]], scenario, by_name[rep["gpu"]], rep, table.efficiency_scale)
            if limit is not None and rep["quality_loss_pct"] > limit + 1e-12:
                raise RuntimeError(f"planner chose a replica over the quality limit: {rep}")
            for k in ("ttft_s", "itl_s", "requests_per_s", "memory_per_gpu_bytes"):
                if not math.isclose(ev[k], rep[k], rel_tol=1e-9, abs_tol=1e-12):
                    raise RuntimeError(f"planner and estimator disagree on {k} for {rep}: {rep[k]} vs {ev[k]}")
            if not ev["ok_memory"] or (slo.ttft_p99_s is not None and ev["ttft_s"] > slo.ttft_p99_s) \
                    or (slo.itl_p99_s is not None and ev["itl_s"] > slo.itl_p99_s):
                raise RuntimeError(f"planner chose a replica that breaks a rule: {rep}")
        need = serve.requests_per_s / serve.max_utilization
        if rec["capacity_after_failures_requests_per_s"] < need * (1 - 1e-12):
            raise RuntimeError(f"fleet capacity {rec['capacity_after_failures_requests_per_s']} < {need} req/s")
        ev = evaluate_fleet(scenario, rec["replicas"], _table=table)
        if not ev["feasible"]:
            raise RuntimeError(f"planner chose a fleet evaluate_fleet finds infeasible: {ev['violations']}")
        for k in ("usd_per_hour", "gpu_usd_per_hour", "one_off_usd", "quality_loss_pct", "n_gpus", "n_gpus_used",
                  "capacity_requests_per_s", "capacity_after_failures_requests_per_s"):
            if not math.isclose(float(ev[k]), float(rec[k]), rel_tol=1e-9, abs_tol=1e-9):
                raise RuntimeError(f"planner and evaluate_fleet disagree on {k}: {rec[k]} vs {ev[k]}")


def evaluate_fleet(scenario, replicas: list[dict], *, catalog=None, _table: ServingTable | None = None) -> dict:
    """Every figure of a GIVEN fleet, whether it is feasible and the rules it breaks: the serving
    counterpart of ``api.evaluate``, computed directly (scalar estimator calls, float money,
    sorted capacities), not through the fleet model, so that ``solve_serving`` can check every
    fleet it returns against it.

    ``replicas``: dicts with gpu, tp, pp, weights, kv, batch, count and optionally offer (the
    rental offer, as in the solver's output; default: the cheapest pool whose instance holds the
    TP group), compression (a variant label as in the solver's output; default 'none') and model
    (default the scenario's). Returns a dict with ``feasible``, ``violations`` (one line each) and
    the fleet figures under the names of the configs columns.
    """
    from optimizer.catalog import load_catalog
    from optimizer.scenario import load_scenario
    from optimizer.search.api import gpu_options, gpu_types

    scenario = load_scenario(scenario)
    if scenario.serve is None:
        raise ClusteroptError("serve", "this scenario has no 'serve' block", "a serving workload")
    serve, cons, slo = scenario.serve, scenario.constraints, scenario.serve.slo
    spec = scenario.spec()
    if _table is not None:
        gpus, pools, pool_type, eff = _table.gpus, _table.pools, _table.pool_type, _table.efficiency_scale
        plan = _table.plan
    else:
        gpus = gpu_types(gpu_options(scenario, catalog)[0], scenario)
        pools, pool_type = billing_pools(scenario, gpus, catalog)
        eff = 1.0
        plan = compression_plan(spec, scenario, gpus)
    limit = plan.quality_limit_pct
    items: list[int] = []
    cat = catalog or load_catalog()
    by_name = {g.name: g for g in gpus}
    violations: list[str] = []
    figs, used_pool = [], []
    for i, rep in enumerate(replicas):
        missing = [k for k in ("gpu", "tp", "pp", "weights", "kv", "batch", "count") if k not in rep]
        if missing:
            raise ClusteroptError(f"replicas[{i}]", f"missing keys {missing}",
                                  "gpu, tp, pp, weights, kv, batch, count (offer optional)")
        try:
            gid = cat.resolve_gpu_id(str(rep["gpu"]))
        except ClusteroptError as e:
            raise ClusteroptError(f"replicas[{i}].gpu", e.problem, e.allowed) from None
        if gid not in by_name:
            raise ClusteroptError(f"replicas[{i}].gpu", f"{gid} is not eligible in this scenario",
                                  "eligible: " + ", ".join(by_name))
        g = by_name[gid]
        v = _variant_of(plan, rep, i, spec)
        ev = evaluate_replica(plan.models[v.model], scenario, g, {**rep, "gpu": gid, "sparse_2_4": v.sparse_2_4}, eff)
        ev.update(quality_loss_pct=v.quality_loss_pct, compression=v.label, model=plan.models[v.model].name,
                  sparse_2_4=v.sparse_2_4)
        items += list(v.items)
        label = f"replica {i} ({gid} tp={rep['tp']} pp={rep['pp']} batch {rep['batch']})"
        if limit is not None and v.quality_loss_pct > limit + 1e-12:
            what = v.label if v.label != "none" else f"{v.weights} weights with {v.kv} KV"
            violations.append(f"quality: {label} serves {what} ({v.quality_loss_pct:.2f}% quality loss); "
                              f"serve.quality.max_loss_pct is {limit:g}")
        if not ev["ok_memory"]:
            violations.append(f"memory: {label} holds {ev['max_concurrent_seqs']:.0f} mean-length sequences in "
                              f"its KV pool, batch cap {rep['batch']}")
        if slo.ttft_p99_s is not None and ev["ttft_s"] > slo.ttft_p99_s:
            violations.append(f"ttft: {label} reaches {ev['ttft_s']:.3f} s at p99; SLO {slo.ttft_p99_s:g} s")
        if slo.itl_p99_s is not None and ev["itl_s"] > slo.itl_p99_s:
            violations.append(f"itl: {label} reaches {ev['itl_s'] * 1e3:.1f} ms; SLO {slo.itl_p99_s * 1e3:g} ms")
        mine = [q for q, h in enumerate(pool_type) if h == g.index
                and pool_fits(pools[q], int(rep["tp"]), int(rep["tp"]) * int(rep["pp"]))]
        if rep.get("offer") is not None:
            mine = [q for q in mine if pools[q].offer == rep["offer"]]
        if not mine:
            violations.append(f"offer: no {gid} offer" + (f" {rep['offer']!r}" if rep.get("offer") else "")
                              + f" has an instance that holds TP = {rep['tp']}")
            q = None
        else:
            q = min(mine, key=lambda x: (pools[x].usd_per_gpu_hour, pools[x].gpus_per_instance))
        figs.append(ev)
        used_pool.append(q)
    counts = [int(r["count"]) for r in replicas]
    used = {}
    for ev, q, n in zip(figs, used_pool, counts):
        if q is not None:
            used[q] = used.get(q, 0) + n * int(ev["gpus_per_replica"])
    inst = {q: fm.instances_needed(u, pools[q].gpus_per_instance) for q, u in used.items()}
    gpu_usd = sum(m * pools[q].usd_per_instance_hour for q, m in inst.items())
    one_off = plan.one_off_usd(items)
    one_off_h = amortised_usd_per_hour(one_off, plan.horizon_hours)
    usd = gpu_usd + one_off_h
    n_gpus = sum(m * pools[q].gpus_per_instance for q, m in inst.items())
    caps = sorted((float(ev["requests_per_s"]) for ev, n in zip(figs, counts) for _ in range(n)), reverse=True)
    k = spares_of(serve)
    need = serve.requests_per_s / serve.max_utilization
    after = sum(caps[k:])
    if after < need:
        violations.append(f"capacity: {after:.2f} requests/s" + (f" with the {k} largest replica(s) lost" if k else "")
                          + f"; demand {serve.requests_per_s:g} / max_utilization {serve.max_utilization:g} = {need:.2f}")
    for h, g in enumerate(gpus):
        rented = sum(m * pools[q].gpus_per_instance for q, m in inst.items() if pool_type[q] == h)
        if g.available is not None and rented > g.available:
            violations.append(f"stock: rents {rented} x {g.name}; {g.available} available")
    if cons.max_gpus is not None and n_gpus > cons.max_gpus:
        violations.append(f"max_gpus: rents {n_gpus} GPUs; limit is {cons.max_gpus}")
    if cons.budget_usd_per_hour is not None and usd > cons.budget_usd_per_hour + 1e-9:
        violations.append(f"budget: ${usd:,.2f}/hour; budget is ${cons.budget_usd_per_hour:,.2f}/hour")
    types = sum(1 for n in counts if n > 0)
    mt = max_types_of(serve)
    if mt is not None and types > mt:
        violations.append(f"max_types: {types} replica options; limit is {mt}")
    capacity = sum(caps)
    return {"feasible": not violations, "violations": violations, "usd_per_hour": float(usd),
            "usd_per_mtoken": float(usd / _demand_mtokens_per_hour(serve)),
            "usd_per_1k_requests": float(usd_per_1k_requests(usd, serve.requests_per_s)),
            "usd_per_month": float(usd_per_month(usd)), "gpu_usd_per_hour": float(gpu_usd),
            "one_off_usd": float(one_off), "one_off_usd_per_hour": float(one_off_h),
            "quality_loss_pct": max((float(ev["quality_loss_pct"]) for ev in figs), default=0.0),
            "n_gpus": int(n_gpus),
            "n_gpus_used": int(sum(used.values())), "n_replicas": int(sum(counts)),
            "capacity_requests_per_s": float(capacity), "capacity_after_failures_requests_per_s": float(after),
            "utilization": float(serve.requests_per_s / capacity) if capacity else math.inf,
            "worst_ttft_s": max((float(ev["ttft_s"]) for ev in figs), default=0.0),
            "worst_itl_s": max((float(ev["itl_s"]) for ev in figs), default=0.0),
            "replicas": [{**dict(rep), **{k2: ev[k2] for k2 in ("ttft_s", "itl_s", "requests_per_s",
                                                                "memory_per_gpu_bytes", "memory_headroom", "model",
                                                                "compression", "sparse_2_4", "quality_loss_pct")}}
                         for rep, ev in zip(replicas, figs)]}


def _variant_of(plan: CompressionPlan, rep: dict, i: int, spec) -> Variant:
    """The plan's variant a given replica serves (by compression label, model, weights, KV).
    Without search.compression any (weights, KV) pair is a plain variant, carrying its formats'
    quality loss (serving_compression.format_quality)."""
    label = str(rep.get("compression", "none"))
    model = str(rep.get("model", spec.name))
    v = plan.find(label, model, str(rep["weights"]), str(rep["kv"]))
    if v is not None:
        return v
    if not plan.compression and label == "none" and model == spec.name:
        return plan.format_variant(str(rep["weights"]), str(rep["kv"]))
    known = sorted({f"{x.label} ({plan.models[x.model].name}, {x.weights}/{x.kv})" for x in plan.variants})
    raise ClusteroptError(f"replicas[{i}].compression", f"no variant {label!r} of {model} with {rep['weights']} "
                          f"weights and {rep['kv']} KV in this scenario", "known: " + "; ".join(known[:8]))


# ----------------------------------------------------------------------------------------
# solve
# ----------------------------------------------------------------------------------------

def solve_serving(scenario, *, top_k: int | None = None, objective: str | None = None,
                  time_limit_s: float = 30.0, catalog=None, table: ServingTable | None = None,
                  pareto: bool = True, explain: bool = True):
    """The K cheapest minimal fleets meeting the serving scenario, proven by CP-SAT (fleet.py).

    Returns ``optimizer.search.api.SolveResult`` with ``configs`` (one row per fleet, COLUMNS),
    ``pareto`` (cost vs worst p99 TTFT), ``explanation`` (binding limits, or why infeasible and
    what relaxation fixes it), ``stats`` and ``table`` (the ServingTable).

    ``table``: a ServingTable already built for this scenario's model, lengths, SLOs, search
    space and GPU list (sweeps and sensitivity reuse one across request rates, limits and
    prices); ``pareto=False`` skips tracing the front, ``explain=False`` the binding-limit and
    relaxation solves (the explanation then holds only 'reason' and empty 'lines').

    configs columns (COLUMNS): rank, objective (in the objective's unit), usd_per_hour (whole
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
    from optimizer.scenario import load_scenario
    from optimizer.search.api import SolveResult, gpu_options, gpu_types

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
        gpus = gpu_types(gpus, scenario)
        table = serving_table(spec, scenario, gpus, catalog)
    else:
        notes = []
    t_table = time.perf_counter() - t0
    rows = reduce_options(table, np.nonzero(table.feasible)[0])
    problem = fleet_problem(table, rows, scenario, objective)
    res = fm.solve_fleets(problem, k, time_limit_s=time_limit_s)
    # spot (issue 17): keep spares for the expected preemptions of the best fleet's spot replicas,
    # and plan again with them until the count settles (a fleet with them needs no more)
    extra = 0
    for _ in range(4):
        need = spot_spares(table, rows, res.fleets[0]) if res.fleets else 0
        if need <= extra:
            break
        extra = need
        problem = fleet_problem(table, rows, scenario, objective, extra_spares=extra)
        res = fm.solve_fleets(problem, k, time_limit_s=time_limit_s)
    records = [dict(fleet_record(table, rows, f, scenario, objective), spot_spare_replicas=extra)
               for f in res.fleets]
    _verify(spec, scenario, table, records)
    # CONTRACTS.md: 'feasible' when a limit stopped the search - also when the time limit came
    # before any fleet was found (nothing was proven impossible, so no conflict is explained)
    timed_out = not records and res.status not in ("optimal", "infeasible")
    status = res.status if records else ("feasible" if timed_out else "infeasible")
    from optimizer.search import serving_explain as sx

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
    from optimizer.offering import commitment_notes

    spot_note = ([f"spot: {extra} spare replica(s) kept for the expected preemptions of the spot replicas "
                  f"(99th percentile of the replicas down at once; {SPOT_REPLACE_S:g} s to replace one)"]
                 if extra else [])
    explanation["notes"] = (notes + table.notes + commitment_notes(table.pools) + spot_note
                            + explanation.get("notes", []))
    front = (pareto_fleets(table, scenario, time_limit_s=min(PARETO_TIME_S, time_limit_s / 3)) if pareto
             else frame([], ranked=False))
    return SolveResult(
        scenario=scenario.name, status=status, objective=objective, configs=frame(records), pareto=front,
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
    df = frame([recs[i] for i in keep], ranked=False)
    df.attrs["complete"] = complete
    return df
