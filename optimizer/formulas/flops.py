"""FLOPs of a transformer per token: forward, training (model and hardware), prefill, decode.

Conventions (units: FLOPs, i.e. floating-point operations, not FLOP/s):

* One multiply-add is 2 FLOPs. A matrix product ``(m x k) @ (k x n)`` is ``2 m k n``.
* **Matmul FLOPs** per token = 2 x the weights of every linear layer the token passes
  through: attention projections (MHA/GQA/MQA, or MLA with its real low-rank shapes),
  the dense FFN, or the router + the ``experts_per_token`` routed experts + shared experts
  of a MoE layer (only active experts count), OPT's project_in/out, BERT's MLM transform
  and the LM head. Embedding and position lookups, norms, biases, activations and softmax
  are not counted (they are not multiply-adds of a weight matrix; Kaplan et al. 2020,
  Table 1, and Narayanan et al. 2021, eq. 3, leave them out too).
* **Attention FLOPs** are the two context-dependent products, QK^T and AV:
  ``2 * heads * (d_qk + d_v) * context`` per token and layer (d_qk = d_v = head_dim for
  MHA; MLA in its materialised form: d_qk = nope + rope, d_v = v_head_dim).
* **Causal convention.** ``causal=True`` (the default everywhere) counts only the
  unmasked query/key pairs: query ``i`` (1-based) of a sequence of ``s`` sees ``i`` keys,
  so the mean context is ``(s + 1) / 2``; this is the work a causal FlashAttention kernel
  performs. ``causal=False`` counts the full ``s`` keys per query, the convention of
  Narayanan et al. 2021 (eq. 3), PaLM (Chowdhery et al. 2022, App. B: 6N + 12LHQT) and
  Chinchilla (Hoffmann et al. 2022, App. F); published MFU/HFU figures use it. Encoder
  self-attention and cross-attention always see the full sequence. A sliding window
  ``w`` caps the context of the layers it applies to.
* **Encoder-decoder** (T5): a "token" is one source token through the encoder plus one
  target token through the decoder, with source and target both ``seq_len`` long.
* Training: backward = 2 x forward (Kaplan et al. 2020, Sec. 2.1; Narayanan et al. 2021,
  Sec. 5.1), so model FLOPs = 3 x forward (the numerator of MFU, PaLM App. B).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from optimizer.errors import ClusteroptError
from optimizer.model.spec import ModelSpec

Recompute = Literal["none", "selective", "full"]
RECOMPUTE_CHOICES = ("none", "selective", "full")


@dataclass(frozen=True)
class ForwardFlops:
    """Forward FLOPs per token; ``total = matmul + attention``. Units: FLOPs per token."""

    matmul: float       # 2 x active weights per token (incl. LM head)
    attention: float    # QK^T and AV over the context
    total: float


@dataclass(frozen=True)
class MatmulWeights:
    """Weights of the linear layers one token passes through (biases excluded).

    ``total = layers + lm_head + projection``; ``layers`` counts only the routed experts a
    token uses. Units: weights (parameters)."""

    layers: int
    lm_head: int        # V x embedding width (+ BERT's MLM transform), 0 without a head
    projection: int     # OPT project_in/out
    total: int


def _positive(field: str, value: float) -> None:
    if not value > 0:
        raise ClusteroptError(field, f"must be positive (got {value!r})", "a number > 0")


def _attn_proj_weights(spec: ModelSpec) -> int:
    h = spec.hidden_size
    if spec.attention == "mla":
        m = spec.mla
        qk = m.qk_nope_head_dim + m.qk_rope_head_dim
        q = h * spec.num_heads * qk if m.q_lora_rank is None else \
            h * m.q_lora_rank + m.q_lora_rank * spec.num_heads * qk
        kv = h * (m.kv_lora_rank + m.qk_rope_head_dim) + m.kv_lora_rank * spec.num_heads * (
            m.qk_nope_head_dim + m.v_head_dim)
        return q + kv + spec.num_heads * m.v_head_dim * h
    q_dim = spec.num_heads * spec.head_size
    kv_dim = spec.kv_heads * spec.head_size
    return 2 * h * q_dim + 2 * h * kv_dim


def _ffn_weights(spec: ModelSpec, intermediate: int) -> int:
    return (3 if spec.ffn_kind == "gated" else 2) * spec.hidden_size * intermediate


def layer_matmul_weights(spec: ModelSpec, layer: int, encoder: bool = False) -> int:
    """Active linear weights of one layer for one token (routed experts: the used ones)."""
    h = spec.hidden_size
    w = _attn_proj_weights(spec)
    if spec.arch == "encoder_decoder" and not encoder:
        w *= 2                                   # cross-attention has the same shapes (T5)
    if not encoder and spec.is_moe_layer(layer):
        moe = spec.moe
        w += h * moe.num_experts + moe.experts_per_token * 3 * h * moe.expert_ffn_size
        if moe.shared_ffn_size:
            w += _ffn_weights(spec, moe.shared_ffn_size)
        if moe.shared_expert_gate:
            w += h
    else:
        w += _ffn_weights(spec, spec.ffn_size)
    return w


def _layers(spec: ModelSpec) -> list[tuple[int, bool]]:
    """(index within its stack, is_encoder) for every layer, encoder first."""
    enc = [(i, True) for i in range(spec.num_encoder_layers)]
    return enc + [(i, spec.arch == "encoder") for i in range(spec.num_layers)]


def matmul_weights(spec: ModelSpec) -> MatmulWeights:
    """Linear-layer weights a token passes through (see the module docstring)."""
    layers = sum(layer_matmul_weights(spec, i, enc) for i, enc in _layers(spec))
    e = spec.embedding_dim
    lm_head = spec.vocab_size * e if spec.lm_head else 0
    if spec.lm_head and spec.lm_head_transform:
        lm_head += spec.hidden_size * spec.hidden_size
    projection = 2 * e * spec.hidden_size if e != spec.hidden_size else 0
    return MatmulWeights(layers=layers, lm_head=lm_head, projection=projection,
                         total=layers + lm_head + projection)


def _qk_v_dims(spec: ModelSpec) -> tuple[int, int]:
    if spec.attention == "mla":
        m = spec.mla
        return m.qk_nope_head_dim + m.qk_rope_head_dim, m.v_head_dim
    return spec.head_size, spec.head_size


def _is_windowed(spec: ModelSpec, layer: int, encoder: bool) -> bool:
    """Sliding-window layers: every layer (Mistral) or every n-th from layer 0 (Gemma-2)."""
    return (spec.sliding_window is not None and not encoder
            and layer % spec.sliding_window_every == 0)


def mean_context(seq_len: int, causal: bool, window: int | None = None) -> float:
    """Mean number of keys a query attends to over a sequence of ``seq_len`` tokens.

    causal: query i (1-based) sees min(i, w) keys -> mean of that over i = 1..s;
    not causal: min(s, w) keys each. Units: tokens.
    """
    s = seq_len
    w = window if window is not None else s
    if not causal:
        return float(min(s, w))
    if s <= w:
        return (s + 1) / 2
    return (w * (w + 1) / 2 + (s - w) * w) / s


def attention_score_flops(spec: ModelSpec, context: float, layer: int = 0, encoder: bool = False,
                          qk_only: bool = False) -> float:
    """QK^T (+ AV unless ``qk_only``) FLOPs of one token in one layer for ``context`` keys:
    ``2 * heads * (d_qk + d_v) * context``. Units: FLOPs."""
    d_qk, d_v = _qk_v_dims(spec)
    dims = d_qk if qk_only else d_qk + d_v
    return 2.0 * spec.num_heads * dims * context


def _attention_flops(spec: ModelSpec, seq_len: int, causal: bool, qk_only: bool = False) -> float:
    total = 0.0
    for i, enc in _layers(spec):
        window = spec.sliding_window if _is_windowed(spec, i, enc) else None
        ctx = mean_context(seq_len, causal and not enc, window)
        total += attention_score_flops(spec, ctx, qk_only=qk_only)
        if spec.arch == "encoder_decoder" and not enc:
            total += attention_score_flops(spec, float(seq_len), qk_only=qk_only)   # cross-attention
    return total


def forward_flops_per_token(spec: ModelSpec, seq_len: int, causal: bool = True) -> ForwardFlops:
    """Forward FLOPs per token, averaged over a full sequence of ``seq_len`` tokens.

    matmul = 2 x active linear weights (incl. LM head); attention = QK^T + AV with the
    mean context of the causal convention (module docstring). Sources: Kaplan et al. 2020,
    Table 1 (C_forward = 2N + 2 n_layer n_ctx d_attn); Narayanan et al. 2021, eq. 3.
    Units: FLOPs per token.
    """
    _positive("seq_len", seq_len)
    matmul = 2.0 * matmul_weights(spec).total
    attention = _attention_flops(spec, seq_len, causal)
    return ForwardFlops(matmul=matmul, attention=attention, total=matmul + attention)


def train_flops_per_token(spec: ModelSpec, seq_len: int, causal: bool = True) -> float:
    """Model FLOPs per trained token = 3 x forward (backward = 2 x forward).

    The numerator of model-FLOPs utilisation (Chowdhery et al. 2022, PaLM, App. B), which
    excludes recomputation. With ``causal=False`` this is 6N + 12 L s d for a dense MHA
    model whose N counts matmul weights (PaLM's 6N + 12LHQT). Units: FLOPs per token.
    """
    return 3.0 * forward_flops_per_token(spec, seq_len, causal).total


def hardware_train_flops_per_token(spec: ModelSpec, seq_len: int, recompute: Recompute = "none",
                                   flash_attention: bool = True, causal: bool = True) -> float:
    """FLOPs the GPUs execute per trained token, recomputation included (for HFU).

    * ``none``: 3 x forward.
    * ``selective`` (Korthikanti et al. 2022, Sec. 4.2): the attention core (QK^T, softmax,
      AV) is recomputed in the backward pass: + the forward attention FLOPs.
    * ``full`` (activation checkpointing of every layer; Narayanan et al. 2021, eq. 3): the
      layers' forward is run again in the backward pass: + the forward FLOPs of all
      transformer layers (matmuls and attention); the LM head is not recomputed. With
      ``causal=False``, ``flash_attention=False`` this equals eq. 3,
      ``96 B s l h^2 (1 + s/6h + V/16lh)`` per iteration, divided by ``B s`` tokens.
    * ``flash_attention`` (Dao 2023, FlashAttention-2, Algorithm 2): the backward pass
      recomputes the scores S = QK^T from Q and K instead of storing them: + the QK^T
      FLOPs. Selective recomputation then has nothing left to recompute (the attention
      core was never stored), so ``selective`` with flash attention costs the same as
      ``none`` with flash attention.

    Units: FLOPs per token.
    """
    if recompute not in RECOMPUTE_CHOICES:
        raise ClusteroptError("recompute", f"unknown value {recompute!r}",
                              "allowed: " + ", ".join(RECOMPUTE_CHOICES))
    fwd = forward_flops_per_token(spec, seq_len, causal)
    total = 3.0 * fwd.total
    if recompute == "full":
        total += 2.0 * sum(layer_matmul_weights(spec, i, enc) for i, enc in _layers(spec)) + fwd.attention
    elif recompute == "selective" and not flash_attention:
        total += fwd.attention
    if flash_attention:
        total += _attention_flops(spec, seq_len, causal, qk_only=True)
    return total


def prefill_flops(spec: ModelSpec, prompt_len: int, causal: bool = True,
                  all_logits: bool = False) -> float:
    """Forward FLOPs to prefill a prompt of ``prompt_len`` tokens (total, not per token).

    Serving engines compute logits only for the last prompt position (vLLM's logits
    processor), so the LM head counts once unless ``all_logits``. Units: FLOPs.
    """
    _positive("prompt_len", prompt_len)
    if spec.arch == "encoder":
        all_logits = True                         # an encoder has no generation step
    fwd = forward_flops_per_token(spec, prompt_len, causal)
    total = prompt_len * fwd.total
    if not all_logits:
        total -= (prompt_len - 1) * 2.0 * matmul_weights(spec).lm_head
    return total


def decode_flops_per_token(spec: ModelSpec, context_len: int) -> float:
    """FLOPs to generate one token that attends to ``context_len`` keys (the KV cache
    including the new token; a sliding window caps it). Matmuls: 2 x active weights incl.
    LM head. Encoder-decoder: decoder layers only, cross-attention over ``context_len``
    source tokens too. Units: FLOPs.
    """
    _positive("context_len", context_len)
    if spec.arch == "encoder":
        raise ClusteroptError("model", f"{spec.name} is an encoder ({spec.family}); it does not decode",
                              "decode FLOPs need a decoder or encoder-decoder model")
    dec = [(i, False) for i in range(spec.num_layers)]
    w = sum(layer_matmul_weights(spec, i, False) for i, _ in dec)
    mw = matmul_weights(spec)
    flops = 2.0 * (w + mw.lm_head + mw.projection)
    for i, _ in dec:
        ctx = min(context_len, spec.sliding_window) if _is_windowed(spec, i, False) else context_len
        flops += attention_score_flops(spec, ctx)
        if spec.arch == "encoder_decoder":
            flops += attention_score_flops(spec, context_len)
    return flops
