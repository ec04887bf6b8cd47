"""Read a Hugging Face ``config.json`` (a local file or a dict; never the network) into a ModelSpec.

Each supported ``model_type`` maps its own key names onto ModelSpec fields. Structural
sizes (hidden size, layers, attention heads, vocabulary) must be present; a missing one is
an error naming it (CONTRACTS.md, 'Models'). Every other key takes the default of that
model type's configuration class in the reference implementation, Hugging Face
transformers 5.24 (``_DEFAULTS`` below lists them), so that the parameter count of the
spec equals the count of the real model class built from the same file.

Reference-implementation behaviours that decide a count (all checked in tests against
classes instantiated on PyTorch's meta device):

* T5 (transformers >= 5): ``T5Config`` forces ``tie_word_embeddings=True``, so the LM head
  shares the embedding even for T5 v1.1 / Flan-T5 files that say ``false``.
* Falcon: old architecture with ``multi_query`` has one K/V head; old without it has
  ``num_heads`` K/V heads whatever ``num_kv_heads`` says; the new architecture uses
  ``num_kv_heads`` groups.
* DeepSeek-V2/V3: every layer from ``first_k_dense_replace`` on is MoE (``moe_layer_freq``
  is not read by the transformers classes); V3's ``e_score_correction_bias`` is a buffer.
* OPT: the learned position table has 2 extra rows; ``word_embed_proj_dim`` (default:
  ``hidden_size``) different from ``hidden_size`` adds ``project_in``/``project_out``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from pydantic import ValidationError

from optimizer.errors import ClusteroptError, from_pydantic
from optimizer.model.spec import MLASpec, MoESpec, ModelSpec

# Defaults of the transformers 5.24 configuration classes for the keys read below
# (structural sizes have none here: they are required).
_DEFAULTS: dict[str, dict[str, Any]] = {
    "gpt2": {"n_positions": 1024, "n_inner": None, "activation_function": "gelu_new",
             "tie_word_embeddings": True},
    "gptj": {"n_positions": 2048, "n_inner": None, "activation_function": "gelu_new",
             "tie_word_embeddings": False},
    "gpt_neox": {"intermediate_size": 24576, "hidden_act": "gelu", "max_position_embeddings": 2048,
                 "use_parallel_residual": True, "attention_bias": True, "tie_word_embeddings": False},
    "opt": {"ffn_dim": 3072, "max_position_embeddings": 2048, "do_layer_norm_before": True,
            "_remove_final_layer_norm": False, "word_embed_proj_dim": None, "activation_function": "relu",
            "enable_bias": True, "layer_norm_elementwise_affine": True, "tie_word_embeddings": True},
    "bloom": {"tie_word_embeddings": True},
    "falcon": {"num_kv_heads": None, "alibi": False, "new_decoder_architecture": False,
               "multi_query": True, "parallel_attn": True, "bias": False, "num_ln_in_parallel_attn": None,
               "max_position_embeddings": 2048, "ffn_hidden_size": None, "activation": "gelu",
               "tie_word_embeddings": True},
    "llama": {"intermediate_size": 11008, "num_key_value_heads": None, "head_dim": None,
              "hidden_act": "silu", "max_position_embeddings": 2048, "attention_bias": False,
              "mlp_bias": False, "tie_word_embeddings": False},
    "mistral": {"intermediate_size": 14336, "num_key_value_heads": 8, "head_dim": None,
                "hidden_act": "silu", "max_position_embeddings": 131072, "sliding_window": 4096,
                "tie_word_embeddings": False},
    "mixtral": {"intermediate_size": 14336, "num_key_value_heads": 8, "head_dim": None,
                "hidden_act": "silu", "max_position_embeddings": 131072, "sliding_window": None,
                "num_local_experts": 8, "num_experts_per_tok": 2, "tie_word_embeddings": False},
    "qwen2": {"intermediate_size": 22016, "num_key_value_heads": 32, "head_dim": None,
              "hidden_act": "silu", "max_position_embeddings": 32768, "use_sliding_window": False,
              "sliding_window": None, "tie_word_embeddings": False},
    "qwen2_moe": {"intermediate_size": 5632, "num_key_value_heads": 16, "head_dim": None,
                  "hidden_act": "silu", "max_position_embeddings": 32768, "use_sliding_window": False,
                  "sliding_window": None, "decoder_sparse_step": 1, "moe_intermediate_size": 1408,
                  "shared_expert_intermediate_size": 5632, "num_experts_per_tok": 4, "num_experts": 60,
                  "mlp_only_layers": [], "qkv_bias": True, "tie_word_embeddings": False},
    "gemma": {"intermediate_size": 24576, "num_key_value_heads": 16, "head_dim": 256,
              "hidden_act": "gelu_pytorch_tanh", "max_position_embeddings": 8192,
              "attention_bias": False, "tie_word_embeddings": True},
    "gemma2": {"intermediate_size": 9216, "num_key_value_heads": 4, "head_dim": 256,
               "hidden_activation": "gelu_pytorch_tanh", "max_position_embeddings": 8192,
               "attention_bias": False, "sliding_window": 4096, "tie_word_embeddings": True},
    "phi": {"intermediate_size": 8192, "num_key_value_heads": None, "head_dim": None,
            "hidden_act": "gelu_new", "max_position_embeddings": 2048, "qk_layernorm": False,
            "tie_word_embeddings": False},
    "phi3": {"intermediate_size": 8192, "num_key_value_heads": None, "head_dim": None,
             "hidden_act": "silu", "max_position_embeddings": 4096, "sliding_window": None,
             "tie_word_embeddings": False},
    "t5": {"d_kv": 64, "d_ff": 2048, "num_decoder_layers": None, "feed_forward_proj": "relu",
           "is_gated_act": None, "relative_attention_num_buckets": 32, "n_positions": 512},
    "bert": {"intermediate_size": 3072, "hidden_act": "gelu", "max_position_embeddings": 512,
             "type_vocab_size": 2},
    "deepseek_v2": {"intermediate_size": 11008, "moe_intermediate_size": 1407, "n_routed_experts": 64,
                    "n_shared_experts": 2, "num_experts_per_tok": None, "first_k_dense_replace": 0,
                    "kv_lora_rank": 512, "q_lora_rank": 1536, "qk_nope_head_dim": 128,
                    "qk_rope_head_dim": 64, "v_head_dim": 128, "attention_bias": False,
                    "mlp_bias": False, "hidden_act": "silu", "max_position_embeddings": 2048,
                    "tie_word_embeddings": False},
    "deepseek_v3": {"intermediate_size": 18432, "moe_intermediate_size": 2048, "n_routed_experts": 256,
                    "n_shared_experts": 1, "num_experts_per_tok": 8, "first_k_dense_replace": 3,
                    "kv_lora_rank": 512, "q_lora_rank": 1536, "qk_nope_head_dim": 128,
                    "qk_rope_head_dim": 64, "v_head_dim": 128, "attention_bias": False,
                    "hidden_act": "silu", "max_position_embeddings": 4096, "tie_word_embeddings": False},
}

SUPPORTED_MODEL_TYPES: tuple[str, ...] = tuple(sorted(_DEFAULTS))

# Structural keys by model type: (spec field, key names accepted, first is the type's own name).
_STRUCTURAL: dict[str, dict[str, tuple[str, ...]]] = {
    "gpt2": {"hidden": ("n_embd", "hidden_size"), "layers": ("n_layer", "num_hidden_layers"),
             "heads": ("n_head", "num_attention_heads")},
    "gptj": {"hidden": ("n_embd", "hidden_size"), "layers": ("n_layer", "num_hidden_layers"),
             "heads": ("n_head", "num_attention_heads")},
    "bloom": {"hidden": ("hidden_size", "n_embed"), "layers": ("n_layer", "num_hidden_layers"),
              "heads": ("n_head", "num_attention_heads")},
    "falcon": {"hidden": ("hidden_size", "n_embed"), "layers": ("num_hidden_layers",),
               "heads": ("num_attention_heads",)},
    "t5": {"hidden": ("d_model", "hidden_size"), "layers": ("num_layers", "num_hidden_layers"),
           "heads": ("num_heads", "num_attention_heads")},
}
_STANDARD = {"hidden": ("hidden_size",), "layers": ("num_hidden_layers",), "heads": ("num_attention_heads",)}

# Model classes whose count we reproduce, by model type (the first is used when a config
# names none). Bare backbones ('...Model') have no LM head.
_CLASSES: dict[str, tuple[str, ...]] = {
    "gpt2": ("GPT2LMHeadModel", "GPT2Model"),
    "gptj": ("GPTJForCausalLM", "GPTJModel"),
    "gpt_neox": ("GPTNeoXForCausalLM", "GPTNeoXModel"),
    "opt": ("OPTForCausalLM", "OPTModel"),
    "bloom": ("BloomForCausalLM", "BloomModel"),
    "falcon": ("FalconForCausalLM", "FalconModel"),
    "llama": ("LlamaForCausalLM", "LlamaModel"),
    "mistral": ("MistralForCausalLM", "MistralModel"),
    "mixtral": ("MixtralForCausalLM", "MixtralModel"),
    "qwen2": ("Qwen2ForCausalLM", "Qwen2Model"),
    "qwen2_moe": ("Qwen2MoeForCausalLM", "Qwen2MoeModel"),
    "gemma": ("GemmaForCausalLM", "GemmaModel"),
    "gemma2": ("Gemma2ForCausalLM", "Gemma2Model"),
    "phi": ("PhiForCausalLM", "PhiModel"),
    "phi3": ("Phi3ForCausalLM", "Phi3Model"),
    "t5": ("T5ForConditionalGeneration",),
    "bert": ("BertModel", "BertForMaskedLM", "BertLMHeadModel", "BertForPreTraining"),
    "deepseek_v2": ("DeepseekV2ForCausalLM", "DeepseekV2Model"),
    "deepseek_v3": ("DeepseekV3ForCausalLM", "DeepseekV3Model"),
}


# A class name with one of these endings is the type's language-model class under another
# name (remote-code or legacy names); other task heads are not modelled.
_LM_SUFFIXES = ("ForCausalLM", "LMHeadModel", "ForConditionalGeneration")


class _Config:
    """A config dict with the model type's defaults and errors that name the key."""

    def __init__(self, cfg: dict, model_type: str, where: str):
        self.cfg = cfg
        self.model_type = model_type
        self.where = where
        self.defaults = _DEFAULTS[model_type]

    def get(self, key: str, default: Any = "__table__") -> Any:
        if key in self.cfg:
            return self.cfg[key]
        if default == "__table__":
            return self.defaults.get(key)
        return default

    def size(self, role: str) -> int:
        names = (_STRUCTURAL.get(self.model_type, _STANDARD).get(role)
                 or {"vocab": ("vocab_size",)}[role])
        for name in names:
            value = self.cfg.get(name)
            if value is not None:
                return self._positive(name, value)
        raise ClusteroptError(
            f"{self.where}.{names[0]}", f"missing; a {self.model_type} config.json must state it",
            "structural sizes (hidden size, layers, attention heads, vocabulary) have no default")

    def positive(self, key: str) -> int:
        value = self.get(key)
        if value is None:
            raise ClusteroptError(f"{self.where}.{key}", f"missing (null) in a {self.model_type} config",
                                  "a positive integer is needed")
        return self._positive(key, value)

    def _positive(self, key: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ClusteroptError(f"{self.where}.{key}", f"must be a positive integer (got {value!r})", "an integer > 0")
        return value


def _head_dim(c: _Config, hidden: int, heads: int) -> int | None:
    hd = c.get("head_dim")
    return hd if hd else None if hidden % heads == 0 else hidden // heads


def _common(c: _Config) -> dict:
    return {"vocab_size": c.size("vocab"), "hidden_size": c.size("hidden"),
            "num_layers": c.size("layers"), "num_heads": c.size("heads")}


def _gpt2(c: _Config) -> dict:
    d = _common(c)
    h = d["hidden_size"]
    return d | dict(
        ffn_kind="mlp", ffn_size=c.get("n_inner") or 4 * h, activation=c.get("activation_function"),
        qkv_bias=True, attn_out_bias=True, ffn_bias=True, norm_kind="layernorm", norm_bias=True,
        position="learned",
        max_position_embeddings=c.cfg.get("n_positions", c.cfg.get("max_position_embeddings", 1024)),
        tie_word_embeddings=c.get("tie_word_embeddings"))


def _gptj(c: _Config) -> dict:
    d = _common(c)
    return d | dict(
        ffn_kind="mlp", ffn_size=c.get("n_inner") or 4 * d["hidden_size"],
        activation=c.get("activation_function"), ffn_bias=True, norm_kind="layernorm", norm_bias=True,
        norms_per_layer=1, parallel_block=True, position="rope",
        max_position_embeddings=c.cfg.get("n_positions", c.cfg.get("max_position_embeddings", 2048)),
        lm_head_bias=True, tie_word_embeddings=c.get("tie_word_embeddings"))


def _gpt_neox(c: _Config) -> dict:
    bias = bool(c.get("attention_bias"))
    return _common(c) | dict(
        ffn_kind="mlp", ffn_size=c.positive("intermediate_size"), activation=c.get("hidden_act"),
        qkv_bias=bias, attn_out_bias=bias, ffn_bias=True, norm_kind="layernorm", norm_bias=True,
        parallel_block=bool(c.get("use_parallel_residual")), position="rope",
        max_position_embeddings=c.positive("max_position_embeddings"),
        tie_word_embeddings=c.get("tie_word_embeddings"))


def _opt(c: _Config) -> dict:
    d = _common(c)
    bias = bool(c.get("enable_bias"))
    proj = c.get("word_embed_proj_dim") or d["hidden_size"]
    return d | dict(
        embed_dim=proj if proj != d["hidden_size"] else None,
        ffn_kind="mlp", ffn_size=c.positive("ffn_dim"), activation=c.get("activation_function"),
        qkv_bias=bias, attn_out_bias=bias, ffn_bias=bias, norm_kind="layernorm", norm_bias=True,
        norm_affine=bool(c.get("layer_norm_elementwise_affine")),
        final_norm=bool(c.get("do_layer_norm_before")) and not c.get("_remove_final_layer_norm"),
        position="learned", position_offset=2,
        max_position_embeddings=c.positive("max_position_embeddings"),
        tie_word_embeddings=c.get("tie_word_embeddings"))


def _bloom(c: _Config) -> dict:
    d = _common(c)
    return d | dict(
        ffn_kind="mlp", ffn_size=4 * d["hidden_size"], activation="gelu", qkv_bias=True,
        attn_out_bias=True, ffn_bias=True, norm_kind="layernorm", norm_bias=True, embedding_norm=True,
        position="alibi", max_position_embeddings=c.cfg.get("seq_length", 2048),
        tie_word_embeddings=c.get("tie_word_embeddings"))


def _falcon(c: _Config) -> dict:
    d = _common(c)
    h, heads = d["hidden_size"], d["num_heads"]
    new_arch = bool(c.get("new_decoder_architecture"))
    parallel = bool(c.get("parallel_attn"))
    if new_arch:
        kv = c.get("num_kv_heads") or heads
    elif c.get("multi_query"):
        kv = 1
    else:
        kv = heads
    n_ln = c.get("num_ln_in_parallel_attn")
    if n_ln is None and new_arch:
        n_ln = 2
    norms = 2 if (not parallel or n_ln == 2) else 1
    bias = bool(c.get("bias"))
    return d | dict(
        num_kv_heads=kv, ffn_kind="mlp", ffn_size=c.get("ffn_hidden_size") or 4 * h,
        activation=c.get("activation"), qkv_bias=bias, attn_out_bias=bias, ffn_bias=bias,
        norm_kind="layernorm", norm_bias=True, norms_per_layer=norms,
        parallel_block=parallel or new_arch, position="alibi" if c.get("alibi") else "rope",
        max_position_embeddings=c.positive("max_position_embeddings"),
        tie_word_embeddings=c.get("tie_word_embeddings"))


def _llama_like(c: _Config, *, qkv_bias: bool, out_bias: bool, mlp_bias: bool = False,
                act_key: str = "hidden_act") -> dict:
    d = _common(c)
    kv = c.get("num_key_value_heads") or d["num_heads"]
    window = c.get("sliding_window")
    if c.model_type in ("qwen2", "qwen2_moe") and not c.get("use_sliding_window"):
        window = None
    return d | dict(
        num_kv_heads=kv, head_dim=_head_dim(c, d["hidden_size"], d["num_heads"]),
        ffn_kind="gated", ffn_size=c.positive("intermediate_size"), activation=c.get(act_key),
        qkv_bias=qkv_bias, attn_out_bias=out_bias, ffn_bias=mlp_bias, norm_kind="rmsnorm",
        position="rope", max_position_embeddings=c.positive("max_position_embeddings"),
        sliding_window=window or None, tie_word_embeddings=c.get("tie_word_embeddings"))


def _llama(c: _Config) -> dict:
    bias = bool(c.get("attention_bias"))
    return _llama_like(c, qkv_bias=bias, out_bias=bias, mlp_bias=bool(c.get("mlp_bias")))


def _mistral(c: _Config) -> dict:
    return _llama_like(c, qkv_bias=False, out_bias=False)


def _mixtral(c: _Config) -> dict:
    d = _llama_like(c, qkv_bias=False, out_bias=False)
    experts = c.positive("num_local_experts")
    return d | dict(moe=MoESpec(num_experts=experts, experts_per_token=c.positive("num_experts_per_tok"),
                                expert_ffn_size=d["ffn_size"]))


def _qwen2(c: _Config) -> dict:
    return _llama_like(c, qkv_bias=True, out_bias=False)


def _qwen2_moe(c: _Config) -> dict:
    d = _llama_like(c, qkv_bias=bool(c.get("qkv_bias")), out_bias=False)
    experts = c.get("num_experts") or 0
    if experts <= 0:
        return d
    return d | dict(moe=MoESpec(
        num_experts=experts, experts_per_token=c.positive("num_experts_per_tok"),
        expert_ffn_size=c.positive("moe_intermediate_size"), num_shared_experts=1,
        shared_ffn_size=c.positive("shared_expert_intermediate_size"), shared_expert_gate=True,
        every_n=c.positive("decoder_sparse_step"), every_n_offset=1,
        dense_layers=tuple(c.get("mlp_only_layers") or ())))


def _gemma(c: _Config) -> dict:
    bias = bool(c.get("attention_bias"))
    return _llama_like(c, qkv_bias=bias, out_bias=bias)


def _gemma2(c: _Config) -> dict:
    bias = bool(c.get("attention_bias"))
    d = _llama_like(c, qkv_bias=bias, out_bias=bias, act_key="hidden_activation")
    return d | dict(norms_per_layer=4, sliding_window_every=2)


def _phi(c: _Config) -> dict:
    d = _common(c)
    if d["hidden_size"] % d["num_heads"]:
        raise ClusteroptError(f"{c.where}.hidden_size",
                              f"{d['hidden_size']} is not divisible by num_attention_heads={d['num_heads']}",
                              "phi derives its head size from hidden_size / heads")
    head_dim = c.get("head_dim") or d["hidden_size"] // d["num_heads"]
    return d | dict(
        num_kv_heads=c.get("num_key_value_heads") or d["num_heads"], ffn_kind="mlp",
        head_dim=head_dim if head_dim * d["num_heads"] != d["hidden_size"] else None,
        ffn_size=c.positive("intermediate_size"), activation=c.get("hidden_act"),
        qkv_bias=True, attn_out_bias=True, ffn_bias=True, norm_kind="layernorm", norm_bias=True,
        norms_per_layer=1, qk_norm=bool(c.get("qk_layernorm")), parallel_block=True, position="rope",
        max_position_embeddings=c.positive("max_position_embeddings"), lm_head_bias=True,
        tie_word_embeddings=c.get("tie_word_embeddings"))


def _phi3(c: _Config) -> dict:
    return _llama_like(c, qkv_bias=False, out_bias=False)


def _t5(c: _Config) -> dict:
    d = _common(c)
    proj = c.get("feed_forward_proj") or "relu"
    gated = c.get("is_gated_act")
    if gated is None:
        gated = proj.split("-")[0] == "gated"
    enc_layers = d["num_layers"]
    dec_layers = c.get("num_decoder_layers") or enc_layers
    return d | dict(
        arch="encoder_decoder", num_layers=dec_layers, num_encoder_layers=enc_layers,
        head_dim=c.positive("d_kv"), ffn_kind="gated" if gated else "mlp", ffn_size=c.positive("d_ff"),
        activation=proj.split("-")[-1], norm_kind="rmsnorm", position="relative_buckets",
        relative_attention_num_buckets=c.positive("relative_attention_num_buckets"),
        max_position_embeddings=c.get("n_positions") or 512,
        tie_word_embeddings=True)   # T5Config (transformers >= 5) always ties


def _bert(c: _Config) -> dict:
    d = _common(c)
    cls = c.cfg.get("_hf_class", "BertModel")
    return d | dict(
        arch="encoder", ffn_kind="mlp", ffn_size=c.positive("intermediate_size"),
        activation=c.get("hidden_act"), qkv_bias=True, attn_out_bias=True, ffn_bias=True,
        norm_kind="layernorm", norm_bias=True, final_norm=False, embedding_norm=True,
        position="learned", max_position_embeddings=c.positive("max_position_embeddings"),
        type_vocab_size=c.get("type_vocab_size"),
        pooler=cls in ("BertModel", "BertForPreTraining"),
        lm_head=cls != "BertModel", tie_word_embeddings=True, lm_head_bias=cls != "BertModel",
        lm_head_transform=cls != "BertModel", cls_head_outputs=2 if cls == "BertForPreTraining" else 0)


def _deepseek(c: _Config) -> dict:
    d = _common(c)
    q_lora = c.get("q_lora_rank")
    mla = MLASpec(q_lora_rank=q_lora or None, kv_lora_rank=c.positive("kv_lora_rank"),
                  qk_rope_head_dim=c.positive("qk_rope_head_dim"),
                  qk_nope_head_dim=c.positive("qk_nope_head_dim"), v_head_dim=c.positive("v_head_dim"))
    bias = bool(c.get("attention_bias"))
    experts = c.positive("n_routed_experts")
    shared = c.get("n_shared_experts")
    if shared is None:
        raise ClusteroptError(f"{c.where}.n_shared_experts", "missing (null)",
                              "the transformers class sizes the shared expert from it; give an integer >= 0")
    moe_ffn = c.positive("moe_intermediate_size")
    first_k = c.get("first_k_dense_replace") or 0
    moe = None
    if first_k < d["num_layers"]:
        moe = MoESpec(num_experts=experts, experts_per_token=c.positive("num_experts_per_tok"),
                      expert_ffn_size=moe_ffn, num_shared_experts=shared, shared_ffn_size=shared * moe_ffn,
                      first_k_dense=first_k)
    return d | dict(
        attention="mla", mla=mla, qkv_bias=bias, attn_out_bias=bias, ffn_kind="gated",
        ffn_size=c.positive("intermediate_size"), activation=c.get("hidden_act"),
        ffn_bias=bool(c.get("mlp_bias", False)), norm_kind="rmsnorm", position="rope",
        max_position_embeddings=c.positive("max_position_embeddings"), moe=moe,
        tie_word_embeddings=c.get("tie_word_embeddings"))


_BUILDERS: dict[str, Callable[[_Config], dict]] = {
    "gpt2": _gpt2, "gptj": _gptj, "gpt_neox": _gpt_neox, "opt": _opt, "bloom": _bloom,
    "falcon": _falcon, "llama": _llama, "mistral": _mistral, "mixtral": _mixtral, "qwen2": _qwen2,
    "qwen2_moe": _qwen2_moe, "gemma": _gemma, "gemma2": _gemma2, "phi": _phi, "phi3": _phi3,
    "t5": _t5, "bert": _bert, "deepseek_v2": _deepseek, "deepseek_v3": _deepseek,
}
assert set(_BUILDERS) == set(_DEFAULTS) == set(_CLASSES)

_FAMILY = {"gpt2": "gpt2", "gptj": "gpt-j", "gpt_neox": "gpt-neox", "opt": "opt", "bloom": "bloom",
           "falcon": "falcon", "llama": "llama", "mistral": "mistral", "mixtral": "mixtral",
           "qwen2": "qwen2", "qwen2_moe": "qwen2-moe", "gemma": "gemma", "gemma2": "gemma2",
           "phi": "phi", "phi3": "phi3", "t5": "t5", "bert": "bert", "deepseek_v2": "deepseek-v2",
           "deepseek_v3": "deepseek-v3"}


def is_hf_config(data: dict) -> bool:
    """Whether a dict looks like a Hugging Face config (it names a model_type)."""
    return isinstance(data, dict) and "model_type" in data


def spec_from_hf_dict(cfg: dict, name: str = "", source: str = "", where: str = "config.json",
                      **overrides: Any) -> ModelSpec:
    """A ModelSpec from a Hugging Face config dict (see the module docstring)."""
    if not isinstance(cfg, dict):
        raise ClusteroptError(where, f"expected a JSON object, got {type(cfg).__name__}",
                              "a Hugging Face config.json object ({...})")
    model_type = cfg.get("model_type")
    if model_type not in _BUILDERS:
        raise ClusteroptError(f"{where}.model_type", f"unsupported model_type {model_type!r}",
                              "supported: " + ", ".join(SUPPORTED_MODEL_TYPES))
    archs = cfg.get("architectures") or []
    cls = archs[0] if archs else _CLASSES[model_type][0]
    if cls not in _CLASSES[model_type]:
        if cls.endswith(_LM_SUFFIXES):
            cls = _CLASSES[model_type][0]          # e.g. Falcon's legacy 'RWForCausalLM': same weights
        else:
            raise ClusteroptError(f"{where}.architectures", f"unsupported class {cls!r} for {model_type}",
                                  "supported: " + ", ".join(_CLASSES[model_type]))
    c = _Config({**cfg, "_hf_class": cls}, model_type, where)
    fields = _BUILDERS[model_type](c)
    if cls.endswith("Model") and not cls.endswith("LMHeadModel") and model_type != "bert":
        fields["lm_head"] = False                      # bare backbone (e.g. LlamaModel)
    fields.update(name=name or cfg.get("_name_or_path") or model_type, model_type=model_type,
                  family=_FAMILY[model_type], source=source)
    fields.update(overrides)
    try:
        return ModelSpec(**fields)
    except ValidationError as exc:
        raise from_pydantic(exc, prefix=where) from None


def from_hf_config(path: str | Path | dict, name: str = "") -> ModelSpec:
    """Read a local Hugging Face ``config.json`` (path, or an already-parsed dict) into a ModelSpec.

    No network access. Raises ClusteroptError for an unreadable file, an unsupported
    ``model_type`` (listing the supported ones) or a missing structural size (naming it).
    """
    if isinstance(path, dict):
        return spec_from_hf_dict(path, name=name, source="inline config")
    p = Path(path)
    if p.is_dir():
        p = p / "config.json"
    from optimizer.inputs import load_json, read_text

    cfg = load_json(read_text(p, "model", "Hugging Face config.json"), "model", str(p))
    return spec_from_hf_dict(cfg, name=name or p.parent.name or p.stem, source=str(p), where=p.name)
