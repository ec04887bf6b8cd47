"""Training memory per GPU (optimizer/formulas/memory.py) against the ZeRO paper, the
closed forms of Korthikanti et al. 2022, and monotonic invariants (hypothesis)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from optimizer.errors import ClusteroptError
from optimizer.formulas import memory as M
from optimizer.formulas.layout import TrainLayout
from optimizer.formulas.training import estimate_training
from optimizer.model.spec import ModelSpec, MoESpec
from optimizer.units import GB

DATA = Path(__file__).parent / "data"


def gpt(layers=24, hidden=2048, heads=16, vocab=51200, seq=2048, kv=None) -> ModelSpec:
    return ModelSpec(name="gpt-test", vocab_size=vocab, hidden_size=hidden, num_layers=layers,
                     num_heads=heads, num_kv_heads=kv, ffn_kind="mlp", ffn_size=4 * hidden,
                     norm_kind="layernorm", norm_bias=True, position="learned",
                     max_position_embeddings=seq, tie_word_embeddings=True)


def llama_like() -> ModelSpec:
    return ModelSpec(name="llama-test", vocab_size=32000, hidden_size=4096, num_layers=32, num_heads=32,
                     num_kv_heads=8, ffn_kind="gated", ffn_size=14336)


def moe_like() -> ModelSpec:
    return ModelSpec(name="moe-test", vocab_size=32000, hidden_size=4096, num_layers=32, num_heads=32,
                     num_kv_heads=8, ffn_kind="gated", ffn_size=14336,
                     moe=MoESpec(num_experts=8, experts_per_token=2, expert_ffn_size=14336))


def hw():
    from optimizer.formulas.hardware import Hardware
    from optimizer.units import GIB, TERA
    return Hardware(name="H100-test", memory_bytes=80 * GIB, hbm_bytes_per_s=3.35e12,
                    fp32_flop_per_s=67 * TERA, tf32_flop_per_s=495 * TERA, bf16_flop_per_s=989.4 * TERA,
                    fp8_flop_per_s=1978.9 * TERA, int8_op_per_s=1978.9 * TERA,
                    intra_node_bytes_per_s=450e9, intra_node_domain=8, gpus_per_node=8,
                    inter_node_bytes_per_s=50e9, tdp_w=700)


# --- ZeRO (Rajbhandari et al. 2020, Fig. 1) -----------------------------------------------

@pytest.mark.parametrize("stage, expected_gb", [
    # Fig. 1: Psi = 7.5B, N_d = 64, K = 12, fp16 weights and gradients: 2+2+12 = 16 B/param
    (0, 120.0),     # (2 + 2 + K) Psi = 16 x 7.5B
    (1, 31.4),      # 2Psi + 2Psi + K Psi / N_d = 15 + 15 + 1.41
    (2, 16.6),      # 2Psi + (2 + K) Psi / N_d = 15 + 1.64
    (3, 1.9),       # (2 + 2 + K) Psi / N_d = 1.875
])
def test_zero_fig1_bytes_per_gpu(stage, expected_gb):
    w, g, o = M.zero_model_state_bytes(7.5e9, stage, 64, weight_bytes=2, grad_bytes=2, optimizer_bytes=12)
    assert (w + g + o) / GB == pytest.approx(expected_gb, abs=0.05)   # the figure rounds to 0.1 GB


def test_optimizer_state_bytes_per_param():
    # Adam K = 12 (ZeRO Sec. 3.1); SGD momentum 4 + 4; 8-bit Adam 4 + 1 + 1; Adafactor 4
    assert [M.optimizer_bytes_per_param(k) for k in ("adam", "sgd", "adam8bit", "adafactor")] == [12, 8, 6, 4]
    with pytest.raises(ClusteroptError, match="optimizer"):
        M.optimizer_bytes_per_param("lion")


def test_offload_moves_optimizer_states_off_gpu():
    _, _, o = M.zero_model_state_bytes(1e9, 1, 8, offload_optimizer=True)
    assert o == 0


# --- activations: Korthikanti et al. 2022, Table 2 ------------------------------------------

def _table2_rows():
    with open(DATA / "korthikanti_table2.csv") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("row", _table2_rows(), ids=lambda r: f"{r['model']}-{r['form']}")
def test_activation_per_layer_matches_korthikanti_table2(row):
    # GPT shapes (MHA widths = h, FFN 4h, dropout, no flash) must give the paper's closed form
    got = M.activation_bytes_per_layer(
        int(row["seq_len"]), int(row["micro_batch"]), int(row["hidden"]), int(row["heads"]),
        int(row["tp_used"]), sequence_parallel=row["sequence_parallel"] == "yes",
        recompute=row["recompute"], flash_attention=False)
    assert got == pytest.approx(float(row["expected_bytes_per_layer"]), rel=1e-12)


def test_flash_attention_removes_the_s2_term():
    s, b, h, a, t = 8192, 1, 4096, 32, 4
    none = M.activation_bytes_per_layer(s, b, h, a, t, sequence_parallel=True, flash_attention=False)
    flash = M.activation_bytes_per_layer(s, b, h, a, t, sequence_parallel=True, flash_attention=True)
    # flash keeps only the fp32 log-sum-exp (4asb/t) instead of 5as^2b/t
    assert none - flash == pytest.approx(5 * a * s * s * b / t - 4 * a * s * b / t)


def test_gqa_and_gated_ffn_widths():
    # Llama-3-8B-like: q 4096, k = v = 8 x 128 = 1024, gated FFN 14336, TP+SP t = 1, no dropout
    s, b, h, a = 4096, 1, 4096, 32
    got = M.activation_bytes_per_layer(s, b, h, a, 1, q_width=4096, kv_width=1024, kv_heads=8,
                                       ffn_size=14336, gated_ffn=True, dropout=False, flash_attention=True)
    # norms 2+2, QKV input 2, FFN input 2 (8sbh); Q 2*4096, K, V 2*1024 each, out-proj in 2*4096;
    # gated FFN 6 * 14336; LSE 4as
    expected = s * b * (8 * h + 2 * (4096 + 1024 + 1024 + 4096) + 6 * 14336) + 4 * a * s * b
    assert got == pytest.approx(expected)


def test_kv_heads_replicated_when_tp_exceeds_them():
    kw = dict(q_width=4096, kv_width=1024, kv_heads=8, flash_attention=True, sequence_parallel=True)
    at8 = M.activation_bytes_per_layer(4096, 1, 4096, 32, 8, **kw)
    at16 = M.activation_bytes_per_layer(4096, 1, 4096, 32, 16, **kw)
    # at t = 16 each rank still holds one whole KV head (128 wide) for K and V
    k_v_16 = 2 * 2 * 4096 * 128
    assert at16 > at8 / 2 and at16 - k_v_16 == pytest.approx(
        M.activation_bytes_per_layer(4096, 1, 4096, 32, 16, q_width=4096, kv_width=0, v_width=0,
                                     flash_attention=True, sequence_parallel=True))


def test_context_parallel_divides_the_sequence():
    base = M.activation_bytes_per_layer(8192, 1, 4096, 32, 1, flash_attention=True)
    cp4 = M.activation_bytes_per_layer(8192, 1, 4096, 32, 1, flash_attention=True, cp=4)
    assert cp4 == pytest.approx(base / 4)


def test_moe_layer_counts_top_k_experts():
    dense = M.activation_bytes_per_layer(4096, 1, 4096, 32, 1, ffn_size=14336, gated_ffn=True,
                                         flash_attention=True, dropout=False)
    moe = M.activation_bytes_per_layer(4096, 1, 4096, 32, 1, gated_ffn=True, flash_attention=True,
                                       dropout=False, moe_top_k=2, expert_ffn_size=14336, num_experts=8)
    # two expert intermediates (6sbf each) + two dispatched copies (2sbh) + fp32 router logits (4sbE)
    s = 4096
    assert moe - dense == pytest.approx(s * (6 * 14336 + 2 * 2 * 4096 + 4 * 8))


def test_pipeline_inflight_microbatches():
    # 1F1B: stage i holds pp - i micro-batches (Narayanan 2021 Sec. 2.2.1), capped by m
    assert M.pipeline_inflight_microbatches(8, 0, 64) == 8
    assert M.pipeline_inflight_microbatches(8, 7, 64) == 1
    assert M.pipeline_inflight_microbatches(8, 0, 3) == 3
    # interleaved: stage 0 holds pp (1 + (pp - 1)/(pp v)) (Korthikanti Sec. 4.2.3)
    pp, v = 8, 3
    assert M.pipeline_inflight_microbatches(pp, 0, 64, v) == pytest.approx(pp * (1 + (pp - 1) / (pp * v)))


def test_first_stage_activations_match_korthikanti_sec_4_2_3():
    # GPT-3 175B, t = 8, p = 8, SP + selective, b = 1, no flash: the first stage stores
    # sbhL/t * 34 for its L/p layers x p micro-batches, plus the embedding dropout mask
    # (Sec. 4.3, sbhp/t) and the working set of the one layer whose scores are recomputed.
    spec = gpt(layers=96, hidden=12288, heads=96, seq=2048)
    s, b, h, a, t, p = 2048, 1, 12288, 96, 8, 8
    lay = TrainLayout(seq_len=s, global_batch=64, tp=t, pp=p, dp=1, micro_batch=b, recompute="selective",
                      sequence_parallel=True, flash_attention=False)
    parts = M.stage_memory_arrays(spec, seq_len=s, micro_batch=b, tp=t, pp=p, dp=1, cp=1, ep=1, interleave=1,
                                  micro_batches=64, zero=0, recompute="selective", sequence_parallel=True,
                                  precision="bf16", optimizer="adam", offload_optimizer=False,
                                  flash_attention=False)
    korthikanti = s * b * h * 96 / t * 34
    # + the backward's re-gathered SP inputs of the attention and FFN GEMMs (Sec. 4.2.2),
    # 2sbh each beyond the stored shard
    extras = s * b * h * p / t + 5 * a * s * s * b / t + 2 * 2 * s * b * h * (1 - 1 / t)
    assert parts["activations"][0, 0] == pytest.approx(korthikanti + extras)
    assert lay.n_gpus == 64


def test_logits_buffer():
    # b s V / t in bf16 and fp32 (Korthikanti Sec. 4.3 counts the fp32 4sbv/t)
    assert M.logits_bytes(4096, 2, 128256, 4) == pytest.approx(6 * 4096 * 2 * 128256 / 4)


def test_uneven_stages_take_ceil_first():
    assert list(M.stage_layer_counts(10, 4)) == [3, 3, 2, 2]
    assert list(M.stage_layer_counts(8, 8)) == [1] * 8


# --- the breakdown on the most loaded GPU ----------------------------------------------------

def _mem(spec, **kw):
    # one framework throughout (the invariants below hold per framework; 'auto' would switch
    # from FSDP2 to Megatron as soon as a layout uses model parallelism)
    framework = kw.pop("framework", "megatron")
    base = dict(seq_len=4096, global_batch=256, tp=2, pp=4, dp=8, micro_batch=1, zero=1,
                sequence_parallel=True, recompute="selective")
    base.update(kw)
    return estimate_training(spec, hw(), TrainLayout(**base), framework=framework).memory


def test_parts_sum_to_total():
    m = _mem(llama_like())
    assert sum(m.as_dict()[k] for k in M.MEMORY_PARTS) == pytest.approx(m.total)


def test_expert_weights_shard_over_ep():
    m1 = _mem(moe_like(), ep=1, pp=1, zero=0)
    m8 = _mem(moe_like(), ep=8, pp=1, zero=0)
    # routed experts: 32 layers x 8 experts x 3 x 4096 x 14336 weights, / tp = 2, bf16
    experts = 32 * 8 * 3 * 4096 * 14336 / 2 * 2
    assert m1.weights - m8.weights == pytest.approx(experts * (1 - 1 / 8))


def test_tied_embedding_copy_on_last_stage():
    spec = gpt(layers=8, hidden=1024, heads=16, vocab=50000)
    one = M.stage_structure(spec, 1)
    two = M.stage_structure(spec, 2)
    # pp = 1: the tied matrix once; pp = 2: stage 0 embedding and a copy on the last stage
    assert two.tp_params.sum() - one.tp_params.sum() == 50000 * 1024


def test_fp8_adds_weight_copies():
    b = _mem(llama_like(), precision="bf16")
    f = _mem(llama_like(), precision="fp8")
    assert f.weights > b.weights


def test_bad_choices_raise_named_errors():
    with pytest.raises(ClusteroptError, match="recompute"):
        M.activation_bytes_per_layer(2048, 1, 1024, 16, 1, recompute="some")
    with pytest.raises(ClusteroptError, match="zero"):
        M.zero_model_state_bytes(1e9, 4, 8)


# --- monotonic invariants (hypothesis) -------------------------------------------------------

TP_CHOICES = [1, 2, 4, 8]


@settings(max_examples=40, deadline=None)
@given(i=st.integers(0, 2), pp=st.sampled_from([1, 2, 4]), zero=st.integers(0, 3), dp=st.sampled_from([1, 2, 8]))
def test_more_tp_never_more_weight_bytes(i, pp, zero, dp):
    spec = llama_like()
    lo = _mem(spec, tp=TP_CHOICES[i], pp=pp, zero=zero, dp=dp, global_batch=64)
    hi = _mem(spec, tp=TP_CHOICES[i + 1], pp=pp, zero=zero, dp=dp, global_batch=64)
    assert hi.weights <= lo.weights + 1e-6


@settings(max_examples=40, deadline=None)
@given(tp=st.sampled_from(TP_CHOICES), pp=st.sampled_from([1, 2, 4, 8]), mb=st.sampled_from([1, 2, 4]),
       sp=st.booleans(), flash=st.booleans(), seq=st.sampled_from([1024, 4096, 16384]))
def test_recompute_ordering(tp, pp, mb, sp, flash, seq):
    spec = llama_like()
    acts = {r: _mem(spec, tp=tp, pp=pp, micro_batch=mb, sequence_parallel=sp, flash_attention=flash,
                    seq_len=seq, recompute=r, global_batch=64).activations
            for r in ("none", "selective", "full")}
    assert acts["full"] <= acts["selective"] + 1e-6
    assert acts["selective"] <= acts["none"] + 1e-6


@settings(max_examples=40, deadline=None)
@given(tp=st.sampled_from(TP_CHOICES), pp=st.sampled_from([1, 2, 4]), dp=st.sampled_from([1, 2, 8, 64]),
       opt=st.sampled_from(["adam", "sgd", "adam8bit", "adafactor"]), moe=st.booleans())
def test_higher_zero_stage_never_uses_more_memory(tp, pp, dp, opt, moe):
    spec = moe_like() if moe else llama_like()
    ep = 2 if moe and dp % 2 == 0 else 1
    mems = [_mem(spec, tp=tp, pp=pp, dp=dp, ep=ep, zero=z, optimizer=opt, global_batch=64 * dp)
            for z in range(4)]
    states = [m.weights + m.gradients + m.optimizer_states for m in mems]
    assert all(b <= a + 1e-6 for a, b in zip(states, states[1:]))
    # the total too, with ZeRO-3's gather buffers (two layers' weights + one layer's grads,
    # unsharded) counted: they outweigh what sharding saves only when few layers are
    # sharded over few ranks (dp = 2: FSDP then is no memory win, and we say so)
    if dp >= 8:
        assert all(b.total <= a.total + 1e-6 for a, b in zip(mems, mems[1:]))


def test_array_inputs_equal_scalar_inputs():
    s = np.array([2048, 4096, 8192])
    t = np.array([1, 4, 8])
    arr = M.activation_bytes_per_layer(s, 2, 4096, 32, t, sequence_parallel=True)
    for k in range(3):
        assert arr[k] == pytest.approx(M.activation_bytes_per_layer(int(s[k]), 2, 4096, 32, int(t[k]),
                                                                    sequence_parallel=True))


def _torch_rows():
    with open(DATA / "activation_torch_reference.csv") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("row", _torch_rows(), ids=lambda r: "-".join(
    f"{k}{r[k]}" for k in ("tp", "kv_heads", "dropout", "gated", "flash")))
def test_activation_per_layer_matches_pytorch_saved_tensors(row):
    # Independent count: the bytes autograd saves for one layer written op by op in PyTorch
    # (tests/data/activation_refcount.py). Two known differences are taken off: LayerNorm's
    # per-token mean/rstd (left out by Korthikanti), and, for SwiGLU, eager PyTorch's extra
    # copy of silu(gate) (2sbf/t) that Megatron's fused SwiGLU recomputes instead of storing.
    s, b, h, a, f, t, kv = (int(row[k]) for k in ("seq_len", "micro_batch", "hidden", "heads", "ffn_size",
                                                  "tp", "kv_heads"))
    gated = row["gated"] == "yes"
    expected = int(row["saved_bytes"]) - int(row["per_token_stats_bytes"]) - (2 * s * b * f / t if gated else 0)
    got = M.activation_bytes_per_layer(s, b, h, a, t, q_width=h, kv_width=kv * h // a, kv_heads=kv,
                                       ffn_size=f, gated_ffn=gated, dropout=row["dropout"] == "yes",
                                       flash_attention=row["flash"] == "yes")
    assert got == pytest.approx(expected, rel=1e-12)
