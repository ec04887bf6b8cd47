"""Serving time: engine passes by roofline, TP collectives, and the steady state of continuous
batching (TTFT, inter-token latency, throughput).

Units: seconds, bytes, FLOPs (1 multiply-add = 2 FLOPs), FLOP/s, bytes/s. Every function is
pure and accepts numpy arrays for its numeric arguments (broadcast element-wise).

A *pass* is one engine iteration (vLLM ``step``, TensorRT-LLM in-flight batching iteration):
the running sequences each decode one token and queued prompts are prefilled in chunks, all
within a budget of ``max_batched_tokens`` tokens (Agrawal et al. 2024, Sarathi-Serve, Sec. 4;
vLLM chunked prefill; TensorRT-LLM ``max_num_tokens``). Its time is the roofline of the work
(Williams et al. 2009): max(bytes read / (HBM bandwidth x achievable fraction),
FLOPs / (peak x achievable fraction)), plus the TP all-reduces and a fixed per-pass overhead.
"""

from __future__ import annotations

import numpy as np

#: Achievable fractions of the datasheet peaks, fitted on the 17 calibration rows of
#: tests/data/serving_public.csv (grid 0.05 apart; minimum median |log error|) and checked on
#: the 14 held-out rows: ``benchmarks/validate_serving.py --fit`` reproduces the fit.
#: HBM: bytes a pass reads (weights + KV) over the datasheet bandwidth. Compute: matmul and
#: attention FLOPs over the dense 16-bit peak; LOW_PRECISION: matmuls on FP8/INT8 tensor cores
#: over their own (2x) peak - engines reach a smaller share of it (FP8 prefill at 0.40 x 1979
#: TFLOP/s on H100 is ~1.15x the 16-bit rate at 0.70, not 2x).
HBM_EFFICIENCY = 0.60
COMPUTE_EFFICIENCY = 0.70
LOW_PRECISION_COMPUTE_EFFICIENCY = 0.40

#: All-reduce inside an NVLink domain, fitted to vLLM's custom all-reduce on 8x H100 SXM
#: (SGLang PR #2904, unit-test table 'vllm', no CUDA graph; TP 2/4/8, messages 512 B - 1 MiB):
#: ~10 us for messages up to 32 KB (8.5-11.8 us), then a slope of 17.6-20.3 us per MB of
#: ring bus volume, i.e. 49-57 GB/s: 0.12 of NVLink 4's 450 GB/s per direction. Above that
#: range engines switch to NCCL's ring/tree, which reaches ~360 GB/s bus bandwidth (0.8 of the
#: link) on large messages (nccl-tests all_reduce_perf on DGX H100).
ALLREDUCE_LATENCY_S = 10e-6
LINK_EFFICIENCY_SMALL = 0.12
LINK_EFFICIENCY = 0.8
#: Ring bus volume up to which the small-message slope holds: 2 (p-1)/p x 1 MiB at p = 8.
SMALL_MESSAGE_BUS_BYTES = 1.75 * 2**20
#: Across nodes (TP spanning servers): NCCL over InfiniBand, several hops (alpha ~ 20-30 us in
#: nccl-tests small-message all-reduce on 2+ nodes).
ALLREDUCE_LATENCY_INTER_NODE_S = 25e-6
#: Fixed host-side cost of one engine pass (scheduling, sampling, launch gaps not hidden by CUDA
#: graphs). 0: on the calibration rows a non-zero value did not lower the error; kept as a knob.
PASS_OVERHEAD_S = 0.0


def piecewise_allreduce_time_s(message_bytes, n_gpus, link_bytes_per_s, *, latency_s=ALLREDUCE_LATENCY_S,
                     link_efficiency=LINK_EFFICIENCY, small_link_efficiency=LINK_EFFICIENCY_SMALL,
                     small_bus_bytes=SMALL_MESSAGE_BUS_BYTES):
    """One all-reduce of ``message_bytes`` over ``n_gpus``: alpha-beta model on the ring bus
    volume 2 (p-1)/p x n (Thakur et al. 2005, Sec. 4; Patarasuk & Yuan 2009), piecewise in the
    bandwidth term: the first ``small_bus_bytes`` of bus volume move at ``small_link_efficiency``
    of the link (latency-optimised one/two-shot kernels), the rest at ``link_efficiency`` (NCCL
    ring). Constants and their measurements: see ALLREDUCE_LATENCY_S. 0 for one GPU.
    Units: seconds.

    The serving network model (small decode messages, latency-optimised kernels); the training
    model of large bucketed messages is ``formulas.comm.allreduce_time_s`` (plain ring alpha-beta).
    """
    p = np.asarray(n_gpus, dtype=float)
    bus = 2.0 * (p - 1.0) / np.maximum(p, 1.0) * np.asarray(message_bytes, dtype=float)
    small = np.minimum(bus, small_bus_bytes)
    with np.errstate(divide="ignore", invalid="ignore"):     # a single device (Jetson) has no link: 0/0
        t = (latency_s + small / (link_bytes_per_s * small_link_efficiency)
             + (bus - small) / (link_bytes_per_s * link_efficiency))
    return np.where(p > 1, t, 0.0)


def roofline_time_s(bytes_moved, flops, hbm_bytes_per_s, flop_per_s, *,
                    hbm_efficiency=HBM_EFFICIENCY, compute_efficiency=COMPUTE_EFFICIENCY):
    """max(bytes / (bandwidth x achievable fraction), FLOPs / (peak x achievable fraction))
    (Williams, Waterman & Patterson 2009, the roofline model). Units: seconds."""
    return np.maximum(np.asarray(bytes_moved, dtype=float) / (hbm_bytes_per_s * hbm_efficiency),
                      np.asarray(flops, dtype=float) / (flop_per_s * compute_efficiency))


def expected_experts_touched(num_experts, experts_per_token, tokens):
    """Expected distinct experts hit by ``tokens`` tokens routed top-k of E experts, picks
    independent and uniform: E * (1 - (1 - k/E)^tokens) (occupancy of E bins after ``tokens``
    draws of k distinct bins; each expert is missed by one token with probability 1 - k/E).
    A decode step reads only these experts' weights. Units: experts.
    """
    e = np.asarray(num_experts, dtype=float)
    return e * (1.0 - (1.0 - experts_per_token / e) ** np.asarray(tokens, dtype=float))


def cohort_size(batch, prompt_len, max_batched_tokens):
    """Prompts prefilled together in one pass in the steady state of continuous batching with
    ``batch`` closed-loop clients of identical lengths.

    The engine admits queued prompts in arrival order until the pass's token budget is spent
    (vLLM v1 scheduler; TensorRT-LLM ``max_num_tokens``); sequences admitted together finish
    together and their clients' next requests arrive together, so the groups persist: each pass
    that prefills takes floor(budget / prompt) prompts, at least 1 and at most ``batch``.
    Units: sequences.
    """
    g = np.floor(np.asarray(max_batched_tokens, dtype=float) / np.asarray(prompt_len, dtype=float))
    return np.clip(g, 1.0, np.asarray(batch, dtype=float))


def prefill_chunks(cohort, prompt_len, decode_seqs, max_batched_tokens):
    """Passes needed to prefill a cohort's prompts when each pass also carries ``decode_seqs``
    decode tokens: ceil(cohort x prompt / (budget - decode_seqs)) (chunked prefill, Sarathi-Serve
    Sec. 4.2). Units: passes."""
    budget = np.maximum(np.asarray(max_batched_tokens, dtype=float) - decode_seqs, 1.0)
    return np.maximum(np.ceil(np.asarray(cohort, dtype=float) * prompt_len / budget), 1.0)


def continuous_batching_steady_state(*, batch, output_len, chunks, cohort, mixed_pass_s, decode_pass_s):
    """Steady state of ``batch`` closed-loop clients served by continuous batching.

    Per cycle (a request's life, arrival to last token) the engine runs every cohort's prefill
    passes (n_mix = ceil(batch / cohort) x chunks, each also decoding the other sequences) and
    pure decode passes for the rest of the request's output_len - 1 tokens:
        n_dec = max(0, (output_len - 1) - (n_mix - chunks))
        cycle = n_mix x mixed_pass + n_dec x decode_pass.
    TTFT is the cycle minus the request's own decode span: ``chunks`` mixed passes when prefill
    fits between decodes; when other cohorts' prefills outnumber the request's decode tokens, the
    excess is queueing before its prefill. Throughput follows from Little's law:
    requests/s = batch / cycle, output tokens/s = batch x output_len / cycle.
    Returns (ttft_s, cycle_s, tpot_s) with tpot = (cycle - ttft) / (output_len - 1), the mean gap
    between a request's tokens including prefill interference. Units: seconds.
    """
    o = np.asarray(output_len, dtype=float)
    n_cohorts = np.ceil(np.asarray(batch, dtype=float) / cohort)
    n_mix = n_cohorts * chunks
    others = n_mix - chunks
    own_mixed = np.minimum(o - 1.0, others)
    n_dec = np.maximum(0.0, (o - 1.0) - others)
    cycle = n_mix * mixed_pass_s + n_dec * decode_pass_s
    own_decode = own_mixed * mixed_pass_s + n_dec * decode_pass_s
    ttft = cycle - own_decode
    tpot = np.where(o > 1, own_decode / np.maximum(o - 1.0, 1.0), 0.0)
    return ttft, cycle, tpot


def static_batch_cycle_s(prefill_pass_s, decode_pass_s, output_len):
    """Static batching (a whole batch prefilled together, then decoded in lockstep until every
    sequence has ``output_len`` tokens; Yu et al. 2022, Orca, Sec. 2.3): prefill + (O-1) decode
    passes; the first token comes from the prefill. Units: seconds."""
    return prefill_pass_s + (np.asarray(output_len, dtype=float) - 1.0) * decode_pass_s
