"""Parameter-count breakdown (formulas/params.py) and ModelSpec validation (issue 2).

Exactness against the real model classes is in test_model_import.py; here: parts sum to
totals, closed forms from the papers, MoE placement, and monotonic properties.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from optimizer.errors import ClusteroptError
from optimizer.formulas.params import count_params, layer_active_params
from optimizer.model import ModelSpec, MoESpec, get_preset, list_presets, load_model
from optimizer.model.hf import spec_from_hf_dict

DATA = Path(__file__).parent / "data"
VARIANTS = json.loads((DATA / "params_variants_reference.json").read_text())["cases"]


def _all_specs():
    specs = [get_preset(p.name) for p in list_presets()]
    specs += [spec_from_hf_dict(c["config"], name=n) for n, c in sorted(VARIANTS.items())]
    return specs


@pytest.mark.parametrize("spec", _all_specs(), ids=lambda s: s.name)
def test_parts_sum_to_totals(spec):
    c = count_params(spec)
    assert c.total == (c.embedding + c.position + c.projection + c.attention + c.ffn + c.norm
                       + c.lm_head + c.pooler + c.vision)
    assert (c.vision > 0) == (spec.vision is not None)
    assert len(c.layers) == spec.num_layers + spec.num_encoder_layers
    for lp in c.layers:
        assert lp.total == lp.attention + lp.ffn_dense + lp.experts_routed + lp.experts_shared + lp.router + lp.norm
        assert lp.active <= lp.total
        assert (lp.active == lp.total) == (not lp.is_moe or spec.moe.experts_per_token == spec.moe.num_experts)
    assert c.attention == sum(lp.attention for lp in c.layers)
    assert c.ffn == sum(lp.ffn_dense + lp.experts_routed + lp.experts_shared + lp.router for lp in c.layers)
    assert c.experts_routed == sum(lp.experts_routed for lp in c.layers)
    assert c.non_expert == c.total - c.experts_routed
    assert c.active == c.total - sum(lp.total - lp.active for lp in c.layers)
    if spec.moe is None:
        assert c.active == c.total and c.experts_routed == 0


def test_gpt2_closed_form():
    # GPT-2 block (Radford et al. 2019; the nanoGPT count): ln_1 2h, c_attn 3h^2+3h, c_proj h^2+h,
    # ln_2 2h, c_fc 4h^2+4h, c_proj 4h^2+h = 12h^2 + 13h; plus wte V*h, wpe P*h, ln_f 2h; head tied.
    for name, h, L in (("gpt2-124m", 768, 12), ("gpt2-1.5b", 1600, 48)):
        V, P = 50257, 1024
        assert count_params(get_preset(name)).total == V * h + P * h + L * (12 * h * h + 13 * h) + 2 * h


def test_llama_closed_form():
    # LLaMA (Touvron et al. 2023, Table 2: 6.7B): untied embedding and head 2*V*h, per layer
    # q,k,v,o 4h^2 + SwiGLU 3*h*f + two RMSNorm weights 2h, final norm h.
    V, h, L, f = 32000, 4096, 32, 11008
    c = count_params(get_preset("llama-7b"))
    assert c.total == 2 * V * h + L * (4 * h * h + 3 * h * f + 2 * h) + h
    assert c.lm_head == c.embedding == V * h


def test_moe_expert_split_mixtral():
    # Mixtral (Jiang et al. 2024, Sec. 2): 8 SwiGLU experts of 3*h*f per layer, top-2 routing.
    h, f, L, E, k = 4096, 14336, 32, 8, 2
    c = count_params(get_preset("mixtral-8x7b"))
    assert c.experts_routed == L * E * 3 * h * f
    assert c.total - c.active == L * (E - k) * 3 * h * f
    assert layer_active_params(get_preset("mixtral-8x7b"), 0) == c.layers[0].total - (E - k) * 3 * h * f


def test_moe_layer_placement():
    ds = get_preset("deepseek-v3")                  # first_k_dense_replace = 3
    assert ds.moe_layers() == tuple(range(3, 61))
    assert [lp.is_moe for lp in count_params(ds).layers[:4]] == [False, False, False, True]
    # Qwen2-MoE rule: MoE when (i + 1) % decoder_sparse_step == 0 and i not in mlp_only_layers.
    q = spec_from_hf_dict(VARIANTS["qwen2moe-sparse"]["config"])   # step 2, mlp_only_layers [3], 6 layers
    assert q.moe_layers() == (1, 5)
    assert get_preset("mixtral-8x7b").moe_layers() == tuple(range(32))
    assert get_preset("llama-3-8b").moe_layers() == ()


def test_encoder_decoder_layer_order():
    t5 = get_preset("t5-base")
    layers = count_params(t5).layers
    assert [lp.is_encoder for lp in layers] == [True] * 12 + [False] * 12
    # a decoder layer has self- and cross-attention (same shapes) and one more norm
    assert layers[12].attention == 2 * layers[0].attention
    assert layers[12].norm == layers[0].norm + t5.hidden_size


def _tiny(**kw) -> ModelSpec:
    base = dict(name="t", vocab_size=100, hidden_size=64, num_layers=2, num_heads=4, ffn_size=128)
    return ModelSpec(**(base | kw))


@settings(max_examples=40, deadline=None)
@given(layers=st.integers(1, 8), ffn=st.integers(1, 512), vocab=st.integers(1, 5000), extra=st.integers(1, 5))
def test_total_grows_with_every_size(layers, ffn, vocab, extra):
    base = count_params(_tiny(num_layers=layers, ffn_size=ffn, vocab_size=vocab)).total
    assert count_params(_tiny(num_layers=layers + extra, ffn_size=ffn, vocab_size=vocab)).total > base
    assert count_params(_tiny(num_layers=layers, ffn_size=ffn + extra, vocab_size=vocab)).total > base
    assert count_params(_tiny(num_layers=layers, ffn_size=ffn, vocab_size=vocab + extra)).total > base


@settings(max_examples=30, deadline=None)
@given(experts=st.integers(2, 64), data=st.data())
def test_active_grows_with_top_k_and_total_does_not(experts, data):
    k = data.draw(st.integers(1, experts - 1))
    def spec(top_k):
        return _tiny(moe=MoESpec(num_experts=experts, experts_per_token=top_k, expert_ffn_size=32))
    a, b = count_params(spec(k)), count_params(spec(k + 1))
    assert b.active > a.active and b.total == a.total and a.active < a.total


@pytest.mark.parametrize("fields, field", [
    ({"num_heads": 5}, "num_heads"),                 # 64 not divisible by 5
    ({"num_kv_heads": 3}, "num_kv_heads"),           # 3 does not divide 4 heads
    ({"hidden_size": 0}, "hidden_size"),
    ({"num_layers": -1}, "num_layers"),
    ({"ffn_kind": "moe"}, "ffn_kind"),
    ({"position": "sinusoid"}, "position"),
    ({"attention": "mla"}, "mla"),                   # mla needs its sizes
    ({"moe": {"num_experts": 4, "experts_per_token": 8, "expert_ffn_size": 8}}, "experts_per_token"),
])
def test_spec_validation_names_the_field(fields, field):
    base = dict(name="t", vocab_size=100, hidden_size=64, num_layers=2, num_heads=4, ffn_size=128)
    with pytest.raises(ClusteroptError) as err:
        load_model(base | fields)
    assert field in str(err.value)
