"""Serving memory per GPU: weights by precision, KV cache, the profile run's activations,
the non-torch reserve, and the KV-cache pool an engine sizes from what is left.

Conventions. Units are bytes. One replica is one TP x PP group of GPUs. With PP, "per GPU"
figures combine the stage with the most weights and the stage with the most KV (the same
stage, or a conservative bound: vLLM sizes every worker's pool and keeps the smallest block
count). Numeric arguments ``tp``, ``context_len``, ``batch`` may be numpy arrays (broadcast
element-wise); ``pp`` is a plain integer.

Sharding (Megatron-LM column/row parallel linear layers, Shoeybi et al. 2019 Sec. 3, as
vLLM implements them): attention projections, dense FFN, shared and routed experts are
split 1/TP; the token embedding and LM head are split by vocabulary (vocab-parallel);
norms and MoE routers are replicated. k/v projections hold ceil(kv_heads / TP) heads per
GPU: when TP exceeds the KV-head count each head is replicated (vLLM
``QKVParallelLinear``). MLA's down-projections (q_a, kv_a: hidden -> rank) are replicated
(vLLM ``ReplicatedLinear`` in ``deepseek_v2.py``); its up-projections and output are split.

Quantised formats apply to the linear layers inside the transformer blocks (attention
projections, dense FFN, experts). The embedding, LM head, norms and routers stay in 16-bit
(2 bytes), as AutoAWQ, GPTQ, NVIDIA ModelOpt FP8 and vLLM's fp8 checkpoints keep them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from optimizer.errors import ClusteroptError
from optimizer.formulas.params import attention_params, count_params
from optimizer.formulas.ssm import mamba_state_bytes_per_seq
from optimizer.model.spec import ModelSpec
from optimizer.units import BYTES_PER, GIB

WEIGHT_FORMATS = ("bf16", "fp16", "fp8", "int8", "int4")
KV_FORMATS = ("bf16", "fp16", "fp8", "int8")
UNQUANTISED_BYTES = BYTES_PER["bf16"]        # embedding, LM head, norms, routers, activations

#: int4 weight-only (AWQ: Lin et al. 2024; GPTQ: Frantar et al. 2023) stores, per group of
#: ``group_size`` weights along the input dimension, one fp16 scale (2 bytes) and one 4-bit
#: zero point packed eight to an int32 (0.5 bytes): AutoAWQ ``WQLinear_GEMM`` and GPTQ
#: checkpoints hold ``qzeros`` of shape (in/g, out/8) int32 and ``scales`` (in/g, out) fp16.
#: Overhead = 2.5 / g bytes per weight (0.0195 at g = 128). A format with an fp16 zero point
#: (HQQ-style) would carry 4 / g; pass ``int4_zero_bytes=2`` for it.
INT4_SCALE_BYTES = 2.0
INT4_ZERO_BYTES = 0.5
DEFAULT_GROUP_SIZE = 128

#: vLLM's paged KV cache block (Kwon et al. 2023, Sec. 4.2; vLLM default ``--block-size 16``).
DEFAULT_BLOCK_SIZE = 16
#: vLLM's default ``--gpu-memory-utilization`` and the profile run's token budget
#: (``max_num_batched_tokens``, CONTRACTS.md 'Serving'); 256 = vLLM's ``max_num_seqs`` default.
DEFAULT_GPU_MEMORY_UTILIZATION = 0.9
DEFAULT_MAX_BATCHED_TOKENS = 8192
DEFAULT_MAX_NUM_SEQS = 256

#: Fraction of the nominal device memory the CUDA runtime reports as total
#: (``cudaMemGetInfo``), the figure vLLM multiplies by the utilisation cap. vLLM logs:
#: H100-80GB 79.22 GiB (vLLM PR #10511), 79.14 GiB; A100-40GB 39.50 GiB (vLLM issue #12330):
#: 0.987-0.990 of nominal. 0.99 is used.
RUNTIME_VISIBLE_FRACTION = 0.99

#: Memory outside PyTorch's allocator that vLLM's profiler charges ("non_torch_memory"):
#: cuBLAS/cuDNN workspaces on one GPU; plus NCCL and custom all-reduce buffers with TP/PP > 1.
#: One GPU: 0.05-0.16 GiB in vLLM 0.7 logs (Llama-3-8B on H100: 0.12 GiB; on A100-40GB:
#: 0.10 GiB; Llama-3.2-11B: 0.16 GiB, vLLM PR #12126). Several GPUs: 1.07 GiB
#: (DeepSeek-V2.5 on A100-40GB workers, vLLM 0.8 log) and 1.39 GiB (vLLM 0.8, 4 workers);
#: 1.78 GiB on ROCm TP8. CUDA graphs are captured after the KV pool is allocated (vLLM
#: <= 0.10) and come out of the (1 - utilisation) headroom, so they are not charged here.
NON_TORCH_BYTES_ONE_GPU = 0.15 * GIB
NON_TORCH_BYTES_MULTI_GPU = 1.2 * GIB

#: The profile run's sampler holds fp32 logits, probabilities and log-probabilities for
#: every sequence slot: 3 copies of (max_num_seqs x vocab) x 4 bytes.
SAMPLER_FP32_COPIES = 3


# --------------------------------------------------------------------------- checks

def _float(x):
    """Plain Python float for scalars (0-d arrays included); arrays pass through as float arrays."""
    a = np.asarray(x, dtype=float)
    return float(a) if a.ndim == 0 else a


def _check_format(field: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ClusteroptError(field, f"unknown precision {value!r}", "allowed: " + ", ".join(allowed))


def check_positive(field: str, value, integer: bool = False) -> None:
    arr = np.asarray(value)
    if arr.size == 0 or np.any(~np.isfinite(arr.astype(float))) or np.any(arr <= 0):
        raise ClusteroptError(field, f"must be positive (got {value!r})", "a number > 0")
    if integer and np.any(arr != np.floor(arr)):
        raise ClusteroptError(field, f"must be a whole number (got {value!r})", "an integer >= 1")


def check_tp(spec: ModelSpec, tp) -> None:
    """TP must divide the attention heads, and TP and the KV-head count must divide one another
    (vLLM's rule for splitting or replicating KV heads)."""
    check_positive("tp", tp, integer=True)
    t = np.asarray(tp).astype(np.int64)
    if np.any(spec.num_heads % t):
        raise ClusteroptError("tp", f"{tp!r} does not divide num_heads={spec.num_heads}",
                              "a divisor of the attention heads")
    if spec.attention != "mla":
        kv = spec.kv_heads
        if np.any((kv % t != 0) & (t % kv != 0)):
            raise ClusteroptError("tp", f"{tp!r} and num_kv_heads={kv} do not divide one another",
                                  "TP dividing the KV heads, or a multiple of them")


def check_decoder(spec: ModelSpec) -> None:
    if spec.arch != "decoder" or not spec.lm_head:
        raise ClusteroptError("model", f"{spec.name!r} is {spec.arch!r}; serving estimates cover "
                              "decoder-only language models", "a decoder model with an LM head")


# --------------------------------------------------------------------------- weights

def weight_bytes_per_param(weights: str, group_size: int = DEFAULT_GROUP_SIZE,
                           int4_zero_bytes: float = INT4_ZERO_BYTES) -> float:
    """Bytes per weight of a quantised linear layer, including its scale overhead.

    bf16/fp16: 2; fp8 (E4M3, per-tensor or per-channel scale, negligible): 1; int8 (W8A8,
    SmoothQuant, Xiao et al. 2023; per-channel scale, negligible): 1; int4 weight-only:
    0.5 + (fp16 scale + zero point) / group_size = 0.5 + 2.5/g (see INT4_SCALE_BYTES).
    Units: bytes per parameter.
    """
    _check_format("weights", weights, WEIGHT_FORMATS)
    if weights != "int4":
        return float(BYTES_PER[weights])
    check_positive("group_size", group_size, integer=True)
    return BYTES_PER["int4"] + (INT4_SCALE_BYTES + int4_zero_bytes) / group_size


@dataclass(frozen=True)
class WeightBytes:
    """Weights resident on one GPU (bytes). ``embedding`` holds the token embedding, learned
    positions and any projection/pooler; ``ffn`` the dense FFN, shared experts and routers;
    ``experts`` the routed experts. The parts sum to ``total``."""

    embedding: float
    attention: float
    ffn: float
    experts: float
    norm: float
    lm_head: float
    total: float


def pp_stage_layers(num_layers: int, pp: int) -> tuple[tuple[int, int], ...]:
    """Contiguous [start, end) layer ranges of each pipeline stage.

    vLLM ``get_pp_indices``: num_layers // pp layers each; the remainder goes one layer
    apiece to the stages before the last (the last stage also holds the LM head).
    """
    check_positive("pp", pp, integer=True)
    if pp > num_layers:
        raise ClusteroptError("pp", f"{pp} exceeds the model's {num_layers} layers",
                              f"pp <= {num_layers}")
    sizes = [num_layers // pp] * pp
    for i in range(2, num_layers % pp + 2):
        sizes[-i] += 1
    out, start = [], 0
    for n in sizes:
        out.append((start, start + n))
        start += n
    return tuple(out)


def _attention_per_gpu(spec: ModelSpec, tp):
    """Self-attention parameters one GPU holds under TP (see the module docstring)."""
    total = attention_params(spec)
    h = spec.hidden_size
    if spec.attention == "mla":
        m = spec.mla
        bias = spec.qkv_bias
        replicated = h * (m.kv_lora_rank + m.qk_rope_head_dim) + (m.kv_lora_rank + m.qk_rope_head_dim) * bias
        if m.q_lora_rank is not None:
            replicated += h * m.q_lora_rank + m.q_lora_rank * bias
        return replicated + (total - replicated) / tp
    kv_dim = spec.kv_heads * spec.head_size
    kv = 2 * (h * kv_dim + (kv_dim if spec.qkv_bias else 0))
    kv_heads_per_gpu = np.ceil(spec.kv_heads / np.asarray(tp, dtype=float))
    return (total - kv) / tp + kv * kv_heads_per_gpu / spec.kv_heads


def stage_weight_bytes(spec: ModelSpec, *, tp=1, pp: int = 1, weights: str = "bf16",
                       group_size: int = DEFAULT_GROUP_SIZE,
                       int4_zero_bytes: float = INT4_ZERO_BYTES) -> list[WeightBytes]:
    """Weights one GPU of each pipeline stage holds, by part, first stage first (see
    ``weight_bytes_per_gpu``). Units: bytes."""
    counts = count_params(spec)
    q = weight_bytes_per_param(weights, group_size, int4_zero_bytes)
    u = UNQUANTISED_BYTES
    attn_share = _attention_per_gpu(spec, tp) / attention_params(spec)
    stages = pp_stage_layers(spec.num_layers, pp)
    parts = []
    for s, (lo, hi) in enumerate(stages):
        layers = counts.layers[lo:hi]
        attention = sum(lp.attention for lp in layers) * attn_share * q
        ffn = (sum(lp.ffn_dense + lp.experts_shared for lp in layers) / tp * q
               + sum(lp.router for lp in layers) * u)
        experts = sum(lp.experts_routed for lp in layers) / tp * q
        norm = sum(lp.norm for lp in layers) * u
        embedding = 0.0
        lm_head = 0.0
        if s == 0:
            embedding = (counts.embedding + counts.position + counts.vision) / tp * u \
                + (counts.projection + counts.pooler) * u          # vision: an image encoder, kept in 16 bits
        if s == len(stages) - 1:
            norm = norm + (counts.norm - sum(lp.norm for lp in counts.layers)) * u   # final norm(s)
            head = counts.lm_head if counts.lm_head else (counts.embedding if pp > 1 else 0)
            lm_head = head / tp * u
        total = embedding + attention + ffn + experts + norm + lm_head
        parts.append(WeightBytes(**{k: _float(v) for k, v in dict(
            embedding=embedding, attention=attention, ffn=ffn, experts=experts, norm=norm,
            lm_head=lm_head, total=total).items()}))
    return parts


def weight_bytes_per_gpu(spec: ModelSpec, *, tp=1, pp: int = 1, weights: str = "bf16",
                         group_size: int = DEFAULT_GROUP_SIZE,
                         int4_zero_bytes: float = INT4_ZERO_BYTES) -> WeightBytes:
    """Weights held by one GPU of the most loaded pipeline stage, by part.

    Sharding and which parts are quantised: module docstring. With tied embeddings and
    PP > 1 the last stage holds its own copy of the table for the LM head (vLLM allocates
    ``embed_tokens`` on the last rank when ``tie_word_embeddings``). Units: bytes.
    """
    check_decoder(spec)
    check_tp(spec, tp)
    parts = stage_weight_bytes(spec, tp=tp, pp=pp, weights=weights, group_size=group_size,
                               int4_zero_bytes=int4_zero_bytes)
    totals = np.stack([np.asarray(p.total, dtype=float) for p in parts])
    worst = np.argmax(totals, axis=0)
    if np.ndim(worst) == 0:
        return parts[int(worst)]
    pick = lambda name: np.choose(worst, [np.broadcast_to(getattr(p, name), worst.shape) for p in parts])
    return WeightBytes(**{k: pick(k) for k in WeightBytes.__dataclass_fields__})


# --------------------------------------------------------------------------- KV cache

def kv_bytes_per_token_per_layer(kv_heads: int, head_dim: int, kv: str = "bf16", tp=1):
    """K and V of one token in one MHA/GQA/MQA layer on one GPU: 2 * ceil(kv_heads/TP) * head_dim * bytes.

    GQA (Ainslie et al. 2023) and MQA (Shazeer 2019) cache ``kv_heads`` heads; under TP each GPU
    holds ceil(kv_heads / TP) of them (a head is replicated when TP > kv_heads).
    Llama-2-70B (80 layers, 8 KV heads of 128, bf16, TP 1): 2*8*128*2 = 4,096 bytes per layer,
    327,680 per token. Units: bytes.
    """
    _check_format("kv", kv, KV_FORMATS)
    return 2.0 * np.ceil(kv_heads / np.asarray(tp, dtype=float)) * head_dim * BYTES_PER[kv]


def mla_kv_bytes_per_token_per_layer(kv_lora_rank: int, qk_rope_head_dim: int, kv: str = "bf16") -> float:
    """Multi-head latent attention caches the compressed KV latent and the shared RoPE key:
    (kv_lora_rank + qk_rope_head_dim) elements per token per layer (DeepSeek-V2, Sec. 2.1.2-2.1.3,
    Table 1: (d_c + d_h^R) = 4.5 d_h elements per layer). The latent is not split by TP: every GPU
    holds the whole cache (vLLM's MLA backends). Units: bytes.
    """
    _check_format("kv", kv, KV_FORMATS)
    return float((kv_lora_rank + qk_rope_head_dim) * BYTES_PER[kv])


def _layer_kv_bytes_per_token(spec: ModelSpec, kv: str, tp):
    if spec.attention == "mla":
        return mla_kv_bytes_per_token_per_layer(spec.mla.kv_lora_rank, spec.mla.qk_rope_head_dim, kv)
    return kv_bytes_per_token_per_layer(spec.kv_heads, spec.head_size, kv, tp)


def is_sliding_layer(spec: ModelSpec, layer: int) -> bool:
    """Whether decoder layer ``layer`` attends over a sliding window (Mistral: all layers;
    Gemma-2: layers with an even index, ``sliding_window_every`` = 2; Gemma 3, gpt-oss:
    their ``layer_types``)."""
    return spec.layer_kind(layer) == "sliding_attention"


def layer_kv_window(spec: ModelSpec, layer: int):
    """Most tokens decoder layer ``layer`` keeps K/V for: the sliding window, the chunk of
    a chunked layer (Llama 4: keys never reach back past the chunk start), None for full
    attention (the whole context). Units: tokens."""
    kind = spec.layer_kind(layer)
    if kind == "sliding_attention":
        return spec.sliding_window
    if kind == "chunked_attention":
        return spec.attention_chunk_size
    return None


def _state_element_bytes(kv: str) -> float:
    """A Mamba layer's conv/SSM state is kept in the model dtype (vLLM's default
    ``mamba_ssm_cache_dtype='auto'``), not quantised like the KV cache: 2 bytes (bf16)."""
    return float(UNQUANTISED_BYTES)


def tokens_held(context_len, window=None, block_size=None):
    """KV tokens one layer keeps for a sequence of ``context_len`` tokens.

    Full attention: the whole context; a sliding window of w: min(context, w) (Beltagy et al.
    2020; Mistral 7B, Jiang et al. 2023, Sec. 2). With paging (``block_size``) the count is
    rounded up to whole blocks (Kwon et al. 2023, Sec. 4.2: only a sequence's last block is
    partly filled); a window that starts mid-block spans at most ceil((w-1)/b) + 1 blocks.
    Units: tokens.
    """
    c = np.asarray(context_len, dtype=float)
    if block_size is None:
        return c if window is None else np.minimum(c, window)
    blocks = np.ceil(c / block_size)
    if window is not None:
        blocks = np.minimum(blocks, np.ceil((window - 1) / block_size) + 1)
    return blocks * block_size


def _stage_kv_bytes(spec: ModelSpec, context_len, kv: str, tp, pp: int, block_size,
                    include_state: bool = True):
    """KV bytes of one sequence on one GPU of each pipeline stage (list over stages): K/V of
    the tokens each attention layer keeps (``layer_kv_window``) and, with ``include_state``,
    the fixed conv + SSM state of each Mamba layer (formulas/ssm.py)."""
    per_layer = _layer_kv_bytes_per_token(spec, kv, tp)
    held = {}
    out = []
    for lo, hi in pp_stage_layers(spec.num_layers, pp):
        b = 0.0
        for i in range(lo, hi):
            if spec.layer_kind(i) == "mamba":
                if include_state:
                    b = b + mamba_state_bytes_per_seq(spec.mamba, _state_element_bytes(kv), tp)
                continue
            window = layer_kv_window(spec, i)
            if window not in held:
                held[window] = tokens_held(context_len, window, block_size)
            b = b + per_layer * held[window]
        out.append(b)
    return out


def kv_cache_bytes_per_token(spec: ModelSpec, *, kv: str = "bf16", tp=1, pp: int = 1):
    """KV bytes one token adds on one GPU of the stage with the most KV, all layers of that stage
    counted (sliding-window layers included, i.e. while the context is within the window).
    Llama-2-70B, bf16, TP 1: 327,680 bytes. Units: bytes per token.
    """
    check_decoder(spec)
    check_tp(spec, tp)
    stages = _stage_kv_bytes(spec, 1, kv, tp, pp, None, include_state=False)
    return np.max(np.stack([np.asarray(s, dtype=float) for s in stages]), axis=0)


def kv_cache_bytes_per_seq(spec: ModelSpec, context_len, *, kv: str = "bf16", tp=1, pp: int = 1,
                           block_size: int | None = DEFAULT_BLOCK_SIZE):
    """KV cache one sequence of ``context_len`` tokens holds on one GPU (stage with the most KV),
    paged in blocks of ``block_size`` tokens (None: exact tokens, no paging waste). Sliding-window
    layers hold at most the window. Units: bytes.
    """
    check_decoder(spec)
    check_tp(spec, tp)
    check_positive("context_len", context_len)
    if block_size is not None:
        check_positive("block_size", block_size, integer=True)
    stages = _stage_kv_bytes(spec, context_len, kv, tp, pp, block_size)
    return np.max(np.stack([np.asarray(s, dtype=float) for s in stages]), axis=0)


def paged_waste_bytes_per_seq(spec: ModelSpec, context_len, *, kv: str = "bf16", tp=1, pp: int = 1,
                              block_size: int = DEFAULT_BLOCK_SIZE):
    """Bytes per sequence lost to partly filled last blocks: paged minus exact KV (< one block per
    layer; Kwon et al. 2023 Sec. 4.2). Units: bytes."""
    return (kv_cache_bytes_per_seq(spec, context_len, kv=kv, tp=tp, pp=pp, block_size=block_size)
            - kv_cache_bytes_per_seq(spec, context_len, kv=kv, tp=tp, pp=pp, block_size=None))


# --------------------------------------------------------------------------- activations and reserve

def profile_activation_bytes(spec: ModelSpec, *, tp=1, max_batched_tokens=DEFAULT_MAX_BATCHED_TOKENS,
                             max_num_seqs=DEFAULT_MAX_NUM_SEQS):
    """Peak PyTorch activation memory of the engine's profile run (vLLM ``profile_run``): one
    forward pass over ``max_batched_tokens`` tokens plus a sampler pass over ``max_num_seqs`` rows.

    Live 16-bit tensors per token at the peak, whichever block is larger:
      FFN: residual + normed input (2h) + gate/up output (2f/TP) + activation output (f/TP)
           (MoE: k experts per token, fused-MoE caches 3*f_e*k/TP + h*k; shared experts 3*f_s/TP);
      attention: residual + normed input (2h) + q, k, v (q_dim + 2 kv_dim)/TP + output q_dim/TP.
    Sampler: 3 fp32 copies (logits, probabilities, log-probabilities) of max_num_seqs x vocab.
    Check: Llama-3-8B on H100, vLLM 0.6-0.7 logs report 1.19-1.26 GiB; this gives 1.15 GiB.
    Units: bytes.
    """
    check_positive("max_batched_tokens", max_batched_tokens, integer=True)
    check_positive("max_num_seqs", max_num_seqs, integer=True)
    h = spec.hidden_size
    t = np.asarray(tp, dtype=float)
    ffn = 3.0 * spec.ffn_size / t if len(spec.moe_layers()) < spec.num_layers else 0.0
    if spec.moe is not None:
        m = spec.moe
        moe = m.experts_per_token * (3.0 * m.expert_ffn_size / t + h) + 3.0 * m.shared_ffn_size / t
        ffn = np.maximum(ffn, moe)
    if spec.attention == "mla":
        m = spec.mla
        attn = spec.num_heads * (2 * (m.qk_nope_head_dim + m.qk_rope_head_dim) + 2 * m.v_head_dim) / t
    else:
        q_dim = spec.num_heads * spec.head_size
        attn = (2 * q_dim + 2 * spec.kv_heads * spec.head_size) / t
    per_token = UNQUANTISED_BYTES * (2 * h + np.maximum(ffn, attn))
    sampler = SAMPLER_FP32_COPIES * max_num_seqs * spec.vocab_size * BYTES_PER["fp32"]
    return max_batched_tokens * per_token + sampler


def non_torch_reserve_bytes(n_gpus_in_replica) -> float:
    """Device memory outside PyTorch's allocator charged by the engine: NON_TORCH_BYTES_ONE_GPU for
    one GPU, NON_TORCH_BYTES_MULTI_GPU with TP x PP > 1 (sources at the constants). Units: bytes."""
    n = np.asarray(n_gpus_in_replica)
    return np.where(n > 1, NON_TORCH_BYTES_MULTI_GPU, NON_TORCH_BYTES_ONE_GPU) * 1.0


def runtime_memory_bytes(memory_bytes: float, fraction: float = RUNTIME_VISIBLE_FRACTION) -> float:
    """Device memory as the CUDA runtime reports it: nominal capacity x RUNTIME_VISIBLE_FRACTION."""
    return memory_bytes * fraction


def kv_cache_capacity_bytes(device_memory_bytes, *, weights_bytes, activation_bytes, reserve_bytes,
                            gpu_memory_utilization: float = DEFAULT_GPU_MEMORY_UTILIZATION):
    """Memory per GPU left for the KV pool, as vLLM sizes it (CONTRACTS.md 'Serving'):
    device memory (runtime-reported) x utilisation cap - weights - profile activation peak -
    non-torch reserve. May be negative (the model does not fit). Units: bytes.
    """
    if not 0 < gpu_memory_utilization <= 1:
        raise ClusteroptError("gpu_memory_utilization", f"{gpu_memory_utilization!r} is outside (0, 1]",
                              "a fraction such as 0.9")
    return device_memory_bytes * gpu_memory_utilization - weights_bytes - activation_bytes - reserve_bytes


def max_concurrent_seqs(capacity_bytes, bytes_per_seq):
    """Sequences whose KV fits in the pool at once, each at its full length (prompt + output),
    as an engine that never evicts must reserve (TensorRT-LLM GUARANTEED_NO_EVICT; vLLM's
    'maximum concurrency for N tokens per request'). 0 when nothing fits. Units: sequences."""
    return np.maximum(np.floor(np.asarray(capacity_bytes, dtype=float) / bytes_per_seq), 0.0)
