"""``evaluate_fleet`` and ``evaluate_replica``: a fleet's or replica's figures by scalar estimator
calls, the check on the table the solver uses."""

from __future__ import annotations

import math

from optimizer.errors import ClusteroptError
from optimizer.formulas.investment import usd_per_1k_requests, usd_per_month
from optimizer.pricing import capacity_groups, resolve_gpu_name, GpuOption, gpu_options, gpu_types
from optimizer.scenario import load_scenario
from optimizer.search.serve import fleet as fm
from optimizer.search.serve.capacity import apply_capacity, simulated, slo_capacity_of
from optimizer.search.serve.compression import CompressionPlan, Variant, amortised_usd_per_hour, compression_plan
from optimizer.search.serve.problem import demand_mtokens_per_hour, max_types_of, spares_of
from optimizer.search.serve.table import ServingTable, billing_pools, evaluate_group, pool_fits, request_lengths

def evaluate_replica(spec, scenario, gpu: GpuOption, replica: dict, efficiency_scale: float = 1.0) -> dict:
    """One replica option's figures by a scalar estimator call (the check on the table). ``spec``
    is the model the replica serves; ``replica['sparse_2_4']`` (default False) its 2:4 sparsity."""
    g = evaluate_group(spec, gpu, tp=replica["tp"], pp=replica["pp"], weights=replica["weights"],
                        kv=replica["kv"], batches=[replica["batch"]], lengths=request_lengths(scenario.serve),
                        gmu=1.0 - scenario.constraints.memory_headroom, efficiency_scale=efficiency_scale,
                        sparse_2_4=bool(replica.get("sparse_2_4", False)))
    out = {k: (v[0].item() if hasattr(v[0], "item") else v[0]) for k, v in g.items()}
    if simulated(scenario):
        cap = slo_capacity_of(spec, scenario, gpu, tp=replica["tp"], pp=replica["pp"], weights=replica["weights"],
                              kv=replica["kv"], batch=replica["batch"], efficiency_scale=efficiency_scale)
        out = apply_capacity(out, cap, scenario.serve.slo)
    return out


def verify_solution(spec, scenario, table: ServingTable, records: list[dict]) -> None:
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
    counterpart of ``train.evaluate.evaluate_training``, computed directly (scalar estimator calls, float money,
    sorted capacities), not through the fleet model, so that ``solve_serving`` can check every
    fleet it returns against it.

    ``replicas``: dicts with gpu, tp, pp, weights, kv, batch, count and optionally offer (the
    rental offer, as in the solver's output; default: the cheapest pool whose instance holds the
    TP group), compression (a variant label as in the solver's output; default 'none') and model
    (default the scenario's). Returns a dict with ``feasible``, ``violations`` (one line each) and
    the fleet figures under the names of the configs columns.
    """

    scenario = load_scenario(scenario)
    if scenario.serve is None:
        raise ClusteroptError("serve", "this scenario has no 'serve' block", "a serving workload")
    serve, cons, slo = scenario.serve, scenario.constraints, scenario.serve.slo
    spec = scenario.spec()
    if _table is not None:
        gpus, pools, pool_type, eff = _table.gpus, _table.pools, _table.pool_type, _table.efficiency_scale
        plan = _table.plan
    else:
        gpus, _ = gpu_options(scenario, catalog)
        gpus = gpu_types(gpus, scenario, catalog)
        pools, pool_type = billing_pools(scenario, gpus)
        eff = 1.0
        plan = compression_plan(spec, scenario, gpus)
    limit = plan.quality_limit_pct
    items: list[int] = []
    by_name = {g.name: g for g in gpus}
    violations: list[str] = []
    figs, used_pool = [], []
    for i, rep in enumerate(replicas):
        missing = [k for k in ("gpu", "tp", "pp", "weights", "kv", "batch", "count") if k not in rep]
        if missing:
            raise ClusteroptError(f"replicas[{i}]", f"missing keys {missing}",
                                  "gpu, tp, pp, weights, kv, batch, count (offer optional)")
        try:
            gid = resolve_gpu_name(gpus, rep["gpu"], catalog)
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
    violations += capacity_violations(scenario.pricing, pools, inst)
    if cons.budget_usd_per_hour is not None and usd > cons.budget_usd_per_hour + 1e-9:
        violations.append(f"budget: ${usd:,.2f}/hour; budget is ${cons.budget_usd_per_hour:,.2f}/hour")
    types = sum(1 for n in counts if n > 0)
    mt = max_types_of(serve)
    if mt is not None and types > mt:
        violations.append(f"max_types: {types} replica options; limit is {mt}")
    capacity = sum(caps)
    return {"feasible": not violations, "violations": violations, "usd_per_hour": float(usd),
            "usd_per_mtoken": float(usd / demand_mtokens_per_hour(serve)),
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


def capacity_violations(pricing, pools, instances: dict) -> list[str]:
    """issue 17: one line per pricing.capacity cap (provider or provider/region) that the rented
    GPUs of a fleet pass, summed over every pool the cap covers (``instances``: pool -> count)."""
    out = []
    for key, limit, covered in capacity_groups(pricing, pools):
        rented = sum(instances.get(q, 0) * pools[q].gpus_per_instance for q in covered)
        if rented > limit:
            out.append(f"capacity: rents {rented} GPUs under pricing.capacity.{key}; the cap is {limit}")
    return out


def _variant_of(plan: CompressionPlan, rep: dict, i: int, spec) -> Variant:
    """The plan's variant a given replica serves (by compression label, model, weights, KV).
    Without search.compression any (weights, KV) pair is a plain variant, carrying its formats'
    quality loss (compression.format_quality)."""
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
