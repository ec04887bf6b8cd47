"""Step time of a training layout: compute at an achievable fraction of dense peak, plus
the communication that compute does not hide, plus the pipeline bubble.

    step = compute + exposed_comm + bubble

* compute: m micro-batches through the slowest pipeline stage (every GEMM at its own
  shape's efficiency and the attention core at flash-attention throughput,
  ``formulas/operators.py``; memory-bound non-GEMM traffic at HBM bandwidth; a fixed cost
  per kernel), plus the optimizer step (memory-bound:
  it streams the GPU's optimizer shard once).
* exposed communication (one model, Megatron-LM's overlap behaviour):
  - TP and EP collectives sit on the critical path between GEMMs: fully exposed.
  - CP ring exchange overlaps with the layer's attention-core compute: exposed by its excess.
  - DP gradient reduction overlaps with the backward of the last micro-batch (bucketed,
    ``--overlap-grad-reduce``): exposed by its excess over that backward; the ZeRO-1/2
    parameter all-gather overlaps with the next step's first forward
    (``--overlap-param-gather``); ZeRO-2 reduce-scatters every micro-batch's gradients
    during its backward; ZeRO-3 gathers weights during each micro-batch's forward and
    backward (prefetch) - each exposed by its excess over its compute window.
  - PP point-to-point: steady-state sends overlap with compute; the 2(pp - 1) sends of the
    fill and drain are exposed (Narayanan et al. 2021, Sec. 2.2).
* bubble: (pp - 1)/(v m) of the m micro-batches' time through a stage, compute and
  exposed per-micro-batch communication (Narayanan et al. 2021, Sec. 2.2.1 for 1F1B and
  Sec. 2.2.2 for the interleaved schedule with v chunks per stage).

FLOP conventions: 1 multiply-add = 2 FLOPs. A linear layer's forward costs 2 x weights
FLOPs per token, the backward twice that (Narayanan et al. 2021, Sec. 5.1; Kaplan et al.
2020, Sec. 2.1). The attention core (QK^T and AV) costs 2 x ctx x (q width + v width)
per token forward. Hardware FLOPs count what the GPU executes: full recomputation repeats
every forward; selective recomputation (no flash) repeats the attention core; flash
attention skips the masked half of the causal score matrix and recomputes QK^T in its
backward (2.5x its forward; Dao et al. 2022, Sec. 3.1 and App. B).
"""

from __future__ import annotations

import numpy as np

from optimizer.formulas.efficiency import CALIBRATED, EfficiencyConstants

LINEAR_PASSES = {"none": 3.0, "selective": 3.0, "full": 4.0}
"""Forward-equivalents of linear-layer FLOPs per step: forward 1 + backward 2 (+1 forward
again under full recomputation; Korthikanti et al. 2022, Sec. 5, HFU accounting)."""

ATTENTION_PASSES = {
    # executed attention-core forward-equivalents (time model): without flash, forward 1 +
    # backward 2 (+1 recomputed forward under selective or full recomputation); with flash
    # the backward recomputes QK^T (2.5x forward; Dao et al. 2022, Sec. 3.1), and selective
    # recomputation has nothing left to recompute (flash stores no score matrix)
    False: {"none": 3.0, "selective": 4.0, "full": 4.0},
    True: {"none": 3.5, "selective": 3.5, "full": 4.5},
}

HFU_ATTENTION_PASSES = {"none": 3.0, "selective": 4.0, "full": 4.0}
"""Attention-core passes counted in HFU: model FLOPs plus the recomputation the layout
chooses (Korthikanti et al. 2022, Sec. 5: HFU counts recomputed FLOPs); a flash kernel's
internal backward recompute and causal skip are implementation details not counted, so
HFU >= MFU. (With flash, selective counts the recomputed attention forward as Megatron
re-runs the core-attention module.)"""

ELEMENTWISE_PASSES = {"none": 1.0, "selective": 1.0, "full": 4.0 / 3.0}
"""Non-GEMM traffic scales with the passes over the layer: full recomputation repeats the
forward (1/3 of forward + backward traffic)."""


def attention_widths_flops(spec) -> tuple[float, float]:
    """(q.k width, v width) summed over heads, features per token."""
    if spec.attention == "mla":
        m = spec.mla
        return (spec.num_heads * (m.qk_nope_head_dim + m.qk_rope_head_dim),
                spec.num_heads * m.v_head_dim)
    w = spec.num_heads * spec.head_size
    return float(w), float(w)


def attention_context(spec, seq_len, *, causal_skip: bool):
    """Mean keys per query that the attention core computes against, averaged over the
    decoder layers. Decoder layers with a kernel that skips the masked half (flash) see
    ~s/2; a dense score GEMM sees s. A sliding window of w caps its layers (min(., w)); a
    chunked layer of c tokens computes within its chunk (min(., c/2) with the skip, else
    min(., c)); a Mamba layer has no attention core (0; its scan is linear in s)."""
    s = np.asarray(seq_len, dtype=float)
    causal = spec.arch != "encoder"
    full = s / 2.0 if (causal and causal_skip) else s
    if spec.arch == "encoder" or (spec.sliding_window is None and not spec.layer_types):
        return full
    total = 0.0
    for i in range(spec.num_layers):
        kind = spec.layer_kind(i)
        if kind == "sliding_attention":
            total = total + np.minimum(full, float(spec.sliding_window))
        elif kind == "chunked_attention":
            c = float(spec.attention_chunk_size)
            total = total + np.minimum(full, c / 2.0 if causal_skip else c)
        elif kind != "mamba":
            total = total + full
    return total / spec.num_layers


def layer_forward_flops_per_token(spec, layer_params, seq_len, *, causal_skip: bool):
    """(linear, attention-core) forward FLOPs per token of one layer.

    linear = 2 x (active weights - norm weights): every matrix a token passes through,
    routed experts counted k of E times, router included (formulas/params.py counts);
    attention core = 2 x ctx x (q width + v width). Units: FLOPs per token."""
    lp = layer_params
    linear = 2.0 * (lp.active - lp.norm)
    qk, vw = attention_widths_flops(spec)
    ctx = attention_context(spec, seq_len, causal_skip=causal_skip)
    n_attn = 2 if (spec.arch == "encoder_decoder" and not lp.is_encoder) else 1
    return linear, 2.0 * ctx * (qk + vw) * n_attn


def lm_head_forward_flops_per_token(spec) -> float:
    """The LM head GEMM, 2 x embedding width x vocab per token (0 without a head)."""
    return 2.0 * spec.embedding_dim * spec.vocab_size if spec.lm_head else 0.0


def pipeline_bubble_fraction(pp, interleave, micro_batches):
    """(pp - 1)/(v m): idle time of the pipeline fill and drain relative to the m
    micro-batches' ideal time (Narayanan et al. 2021, Sec. 2.2.1-2.2.2). Dimensionless."""
    pp = np.asarray(pp, dtype=float)
    return (pp - 1) / (np.asarray(interleave, dtype=float) * np.maximum(micro_batches, 1))


def elementwise_time_s(activation_bytes, hbm_bytes_per_s, *, recompute: str,
                       efficiency_scale=1.0, constants: EfficiencyConstants = CALIBRATED):
    """Memory-bound non-GEMM time of a micro-batch: kappa x stored-activation bytes
    (no-recompute form) x the recompute pass factor / HBM bandwidth. Seconds."""
    return (constants.elementwise_passes * activation_bytes * ELEMENTWISE_PASSES[recompute]
            / hbm_bytes_per_s / efficiency_scale)


def optimizer_step_time_s(params_in_optimizer, hbm_bytes_per_s, *, optimizer_bytes: float,
                          grad_bytes: float, weight_bytes: float):
    """Optimizer update of the GPU's shard, memory-bound: read and write the states
    (2 K bytes), read the gradient, write the bf16 weight, per parameter. Seconds."""
    return params_in_optimizer * (2.0 * optimizer_bytes + grad_bytes + weight_bytes) / hbm_bytes_per_s


def exposed_s(comm_s, window_s):
    """Communication overlapped with a compute window of ``window_s``: its excess. Seconds."""
    return np.maximum(comm_s - window_s, 0.0)


HOST_OPTIMIZER_BYTES_PER_S = 25e9
"""Host memory bandwidth one GPU's CPU optimizer step gets under ZeRO-Offload (bytes/s):
a dual-socket server's ~200 GB/s of DDR4/DDR5 shared by its 8 GPUs (ASSUMPTION: the
CPU Adam of Ren et al. 2021, 'ZeRO-Offload', Sec. 4.2, is memory-bound like the GPU's)."""

PCIE_DEFAULT_BYTES_PER_S = 25e9
"""Host link per GPU when the catalog states none: PCIe Gen4 x16, 32 GB/s one way at ~0.8."""


def offload_step_time_s(params_in_optimizer, *, optimizer_bytes: float, grad_bytes: float,
                        weight_bytes: float, pcie_bytes_per_s: float):
    """ZeRO-Offload optimizer step of the GPU's shard (Ren et al. 2021): gradients to the
    host over PCIe, the update on the CPU (fp32 master weights and states read and written,
    gradient read) at ``HOST_OPTIMIZER_BYTES_PER_S``, updated bf16 weights back over PCIe.
    Exposed (not overlapped with the GPU's compute). Seconds."""
    link = pcie_bytes_per_s if pcie_bytes_per_s > 0 else PCIE_DEFAULT_BYTES_PER_S
    cpu = params_in_optimizer * (2.0 * optimizer_bytes + grad_bytes) / HOST_OPTIMIZER_BYTES_PER_S
    return cpu + params_in_optimizer * (grad_bytes + weight_bytes) / link
