"""The training estimate (optimizer/formulas/training.py): the array path used by the
search equals the scalar path, the step-time identity, structural rules, and days/GPU-hours."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from optimizer.errors import ClusteroptError
from optimizer.formulas.hardware import Hardware
from optimizer.formulas.layout import TrainLayout
from optimizer.formulas.training import (BATCH_KEYS, SEARCH_RULE_PREFIX, estimate_training,
                                         estimate_training_batch, gpu_hours, layout_violations,
                                         train_days)
from optimizer.model.spec import ModelSpec, MoESpec
from optimizer.units import GIB, SECONDS_PER_DAY, TERA


def h100() -> Hardware:
    return Hardware(name="H100-test", memory_bytes=80 * GIB, hbm_bytes_per_s=3.35e12, fp32_flop_per_s=67 * TERA,
                    tf32_flop_per_s=495 * TERA, bf16_flop_per_s=989.4 * TERA, fp8_flop_per_s=1978.9 * TERA,
                    int8_op_per_s=1978.9 * TERA, intra_node_bytes_per_s=450e9, intra_node_domain=8,
                    gpus_per_node=8, inter_node_bytes_per_s=50e9, tdp_w=700)


DENSE = ModelSpec(name="dense", vocab_size=128256, hidden_size=4096, num_layers=30, num_heads=32,
                  num_kv_heads=8, ffn_kind="gated", ffn_size=14336)
MOE = ModelSpec(name="moe", vocab_size=32000, hidden_size=2048, num_layers=13, num_heads=16, num_kv_heads=4,
                ffn_kind="gated", ffn_size=8192,
                moe=MoESpec(num_experts=16, experts_per_token=2, expert_ffn_size=1408, num_shared_experts=2,
                            shared_ffn_size=2816, first_k_dense=1))

CATEGORICAL = [
    dict(zero=0, recompute="none", sequence_parallel=False, precision="bf16", optimizer="adam", flash_attention=True),
    dict(zero=1, recompute="selective", sequence_parallel=True, precision="fp8", optimizer="adam8bit",
         flash_attention=False),
    dict(zero=2, recompute="full", sequence_parallel=True, precision="bf16", optimizer="sgd", flash_attention=True,
         offload_optimizer=True),
    dict(zero=3, recompute="full", sequence_parallel=False, precision="bf16", optimizer="adafactor",
         flash_attention=True, overlap_grad_reduce=False, tp_comm_overlap=True),
]


def _random_layouts(rng, n, moe: bool):
    arr = {
        "tp": rng.choice([1, 2, 4, 8, 16], n), "pp": rng.choice([1, 2, 3, 4, 5, 8, 13], n),
        "dp": rng.choice([1, 2, 4, 8, 32], n), "cp": rng.choice([1, 1, 2, 4], n),
        "micro_batch": rng.choice([1, 2, 4], n), "interleave": rng.choice([1, 1, 2], n),
        "seq_len": rng.choice([2048, 4096, 8192], n),
    }
    arr["ep"] = rng.choice([1, 2, 4], n) if moe else np.ones(n, dtype=int)
    arr["global_batch"] = arr["micro_batch"] * arr["dp"] * rng.choice([1, 3, 16], n)
    return arr


@pytest.mark.parametrize("spec", [DENSE, MOE], ids=["dense", "moe"])
@pytest.mark.parametrize("cat", CATEGORICAL, ids=["z0", "z1-fp8", "z2-offload", "z3-overlaps"])
def test_array_path_equals_scalar_path(spec, cat):
    rng = np.random.default_rng(7)
    arr = _random_layouts(rng, 40, spec.moe is not None)
    batch = estimate_training_batch(spec, h100(), arr, cat)
    assert set(batch) == set(BATCH_KEYS)
    lay_cat = {k: v for k, v in cat.items() if k not in ("overlap_grad_reduce", "tp_comm_overlap")}
    fw = {k: v for k, v in cat.items() if k in ("overlap_grad_reduce", "tp_comm_overlap")}
    for i in range(40):
        lay = TrainLayout(**{k: int(v[i]) for k, v in arr.items()}, **lay_cat)
        e = estimate_training(spec, h100(), lay, **fw)
        scalar = {"memory_per_gpu_bytes": e.memory.total, "step_time_s": e.step_time_s,
                  "compute_time_s": e.compute_time_s, "exposed_comm_time_s": e.exposed_comm_time_s,
                  "bubble_time_s": e.bubble_time_s, "tokens_per_s": e.tokens_per_s, "mfu": e.mfu, "hfu": e.hfu,
                  "memory_activations_bytes": e.memory.activations, "memory_weights_bytes": e.memory.weights,
                  "comm_dp_exposed_s": e.comm.dp_exposed_s, "comm_tp_s": e.comm.tp_s}
        for k, v in scalar.items():
            assert batch[k][i] == pytest.approx(v, rel=1e-12), (k, i)


def test_step_time_is_sum_of_parts_and_memory_parts_sum():
    rng = np.random.default_rng(1)
    arr = _random_layouts(rng, 200, False)
    r = estimate_training_batch(DENSE, h100(), arr, CATEGORICAL[1])
    np.testing.assert_allclose(r["step_time_s"], r["compute_time_s"] + r["exposed_comm_time_s"] + r["bubble_time_s"])
    parts = sum(r[f"memory_{p}_bytes"] for p in ("weights", "gradients", "optimizer_states", "activations",
                                                  "logits", "comm_buffers", "reserve"))
    np.testing.assert_allclose(parts, r["memory_per_gpu_bytes"])
    assert np.all(r["mfu"] > 0) and np.all(r["mfu"] < 1)
    exposed = sum(r[f"comm_{k}_exposed_s"] for k in ("tp", "ep", "cp", "dp", "pp"))
    np.testing.assert_allclose(exposed, r["exposed_comm_time_s"])


def test_tokens_per_s_and_days():
    lay = TrainLayout(seq_len=4096, global_batch=512, tp=2, pp=2, dp=16, micro_batch=2, zero=1,
                      sequence_parallel=True)
    e = estimate_training(DENSE, h100(), lay)
    assert e.tokens_per_s == pytest.approx(512 * 4096 / e.step_time_s)
    assert train_days(e, 1e12) == pytest.approx(1e12 / e.tokens_per_s / SECONDS_PER_DAY)
    assert gpu_hours(e, 1e12) == pytest.approx(64 * train_days(e, 1e12) * 24)
    assert e.grad_accum == 512 // (2 * 16)
    # MFU definition: model FLOPs x tokens/s / (GPUs x peak)
    assert e.model_tflops_per_gpu * TERA / (989.4 * TERA) == pytest.approx(e.mfu)


def test_efficiency_scale_speeds_up_compute():
    lay = TrainLayout(seq_len=4096, global_batch=256, tp=1, pp=1, dp=8, micro_batch=1, zero=1)
    base = estimate_training(DENSE, h100(), lay)
    fast = estimate_training(DENSE, h100(), lay, efficiency_scale=1.25)
    # the optimizer step is memory-bound and unscaled; the rest of compute scales by 1/1.25
    assert fast.compute_time_s < base.compute_time_s
    assert fast.compute_time_s > base.compute_time_s / 1.25 - 1e-9
    with pytest.raises(ClusteroptError, match="efficiency_scale"):
        estimate_training(DENSE, h100(), lay, efficiency_scale=0)


def test_not_fitting_is_not_an_error():
    lay = TrainLayout(seq_len=8192, global_batch=64, tp=1, pp=1, dp=1, micro_batch=8, recompute="none")
    e = estimate_training(DENSE, h100(), lay)
    assert e.memory.total > h100().memory_bytes


def test_bad_categorical_values_raise_named_errors():
    arr = {"seq_len": [2048], "global_batch": [8]}
    with pytest.raises(ClusteroptError, match="recompute"):
        estimate_training_batch(DENSE, h100(), arr, {"recompute": "partial"})
    with pytest.raises(ClusteroptError, match="zero"):
        estimate_training_batch(DENSE, h100(), arr, {"zero": 5})
    with pytest.raises(ClusteroptError, match="precision"):
        estimate_training_batch(DENSE, h100(), arr, {"precision": "fp4"})
    with pytest.raises(ClusteroptError, match="tp"):
        estimate_training_batch(DENSE, h100(), {**arr, "tp": [0]}, {})


@pytest.mark.parametrize("layout, n_gpus, needle", [
    (dict(tp=3), None, "does not divide the 32 attention heads"),
    (dict(tp=16, dp=1), None, "search rule: tp=16 spans more than one NVLink domain"),
    (dict(pp=31), None, "exceeds the 30 layers"),
    (dict(dp=3), None, "not divisible by micro_batch x dp"),
    (dict(cp=3), None, "not divisible by 2 x cp"),
    (dict(ep=2), None, "dense model"),
    (dict(interleave=2, pp=4), None, "interleave=2 needs pp > 1 and layers (30) divisible"),
    (dict(tp=2, dp=4), 16, "= 8, not the 16 GPUs"),
])
def test_layout_violations(layout, n_gpus, needle):
    base = dict(seq_len=4096, global_batch=64)
    msgs = layout_violations(DENSE, h100(), TrainLayout(**base, **layout), n_gpus=n_gpus)
    assert any(needle in m for m in msgs), msgs


def test_layout_violations_kv_heads_and_ep():
    ok = TrainLayout(seq_len=4096, global_batch=64, tp=16, dp=4)          # kv 8: replicated at tp 16
    assert not [m for m in layout_violations(DENSE, h100(), ok) if not m.startswith(SEARCH_RULE_PREFIX)]
    moe_bad = TrainLayout(seq_len=4096, global_batch=64, dp=4, ep=3)
    msgs = layout_violations(MOE, h100(), moe_bad)
    assert any("does not divide the 16 routed experts" in m for m in msgs)
    assert any("ep=3 does not fit the 4 GPUs of a stage" in m for m in msgs)
    assert layout_violations(MOE, h100(), TrainLayout(seq_len=4096, global_batch=64, dp=4, ep=4)) == []
    # EP beyond DP x CP folds into TP (expert TP = TP x DP x CP / EP = 1 here): Megatron-Bridge's
    # Qwen3-235B recipe runs EP 32 at TP 2, DP 16; EP 16 at TP 2, DP 4 does not fit 8 GPUs
    assert layout_violations(MOE, h100(), TrainLayout(seq_len=4096, global_batch=64, tp=2, dp=4, ep=8)) == []
    assert any("ep=16 does not fit" in m for m in
               layout_violations(MOE, h100(), TrainLayout(seq_len=4096, global_batch=64, tp=2, dp=4, ep=16)))
    assert layout_violations(DENSE, h100(), ok, search_rules=False) == []


@settings(max_examples=30, deadline=None)
@given(m=st.sampled_from([8, 16, 32, 64, 128]), pp=st.sampled_from([2, 4, 8]))
def test_more_microbatches_shrink_the_bubble_share(m, pp):
    lay = lambda gb: TrainLayout(seq_len=2048, global_batch=gb, tp=1, pp=pp, dp=2, micro_batch=1)  # noqa: E731
    a = estimate_training(DENSE, h100(), lay(2 * m))
    b = estimate_training(DENSE, h100(), lay(4 * m))
    assert b.bubble_time_s / b.step_time_s <= a.bubble_time_s / a.step_time_s + 1e-12
