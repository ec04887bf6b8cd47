"""Training memory per GPU: weights, gradients, optimizer states, activations, logits,
communication buffers and a reserve, for the MOST LOADED GPU of a layout.

Units: bytes. Every function accepts plain numbers or numpy arrays of equal shape for
the numeric layout quantities (tp, pp, dp, cp, ep, micro_batch, seq_len, ...), so the
search can evaluate 10^5 layouts in one call; categorical choices (recompute, zero stage,
optimizer, flags) are scalars, except that the ZeRO stage and sequence parallelism may also be
given per layout (arrays of shape (n, 1); ``_pick`` selects per layout what the scalar branch
computes). No Python ``if`` ever branches on a numeric layout value.

Conventions (stated once, used everywhere):

* Mixed precision (Micikevicius et al. 2018; Megatron-LM): bf16 weights (2 B/param),
  gradients accumulated and reduced in fp32 ``main_grad`` buffers (4 B/param: Megatron
  keeps fp32 main grads for bf16 training, ``--accumulate-allreduce-grads-in-fp32``),
  optimizer states in fp32. The ZeRO paper counts fp16 gradients (2 B); its figures are
  reproduced with ``grad_bytes=2`` (tests/test_memory.py).
* Optimizer states K bytes/param (``OPTIMIZER_STATE_BYTES``), fp32 master weights included.
* ZeRO (Rajbhandari et al. 2020, Sec. 5, Fig. 1): stage 1 shards optimizer states,
  stage 2 also gradients, stage 3 also weights, over the data-parallel group. Megatron's
  distributed optimizer is stage 1 and shards over DP x CP; expert weights shard over
  the expert-data-parallel group DP x CP / EP.
* Tensor parallelism (Shoeybi et al. 2019): attention and FFN matrices, the word
  embedding and the LM head (vocab-parallel) are split over TP; norms, routers and
  learned position tables are replicated. Routed experts are split over EP x TP (expert
  tensor parallel size = TP, Megatron-Core's default).
* Pipeline (Narayanan et al. 2021): layers are cut into contiguous stages; with
  ``L % pp != 0`` the first ``L % pp`` stages hold ``ceil(L/pp)`` layers (uneven stages,
  as Megatron allows). Stage 0 holds the embedding, the last stage the LM head (and,
  with tied embeddings and pp > 1, its own copy of the embedding matrix, as Megatron
  does). The most loaded GPU is the stage with the largest total.
* Activations: Korthikanti et al. 2022, 'Reducing Activation Recomputation in Large
  Transformer Models', Sec. 4, Table 2 (per layer, bf16, 1-byte dropout masks):
  no parallelism sbh(34 + 5as/h); TP: sbh(10 + 24/t + 5as/(ht)); TP+SP: sbh(34/t + 5as/(ht));
  selective recompute drops the 5as/h term; full recompute keeps the layer input, 2sbh.
  Generalised in ``activation_bytes_per_layer`` (GQA/MLA widths, gated FFN, MoE top-k,
  CP, flash attention).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from functools import lru_cache

import numpy as np

from optimizer.errors import ClusteroptError
from optimizer.units import BYTES_PER, GIB, MIB

# --- constants (each with its source) -------------------------------------------------

WEIGHT_BYTES_PER_PARAM = BYTES_PER["bf16"]
"""bf16 model weights (mixed precision; Micikevicius et al. 2018)."""

GRAD_BYTES_PER_PARAM = BYTES_PER["fp32"]
"""fp32 main gradients: Megatron-LM accumulates and all-reduces gradients in fp32 for bf16
training (``--accumulate-allreduce-grads-in-fp32``, forced on with ``--bf16``)."""

OPTIMIZER_STATE_BYTES = {
    # fp32 master weights (4) + first moment (4) + second moment (4): ZeRO paper's K = 12.
    "adam": 12.0,
    # fp32 master weights (4) + momentum (4).
    "sgd": 8.0,
    # fp32 master weights (4) + 8-bit first and second moments (1 + 1); the block-wise
    # quantisation statistics (one fp32 per 2048 values) are < 0.2% and not counted
    # (Dettmers et al. 2022, '8-bit Optimizers via Block-wise Quantization').
    "adam8bit": 6.0,
    # fp32 master weights (4) only: Adafactor without momentum (beta1 = 0, its default)
    # stores a factored second moment, a row and a column vector per matrix: 4(r + c)
    # bytes for r*c weights, below 0.1% for r, c >= 4096, not counted
    # (Shazeer & Stern 2018, Sec. 3).
    "adafactor": 4.0,
}

FP8_WEIGHT_COPY_BYTES_PER_PARAM = 2.0
"""fp8 training (NVIDIA Transformer Engine): the bf16 weights and fp32 master weights stay;
each linear layer also caches an fp8 copy of its weight and of its transpose for the
backward GEMMs (1 + 1 byte per matrix weight). Activations are counted in bf16 (TE may
save some GEMM inputs in fp8: an upper bound)."""

DDP_BUCKET_BYTES = 25 * MIB
"""PyTorch DistributedDataParallel ``bucket_cap_mb=25`` (MiB), the default gradient bucket;
two buckets are taken to be in flight (one being reduced while the next fills)."""
DDP_BUCKETS_IN_FLIGHT = 2

ZERO3_LAYERS_GATHERED = 2
"""ZeRO-3 / FSDP holds the unsharded parameters of the layer it computes and of the
prefetched next one (FSDP ``limit_all_gathers`` keeps at most two in flight), plus one
layer's unsharded gradients before the reduce-scatter."""

CUDA_CONTEXT_BYTES = 1 * GIB
"""CUDA context, cuBLAS workspaces and NCCL communicator buffers, which PyTorch's allocator
does not see. The context alone is ~0.7-0.8 GiB on recent CUDA versions
(discuss.pytorch.org 'High gpu memory overhead', 'What is the reason for pytorch's GPU
memory floor?': 723-800 MiB before any tensor); rounded up to 1 GiB for the libraries."""

ALLOCATOR_FRAGMENTATION = 0.05
"""PyTorch caching-allocator fragmentation: reserved minus allocated memory, taken as 5% of
the allocated tensors (assumption; ``expandable_segments`` lowers it)."""

LOGIT_BYTES_PER_ELEMENT = BYTES_PER["bf16"] + BYTES_PER["fp32"]
"""Per logit: the bf16 output of the LM-head GEMM plus the fp32 copy that the
vocab-parallel cross entropy keeps for the backward (Korthikanti et al. 2022, Sec. 4.3:
'4sbv/t' for the fp32 logits); both are alive at the loss."""

RECOMPUTE_MODES = ("none", "selective", "full")
ZERO_STAGES = (0, 1, 2, 3)


def _check_choice(field: str, value, allowed) -> None:
    if np.ndim(value):                               # one value per layout (a numpy array)
        bad = np.asarray(value)[~np.isin(value, allowed)]
        if bad.size:
            raise ClusteroptError(field, f"unknown value {bad.reshape(-1)[0]!r}",
                                  "allowed: " + ", ".join(str(a) for a in allowed))
        return
    if value not in allowed:
        raise ClusteroptError(field, f"unknown value {value!r}",
                              "allowed: " + ", ".join(str(a) for a in allowed))


def _pick(cond, if_true, if_false):
    """``if_true if cond else if_false`` for a plain bool (one categorical choice for every
    layout), ``np.where`` for a boolean array (a choice per layout, e.g. the ZeRO stage or
    sequence parallelism given as arrays). Both give the same number per layout."""
    if np.ndim(cond) == 0:
        return if_true if cond else if_false
    return np.where(cond, if_true, if_false)


def optimizer_bytes_per_param(optimizer: str) -> float:
    """K, optimizer-state bytes per parameter (fp32 master weights included). See
    ``OPTIMIZER_STATE_BYTES`` for the source of each value. Units: bytes/param."""
    _check_choice("optimizer", optimizer, tuple(OPTIMIZER_STATE_BYTES))
    return OPTIMIZER_STATE_BYTES[optimizer]


# --- model states (ZeRO) ---------------------------------------------------------------

def zero_model_state_bytes(n_params, zero: int, shards, *,
                           weight_bytes: float = WEIGHT_BYTES_PER_PARAM,
                           grad_bytes: float = GRAD_BYTES_PER_PARAM,
                           optimizer_bytes: float = OPTIMIZER_STATE_BYTES["adam"],
                           offload_optimizer: bool = False):
    """(weights, gradients, optimizer states) bytes on one GPU holding ``n_params`` of the
    model, data-parallel over ``shards`` ranks, at ZeRO ``zero`` stage.

    Rajbhandari et al. 2020 (ZeRO), Sec. 5.1 and Fig. 1, with Psi parameters, N_d ranks:
    stage 0: (2 + 2 + K) Psi; stage 1 (P_os): 2Psi + 2Psi + K Psi/N_d;
    stage 2 (P_os+g): 2Psi + (2 + K) Psi/N_d; stage 3 (P_os+g+p): (2 + 2 + K) Psi/N_d.
    (2 = fp16 weights and fp16 gradients in the paper; here ``weight_bytes`` and
    ``grad_bytes``.) With ``offload_optimizer`` the optimizer states (and the fp32 master
    weights they include) live in CPU memory (ZeRO-Offload, Ren et al. 2021): 0 on the GPU.
    Units: bytes.
    """
    _check_choice("zero", zero, ZERO_STAGES)
    shards = np.maximum(shards, 1)
    w = weight_bytes * n_params / _pick(zero >= 3, shards, 1)
    g = grad_bytes * n_params / _pick(zero >= 2, shards, 1)
    o = optimizer_bytes * n_params / _pick(zero >= 1, shards, 1)
    if offload_optimizer:
        o = o * 0
    return w, g, o


# --- activations (Korthikanti et al. 2022) ---------------------------------------------

def activation_bytes_per_layer(seq_len, micro_batch, hidden, heads, tp=1, *,
                               sequence_parallel: bool = False, recompute: str = "none",
                               flash_attention: bool = False, cp=1,
                               q_width=None, kv_width=None, v_width=None,
                               kv_heads=None, ffn_size=None, gated_ffn: bool = False,
                               dropout: bool = True, latent_width=0,
                               moe_top_k=0, expert_ffn_size=0, num_experts=0, shared_ffn_size=0):
    """Activation bytes one transformer layer keeps for the backward pass, per micro-batch,
    on one GPU.

    Source: Korthikanti et al. 2022, Sec. 4.1-4.2, Table 2 (s = sequence, b = micro-batch,
    h = hidden, a = heads, t = TP; bf16 tensors 2 B, dropout masks 1 B):

    ========================  =======================
    no parallelism            sbh(34 + 5as/h)
    TP                        sbh(10 + 24/t + 5as/(ht))
    TP + SP                   sbh(34/t + 5as/(ht))
    TP + selective            sbh(10 + 24/t)
    TP + SP + selective       sbh(34/t)
    full recompute            2sbh   (2sbh/t with SP: the checkpointed input is SP-sharded)
    ========================  =======================

    With the defaults (MHA widths = h, FFN = 4h not gated, dropout, no flash) this returns
    exactly the table. The parts it adds up (Korthikanti Sec. 4.1):

    * outside the TP regions (replicated over TP, split by t only with SP): the inputs of
      the two norms (2sbh each), the QKV-GEMM input (2sbh), the FFN input (2sbh) and the
      two dropout masks (sbh each) - 10sbh;
    * inside (split by t): Q, K, V (2sb x width each; GQA/MQA shrink K and V to
      kv_heads x head_dim, Ainslie et al. 2023; replicated KV heads when t > kv_heads),
      the output-projection input (2sb x q width), the FFN intermediate (GeLU input and
      output 2 x 2sbf; gated FFN: gate and up outputs and their product 3 x 2sbf, as
      Megatron-Core's SwiGLU saves them) - 24sbh for the GPT shapes;
    * the attention core: softmax output 2as^2b, its dropout mask as^2b, dropout output
      2as^2b - 5as^2b (2as^2b without dropout), split by t. Flash attention (Dao et al.
      2022) keeps none of it, only the fp32 log-sum-exp per row (4asb; its output O is the
      output-projection input); selective recompute drops it too. Without flash, GQA's K
      and V are kept at the query width (repeated before the score GEMMs).
    * MoE layer (top-k routing): k copies of the dispatched token (2sbh each) and k
      expert intermediates of ``expert_ffn_size``, the router logits in fp32 (4sbE,
      replicated), the shared expert as a dense FFN of ``shared_ffn_size``.
    * MLA (DeepSeek-V2): pass q/k width heads*(nope+rope), v width heads*v_head and the
      compressed latents (q and kv LoRA ranks) as ``latent_width`` (replicated).

    Context parallelism splits the sequence: s -> s/cp for every term (the scores become
    (s/cp) x s per rank without flash). ``recompute='full'`` returns the stored layer
    input only; the working set of the one layer recomputed during the backward is added
    by the stage-level function. Units: bytes.
    """
    _check_choice("recompute", recompute, RECOMPUTE_MODES)
    s_full = seq_len
    s = seq_len / cp
    b = micro_batch
    h = hidden
    a = heads
    t = tp
    qw = h if q_width is None else q_width
    kw = h if kv_width is None else kv_width
    vw = kw if v_width is None else v_width
    f = 4 * h if ffn_size is None else ffn_size
    if kv_heads is not None and not flash_attention:
        # GQA/MQA without flash: the K and V heads are repeated to the query heads before the
        # score GEMMs (Megatron-Core, Hugging Face repeat_kv), and the repeated copies are
        # what the backward keeps
        kw = qw
        vw = qw
    elif kv_heads is not None:
        # KV heads are replicated when t exceeds them: each GPU holds max(kv/t, 1) heads.
        kv_rep = np.maximum(t / kv_heads, 1.0)
        kw = kw * kv_rep
        vw = vw * kv_rep
    sp_div = _pick(sequence_parallel, t, 1)
    mask = 1.0 if dropout else 0.0

    if recompute == "full":
        return 2.0 * s * b * h / sp_div

    replicated = s * b * h * (2 + 2 + 2 + 2 + 2 * mask)          # 10sbh with dropout
    replicated = replicated + 2.0 * s * b * latent_width
    attn = 2.0 * s * b * (qw + kw + vw + qw)                      # Q, K, V, out-proj input
    if moe_top_k:
        # routed experts are gated FFNs in every MoE family (formulas/params.py): 6sbf each
        expert = moe_top_k * s * b * (2.0 * h + 6.0 * expert_ffn_size)
        shared = s * b * (6.0 if gated_ffn else 4.0) * shared_ffn_size
        router = 4.0 * s * b * num_experts
        ffn = expert + shared
        replicated = replicated + router
    else:
        ffn = s * b * (6.0 if gated_ffn else 4.0) * f
    # softmax output 2as^2b (+ dropout mask as^2b and dropout output 2as^2b with dropout)
    core = 4.0 * a * s * b if flash_attention else (5.0 if dropout else 2.0) * a * s * s_full * b
    if recompute == "selective" and not flash_attention:
        core = 0.0 * core
    return replicated / sp_div + (attn + ffn + core) / t


def attention_core_bytes_per_layer(seq_len, micro_batch, heads, tp=1, *, cp=1,
                                   flash_attention: bool = False, dropout: bool = True):
    """The 5as^2b/t attention-score term of Korthikanti Table 2 (2as^2b/t without
    dropout; nothing with flash attention), i.e. what selective recomputation removes.
    Units: bytes."""
    s = seq_len / cp
    if flash_attention:
        return 0.0 * s
    return (5.0 if dropout else 2.0) * heads * s * seq_len * micro_batch / tp


def pipeline_inflight_microbatches(pp, stage, micro_batches, interleave=1):
    """Micro-batches whose activations stage ``stage`` (0-based) holds at the peak of a
    1F1B schedule, in units of the stage's full layer set.

    Narayanan et al. 2021 (SC21), Sec. 2.2.1: in 1F1B stage i runs pp - i warm-up
    forwards before its first backward, so it holds min(pp - i, m) micro-batches; stage 0
    holds pp of them (Korthikanti et al. 2022, Sec. 4.2.3: the first stage stores
    activations for pp micro-batches, L layers' worth in all). Interleaved schedule with
    v chunks (Megatron-LM's warm-up of 2(pp - i - 1) + (v - 1)pp chunk-micro-batches):
    (2(pp - i - 1) + (v - 1)pp + 1)/v, which for stage 0 is pp(1 + (pp - 1)/(pp v)),
    Korthikanti's interleaving factor. pp = 1 holds one micro-batch (accumulation is
    sequential). Units: micro-batches.
    """
    pp = np.asarray(pp, dtype=float)
    v = np.asarray(interleave, dtype=float)
    plain = pp - stage
    inter = (2.0 * (pp - stage - 1) + (v - 1) * pp + 1) / v
    held = np.where(v > 1, inter, plain)
    return np.maximum(np.minimum(held, micro_batches), 1.0)


def logits_bytes(seq_len, micro_batch, vocab, tp=1, cp=1):
    """Logits and loss buffer on the last stage: s b V / t logits in bf16 (GEMM output) and
    fp32 (cross-entropy input kept for its backward; Korthikanti et al. 2022, Sec. 4.3,
    4sbv/t). Vocab-parallel over TP, sequence split by CP. Units: bytes."""
    return LOGIT_BYTES_PER_ELEMENT * (seq_len / cp) * micro_batch * vocab / tp


# --- the breakdown ---------------------------------------------------------------------

@dataclass(frozen=True)
class TrainMemory:
    """Bytes on the most loaded GPU. ``total`` is the sum of the other fields."""

    weights: float
    gradients: float
    optimizer_states: float
    activations: float
    logits: float
    comm_buffers: float
    reserve: float
    total: float
    stage: int = 0                    # which pipeline stage (0-based) is the most loaded

    def as_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "stage"}


MEMORY_PARTS = ("weights", "gradients", "optimizer_states", "activations", "logits",
                "comm_buffers", "reserve")


# --- ModelSpec-level structure per pipeline degree --------------------------------------

@dataclass(frozen=True)
class StageStructure:
    """Per pipeline stage (arrays of length pp): what the stage holds.

    ``tp_params``: matrices split over TP (attention, dense FFN, shared experts, and the
    embedding / LM head on the end stages); ``replicated_params``: norms, routers, learned
    position table; ``expert_params``: routed experts (split over EP x TP);
    ``linear_params``: weights of GEMMs (for fp8 copies), a subset of the above.
    """

    n_layers: np.ndarray
    n_dense: np.ndarray
    n_moe: np.ndarray
    tp_params: np.ndarray
    replicated_params: np.ndarray
    expert_params: np.ndarray
    linear_params: np.ndarray
    has_embedding: np.ndarray
    has_head: np.ndarray
    max_layer_tp_params: float          # largest single layer (dense part), for ZeRO-3 buffers
    max_layer_expert_params: float


def stage_layer_counts(n_layers: int, pp: int) -> np.ndarray:
    """Layers per stage, contiguous cut; the first ``n_layers % pp`` stages take one more
    (ceil). Stages with no layer (pp > L) hold 0."""
    base, extra = divmod(n_layers, pp)
    return np.array([base + (1 if i < extra else 0) for i in range(pp)], dtype=np.int64)


@lru_cache(maxsize=256)
def param_counts(spec):
    """``formulas.params.count_params(spec)``, cached per spec (the search asks for it once per
    pipeline degree)."""
    from optimizer.formulas.params import count_params

    return count_params(spec)


@lru_cache(maxsize=512)
def stage_structure(spec, pp: int) -> StageStructure:
    """Parameter placement over ``pp`` contiguous pipeline stages for ``spec`` (uses
    ``formulas.params.count_params``). Cached per (spec, pp)."""
    pc = param_counts(spec)
    layers = pc.layers
    counts = stage_layer_counts(len(layers), pp)
    tp_p = np.zeros(pp)
    rep_p = np.zeros(pp)
    exp_p = np.zeros(pp)
    lin_p = np.zeros(pp)
    n_moe = np.zeros(pp, dtype=np.int64)
    start = 0
    for i, c in enumerate(counts):
        for lp in layers[start:start + c]:
            tp_p[i] += lp.attention + lp.ffn_dense + lp.experts_shared
            rep_p[i] += lp.norm + lp.router
            exp_p[i] += lp.experts_routed
            lin_p[i] += lp.attention + lp.ffn_dense + lp.experts_shared + lp.experts_routed
            n_moe[i] += int(lp.is_moe)
        start += c
    # stage 0: token embedding (vocab-parallel), learned positions and OPT projections
    tp_p[0] += pc.embedding + pc.projection
    tp_p[0] += getattr(pc, "vision", 0)        # image encoder of an image-text checkpoint (runs before layer 0)
    rep_p[0] += pc.position
    # last stage: final norm(s), LM head (a copy of the tied embedding when pp > 1), pooler
    head = pc.lm_head if pc.lm_head else (pc.embedding if (pp > 1 and spec.lm_head) else 0)
    tp_p[-1] += head + pc.pooler
    lin_p[-1] += head
    final_norm = pc.norm - sum(lp.norm for lp in layers)
    rep_p[-1] += final_norm
    has_emb = np.zeros(pp)
    has_emb[0] = 1.0
    has_head = np.zeros(pp)
    has_head[-1] = 1.0 if spec.lm_head else 0.0
    max_tp = max((lp.attention + lp.ffn_dense + lp.experts_shared + lp.norm + lp.router
                  for lp in layers), default=0)
    max_exp = max((lp.experts_routed for lp in layers), default=0)
    return StageStructure(n_layers=counts, n_dense=counts - n_moe, n_moe=n_moe,
                          tp_params=tp_p, replicated_params=rep_p, expert_params=exp_p,
                          linear_params=lin_p, has_embedding=has_emb, has_head=has_head,
                          max_layer_tp_params=float(max_tp),
                          max_layer_expert_params=float(max_exp))


def attention_widths(spec) -> dict:
    """Widths (features per token) of Q, K, V and the MLA latents for the activation count."""
    if spec.attention == "mla":
        m = spec.mla
        qk = spec.num_heads * (m.qk_nope_head_dim + m.qk_rope_head_dim)
        return {"q_width": qk, "kv_width": qk, "v_width": spec.num_heads * m.v_head_dim,
                "kv_heads": None,
                "latent_width": m.kv_lora_rank + m.qk_rope_head_dim + (m.q_lora_rank or 0)}
    return {"q_width": spec.num_heads * spec.head_size,
            "kv_width": spec.kv_heads * spec.head_size,
            "v_width": spec.kv_heads * spec.head_size,
            "kv_heads": spec.kv_heads, "latent_width": 0}


def layer_activation_bytes(spec, seq_len, micro_batch, tp, cp, *, sequence_parallel: bool,
                           recompute: str, flash_attention: bool, moe: bool):
    """``activation_bytes_per_layer`` for a dense or a MoE layer of ``spec`` (its attention
    widths, FFN kind and size, experts). Korthikanti's dropout masks are kept (sbh each,
    two per layer): for models trained without dropout (Llama-style) this overstates the
    layer by 2sbh, a few percent, on the safe side for a fits-in-memory decision."""
    kw = dict(attention_widths(spec))
    kw.update(sequence_parallel=sequence_parallel, recompute=recompute,
              flash_attention=flash_attention, cp=cp, gated_ffn=spec.ffn_kind == "gated",
              ffn_size=spec.ffn_size)
    if moe and spec.moe is not None:
        m = spec.moe
        kw.update(moe_top_k=m.experts_per_token, expert_ffn_size=m.expert_ffn_size,
                  num_experts=m.num_experts, shared_ffn_size=m.shared_ffn_size)
    base = activation_bytes_per_layer(seq_len, micro_batch, spec.hidden_size, spec.num_heads,
                                      tp, **kw)
    return base + _mamba_activation_shift(spec, seq_len, micro_batch, tp, cp, kw, moe, recompute)


def _mamba_activation_shift(spec, seq_len, micro_batch, tp, cp, kw, moe: bool, recompute: str):
    """Hybrid models (Jamba): the share of this layer kind's layers (dense or MoE) that mix
    tokens with Mamba instead of attention keep the Mamba mixer's activations
    (formulas/ssm.py) instead of attention's Q, K, V, out-proj input and core; averaged over
    the kind's layers (exact for the model's total, per stage up to the mix). Units: bytes."""
    if spec.mamba is None or recompute == "full":
        return 0.0
    layers = [i for i in range(spec.num_layers) if spec.is_moe_layer(i) == bool(moe and spec.moe is not None)]
    frac = sum(spec.layer_kind(i) == "mamba" for i in layers) / len(layers) if layers else 0.0
    if frac == 0.0:
        return 0.0
    from optimizer.formulas.ssm import mamba_activation_bytes_per_token

    no_attn = dict(kw, q_width=0, kv_width=0, v_width=0, kv_heads=None)
    attention_part = (activation_bytes_per_layer(seq_len, micro_batch, spec.hidden_size, spec.num_heads, tp, **kw)
                      - activation_bytes_per_layer(seq_len, micro_batch, spec.hidden_size, 0, tp, **no_attn))
    mamba_part = mamba_activation_bytes_per_token(spec.mamba) * (seq_len / cp) * micro_batch / tp
    return frac * (mamba_part - attention_part)


def stage_memory_arrays(spec, *, seq_len, micro_batch, tp, pp: int, dp, cp, ep, interleave,
                        micro_batches, zero: int, recompute: str, sequence_parallel: bool,
                        precision: str, optimizer: str, offload_optimizer: bool,
                        flash_attention: bool) -> dict:
    """Memory parts of every stage for layouts sharing one ``pp`` (numeric arguments are
    arrays of shape (n,) or scalars; ``pp`` is one int). Returns a dict of arrays of shape
    (n, pp) for each part of ``MEMORY_PARTS`` plus 'total'. See the module docstring and
    each helper for the sources."""
    return stage_memory_parts(
        spec, stage_structure(spec, int(pp)), np.arange(pp).reshape(1, -1), pp,
        seq_len=seq_len, micro_batch=micro_batch, tp=tp, dp=dp, cp=cp, ep=ep, interleave=interleave,
        micro_batches=micro_batches, zero=zero, recompute=recompute,
        sequence_parallel=sequence_parallel, precision=precision, optimizer=optimizer,
        offload_optimizer=offload_optimizer, flash_attention=flash_attention)


def stage_memory_parts(spec, st, stage, pp, *, seq_len, micro_batch, tp, dp, cp, ep, interleave,
                       micro_batches, zero: int, recompute: str, sequence_parallel: bool,
                       precision: str, optimizer: str, offload_optimizer: bool,
                       flash_attention: bool) -> dict:
    """``stage_memory_arrays`` for a chosen set of stages: ``st`` holds the per-stage fields of
    ``StageStructure`` as arrays broadcastable to (n, k) (k stages per row, e.g. one
    representative per distinct stage of several pipeline degrees), ``stage`` their 0-based
    stage indices and ``pp`` the pipeline degree ((n, 1) array or one int). The same formulas,
    element by element. Units: bytes."""
    col = lambda x: np.asarray(x, dtype=float).reshape(-1, 1)  # noqa: E731
    tp_, dp_, cp_, ep_ = col(tp), col(dp), col(cp), col(ep)
    s, b, v, m = col(seq_len), col(micro_batch), col(interleave), col(micro_batches)

    # model states
    dense_params = st.tp_params / tp_ + st.replicated_params
    expert_params = st.expert_params / (ep_ * tp_)
    k = optimizer_bytes_per_param(optimizer)
    wd, gd, od = zero_model_state_bytes(dense_params, zero, dp_ * cp_, optimizer_bytes=k,
                                        offload_optimizer=offload_optimizer)
    we, ge, oe = zero_model_state_bytes(expert_params, zero, dp_ * cp_ / ep_, optimizer_bytes=k,
                                        offload_optimizer=offload_optimizer)
    weights = wd + we
    if precision == "fp8":
        lin = (st.linear_params - st.expert_params) / tp_ + st.expert_params / (ep_ * tp_)
        weights = weights + FP8_WEIGHT_COPY_BYTES_PER_PARAM * lin / _pick(zero >= 3, dp_ * cp_, 1.0)
    grads = gd + ge
    opt = od + oe

    # activations
    flags = dict(sequence_parallel=sequence_parallel, flash_attention=flash_attention)
    a_dense = layer_activation_bytes(spec, s, b, tp_, cp_, recompute=recompute, moe=False, **flags)
    a_moe = layer_activation_bytes(spec, s, b, tp_, cp_, recompute=recompute, moe=True, **flags)
    held = pipeline_inflight_microbatches(pp, stage, m, v)
    acts = (st.n_dense * a_dense + st.n_moe * a_moe) * held
    # working set of the one layer being recomputed/back-propagated (full: the whole layer;
    # selective without flash: its attention scores), on stages that hold layers
    has_layers = (st.n_layers > 0).astype(float)
    if recompute != "none":
        w_dense = layer_activation_bytes(spec, s, b, tp_, cp_, recompute="none", moe=False, **flags)
        w_moe = layer_activation_bytes(spec, s, b, tp_, cp_, recompute="none", moe=True, **flags)
        work_full = np.maximum(w_dense * (st.n_dense > 0), w_moe * (st.n_moe > 0))
        if recompute == "full":
            stored = np.maximum(a_dense * (st.n_dense > 0), a_moe * (st.n_moe > 0))
            acts = acts + (work_full - stored) * has_layers
        else:
            acts = acts + attention_core_bytes_per_layer(
                s, b, spec.num_heads, tp_, cp=cp_, flash_attention=flash_attention) * has_layers
    sp_div = _pick(sequence_parallel, tp_, 1.0)
    h = spec.hidden_size
    # Korthikanti Sec. 4.3: embedding dropout mask (sbh, first stage, pp micro-batches) and
    # the final norm + output-GEMM inputs (2sbh + 2sbh, last stage, one micro-batch)
    acts = acts + st.has_embedding * (s / cp_) * b * h / sp_div * held
    acts = acts + st.has_head * 4.0 * (s / cp_) * b * h / sp_div
    logits = st.has_head * logits_bytes(s, b, spec.vocab_size, tp_, cp_)

    # communication buffers
    # ZeRO-3: only what is sharded gets gathered: dense weights over DP x CP, experts over DP x CP / EP
    layer_w = (st.max_layer_tp_params / tp_ * (dp_ * cp_ > 1)
               + st.max_layer_expert_params / (ep_ * tp_) * (dp_ * cp_ / ep_ > 1))
    comm_zero3 = layer_w * (ZERO3_LAYERS_GATHERED * WEIGHT_BYTES_PER_PARAM + GRAD_BYTES_PER_PARAM)
    comm_buckets = np.full_like(tp_, float(DDP_BUCKETS_IN_FLIGHT * DDP_BUCKET_BYTES)) * (dp_ * cp_ > 1)
    comm = np.broadcast_to(_pick(zero >= 3, comm_zero3, comm_buckets), weights.shape)

    allocated = weights + grads + opt + acts + logits + comm
    reserve = CUDA_CONTEXT_BYTES + ALLOCATOR_FRAGMENTATION * allocated
    parts = {"weights": weights, "gradients": grads, "optimizer_states": opt,
             "activations": acts, "logits": logits, "comm_buffers": comm, "reserve": reserve}
    shape = np.broadcast_shapes(*(np.shape(x) for x in parts.values()))
    parts = {k2: x if (np.shape(x) == shape and x.dtype == float) else np.broadcast_to(x, shape).astype(float)
             for k2, x in parts.items()}
    parts["total"] = sum(parts[p] for p in MEMORY_PARTS)
    return parts


def worst_stage(parts: dict) -> dict:
    """Pick, per layout (row), the stage with the largest total. Returns a dict of (n,)
    arrays, one per part, plus 'total' and 'stage'."""
    idx = np.argmax(parts["total"], axis=1)
    rows = np.arange(parts["total"].shape[0])
    out = {k: parts[k][rows, idx] for k in (*MEMORY_PARTS, "total")}
    out["stage"] = idx
    return out
