"""From the option table to the fleet model (fleet.py), and a fleet back to a row."""

from __future__ import annotations

import math
from dataclasses import dataclass
import numpy as np
import pandas as pd

from optimizer.formulas.investment import usd_per_1k_requests, usd_per_month
from optimizer.formulas.preemption import spare_replicas
from optimizer.pricing import capacity_groups, offer_keys, scenario_mode
from optimizer.search.core.frame import ranked_frame
from optimizer.search.core.scales import MONEY_UNITS_PER_USD
from optimizer.search.serve import fleet as fm
from optimizer.search.serve.capacity import refiner
from optimizer.search.serve.compression import amortised_usd_per_hour
from optimizer.search.serve.table import FLEET_COLUMNS, DEFAULT_MAX_REPLICA_TYPES, ServingTable

# ----------------------------------------------------------------------------------------
# from the table to the fleet model
# ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Candidates:
    """The fleet model's options: table row and billing pool of each."""

    rows: np.ndarray
    pools: np.ndarray
    #: with lazy simulated capacities: every feasible row of each option's class (pool, GPUs per
    #: replica, one-off items), which capacity.refiner searches when the option is refined
    classes: list | None = None

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
    out_r, out_p, seen = [], [], {}
    lazy = "capacity_simulated" in c
    members: list[list[int]] = []
    for q in range(len(table.pools)):
        for i in order:
            r = int(rows[i])
            if not table.fits_pool(r, q):
                continue
            key = (q, int(c["gpus_per_replica"][r]), _items(table, r))
            if key not in seen:
                seen[key] = len(out_r)
                out_r.append(r)
                out_p.append(q)
                members.append([r])
            elif lazy:
                members[seen[key]].append(r)
    if lazy:
        # capacities are upper bounds until simulated: the subset-of-items drop below compares
        # them, so it is left out (each class still gives one option)
        return Candidates(np.array(out_r, dtype=np.int64), np.array(out_p, dtype=np.int64),
                          [np.array(m, dtype=np.int64) for m in members])
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
    lazy = cand.classes is not None
    opts = tuple(fm.FleetOption(int(q), int(c["gpus_per_replica"][r]), int(c["capacity_units"][r]),
                                _items(table, int(r)), exact=not lazy or bool(c["capacity_simulated"][r]))
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
        budget=(math.floor(cons.budget_usd_per_hour * MONEY_UNITS_PER_USD + 1e-9)
                if cons.budget_usd_per_hour is not None else None),
        max_types=max_types_of(serve), objective="gpus" if objective == "gpus" else "cost", one_off=one_off,
        refine=refiner(table, cand, scenario) if lazy else None,
        capacity=tuple(capacity_groups(scenario.pricing, table.pools)))


# ----------------------------------------------------------------------------------------
# decoding a fleet into a row
# ----------------------------------------------------------------------------------------

def demand_mtokens_per_hour(serve) -> float:
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
                  "count": int(m), "usd_per_hour": float(m * p.usd_per_instance_hour),
                  **offer_keys(p, scenario_mode(scenario))}
                 for q, (p, m) in enumerate(zip(table.pools, f.instances)) if m]
    rec = {
        "usd_per_hour": float(usd),
        "usd_per_mtoken": float(usd / demand_mtokens_per_hour(serve)),
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


def fleet_frame(records: list[dict], ranked: bool = True) -> pd.DataFrame:
    """The fleets DataFrame: one row per fleet, FLEET_COLUMNS, rank from 1 (core.frame)."""
    return ranked_frame(records, FLEET_COLUMNS, ranked)
