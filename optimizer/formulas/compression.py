"""Compression options: quality loss, one-off cost, 2:4 sparse memory and decode speed.

An option is a weight format (fp8, int8 W8A8, int4 weight-only with a group size), a KV-cache
format (fp8, int8), 2:4 structured sparsity, or a smaller member of the family made by pruning
and distillation. Its *quality loss* comes from a published measurement (catalog/compression.csv,
read by ``optimizer.catalog.load_compression``; this module takes the rows as plain values and
never reads a file). Its *one-off cost* is calibration GPU-hours (post-training quantisation)
or training tokens (distillation, sparse recovery), priced by the caller.

Units: bytes, seconds, FLOPs, FLOP/s, parameters; ``_pct`` is a percentage (0-100).

Sources
-------
* 2:4 storage: NVIDIA's compressed format keeps the 2 non-zero values of every group of 4 and a
  2-bit index for each of them (Mishra et al. 2021, 'Accelerating Sparse Deep Neural Networks',
  arXiv:2104.08378, Sec. 3.1 and Fig. 2; NVIDIA A100 Tensor Core GPU Architecture whitepaper,
  'Fine-grained structured sparsity'): value_bytes / 2 + 2 x 2 bits / 4 weights = value_bytes/2
  + 0.125 bytes per original weight (bf16: 1.125, fp8/int8: 0.625).
* 2:4 compute: sparse tensor cores run the pruned matmul at twice the dense rate where the
  device has them (catalog ``sparse_2_4``; the A100/H100 datasheets print sparse peaks at 2x).
* Decode step: roofline of one engine pass (Williams et al. 2009) as in serving_time: bytes read
  (weights of the linear layers and LM head, the KV cache of every sequence) over the achievable
  bandwidth, against 2 FLOPs per weight per token over the achievable peak; plus TP all-reduces.
* Distillation compute: 6 N_student FLOPs per training token (Kaplan et al. 2020, Sec. 2.1) plus
  the teacher's forward pass, 2 N_teacher per token (logits for the distillation loss).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from optimizer.errors import ClusteroptError
from optimizer.formulas import serving_memory as sm
from optimizer.formulas import serving_time as st
from optimizer.formulas.flops import matmul_weights
from optimizer.formulas.hardware import Hardware
from optimizer.model.spec import ModelSpec
from optimizer.units import BYTES_PER

#: 2-bit index per kept value, 2 kept values per group of 4 (module docstring).
SPARSE_INDEX_BITS = 2
SPARSE_KEPT_PER_GROUP = 2
SPARSE_GROUP = 4
#: Sparse tensor cores: twice the dense matmul rate (A100/H100 datasheets: sparse = 2 x dense).
SPARSE_COMPUTE_SPEEDUP = 2.0
#: FLOPs per parameter per token: training 6 (Kaplan et al. 2020, Sec. 2.1), forward 2.
TRAIN_FLOP_PER_PARAM_TOKEN = 6.0
FORWARD_FLOP_PER_PARAM_TOKEN = 2.0


# --------------------------------------------------------------------------- quality

def quality_loss_pct(baseline, compressed, higher_is_better: bool):
    """Relative degradation in per cent: (base - comp)/base x 100 for accuracy-like metrics,
    (comp - base)/base x 100 for perplexity-like ones. Negative = the compressed model scored
    better. Units: per cent."""
    b = np.asarray(baseline, dtype=float)
    c = np.asarray(compressed, dtype=float)
    if np.any(b <= 0):
        raise ClusteroptError("baseline_value", f"must be > 0 (got {baseline!r})", "a positive score")
    d = (b - c) / b if higher_is_better else (c - b) / b
    out = 100.0 * d
    return float(out) if out.ndim == 0 else out


def _family_key(family: str) -> str:
    """'llama-3.1' and 'llama3' -> 'llama-3': rows are keyed by generation, not point release."""
    import re

    f = str(family).strip().lower().replace("_", "-")
    f = re.sub(r"^llama(\d)", r"llama-\1", f)
    return f.split(".")[0]


def quality_family(spec: ModelSpec) -> str:
    """The family key quality rows are looked up by: a generated spec's family ('llama-3'), or the
    generation in a preset's name when its family is generic ('llama' + 'llama-3.1-70b' ->
    'llama-3'; 'llama-2-7b' -> 'llama-2'; 'llama-7b' -> 'llama')."""
    import re

    fam = _family_key(spec.family or spec.model_type or spec.name)
    m = re.match(rf"{re.escape(fam)}-?(\d+)(?:\.\d+)?-", spec.name.lower())
    return f"{fam}-{m.group(1)}" if m else fam


@dataclass(frozen=True)
class QualityEstimate:
    """The published measurement an option's quality loss is taken from."""

    option: str
    quality_loss_pct: float       # >= 0: a measured gain counts as no loss
    measured_loss_pct: float      # as published (may be negative)
    model: str
    metric: str
    source: str
    exact_family: bool            # False: no row for the family; the nearest other family's row


def option_quality(rows: Sequence, option: str, family: str, n_params: float) -> QualityEstimate:
    """Quality loss of ``option`` for a ``family`` model of ``n_params`` parameters.

    Picks, among the rows for this option and family, the one whose model size is nearest in
    log; when several rows are equally near, the larger loss (conservative). Without a row for
    the family, the nearest-sized row of any family is used and ``exact_family`` is False.
    ``rows``: objects with the CompressionRow fields (optimizer.catalog.load_compression).
    """
    cands = [r for r in rows if r.option == option]
    if not cands:
        known = sorted({r.option for r in rows})
        raise ClusteroptError("search.compression", f"no published quality figure for {option!r}",
                              "known options: " + ", ".join(known))
    fam = _family_key(family)
    same = [r for r in cands if _family_key(r.model_family) == fam]
    pool = same or cands

    def key(r):
        loss = quality_loss_pct(r.baseline_value, r.compressed_value, r.higher_is_better)
        return (round(abs(math.log(r.model_params_b * 1e9 / n_params)), 9), -loss)

    best = min(pool, key=key)
    loss = quality_loss_pct(best.baseline_value, best.compressed_value, best.higher_is_better)
    return QualityEstimate(option=option, quality_loss_pct=max(0.0, loss), measured_loss_pct=loss,
                           model=best.model, metric=best.metric, source=best.source,
                           exact_family=bool(same))


# --------------------------------------------------------------------------- one-off cost

def calibration_gpu_hours(gpu_hours_per_b_params: float, n_params: float) -> float:
    """Post-training quantisation calibration: GPU-hours per billion parameters x size.
    GPTQ: 4 A100-hours for 175B (Frantar et al. 2023, abstract) = 0.0229 per billion.
    Units: GPU-hours."""
    if gpu_hours_per_b_params < 0 or n_params <= 0:
        raise ClusteroptError("one_off_value", "must be >= 0 with a positive model size",
                              "one_off_value >= 0 and model parameters > 0")
    return gpu_hours_per_b_params * n_params / 1e9


def recovery_tokens(tokens_per_param: float, teacher_params: float) -> float:
    """Training tokens of a distillation or sparse-recovery run, scaled with the teacher's size
    from the published run (catalog ``recovery_tokens_per_param``). Units: tokens."""
    if tokens_per_param < 0 or teacher_params <= 0:
        raise ClusteroptError("one_off_value", "must be >= 0 with a positive model size",
                              "one_off_value >= 0 and model parameters > 0")
    return tokens_per_param * teacher_params


def distillation_flop(tokens: float, student_params: float, teacher_params: float) -> float:
    """Training FLOPs of distillation: tokens x (6 N_student + 2 N_teacher) (module docstring).
    Units: FLOPs."""
    return tokens * (TRAIN_FLOP_PER_PARAM_TOKEN * student_params + FORWARD_FLOP_PER_PARAM_TOKEN * teacher_params)


def amortised_usd_per_token(one_off_usd: float, lifetime_tokens: float) -> float:
    """A one-off cost spread over the tokens served in the model's lifetime. Units: USD/token."""
    if lifetime_tokens <= 0:
        raise ClusteroptError("inference.tokens", f"must be > 0 (got {lifetime_tokens!r})", "allowed: > 0")
    return one_off_usd / lifetime_tokens


# --------------------------------------------------------------------------- memory

def sparse_2_4_bytes_per_param(value_bytes: float) -> float:
    """Bytes per ORIGINAL weight of a 2:4-compressed matrix: half the values plus a 2-bit index
    per kept value (module docstring). bf16 1.125, fp8/int8 0.625, int4 0.375 (+ group scales).
    Units: bytes per parameter."""
    if value_bytes <= 0:
        raise ClusteroptError("value_bytes", f"must be > 0 (got {value_bytes!r})", "bytes per value > 0")
    kept = SPARSE_KEPT_PER_GROUP / SPARSE_GROUP
    return value_bytes * kept + kept * SPARSE_INDEX_BITS / 8.0


def linear_bytes_per_param(weights: str = "bf16", sparse_2_4: bool = False,
                           group_size: int = sm.DEFAULT_GROUP_SIZE) -> float:
    """Bytes per weight of a quantised (and optionally 2:4-sparse) linear layer, scales included.
    int4 group scales (serving_memory.weight_bytes_per_param) are per original group and kept
    whole under sparsity. Units: bytes per parameter."""
    dense = sm.weight_bytes_per_param(weights, group_size)
    if not sparse_2_4:
        return dense
    value = float(BYTES_PER[weights])
    return sparse_2_4_bytes_per_param(value) + (dense - value)


def compressed_weight_bytes(spec: ModelSpec, *, tp: int = 1, weights: str = "bf16", sparse_2_4: bool = False,
                            group_size: int = sm.DEFAULT_GROUP_SIZE) -> sm.WeightBytes:
    """Weights on one GPU (TP shard, one pipeline stage) with 2:4 sparsity on the linear layers of
    the transformer blocks (attention, FFN, experts), as Sparse-Llama and SparseGPT prune them;
    embedding, LM head, norms and routers stay dense 16-bit. Units: bytes."""
    w = sm.weight_bytes_per_gpu(spec, tp=tp, weights=weights, group_size=group_size)
    if not sparse_2_4:
        return w
    r = linear_bytes_per_param(weights, True, group_size) / sm.weight_bytes_per_param(weights, group_size)
    attention, ffn, experts = w.attention * r, w.ffn * r, w.experts * r
    total = w.embedding + attention + ffn + experts + w.norm + w.lm_head
    return sm.WeightBytes(embedding=w.embedding, attention=attention, ffn=ffn, experts=experts,
                          norm=w.norm, lm_head=w.lm_head, total=total)


# --------------------------------------------------------------------------- decode speed

def _matmul_peak(hw: Hardware, weights: str) -> tuple[float, float]:
    """(peak FLOP/s, achievable fraction) of the linear layers for a weight format: fp8/int8 run
    W8A8 on their own tensor cores where the device has them (serving.COMPUTE_PRECISION)."""
    if weights == "fp8" and hw.fp8_flop_per_s > 0:
        return hw.fp8_flop_per_s, st.LOW_PRECISION_COMPUTE_EFFICIENCY
    if weights == "int8" and hw.int8_op_per_s > 0:
        return hw.int8_op_per_s, st.LOW_PRECISION_COMPUTE_EFFICIENCY
    return hw.bf16_flop_per_s, st.COMPUTE_EFFICIENCY


def decode_step_time_s(spec: ModelSpec, hw: Hardware, *, batch, context_len, tp: int = 1,
                       weights: str = "bf16", kv: str = "bf16", sparse_2_4: bool = False,
                       sparse_tensor_cores: bool = False, group_size: int = sm.DEFAULT_GROUP_SIZE,
                       hbm_efficiency: float = st.HBM_EFFICIENCY):
    """One decode pass of ``batch`` sequences at ``context_len`` tokens on one TP group (one stage).

    bytes = weights read (linear layers and LM head; routed experts: only those the batch touches,
    serving_time.expected_experts_touched; the embedding table is gathered, not read) + KV of every
    sequence; FLOPs = batch x 2 x active matmul weights / tp. Time = roofline (serving_time) +
    2 all-reduces per layer of batch x hidden x 2 bytes (Shoeybi et al. 2019, Sec. 3).
    2:4 sparsity shrinks the linear weights' bytes (sparse_2_4_bytes_per_param) and, with
    ``sparse_tensor_cores`` (catalog ``sparse_2_4``), doubles the matmul peak of those layers.
    Arrays broadcast over ``batch`` and ``context_len``. Units: seconds.
    """
    b = np.asarray(batch, dtype=float)
    w = compressed_weight_bytes(spec, tp=tp, weights=weights, sparse_2_4=sparse_2_4, group_size=group_size)
    experts = w.experts
    if spec.moe is not None and w.experts > 0:
        touched = st.expected_experts_touched(spec.moe.num_experts, spec.moe.experts_per_token, b)
        experts = w.experts * touched / spec.moe.num_experts
    weight_read = w.attention + w.ffn + experts + w.norm + w.lm_head
    kv_read = b * sm.kv_cache_bytes_per_seq(spec, context_len, kv=kv, tp=tp, block_size=None)
    mw = matmul_weights(spec)
    peak, eff = _matmul_peak(hw, weights)
    layer_peak = peak * (SPARSE_COMPUTE_SPEEDUP if (sparse_2_4 and sparse_tensor_cores) else 1.0)
    t_layers_compute = b * 2.0 * mw.layers / tp / (layer_peak * eff)
    t_head_compute = b * 2.0 * mw.lm_head / tp / (hw.bf16_flop_per_s * st.COMPUTE_EFFICIENCY)
    t_bytes = (weight_read + kv_read) / (hw.hbm_bytes_per_s * hbm_efficiency)
    t = np.maximum(t_bytes, t_layers_compute + t_head_compute)
    if tp > 1:
        msg = b * spec.hidden_size * sm.UNQUANTISED_BYTES
        t = t + 2 * spec.num_layers * st.piecewise_allreduce_time_s(msg, tp, hw.intra_node_bytes_per_s)
    return float(t) if np.ndim(t) == 0 else t


def decode_speedup(spec: ModelSpec, hw: Hardware, *, batch, context_len, tp: int = 1,
                   base: dict | None = None, option: dict, sparse_tensor_cores: bool = False):
    """Decode speed of ``option`` over ``base`` (dicts of weights/kv/sparse_2_4; base default
    bf16 dense): step time of base / step time of option (> 1 = faster). Units: ratio."""
    base = base or {}
    t0 = decode_step_time_s(spec, hw, batch=batch, context_len=context_len, tp=tp,
                            sparse_tensor_cores=sparse_tensor_cores, **base)
    t1 = decode_step_time_s(spec, hw, batch=batch, context_len=context_len, tp=tp,
                            sparse_tensor_cores=sparse_tensor_cores, **option)
    return t0 / t1


# --------------------------------------------------------------------------- choices for a planner

#: Which serving formats each option sets (weights, kv, sparse_2_4); None = leaves it as is.
OPTION_FORMATS = {
    "weights_fp8": ("fp8", None, None), "weights_int8_w8a8": ("int8", None, None),
    "weights_int4_awq": ("int4", None, None), "weights_int4_gptq": ("int4", None, None),
    "kv_fp8": (None, "fp8", None), "kv_int8": (None, "int8", None),
    "sparse_2_4": (None, None, True), "sparse_2_4_oneshot": (None, None, True),
}


@dataclass(frozen=True)
class CompressionChoice:
    """One combination of options for a serving planner: formats to estimate with, the summed
    quality loss of its parts (additive: an assumption, no published joint figures) and its
    one-off work (calibration GPU-hours, recovery tokens with the FLOPs they cost)."""

    options: tuple[str, ...]
    weights: str
    kv: str
    sparse_2_4: bool
    quality_loss_pct: float
    calibration_gpu_hours: float
    recovery_tokens: float
    recovery_flop: float
    sources: tuple[str, ...]


def compression_choices(rows: Sequence, options: Sequence[str], family: str, n_params: float, *,
                        max_loss_pct: float | None = None) -> list[CompressionChoice]:
    """Every combination of at most one weight option, one KV option and one sparsity option from
    ``options`` (plus none: bf16 dense), with its quality loss and one-off work; combinations above
    ``max_loss_pct`` are left out. Pruning/distillation options change the model itself and are
    not combined here (a planner adds the student as another model). Sorted by quality loss."""
    import itertools

    unknown = [o for o in options if o not in OPTION_FORMATS]
    if unknown:
        raise ClusteroptError("search.compression", f"unknown option {unknown[0]!r}",
                              "allowed: " + ", ".join(OPTION_FORMATS))
    slots = {0: [None], 1: [None], 2: [None]}
    for o in options:
        i = next(j for j, v in enumerate(OPTION_FORMATS[o]) if v is not None)
        slots[i].append(o)
    out = []
    for combo in itertools.product(slots[0], slots[1], slots[2]):
        picked = tuple(o for o in combo if o is not None)
        weights, kv, sparse = "bf16", "bf16", False
        loss = gpu_hours = tokens = 0.0
        srcs = []
        for o in picked:
            w, k, s = OPTION_FORMATS[o]
            weights, kv, sparse = w or weights, k or kv, bool(s) or sparse
            q = option_quality(rows, o, family, n_params)
            loss += q.quality_loss_pct
            srcs.append(q.source)
            row = next(r for r in rows if r.option == o and r.model == q.model)
            if row.one_off == "calibration_gpu_hours_per_b_params":
                gpu_hours += calibration_gpu_hours(row.one_off_value, n_params)
            elif row.one_off == "recovery_tokens_per_param":
                tokens += recovery_tokens(row.one_off_value, n_params)
        if max_loss_pct is not None and loss > max_loss_pct:
            continue
        out.append(CompressionChoice(options=picked, weights=weights, kv=kv, sparse_2_4=sparse,
                                     quality_loss_pct=loss, calibration_gpu_hours=gpu_hours,
                                     recovery_tokens=tokens,
                                     recovery_flop=distillation_flop(tokens, n_params, n_params),
                                     sources=tuple(srcs)))
    return sorted(out, key=lambda c: (c.quality_loss_pct, c.options))


def one_off_cost_usd(choice: CompressionChoice, usd_per_gpu_hour: float, train_flop_per_s_per_gpu: float) -> float:
    """Price of a choice's one-off work on one GPU type: calibration GPU-hours plus the recovery
    FLOPs at the training estimator's achieved FLOP/s per GPU (peak x MFU), at ``usd_per_gpu_hour``.
    Units: USD."""
    if train_flop_per_s_per_gpu <= 0:
        raise ClusteroptError("train_flop_per_s_per_gpu", "must be > 0", "a training throughput > 0 FLOP/s")
    hours = choice.calibration_gpu_hours + choice.recovery_flop / train_flop_per_s_per_gpu / 3600.0
    return hours * usd_per_gpu_hour
