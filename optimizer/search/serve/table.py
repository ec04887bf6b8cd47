"""The serving option table: one row per replica option (GPU, TP, PP, formats, batch cap) with
every figure, built by the serving estimators (see solve.py for the rules)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
import numpy as np

from optimizer.errors import ClusteroptError
from optimizer.formulas import serving_time as st
from optimizer.formulas.serving import estimate_serving
from optimizer.formulas.offers import committed_billed_hours
from optimizer.pricing import GpuOption, capacity_keys, offer_choices, offer_keys
from optimizer.search.core.space import tp_values
from optimizer.search.serve import fleet as fm
from optimizer.search.serve.compression import CompressionPlan, Variant, compression_plan
from dataclasses import replace

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
FLEET_COLUMNS = ("rank", "objective", "usd_per_hour", "usd_per_mtoken", "usd_per_1k_requests", "usd_per_month",
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
            out.update(offer_keys(p))
            out["usd_per_hour"] = float(c["gpus_per_replica"][r] * p.usd_per_gpu_hour)
        return out


def request_lengths(serve) -> dict[str, int]:
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

    return {"hbm_efficiency": min(1.0, st.HBM_EFFICIENCY * scale),
            "compute_efficiency": min(1.0, st.COMPUTE_EFFICIENCY * scale),
            "low_precision_compute_efficiency": min(1.0, st.LOW_PRECISION_COMPUTE_EFFICIENCY * scale)}


def evaluate_group(spec, g: GpuOption, *, tp, pp, weights, kv, batches, lengths, gmu, efficiency_scale=1.0,
                    sparse_2_4=False, variant=0):
    """ONE vectorised estimate_serving call for all batch caps of a (GPU, TP, PP, formats) group:
    the first half of the arrays at the mean lengths, the second at the p99 lengths. ``variant``
    indexes the table's CompressionPlan.variants (model, formats, 2:4 sparsity)."""

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


def billing_pools(scenario, gpus: list[GpuOption]) -> tuple[list[GpuOption], list[int]]:
    """The pools each GPU type is billed through (module docstring): for a rented type, its
    undominated (offer, mode) choices (pricing.offer_choices, issue 17; a commitment's whole
    terms spread over ``serve.horizon_days``, spot with its preemption rate), thinned by
    ``serving_pools``; for owned GPUs or a scenario-given price, the option itself. Returns the
    pools (GpuOption with the pool's offer, index = pool index) and each pool's GPU type index."""
    pricing = scenario.pricing
    horizon_h = scenario.serve.horizon_days * 24.0 if scenario.serve is not None else 0.0
    pools: list[GpuOption] = []
    types: list[int] = []
    for g in gpus:
        if g.offer in NO_INSTANCE_RULE or pricing.modes == ("owned",) or g.accelerator is None:
            sized = [g]
        else:
            sized = []
            for ch in offer_choices(None, g.name, pricing, option=g, fleet=True)[0]:
                share = (float(committed_billed_hours(horizon_h, ch.term_hours)) / horizon_h
                         if ch.term_hours > 0 and horizon_h > 0 else 1.0)
                sized.append(replace(g, gpus_per_instance=ch.gpus_per_instance,
                                     usd_per_gpu_hour=ch.usd_per_gpu_hour * share,
                                     usd_per_instance_hour=ch.usd_per_instance_hour * share, offer=ch.label,
                                     choice=ch))
            sized = _pools_per_cap_group(pricing, sized) or [g]
        for q in sized:
            pools.append(replace(q, index=len(pools)))
            types.append(g.index)
    return pools, types


def _pools_per_cap_group(pricing, sized: list[GpuOption]) -> list[GpuOption]:
    """``serving_pools`` within each group of pools that ``pricing.capacity`` caps alike (issue
    17): a pool capped by other keys than the cheapest one's is another supply, not a dearer
    copy, so thinning never crosses groups. Without caps there is one group."""
    groups: dict[tuple, list[GpuOption]] = {}
    for q in sized:
        groups.setdefault(capacity_keys(pricing, q.choice.offer) if q.choice is not None else (), []).append(q)
    out = [q for k in sorted(groups) for q in serving_pools(groups[k])]
    return sorted(out, key=lambda q: (q.gpus_per_instance, q.usd_per_gpu_hour, q.offer))


def serving_pools(sized: list[GpuOption]) -> list[GpuOption]:
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
    reach = getattr(getattr(p, "choice", None), "max_gpus", None)
    if reach is not None:           # one replica is one contiguous allocation (offer max_gpus, caps)
        ok = ok & (np.asarray(gpus_per_replica) <= reach)
    return ok if np.ndim(ok) else bool(ok)


def serving_table(spec, scenario, gpus: list[GpuOption], efficiency_scale: float = 1.0) -> ServingTable:
    """Every replica option of the scenario's search space with its figures and rule flags
    (module docstring). One vectorised estimator call per (GPU, weights, KV, TP, PP) group."""
    serve, search = scenario.serve, scenario.search
    if serve is None:
        raise ClusteroptError("serve", "this scenario has no 'serve' block", "a serving workload")
    lengths = request_lengths(serve)
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
    pools, pool_type = billing_pools(scenario, gpus)
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
    if getattr(serve, "capacity", "closed_form") == "simulated":
        # lazy simulated capacities (search/serve/capacity.py): rows start at their closed form
        cols["capacity_simulated"] = np.zeros(n, dtype=bool)
        for k in ("ttft_s", "itl_s", "requests_per_s", "output_tokens_per_s"):
            cols[k] = np.asarray(cols[k], dtype=float).copy()
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
                    out.append(evaluate_group(spec, g, tp=int(tp), pp=int(pp), weights=v.weights, kv=v.kv,
                                               batches=batches, lengths=lengths, gmu=gmu,
                                               efficiency_scale=efficiency_scale, sparse_2_4=v.sparse_2_4,
                                               variant=i))
                except ClusteroptError as e:
                    notes.append(f"{g.name} tp={tp} pp={pp} {v.label} {v.weights}/{v.kv}: {e}; left out")
    return out
