"""Achievable compute: the calibrated constants of the operator-level compute model
(formulas/operators.py) and the fp8 GEMM ratio.

The model (formulas/operators.py, time.py, training.py): every GEMM of a layer at its own
(M, N, K) on the device's SMs and tiles (wave quantization, padding, split-K and a per-tile
K overhead) below a large-GEMM ceiling per GPU generation; the attention core at published
flash-attention throughput; non-GEMM work at HBM bandwidth (``elementwise_passes`` x the
layer's stored activations, Korthikanti et al. 2022's count); a fixed cost per kernel; and
communication that runs beside compute slowing it by ``overlap_slowdown`` per second.

Calibration: ``benchmarks/calibrate_efficiency.py --fit`` fits the six constants below on
ALL scored public runs (tests/data/training_runs_public.csv, training_runs_extra.csv,
the fp8 pairs' runs) by minimising the mean absolute percentage error of tokens/s per GPU;
its default report prints the LEAVE-ONE-SOURCE-OUT error (each source predicted by
constants fitted without it), overall and per regime. The figures of the shipped fit are
in that script's output and in tests/test_calibration.py.
"""

from __future__ import annotations

from dataclasses import replace  # noqa: F401  (re-exported for callers that vary one constant)

from optimizer.formulas.operators import ComputeConstants

FP8_GEMM_EFFICIENCY_RATIO = 0.77
"""Achieved fp8 linear-GEMM efficiency relative to bf16's at the same GEMM size (dimensionless):
under fp8 the linear layers run at ``0.77 x eta_gemm`` of the fp8 dense peak, i.e. 2 x 0.77 =
1.54x the bf16 GEMM rate on a device whose fp8 peak is twice its bf16 peak (H100).

What it stands for (Transformer Engine fp8 recipes, delayed or current per-tensor scaling;
NVIDIA Transformer Engine user guide, 'Using FP8 with Transformer Engine'): every fp8 GEMM
needs its bf16 inputs cast to fp8 (plus a transposed copy for the backward GEMMs), an amax
reduction and scale update per tensor, and fp8 GEMMs reach a smaller share of their own peak
than bf16 GEMMs of the same shape (their epilogues and operand loads do not shrink with the
math); attention and the elementwise work stay bf16 and are unchanged (time.py). NVIDIA's
Megatron-Bridge performance tuning guide quotes 1.2-1.5x end-to-end fp8 speed-ups over bf16.

Fit (benchmarks/calibrate_efficiency.py --fit-fp8): golden-section minimum of the speed-up
(fp8/bf16 throughput) MAPE over the calibration pairs of tests/data/fp8_training_pairs.csv
(sources in fp8_training_pairs.md: NVIDIA dgxc-benchmarking NeMo 24.09 Llama 3.1 8B/70B/405B,
Nemotron-4 15B, GPT-3 175B recipes; MosaicML llm-foundry MPT-1b/3b), bf16 constants fixed.
Split fixed before the fit: model groups in file order, odd group index held out (Llama 3.1
70B, Nemotron-4 15B, MPT-3b). Pairs whose bf16 run the model misses by > 25% are not scored
(3 long-sequence MPT pairs). Speed-up MAPE: calibration 1.7% (14 pairs, 4 models), held out
3.7% (15 pairs, 3 models); without the ratio (1.0) 19.9% and 25.2%. fp8 throughput MAPE
5.9% / 5.0%. Measured on H100 only; applied to every fp8-capable device (an assumption: no
same-layout bf16/fp8 pair on a catalog Blackwell GPU was found)."""



EfficiencyConstants = ComputeConstants
"""The fitted constants (formulas/operators.py documents each)."""

CALIBRATED = ComputeConstants(
    gemm_eta_ampere=0.85,
    gemm_eta_hopper=0.72,
    k0=64.0,
    kernel_s=6e-6,
    elementwise_passes=9.0,
    overlap_slowdown=0.2,
)
"""Fitted by benchmarks/calibrate_efficiency.py --fit (see its output for the errors)."""


def linear_gemm_efficiency_ratio(precision: str, c: ComputeConstants = CALIBRATED) -> float:
    """Achieved linear-GEMM efficiency of ``precision`` relative to bf16's at the same size:
    ``c.fp8_gemm_ratio`` for fp8 (see ``FP8_GEMM_EFFICIENCY_RATIO``), 1 otherwise.
    Dimensionless."""
    return c.fp8_gemm_ratio if precision == "fp8" else 1.0
