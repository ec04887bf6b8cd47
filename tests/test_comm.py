"""Ring alpha-beta collectives and the NVLink/network hierarchy (optimizer/formulas/comm.py)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from optimizer.formulas import comm as C
from optimizer.formulas.hardware import Hardware
from optimizer.units import GB, GIB, TERA


def dgx_a100() -> Hardware:
    # DGX A100: NVLink 600 GB/s bidirectional = 300 one way; 8 x 200 Gb/s HDR = 25 GB/s per GPU
    return Hardware(name="A100-test", memory_bytes=80 * GIB, hbm_bytes_per_s=2.039e12, fp32_flop_per_s=19.5 * TERA,
                    tf32_flop_per_s=156 * TERA, bf16_flop_per_s=312 * TERA, fp8_flop_per_s=0, int8_op_per_s=0,
                    intra_node_bytes_per_s=300 * GB, intra_node_domain=8, gpus_per_node=8,
                    inter_node_bytes_per_s=25 * GB, tdp_w=400)


def test_ring_allreduce_volume():
    # Patarasuk & Yuan 2009: each rank sends and receives 2(n-1)/n of the buffer.
    # 1 GB over 8 ranks at 100 GB/s: 2 * 7/8 * 1e9 / 1e11 = 17.5 ms (+ 14 alpha)
    assert C.allreduce_time_s(1e9, 8, 100e9) == pytest.approx(0.0175)
    assert C.allreduce_time_s(1e9, 8, 100e9, 1e-6) == pytest.approx(0.0175 + 14e-6)


def test_reduce_scatter_plus_all_gather_is_all_reduce():
    # ZeRO Sec. 7: RS + AG moves the same volume as one all-reduce
    for n in (2, 8, 64):
        assert (C.reduce_scatter_time_s(3e9, n, 50e9, 5e-6) + C.allgather_time_s(3e9, n, 50e9, 5e-6)
                == pytest.approx(C.allreduce_time_s(3e9, n, 50e9, 5e-6)))


def test_single_rank_costs_nothing():
    assert C.allreduce_time_s(1e9, 1, 1e9, 1e-5) == 0
    assert C.alltoall_time_s(1e9, 1, 1e9, 1e-5) == 0


def test_group_inside_nvlink_domain():
    bw, alpha = C.group_link(dgx_a100(), 8, 1)
    assert bw == pytest.approx(300 * GB * C.BUS_EFFICIENCY)
    assert alpha == C.ALPHA_INTRA_S


def test_group_across_nodes_one_rank_per_node_uses_one_nic():
    # DP group with TP = 8 inside each node: one rank per node, each on its own NIC
    bw, _ = C.group_link(dgx_a100(), 16, 8)
    assert bw == pytest.approx(25 * GB * C.BUS_EFFICIENCY)


def test_group_across_nodes_eight_ranks_per_node_uses_eight_nics():
    # TP = 16 over two DGX nodes (stride 1): 8 ranks per node, NCCL rings over 8 NICs:
    # min(NVLink 300, 8 x 25 = 200) GB/s - close to the ~185-190 GB/s bus bandwidth NCCL
    # reports for multi-node all-reduce on 8 x HDR DGX A100 clusters
    bw, alpha = C.group_link(dgx_a100(), 16, 1)
    assert bw == pytest.approx(200 * GB * C.BUS_EFFICIENCY)
    # per ring step: of every 8 steps one crosses the network, 7 stay on NVLink
    assert alpha == pytest.approx((C.ALPHA_INTER_S + 7 * C.ALPHA_INTRA_S) / 8)


def test_tp_collectives_per_layer():
    # Shoeybi 2019: 2 all-reduces forward + 2 backward; full recompute repeats the forward's 2
    hw = dgx_a100()
    kw = dict(seq_len=2048, micro_batch=1, hidden=12288, tp=8, cp=1, n_layers=1)
    one = C.allreduce_time_s(2.0 * 2048 * 12288, 8, *C.group_link(hw, 8, 1))
    assert C.tp_comm_per_microbatch_s(hw, recompute="selective", **kw) == pytest.approx(4 * one)
    assert C.tp_comm_per_microbatch_s(hw, recompute="full", **kw) == pytest.approx(6 * one)
    assert C.tp_comm_per_microbatch_s(hw, recompute="none", **{**kw, "tp": 1}) == 0


def test_dp_sync_zero0_allreduce_and_zero1_rs_ag():
    hw = dgx_a100()
    kw = dict(params_on_gpu=1e9, expert_params_on_gpu=0.0, tp=8, cp=1, dp=16, ep=1,
              grad_bytes=4.0, weight_bytes=2.0)
    red0, gat0 = C.dp_grad_sync_s(hw, zero=0, **kw)
    red1, gat1 = C.dp_grad_sync_s(hw, zero=1, **kw)
    bw, a = C.group_link(hw, 16, 8)
    assert red0 == pytest.approx(C.allreduce_time_s(4e9, 16, bw, a)) and gat0 == 0
    assert red1 == pytest.approx(C.reduce_scatter_time_s(4e9, 16, bw, a))
    assert gat1 == pytest.approx(C.allgather_time_s(2e9, 16, bw, a))


def test_pp_p2p_and_ep_alltoall_zero_when_degree_one():
    hw = dgx_a100()
    assert C.pp_p2p_per_microbatch_s(hw, seq_len=2048, micro_batch=1, hidden=4096, tp=1, cp=1, pp=1,
                                     n_gpus=8, sequence_parallel=False) == 0
    assert C.ep_comm_per_microbatch_s(hw, seq_len=2048, micro_batch=1, hidden=4096, tp=1, cp=1, ep=1,
                                      top_k=2, n_moe_layers=32, recompute="none", sequence_parallel=False) == 0


def test_array_inputs():
    n = np.array([1, 2, 8, 64])
    t = C.allreduce_time_s(1e9, n, 10e9)
    assert list(t) == pytest.approx([0.0, 0.1, 0.175, 0.196875])


@settings(max_examples=60, deadline=None)
@given(b=st.floats(1e3, 1e11), n=st.integers(2, 1024), bw=st.floats(1e9, 1e12))
def test_allreduce_monotone_in_bytes_and_ranks(b, n, bw):
    t = C.allreduce_time_s(b, n, bw, 1e-6)
    assert C.allreduce_time_s(b * 2, n, bw, 1e-6) >= t
    assert C.allreduce_time_s(b, n + 1, bw, 1e-6) >= t
    # NCCL's tree may beat a reduce-scatter's ring latency, never the bandwidth term it shares
    assert t >= (n - 1) / n * b / bw
