"""``clusteropt estimate`` and ``clusteropt scaling`` as plain data: one model, one layout.

This module sits beside the search (it reads the catalog and calls the estimators) and
returns dictionaries with unit-suffixed keys; ``cli.py`` only renders them.
"""

from __future__ import annotations


from optimizer.formatting import plain
from optimizer.errors import ClusteroptError
from optimizer.formulas import flops, scaling
from optimizer.formulas.cost import rented_cost_usd
from optimizer.formulas.offers import committed_billed_hours
from optimizer.formulas.layout import TrainLayout
from optimizer.formulas.params import count_params
from optimizer.formulas.serving import estimate_serving
from optimizer.formulas.training import estimate_training, layout_violations
from optimizer.model import load_model
from optimizer.search.train.system import estimate_system
from optimizer.units import GIGABIT, SECONDS_PER_DAY, SECONDS_PER_HOUR

def params_dict(spec) -> dict:
    p = count_params(spec)
    return {
        "total": p.total, "active": p.active, "embedding": p.embedding, "position": p.position,
        "attention": p.attention, "ffn": p.ffn, "norm": p.norm, "lm_head": p.lm_head, "pooler": p.pooler,
        **({"projection": p.projection} if getattr(p, "projection", 0) else {}),
    }


def flops_dict(spec, seq_len: int) -> dict:
    fwd = flops.forward_flops_per_token(spec, seq_len)
    return {
        "seq_len": seq_len,
        "forward": float(fwd.total),
        "forward_matmul": float(fwd.matmul),
        "forward_attention": float(fwd.attention),
        "train": float(flops.train_flops_per_token(spec, seq_len)),
        "train_hardware_selective": float(flops.hardware_train_flops_per_token(spec, seq_len, "selective")),
        "train_hardware_full": float(flops.hardware_train_flops_per_token(spec, seq_len, "full")),
    }


def train_dict(spec, hw, layout, *, tokens=None, offer=None, pricing="on_demand") -> dict:
    e = estimate_training(spec, hw, layout)
    mem = plain(e.memory)
    stage = mem.pop("stage", None)          # which pipeline stage is the most loaded: not bytes
    out = {
        "layout": {"tp": layout.tp, "pp": layout.pp, "dp": layout.dp, "cp": layout.cp, "ep": layout.ep,
                   "zero": layout.zero, "micro_batch": layout.micro_batch, "global_batch": layout.global_batch,
                   "grad_accum": layout.grad_accum, "n_gpus": layout.n_gpus, "recompute": layout.recompute,
                   "precision": layout.precision, "sequence_parallel": layout.sequence_parallel,
                   "interleave": layout.interleave},
        "memory_per_gpu_bytes": mem,
        "memory_stage": stage,
        "memory_capacity_bytes": hw.memory_bytes,
        "fits": bool(e.memory.total <= hw.memory_bytes),
        "warnings": list(layout_violations(spec, hw, layout)),
        "step_time_s": float(e.step_time_s),
        "compute_time_s": float(e.compute_time_s),
        "exposed_comm_time_s": float(e.exposed_comm_time_s),
        "bubble_time_s": float(e.bubble_time_s),
        "tokens_per_s": float(e.tokens_per_s),
        "tokens_per_s_per_gpu": float(e.tokens_per_s) / layout.n_gpus,
        "mfu": float(e.mfu),
        "hfu": float(e.hfu),
        "model_tflops_per_gpu": float(e.model_tflops_per_gpu),
        "hardware_tflops_per_gpu": float(e.hardware_tflops_per_gpu),
    }
    if tokens is not None:
        train_s = tokens / e.tokens_per_s
        hours = train_s / SECONDS_PER_HOUR
        out["train_days"] = train_s / SECONDS_PER_DAY
        out["gpu_hours"] = hours * layout.n_gpus
        out["cost_usd"] = None                   # billed on wall-clock hours by _add_system
        if offer is not None:
            out["offer"] = f"{offer.provider} {offer.instance_type} ({pricing})"
    return out


def estimate(model_ref: str, *, catalog, seq_len=None, gpu=None, tp=1, pp=1, dp=1, cp=1, ep=1, zero=1,
             micro_batch=1, global_batch=None, recompute="selective", precision="bf16", sequence_parallel=False,
             interleave=1, inter_node_gbps=None, tokens=None, pricing="on_demand", serve=False,
             weights="bf16", kv="bf16", batch=1, prompt_len=1024, output_len=256,
             gpu_memory_utilization=0.9) -> dict:

    spec = load_model(model_ref)
    s = seq_len or spec.max_position_embeddings
    data = {"model": spec.name, "params": params_dict(spec), "flops_per_token": flops_dict(spec, s)}
    if gpu is None:
        if serve:
            raise ClusteroptError("--gpu", "a serving estimate needs a GPU", "e.g. --gpu H100-SXM5-80GB")
        return data
    gid = catalog.resolve_gpu_id(gpu)
    hw = catalog.hardware(gid)
    if inter_node_gbps is not None:
        hw = hw.with_inter_node_bytes_per_s(inter_node_gbps * GIGABIT)
    if serve:
        e = estimate_serving(spec, hw, tp=tp, pp=pp, weights=weights, kv=kv, batch=batch, prompt_len=prompt_len,
                             output_len=output_len, gpu_memory_utilization=gpu_memory_utilization)
        sv = plain(e)
        sv["memory_per_gpu_bytes"] = sv.pop("memory_per_gpu")     # CONTRACTS.md key, parts sum to total
        sv["gpu"] = gid
        data["serve"] = sv
        return data
    _check_layout(spec, tp, pp, dp, cp, ep)
    gb = global_batch or micro_batch * dp
    if gb % (micro_batch * dp):
        raise ClusteroptError("--global-batch", f"{gb} is not a multiple of micro_batch x dp = {micro_batch * dp}",
                              "global batch = micro_batch x dp x grad_accum")
    if pricing not in ("on_demand", "spot", "reserved", "reserved_1y", "reserved_3y"):
        raise ClusteroptError("--pricing", f"{pricing!r}", "allowed: on_demand, spot, reserved (= reserved_1y), reserved_3y")
    layout = TrainLayout(seq_len=s, global_batch=gb, tp=tp, pp=pp, dp=dp, cp=cp, ep=ep, zero=zero,
                         micro_batch=micro_batch, recompute=recompute, sequence_parallel=sequence_parallel,
                         precision=precision, interleave=interleave)
    offer = catalog.cheapest_offer(gid, pricing) if tokens is not None else None
    data["train"] = train_dict(spec, hw, layout, tokens=tokens, offer=offer, pricing=pricing)
    data["train"]["gpu"] = gid
    if tokens is not None:
        _add_system(data["train"], spec, gid, layout, tokens, offer, pricing, catalog)
    return data


def _add_system(train: dict, spec, gid: str, layout, tokens: float, offer, pricing: str, catalog) -> None:
    """Failures, checkpoints, storage, hosts, fabric and TCO (issue 10) for ``--tokens``: the
    same keys as solve's configurations; the cost is then billed on wall-clock hours (lost time
    included) plus rented storage, as the search bills it."""

    sysd = estimate_system(spec, gid, {"n_gpus": layout.n_gpus, "tp": layout.tp, "pp": layout.pp,
                                       "dp": layout.dp, "cp": layout.cp, "ep": layout.ep, "zero": layout.zero},
                           train["tokens_per_s"], tokens, pricing_mode=pricing, catalog=catalog)
    train.update(plain(sysd))
    if offer is not None and sysd.get("usd_per_instance_hour"):
        # billed on the cheapest offer that can run the layout (estimate_system, issue 17): whole
        # instances x $/instance-hour x wall-clock hours (a commitment: whole terms)
        hours = train["wall_clock_days"] * SECONDS_PER_DAY / SECONDS_PER_HOUR
        billed = float(committed_billed_hours(hours, sysd.get("term_hours", 0.0)))
        storage = float(train["system"]["storage"].get("storage_usd") or 0.0)
        train["cost_usd"] = float(rented_cost_usd(layout.n_gpus, billed, sysd["usd_per_instance_hour"],
                                                  sysd["gpus_per_instance"])) + storage
        train["offer"] = f"{sysd['offer']}"


def _check_layout(spec, tp, pp, dp, cp, ep) -> None:
    """Impossible layouts are errors (CONTRACTS.md); layouts that merely do not fit are not."""
    if spec.num_heads % tp:
        raise ClusteroptError("--tp", f"{tp} does not divide the {spec.num_heads} attention heads",
                              f"divisors of {spec.num_heads}")
    kv = spec.kv_heads
    if spec.attention == "mha" and kv % tp and tp % kv:
        raise ClusteroptError("--tp", f"{tp} neither divides nor is a multiple of the {kv} KV heads",
                              f"divisors or multiples of {kv}")
    if pp > spec.total_layers:
        raise ClusteroptError("--pp", f"{pp} stages for {spec.total_layers} layers", f"at most {spec.total_layers}")
    if spec.moe is None and ep != 1:
        raise ClusteroptError("--ep", f"{ep} for a dense model", "1 (expert parallelism needs a MoE model)")
    if spec.moe is not None and spec.moe.num_experts % ep:
        raise ClusteroptError("--ep", f"{ep} does not divide {spec.moe.num_experts} experts",
                              f"divisors of {spec.moe.num_experts}")
    if (dp * cp) % ep:
        raise ClusteroptError("--ep", f"{ep} does not divide dp x cp = {dp * cp}", "EP divides DP x CP")


def scaling_plan(*, compute=None, params=None, law="hoffmann2022") -> dict:
    if (compute is None) == (params is None):
        raise ClusteroptError("--compute/--params", "give exactly one", "e.g. --compute 1e24 or --params 70e9")
    lw = scaling.law_by_name(law, field="--law")
    rng = scaling.fitted_range(lw)
    if compute is not None:
        n, d = scaling.compute_optimal(lw, compute)
        c = compute
    else:
        c, d = scaling.compute_optimal_for_params(lw, params)
        n = params
    n, d, c = float(n), float(d), float(c)
    out = {"law": law, "compute_flop": c, "params": n, "tokens": d, "tokens_per_param": d / n,
           "predicted_loss": float(scaling.predicted_loss(lw, n, d))}
    out["fitted_range"] = {"params_min": rng.n_params_min, "params_max": rng.n_params_max,
                           "tokens_min": rng.n_tokens_min, "tokens_max": rng.n_tokens_max}
    if bool(scaling.outside_fitted_range(lw, n, d)):
        out["warning"] = (f"outside the range {law} was fitted on ({_count(rng.n_params_min)} to "
                          f"{_count(rng.n_params_max)} parameters, {_count(rng.n_tokens_min)} to "
                          f"{_count(rng.n_tokens_max)} tokens): an extrapolation")
    return out


def _count(x: float) -> str:
    """70000000.0 -> '70M', 1.6e10 -> '16B', 5e11 -> '500B', 4.04e12 -> '4.04T'."""
    for scale, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= scale:
            return f"{x / scale:.3g}{unit}"
    return f"{x:.3g}"
