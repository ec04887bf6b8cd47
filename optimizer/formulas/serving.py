"""Serving estimates for one replica (one TP x PP group): memory per GPU, the KV pool, TTFT,
inter-token latency and throughput at a given number of sequences in flight.

``estimate_serving`` composes serving_memory (weights, KV cache, activations, reserve) and
serving_time (roofline passes, all-reduces, the continuous-batching steady state). The
conventions of CONTRACTS.md 'Serving' hold: ``batch`` is the number of sequences in flight;
``kv_cache_capacity_bytes`` is sized the way vLLM sizes its pool; ``ttft_s`` is one request's
time to first token with ``batch`` sequences in flight; ``itl_s`` the decode pass time at
``batch``; throughput figures are per replica unless they end ``_per_gpu``.

Model of a pass (serving_time module docstring), per GPU of a pipeline stage: bytes read =
the stage's weights (routed experts: only those the pass's tokens touch, expected value; the
token-embedding table is only gathered) + the KV cache of every decoding sequence; FLOPs
(flops.py conventions) = 2 x matmul weights per token through the layers, the LM head only
for tokens whose logits are computed (decodes and each prompt's last token), at the weight
format's tensor-core peak (fp8 and int8 run W8A8; int4 weight-only runs in 16-bit) +
attention QK^T and AV at the 16-bit peak; plus two all-reduces per layer (after attention and
after the FFN; Shoeybi et al. 2019 Sec. 3) of tokens x hidden x 2 bytes. With PP the engine
runs ``pp`` virtual engines of batch/pp sequences (vLLM), one per stage at a time: a pass of
one engine crosses the ``pp`` stages in turn (+ pp - 1 activation hand-offs), and the replica's
throughput is pp times one engine's.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np

from optimizer.errors import ClusteroptError
from optimizer.formulas import compression as cx
from optimizer.formulas import serving_memory as sm
from optimizer.formulas import serving_time as st
from optimizer.formulas.flops import attention_score_flops, matmul_weights
from optimizer.formulas.hardware import Hardware
from optimizer.formulas.ssm import mamba_mixer_flops_per_token
from optimizer.model.spec import ModelSpec

SCHEDULING = ("continuous", "static")
#: Tensor-core precision of the linear layers by weight format.
COMPUTE_PRECISION = {"bf16": "bf16", "fp16": "fp16", "fp8": "fp8", "int8": "int8", "int4": "bf16"}
ACTIVATION_BYTES = sm.UNQUANTISED_BYTES


@dataclass(frozen=True)
class ServeMemory:
    """Memory per GPU (bytes); the parts sum to ``total``. ``kv_cache`` is what ``batch``
    sequences at their full length (prompt + output, paged) hold."""

    weights: float
    kv_cache: float
    activations: float
    reserve: float
    total: float


@dataclass(frozen=True)
class ServeEstimate:
    """One replica serving ``batch`` sequences in flight. Units in the names; throughput per
    replica unless ``_per_gpu``. ``tpot_s`` is the mean gap between a request's tokens after the
    first, prefill interference included (``itl_s`` is the pure decode pass, CONTRACTS.md)."""

    n_gpus: int
    memory_per_gpu: ServeMemory
    weights_per_gpu: sm.WeightBytes
    kv_cache_capacity_bytes: float
    kv_cache_bytes_per_seq: float
    max_concurrent_seqs: float
    fits: bool
    ttft_s: float
    itl_s: float
    tpot_s: float
    output_tokens_per_s: float
    output_tokens_per_s_per_gpu: float
    requests_per_s: float
    requests_per_s_per_gpu: float
    prefill_time_s: float
    decode_step_time_s: float


def _num(x):
    """0-d arrays back to Python floats; arrays stay arrays."""
    a = np.asarray(x)
    return float(a) if a.ndim == 0 else a


@lru_cache(maxsize=256)
def _layer_kind_tuple(spec: ModelSpec) -> tuple[tuple[str, int], ...]:
    counts = {"full_attention": 0, "sliding_attention": 0, "chunked_attention": 0, "mamba": 0}
    for i in range(spec.num_layers):
        counts[spec.layer_kind(i)] += 1
    return tuple(counts.items())


def _layer_kind_counts(spec: ModelSpec) -> dict:
    """Decoder layers by kind (ModelSpec.layer_kind): full, sliding, chunked, mamba."""
    return dict(_layer_kind_tuple(spec))


def decode_attention_flops(spec: ModelSpec, context_len):
    """Token-mixing FLOPs of one decoded token over ``context_len`` keys, all decoder layers:
    QK^T and AV (flops.py conventions; a sliding window caps its layers' context, a chunked
    layer sees its chunk so far) and a Mamba layer's constant conv + scan (formulas/ssm.py).
    Vectorised form of the mixer part of ``flops.decode_flops_per_token``. Units: FLOPs."""
    c = np.asarray(context_len, dtype=float)
    per_key = attention_score_flops(spec, 1.0)
    n = _layer_kind_counts(spec)
    keys = n["full_attention"] * c
    if n["sliding_attention"]:
        keys = keys + n["sliding_attention"] * np.minimum(c, spec.sliding_window)
    if n["chunked_attention"]:
        keys = keys + n["chunked_attention"] * (np.mod(c - 1.0, spec.attention_chunk_size) + 1.0)
    mamba = n["mamba"] * mamba_mixer_flops_per_token(spec.mamba) if n["mamba"] else 0.0
    return per_key * keys + mamba


def prompt_attention_flops(spec: ModelSpec, prompt_len):
    """Causal token-mixing FLOPs of prefilling a whole prompt: query i sees i keys, min(i, w)
    in a sliding layer, its position within the chunk in a chunked layer (flops.py causal
    convention); a Mamba layer costs its constant mixer FLOPs per token. Vectorised form of
    the mixer part of ``flops.prefill_flops``. Units: FLOPs."""
    s_ = np.asarray(prompt_len, dtype=float)
    per_key = attention_score_flops(spec, 1.0)
    n = _layer_kind_counts(spec)
    full = s_ * (s_ + 1.0) / 2.0
    keys = n["full_attention"] * full
    if n["sliding_attention"]:
        w = float(spec.sliding_window)
        keys = keys + n["sliding_attention"] * np.where(s_ <= w, full, w * (w + 1.0) / 2.0 + (s_ - w) * w)
    if n["chunked_attention"]:
        ck = float(spec.attention_chunk_size)
        q, r = np.floor(s_ / ck), np.mod(s_, ck)
        keys = keys + n["chunked_attention"] * (q * ck * (ck + 1.0) / 2.0 + r * (r + 1.0) / 2.0)
    mamba = n["mamba"] * mamba_mixer_flops_per_token(spec.mamba) * s_ if n["mamba"] else 0.0
    return per_key * keys + mamba


class Replica:
    """Per-GPU quantities of one (model, GPU, TP, PP, formats) replica and its pass-time model."""

    def __init__(self, spec: ModelSpec, hw: Hardware, *, tp, pp, weights, kv, group_size,
                 hbm_efficiency, compute_efficiency, link_efficiency, allreduce_latency_s, pass_overhead_s,
                 kv_read_per_query_head=False, low_precision_compute_efficiency=None, sparse_2_4=False,
                 seq_overhead_s=0.0):
        self.spec, self.hw, self.tp, self.pp, self.kv = spec, hw, tp, pp, kv
        # a decode kernel without GQA reuse loads each KV head once per query head it serves
        # (per GPU: num_heads/TP query heads over ceil(kv_heads/TP) KV heads)
        t = np.asarray(tp, dtype=float)
        self.kv_read_factor = ((spec.num_heads / t) / np.ceil(spec.kv_heads / t)
                               if kv_read_per_query_head and spec.attention != "mla" else 1.0)
        self.w = sm.weight_bytes_per_gpu(spec, tp=tp, pp=pp, weights=weights, group_size=group_size)
        if sparse_2_4:
            self.w = sparse_2_4_weight_bytes(self.w, weights, group_size)
        # 2:4 sparse tensor cores run the blocks' linear layers at twice the dense rate, only
        # where the device has them (catalog ``sparse_2_4``); the LM head stays dense
        self.sparse_speedup = cx.SPARSE_COMPUTE_SPEEDUP if (sparse_2_4 and hw.sparse_2_4) else 1.0
        tied_single = spec.tie_word_embeddings and pp == 1
        self.dense_read = self.w.total - self.w.experts - (0.0 if tied_single else self.w.embedding)
        mw = matmul_weights(spec)
        self.body_flops = 2.0 * (mw.layers + mw.projection)   # per token through the layers
        self.head_flops = 2.0 * mw.lm_head                     # per token whose logits are computed
        self.peak_lin = hw.peak_flop_per_s(COMPUTE_PRECISION[weights])
        self.peak_attn = hw.peak_flop_per_s("bf16")
        native = {"fp8": hw.fp8_flop_per_s, "int8": hw.int8_op_per_s}.get(weights, 0.0) > 0
        # FP8/INT8 tensor cores run at their own achievable share; without them (fp8 weights on an
        # A100) the matmuls run in 16-bit at the 16-bit share
        self.eff_lin = low_precision_compute_efficiency if native else compute_efficiency
        self.eff = dict(hbm_efficiency=hbm_efficiency, compute_efficiency=compute_efficiency)
        self.overhead = pass_overhead_s
        # host time per sequence in a pass (scheduling, input preparation, sampling,
        # detokenisation in the engine loop): grows with the batch, not hidden by CUDA graphs
        self.seq_overhead = seq_overhead_s
        # TP groups fill a scale-up domain first; a TP group larger than the domain, and stage
        # hand-offs once the replica spans domains, cross the scale-out network
        t = np.asarray(tp)
        tp_inter = t > hw.intra_node_domain
        pp_inter = t * pp > hw.intra_node_domain
        intra_bw = hw.intra_node_bytes_per_s
        needs_intra = ((t > 1) & ~tp_inter) | ((pp > 1) & ~pp_inter)
        if intra_bw <= 0 and np.any(needs_intra):
            raise ClusteroptError("hardware.intra_node_bytes_per_s",
                                  f"is 0 for {hw.name!r}, so TP/PP > 1 has no link to use",
                                  "a GPU-to-GPU bandwidth (NVLink or PCIe) in the catalog")
        self.link_bw = np.where(tp_inter, hw.inter_node_bytes_per_s, intra_bw)
        self.link_latency = np.where(tp_inter, st.ALLREDUCE_LATENCY_INTER_NODE_S, allreduce_latency_s)
        self.pp_link_bw = np.where(pp_inter, hw.inter_node_bytes_per_s, intra_bw)
        self.pp_link_latency = np.where(pp_inter, st.ALLREDUCE_LATENCY_INTER_NODE_S, allreduce_latency_s)
        self.link_eff = link_efficiency
        self.layers_per_stage = max(hi - lo for lo, hi in sm.pp_stage_layers(spec.num_layers, pp))
        # without sliding-window layers the KV read and the decode attention FLOPs are linear in
        # the context (block_size None: no paging round-up), so one token's figures scale exactly
        self.linear_context = not any(sm.is_sliding_layer(spec, i) for i in range(spec.num_layers))
        if self.linear_context:
            self.kv_read_per_token = self.kv_read_factor * sm.kv_cache_bytes_per_seq(
                spec, 1.0, kv=kv, tp=tp, pp=pp, block_size=None)
            self.decode_attn_per_token = decode_attention_flops(spec, 1.0)

    def pass_time_s(self, prefill_tokens, prefill_attn_flops, prompts_done, decode_seqs, context_len):
        """One pass of one virtual engine (all of the replica when PP = 1): ``prefill_tokens``
        prompt tokens carrying ``prefill_attn_flops`` of attention, ``prompts_done`` prompts whose
        last token is in the pass (their logits are computed), ``decode_seqs`` sequences decoding
        at ``context_len``. The pass crosses the ``pp`` stages in turn; each stage step reads the
        stage's weights once and does 1/pp of the FLOPs. Units: seconds."""
        spec, pp = self.spec, self.pp
        tokens = np.asarray(prefill_tokens, dtype=float) + decode_seqs
        experts = self.w.experts
        if spec.moe is not None and np.any(np.asarray(experts) > 0):
            frac = st.expected_experts_touched(spec.moe.num_experts, spec.moe.experts_per_token, tokens) \
                / spec.moe.num_experts
            experts = experts * frac
        if self.linear_context:
            kv_read = self.kv_read_per_token * np.asarray(context_len, dtype=float)
            decode_attn = self.decode_attn_per_token * np.asarray(context_len, dtype=float)
        else:
            kv_read = self.kv_read_factor * sm.kv_cache_bytes_per_seq(spec, context_len, kv=self.kv, tp=self.tp,
                                                                      pp=pp, block_size=None)
            decode_attn = decode_attention_flops(spec, context_len)
        bytes_read = self.dense_read + experts + decode_seqs * kv_read          # per GPU, one stage
        n_split = np.asarray(self.tp, dtype=float) * pp
        attn = prefill_attn_flops + decode_seqs * decode_attn
        matmul = tokens * self.body_flops / self.sparse_speedup + (prompts_done + decode_seqs) * self.head_flops
        compute_s = (matmul / n_split / (self.peak_lin * self.eff_lin)              # per GPU, one stage
                     + attn / n_split / (self.peak_attn * self.eff["compute_efficiency"]))
        mem_s = np.asarray(bytes_read, dtype=float) / (self.hw.hbm_bytes_per_s * self.eff["hbm_efficiency"])
        message = tokens * spec.hidden_size * ACTIVATION_BYTES
        # TP = 1 has no all-reduce (piecewise_allreduce_time_s is 0 there); skipped, as the
        # simulation calls this once per engine pass
        comm_s = 0.0 if np.ndim(self.tp) == 0 and self.tp == 1 else 2 * self.layers_per_stage * \
            st.piecewise_allreduce_time_s(message, self.tp, self.link_bw, latency_s=self.link_latency,
                                          link_efficiency=self.link_eff)
        handoff_s = ((pp - 1) * (self.pp_link_latency + message / (self.pp_link_bw * self.link_eff))
                     if pp > 1 else 0.0)
        host_s = self.overhead + self.seq_overhead * (np.asarray(decode_seqs, dtype=float) + prompts_done)
        return pp * (np.maximum(mem_s, compute_s) + comm_s) + handoff_s + host_s


def sparse_2_4_weight_bytes(w: sm.WeightBytes, weights: str = "bf16",
                            group_size: int = sm.DEFAULT_GROUP_SIZE) -> sm.WeightBytes:
    """``w`` with the transformer blocks' linear layers (attention, FFN, experts) stored 2:4-sparse:
    half the values plus a 2-bit index per kept value, group scales kept whole
    (compression.linear_bytes_per_param; Mishra et al. 2021, Sec. 3.1). Embedding, LM head and
    norms stay dense, as Sparse-Llama and SparseGPT prune them. Units: bytes."""
    r = cx.linear_bytes_per_param(weights, True, group_size) / sm.weight_bytes_per_param(weights, group_size)
    attention, ffn, experts = w.attention * r, w.ffn * r, w.experts * r
    return sm.WeightBytes(embedding=w.embedding, attention=attention, ffn=ffn, experts=experts, norm=w.norm,
                          lm_head=w.lm_head, total=w.embedding + attention + ffn + experts + w.norm + w.lm_head)


def _check_lengths(batch, prompt_len, output_len) -> None:
    for name, v in (("batch", batch), ("prompt_len", prompt_len), ("output_len", output_len)):
        sm.check_positive(name, v, integer=True)


def estimate_serving(spec: ModelSpec, hw: Hardware, *, tp=1, pp: int = 1, weights: str = "bf16",
                     kv: str = "bf16", batch, prompt_len, output_len,
                     gpu_memory_utilization: float = sm.DEFAULT_GPU_MEMORY_UTILIZATION,
                     max_batched_tokens=sm.DEFAULT_MAX_BATCHED_TOKENS,
                     block_size: int = sm.DEFAULT_BLOCK_SIZE, group_size: int = sm.DEFAULT_GROUP_SIZE,
                     max_num_seqs: int = sm.DEFAULT_MAX_NUM_SEQS,
                     scheduling: Literal["continuous", "static"] = "continuous",
                     hbm_efficiency: float = st.HBM_EFFICIENCY,
                     compute_efficiency: float = st.COMPUTE_EFFICIENCY,
                     low_precision_compute_efficiency: float = st.LOW_PRECISION_COMPUTE_EFFICIENCY,
                     link_efficiency: float = st.LINK_EFFICIENCY,
                     allreduce_latency_s: float = st.ALLREDUCE_LATENCY_S,
                     pass_overhead_s: float = st.PASS_OVERHEAD_S,
                     kv_read_per_query_head: bool = False,
                     runtime_memory_fraction: float = sm.RUNTIME_VISIBLE_FRACTION,
                     sparse_2_4: bool = False, seq_overhead_s: float = 0.0) -> ServeEstimate:
    """Memory, latency and throughput of one replica serving ``batch`` sequences in flight, each
    with ``prompt_len`` prompt and ``output_len`` output tokens.

    Memory (serving_memory): weights of the most loaded stage; KV pool = runtime-reported memory
    x ``gpu_memory_utilization`` - weights - profile activation peak (``max_batched_tokens``,
    ``max_num_seqs``) - non-torch reserve; ``max_concurrent_seqs`` = pool / KV of one sequence at
    prompt + output tokens in blocks of ``block_size``; ``fits`` when that pool is positive and
    holds ``batch`` such sequences.

    Time (serving_time): decode context = prompt + output/2 (mean over a request's life).
    ``scheduling='continuous'``: closed-loop clients under continuous batching with a token
    budget of ``max_batched_tokens`` per pass; prompts are prefilled in cohorts of
    floor(budget / prompt) sharing passes with the other sequences' decodes
    (``st.continuous_batching_steady_state``). ``'static'``: the whole batch prefilled in one
    pass, then decoded in lockstep. ``prefill_time_s`` is one prompt prefilled alone.

    ``kv_read_per_query_head``: the engine's decode attention loads each KV head once per query
    head instead of once per GQA group (no GQA reuse: TensorRT-LLM before its Hopper XQA kernels
    for LLaMA-2-70B, release 0.10.0 notes); decode then reads num_heads / kv_heads times the KV.

    ``sparse_2_4``: the blocks' linear weights are 2:4-sparse (``sparse_2_4_weight_bytes``: fewer
    bytes held and read per pass); their matmuls run at twice the dense peak only where
    ``hw.sparse_2_4`` (sparse tensor cores, catalog column ``sparse_2_4``). Default False: dense.

    ``seq_overhead_s``: host time per sequence per pass (scheduling, input preparation,
    sampling) that the engine does not overlap with the GPU; 0 on the CUDA stack, 90 us on
    ROCm vLLM (catalog/serving_vendors.csv, fitted on the MI300X rows).

    Numeric arguments (tp, batch, lengths) may be numpy arrays; the result then holds arrays.
    """
    sm.check_decoder(spec)
    _check_lengths(batch, prompt_len, output_len)
    sm.check_positive("max_batched_tokens", max_batched_tokens, integer=True)
    if scheduling not in SCHEDULING:
        raise ClusteroptError("scheduling", f"unknown {scheduling!r}", "allowed: " + ", ".join(SCHEDULING))
    for name, v in (("hbm_efficiency", hbm_efficiency), ("compute_efficiency", compute_efficiency),
                    ("low_precision_compute_efficiency", low_precision_compute_efficiency),
                    ("link_efficiency", link_efficiency)):
        if not 0 < v <= 1:
            raise ClusteroptError(name, f"{v!r} is outside (0, 1]", "a fraction")
    rep = Replica(spec, hw, tp=tp, pp=pp, weights=weights, kv=kv, group_size=group_size,
                   hbm_efficiency=hbm_efficiency, compute_efficiency=compute_efficiency,
                   link_efficiency=link_efficiency, allreduce_latency_s=allreduce_latency_s,
                   pass_overhead_s=pass_overhead_s, kv_read_per_query_head=kv_read_per_query_head,
                   low_precision_compute_efficiency=low_precision_compute_efficiency, sparse_2_4=sparse_2_4,
                   seq_overhead_s=seq_overhead_s)
    n_gpus = np.asarray(tp) * pp

    # ---- memory
    activations = sm.profile_activation_bytes(spec, tp=tp, max_batched_tokens=max_batched_tokens,
                                              max_num_seqs=max_num_seqs)
    reserve = sm.non_torch_reserve_bytes(n_gpus)
    capacity = sm.kv_cache_capacity_bytes(
        sm.runtime_memory_bytes(hw.memory_bytes, runtime_memory_fraction), weights_bytes=rep.w.total,
        activation_bytes=activations, reserve_bytes=reserve, gpu_memory_utilization=gpu_memory_utilization)
    full_len = np.asarray(prompt_len) + np.asarray(output_len)
    per_seq = sm.kv_cache_bytes_per_seq(spec, full_len, kv=kv, tp=tp, pp=pp, block_size=block_size)
    max_seqs = sm.max_concurrent_seqs(capacity, per_seq)
    kv_used = np.asarray(batch) * per_seq
    fits = (capacity > 0) & (max_seqs >= np.asarray(batch))
    memory = ServeMemory(weights=_num(rep.w.total), kv_cache=_num(kv_used), activations=_num(activations),
                         reserve=_num(reserve), total=_num(rep.w.total + kv_used + activations + reserve))

    # ---- time
    p = np.asarray(prompt_len, dtype=float)
    o = np.asarray(output_len, dtype=float)
    b = np.asarray(batch, dtype=float)
    b_ve = np.maximum(b / pp, 1.0)          # sequences per virtual engine (vLLM: one per PP stage)
    ctx = p + o / 2.0
    attn_one = prompt_attention_flops(spec, p)
    chunks_alone = np.ceil(p / max_batched_tokens)
    prefill_alone = chunks_alone * rep.pass_time_s(p / chunks_alone, attn_one / chunks_alone,
                                                   1.0 / chunks_alone, 0.0, ctx)
    decode_s = rep.pass_time_s(0.0, 0.0, 0.0, b_ve, ctx)
    if scheduling == "continuous":
        cohort = st.cohort_size(b_ve, p, max_batched_tokens)
        others = b_ve - cohort
        chunks = st.prefill_chunks(cohort, p, others, max_batched_tokens)
        mixed_s = rep.pass_time_s(cohort * p / chunks, cohort * attn_one / chunks, cohort / chunks, others, ctx)
        ttft, cycle, tpot = st.continuous_batching_steady_state(
            batch=b_ve, output_len=o, chunks=chunks, cohort=cohort, mixed_pass_s=mixed_s, decode_pass_s=decode_s)
    else:
        prefill_batch_s = rep.pass_time_s(b_ve * p, b_ve * attn_one, b_ve, 0.0, ctx)
        cycle = st.static_batch_cycle_s(prefill_batch_s, decode_s, o)
        ttft = prefill_batch_s
        tpot = np.where(o > 1, decode_s, 0.0)
    # the virtual engines run concurrently (one per stage at a time), each cycling its share of
    # the batch: the replica completes all ``batch`` requests once per cycle (Little's law)
    out_tps = b * o / cycle
    req_ps = b / cycle
    return ServeEstimate(
        n_gpus=_num(n_gpus) if np.ndim(n_gpus) else int(n_gpus),
        memory_per_gpu=memory, weights_per_gpu=rep.w,
        # a pool cannot be negative: when the weights alone overflow it is 0 and fits is false
        kv_cache_capacity_bytes=_num(np.maximum(capacity, 0.0)), kv_cache_bytes_per_seq=_num(per_seq),
        max_concurrent_seqs=_num(max_seqs), fits=bool(fits) if np.ndim(fits) == 0 else fits,
        ttft_s=_num(ttft), itl_s=_num(decode_s), tpot_s=_num(tpot),
        output_tokens_per_s=_num(out_tps), output_tokens_per_s_per_gpu=_num(out_tps / n_gpus),
        requests_per_s=_num(req_ps), requests_per_s_per_gpu=_num(req_ps / n_gpus),
        prefill_time_s=_num(prefill_alone), decode_step_time_s=_num(decode_s))
