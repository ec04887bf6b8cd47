"""Exact parameter counts of a ModelSpec, part by part.

The count equals ``sum(p.numel() for p in model.parameters())`` of the reference
implementation (Hugging Face transformers model classes): a weight shared between the
input embedding and the LM head is counted once, and buffers (rotary frequencies,
ALiBi slopes, DeepSeek-V3's ``e_score_correction_bias``) are not parameters.
Tests check it against the counts of the real classes instantiated on PyTorch's meta
device (tests/data/params_public.json, tests/data/presets_reference_counts.json).

Conventions (units: parameters, i.e. scalar weights):

* A linear layer ``n_in -> n_out`` holds ``n_in * n_out`` weights plus ``n_out`` biases
  when it has a bias. Fused projections (GPT-2 ``c_attn``, NeoX ``query_key_value``,
  Phi-3 ``qkv_proj``/``gate_up_proj``) hold the same numbers as the separate ones.
* Attention (MHA/GQA/MQA): q and o are ``hidden x (heads * head_dim)``, k and v are
  ``hidden x (kv_heads * head_dim)`` (Shazeer 2019 for MQA; Ainslie et al. 2023 for GQA).
* MLA (DeepSeek-V2, Sec. 2.1, eqs. 9-14 and the HF ``DeepseekV2Attention``): q either
  directly ``hidden -> heads*(nope+rope)`` or through ``hidden -> q_lora_rank -> heads*(nope+rope)``;
  ``hidden -> kv_lora_rank + rope`` (shared rope key), ``kv_lora_rank -> heads*(nope+v)``,
  output ``heads*v -> hidden``. The two low-rank RMSNorms (q_a, kv_a) count under ``norm``.
* FFN: ``mlp`` = up + down (2 matrices), ``gated`` = gate + up + down (3; Shazeer 2020).
* MoE layer: router ``hidden x experts`` (+ a bias per expert when ``router_bias``), all
  routed experts (gated, no bias), the shared expert(s) as one FFN of the spec's kind and
  biases with ``shared_ffn_size`` units (DeepSeek-V2's ``mlp_bias`` reaches it), and Qwen2-MoE's ``shared_expert_gate`` (``hidden x 1``, counted under
  ``router``: it is a gate).
* Norms: ``hidden`` weights each, ``2 * hidden`` with a bias (LayerNorm), none when not
  affine. Per layer: ``norms_per_layer`` (+1 in a decoder layer of an encoder-decoder model
  for cross-attention), ``2 * head_dim`` more with ``qk_norm``; one final norm per stack;
  one embedding norm (BLOOM, BERT).
* QK-norm: ``head`` shape (Qwen3, Gemma 3, Phi): one norm over ``head_dim`` for q and one
  for k; ``proj`` shape (OLMo 2, OLMoE, Cohere): a norm over all heads' q features
  (``heads * head_dim``) and one over k's (``kv_heads * head_dim``).
* Attention sinks (gpt-oss): one learned logit per head and layer, counted under attention.
* Per-layer kinds (``ModelSpec.layer_kind``): sliding, chunked and full attention layers
  hold the same weights; a ``mamba`` layer (Jamba) holds a Mamba mixer instead of
  attention (counted under ``attention``, the token mixer): in_proj ``h -> 2 d_inner``,
  a depthwise conv ``d_inner x d_conv`` (+ bias), x_proj ``d_inner -> dt_rank + 2 N``,
  dt_proj ``dt_rank -> d_inner`` with bias, A_log ``d_inner x N``, D ``d_inner``, out_proj
  ``d_inner -> h`` (Gu & Dao 2023, Sec. 3.4, Fig. 3; Algorithm 2 for the parameters
  A, D, Delta, B, C), and Jamba's dt/B/C RMSNorms (``dt_rank + 2 N``, under ``norm``;
  Lieber et al. 2024, Sec. 6.4).
* Routed experts with biases (gpt-oss): ``2 f + h`` more per expert.
* A vision encoder and projector (Gemma 3, Llama 4 image-text checkpoints) is counted
  whole under ``vision`` (see ``vision_params``); text tokens do not pass through it.
* Position: a learned table of ``max_position_embeddings + position_offset`` rows of
  ``hidden`` (GPT-2, OPT with its offset of 2, BERT), BERT's token-type table, and T5's
  relative-bias table ``buckets x heads`` in the first layer of each stack. RoPE and
  ALiBi have no parameters.
* ``active``: parameters that one token passes through: everything except the routed
  experts that the router does not select (``experts_per_token`` of ``num_experts`` are
  used), embedding and LM head included (Mixtral-8x7B: 12,879,925,248).
"""

from __future__ import annotations

from dataclasses import dataclass

from optimizer.model.spec import ModelSpec


@dataclass(frozen=True)
class LayerParams:
    """One transformer layer's parameters. ``total`` = attention + ffn_dense + experts_routed
    + experts_shared + router + norm; ``active`` = the same with only the routed experts
    a token uses (``experts_per_token`` of them)."""

    attention: int          # self-attention (+ cross-attention in an encoder-decoder's decoder)
    ffn_dense: int          # the dense FFN (0 in a MoE layer)
    experts_routed: int     # all routed experts of the layer
    experts_shared: int     # shared expert(s)
    router: int             # router (+ Qwen2-MoE shared_expert_gate)
    norm: int
    total: int
    active: int
    is_moe: bool
    is_encoder: bool = False


@dataclass(frozen=True)
class ParamCounts:
    """Parameters of the whole model by part; the parts sum to ``total``:
    embedding + position + projection + attention + ffn + norm + lm_head + pooler + vision.

    ``ffn`` = dense FFN + routed experts + shared experts + routers, all layers;
    ``experts_routed`` is the routed-expert share of it (sharded by expert parallelism).
    ``lm_head`` is 0 when tied to the embedding (apart from a bias or BERT's transform). ``layers`` has one entry per layer, in
    order (encoder layers first, then decoder layers, for encoder-decoder models).
    """

    embedding: int
    position: int
    projection: int          # OPT project_in/project_out (embed_dim != hidden)
    attention: int
    ffn: int
    norm: int
    lm_head: int
    pooler: int
    total: int
    active: int
    experts_routed: int
    layers: tuple[LayerParams, ...]
    lm_head_tied: bool = False   # the output projection shares the embedding weight (counted once)
    vision: int = 0              # image encoder + projector of a vision-language checkpoint

    @property
    def non_expert(self) -> int:
        """Parameters outside the routed experts (replicated across expert-parallel ranks)."""
        return self.total - self.experts_routed



def _linear(n_in: int, n_out: int, bias: bool) -> int:
    return n_in * n_out + (n_out if bias else 0)


def norm_params(spec: ModelSpec, width: int) -> int:
    """Parameters of one norm over ``width`` features (weight, + bias for LayerNorm with bias)."""
    if not spec.norm_affine:
        return 0
    return width * (2 if spec.norm_kind == "layernorm" and spec.norm_bias else 1)


def mamba_params(spec: ModelSpec) -> int:
    """One Mamba mixer without its inner norms (module docstring; Gu & Dao 2023, Sec. 3.4).
    Units: parameters."""
    m = spec.mamba
    h, d = spec.hidden_size, m.d_inner
    conv = d * m.d_conv + (d if m.conv_bias else 0)
    return (_linear(h, 2 * d, m.proj_bias) + conv + _linear(d, m.dt_rank + 2 * m.d_state, False)
            + _linear(m.dt_rank, d, True) + d * m.d_state + d + _linear(d, h, m.proj_bias))


def mixer_params(spec: ModelSpec, layer: int) -> int:
    """The token mixer of decoder layer ``layer``: attention, or a Mamba mixer. Units: parameters."""
    if spec.layer_kind(layer) == "mamba":
        return mamba_params(spec)
    return attention_params(spec)


def vision_params(spec: ModelSpec) -> int:
    """The image encoder + projector of ``spec.vision`` (0 without one). Units: parameters.

    siglip (Gemma 3; SigLIP, Zhai et al. 2023, a ViT of Dosovitskiy et al. 2021): conv patch
    embedding ``C p^2 d + d``, learned positions ``(image / p)^2 d``, per layer two biased
    LayerNorms, four biased ``d x d`` projections and a biased MLP ``d -> f -> d``, a post
    LayerNorm, optionally the attention-pooling head (probe, biased in/out projections,
    LayerNorm, MLP); Gemma 3's projector: an RMSNorm over d and a ``d x hidden`` matrix.
    llama4: linear patch embedding ``C p^2 d`` (no bias), class token ``d``, positions
    ``((image / p)^2 + 1) d``, pre and post LayerNorms, the same biased layers, the
    pixel-shuffle adapter MLP ``f -> projector_input -> projector_output`` (no biases) and
    the projector ``output_dim x hidden`` (no bias).
    """
    v = spec.vision
    if v is None:
        return 0
    d, f = v.hidden_size, v.intermediate_size
    patches = (v.image_size // v.patch_size) ** 2
    layer = 2 * 2 * d + 4 * _linear(d, d, True) + _linear(d, f, True) + _linear(f, d, True)
    n = v.num_layers * layer
    if v.kind == "siglip":
        n += v.num_channels * v.patch_size ** 2 * d + d + patches * d + 2 * d
        if v.use_head:
            n += d + _linear(d, 3 * d, True) + _linear(d, d, True) + 2 * d + _linear(d, f, True) + _linear(f, d, True)
        n += d + d * spec.hidden_size
    else:
        n += v.num_channels * v.patch_size ** 2 * d + d + (patches + 1) * d + 2 * 2 * d
        n += f * v.projector_input_dim + v.projector_output_dim * v.projector_output_dim
        n += v.output_dim * spec.hidden_size
    return n


def attention_params(spec: ModelSpec) -> int:
    """One self-attention block's projections (no norms; gpt-oss sinks included). Units: parameters."""
    h = spec.hidden_size
    if spec.attention == "mla":
        m = spec.mla
        qk_head = m.qk_nope_head_dim + m.qk_rope_head_dim
        b = spec.qkv_bias
        if m.q_lora_rank is None:
            q = _linear(h, spec.num_heads * qk_head, b)
        else:
            q = _linear(h, m.q_lora_rank, b) + _linear(m.q_lora_rank, spec.num_heads * qk_head, False)
        kv = (_linear(h, m.kv_lora_rank + m.qk_rope_head_dim, b)
              + _linear(m.kv_lora_rank, spec.num_heads * (m.qk_nope_head_dim + m.v_head_dim), False))
        o = _linear(spec.num_heads * m.v_head_dim, h, spec.attn_out_bias)
        return q + kv + o
    q_dim = spec.num_heads * spec.head_size
    kv_dim = spec.kv_heads * spec.head_size
    return (_linear(h, q_dim, spec.qkv_bias) + 2 * _linear(h, kv_dim, spec.qkv_bias)
            + _linear(q_dim, h, spec.attn_out_bias) + (spec.num_heads if spec.attention_sinks else 0))


def _attention_norm_params(spec: ModelSpec, layer: int = 0) -> int:
    """Norms inside the token mixer: MLA's q_a/kv_a RMSNorms, qk norms, Jamba's dt/B/C norms."""
    if spec.layer_kind(layer) == "mamba":
        m = spec.mamba
        return (m.dt_rank + 2 * m.d_state) if m.inner_norms else 0
    n = 0
    if spec.attention == "mla":
        if spec.mla.q_lora_rank is not None:
            n += spec.mla.q_lora_rank          # q_a_layernorm (RMSNorm, weight only)
        n += spec.mla.kv_lora_rank             # kv_a_layernorm
    if spec.qk_norm and spec.qk_norm_shape == "proj":
        n += norm_params(spec, spec.num_heads * spec.head_size) + norm_params(spec, spec.kv_heads * spec.head_size)
    elif spec.qk_norm:
        n += 2 * norm_params(spec, spec.head_size)
    return n


def expert_params(spec: ModelSpec) -> int:
    """One routed expert: a gated FFN with ``expert_ffn_size`` units (+ biases, gpt-oss)."""
    moe = spec.moe
    h, f = spec.hidden_size, moe.expert_ffn_size
    return _gated_ffn(h, f) + ((2 * f + h) if moe.expert_bias else 0)


def ffn_params(spec: ModelSpec, intermediate: int, bias: bool | None = None) -> int:
    """One FFN of the spec's kind with ``intermediate`` hidden units. Units: parameters."""
    h = spec.hidden_size
    b = spec.ffn_bias if bias is None else bias
    if spec.ffn_kind == "gated":
        return 2 * _linear(h, intermediate, b) + _linear(intermediate, h, b)
    return _linear(h, intermediate, b) + _linear(intermediate, h, b)


def _gated_ffn(h: int, intermediate: int) -> int:
    return 3 * h * intermediate


def layer_params(spec: ModelSpec, layer: int, encoder: bool = False) -> LayerParams:
    """Parameters of decoder layer ``layer`` (0-based), or of an encoder layer when ``encoder``."""
    h = spec.hidden_size
    attn = attention_params(spec) if encoder else mixer_params(spec, layer)
    n_norms = spec.norms_per_layer
    if spec.arch == "encoder_decoder" and not encoder:
        attn *= 2                               # self-attention + cross-attention (same shapes in T5)
        n_norms += 1
    norm = n_norms * norm_params(spec, h) + _attention_norm_params(spec, 0 if encoder else layer)
    moe = spec.moe
    if not encoder and spec.is_moe_layer(layer):
        routed = moe.num_experts * expert_params(spec)
        shared = ffn_params(spec, moe.shared_ffn_size) if moe.shared_ffn_size else 0
        router = h * moe.num_experts + (moe.num_experts if moe.router_bias else 0)
        if moe.shared_expert_gate:
            router += h
        dense = 0
        used = moe.experts_per_token * expert_params(spec)
        is_moe = True
    else:
        routed = shared = router = used = 0
        dense = ffn_params(spec, spec.ffn_size)
        is_moe = False
    total = attn + dense + routed + shared + router + norm
    active = total - routed + used
    return LayerParams(attention=attn, ffn_dense=dense, experts_routed=routed, experts_shared=shared,
                       router=router, norm=norm, total=total, active=active, is_moe=is_moe,
                       is_encoder=encoder)


def layer_active_params(spec: ModelSpec, layer: int, encoder: bool = False) -> int:
    """Parameters one token passes through in that layer (routed experts: only the used ones)."""
    return layer_params(spec, layer, encoder).active


def count_params(spec: ModelSpec) -> ParamCounts:
    """Exact parameter count by part (see the module docstring for every convention).

    Source of the shapes: each family's reference implementation (Hugging Face
    transformers 5.24 modeling files) and the papers cited in the module docstring.
    Units: parameters.
    """
    h = spec.hidden_size
    e = spec.embedding_dim
    layers = tuple(layer_params(spec, i, encoder=True) for i in range(spec.num_encoder_layers)) \
        + tuple(layer_params(spec, i, encoder=spec.arch == "encoder") for i in range(spec.num_layers))

    embedding = spec.vocab_size * e
    projection = 2 * e * h if e != h else 0     # OPT project_in + project_out, no bias
    n_stacks = 2 if spec.arch == "encoder_decoder" else 1

    position = 0
    if spec.position == "learned":
        position += (spec.max_position_embeddings + spec.position_offset) * h
    elif spec.position == "relative_buckets":
        position += n_stacks * spec.relative_attention_num_buckets * spec.num_heads
    position += spec.type_vocab_size * h

    norm = sum(lp.norm for lp in layers)
    norm += (n_stacks if spec.final_norm else 0) * norm_params(spec, h)
    norm += norm_params(spec, e) if spec.embedding_norm else 0

    lm_head = 0
    if spec.lm_head and not spec.tie_word_embeddings:
        lm_head = _linear(e, spec.vocab_size, spec.lm_head_bias)
    elif spec.lm_head and spec.lm_head_bias:
        lm_head = spec.vocab_size               # a tied head keeps its own bias (BERT MLM decoder)
    if spec.lm_head and spec.lm_head_transform:
        lm_head += _linear(h, h, True) + norm_params(spec, h)   # BERT cls.predictions.transform
    pooler = _linear(h, h, True) if spec.pooler else 0
    pooler += _linear(h, spec.cls_head_outputs, True) if spec.cls_head_outputs else 0

    attention = sum(lp.attention for lp in layers)
    ffn = sum(lp.ffn_dense + lp.experts_routed + lp.experts_shared + lp.router for lp in layers)
    experts_routed = sum(lp.experts_routed for lp in layers)
    vision = vision_params(spec)
    total = embedding + position + projection + attention + ffn + norm + lm_head + pooler + vision
    active = total - sum(lp.total - lp.active for lp in layers)
    return ParamCounts(embedding=embedding, position=position, projection=projection,
                       attention=attention, ffn=ffn, norm=norm, lm_head=lm_head, pooler=pooler,
                       total=total, active=active, experts_routed=experts_routed, layers=layers,
                       lm_head_tied=spec.lm_head and spec.tie_word_embeddings, vision=vision)
