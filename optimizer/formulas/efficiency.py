"""Achievable compute: how fast one GPU runs a training micro-batch, and the calibrated
constants of that model.

The model (a two-term roofline; Williams, Waterman & Patterson 2009, 'Roofline'):

    t = F_gemm / (P * eta_gemm)  +  kappa * A / W_hbm

* F_gemm: the micro-batch's matrix-multiply FLOPs on this GPU (linear layers, attention
  core, LM head; recomputation included), P the dense peak of the precision the GEMM
  runs in (fp8 runs the linear layers at the fp8 peak; attention stays in bf16). Under fp8
  the linear GEMMs' efficiency is eta_gemm x ``FP8_GEMM_EFFICIENCY_RATIO`` (0.77, fitted on
  published bf16/fp8 pairs of the same layout; see the constant).
* eta_gemm = eta_max(P) * T / (T + T_half): a saturating function of the tokens per
  micro-batch on the GPU, T = b * s / CP (the GEMMs' M dimension; small GEMMs under-fill
  the SMs and tensor-core tiles). A second factor in the per-GPU width hidden/TP was
  tried and dropped: the fit drove its half-point to 0, because the elementwise term
  below already carries the cost of narrow TP shards (their replicated non-GEMM work
  grows relative to the GEMM FLOPs as TP grows). eta_max depends on the device's dense
  bf16 peak: it is calibrated at the A100 (312 TFLOP/s) and the H100 (989 TFLOP/s), log-interpolated between and held
  constant outside (faster tensor cores are harder to keep fed: clocks under the power
  cap, memory-bound epilogues; uncalibrated beyond these two devices - an assumption).
* A: the bytes the layer's non-GEMM work (norms, activations, dropout, softmax, residual
  adds, casts) reads and writes, taken as ``kappa`` times the layer's stored activations
  (Korthikanti et al. 2022's per-layer count, no recomputation, the same TP/SP/flash
  form): each stored tensor is produced and consumed by memory-bound kernels in the
  forward and backward. Without flash attention the s^2 softmax/dropout tensors dominate
  A, which is why 2021-era Megatron runs reach lower utilisation than flash runs.
  W_hbm: the device's memory bandwidth.

Calibration: ``benchmarks/calibrate_efficiency.py`` fits the four constants below on the
calibration rows of tests/data/training_runs_public.csv (every row whose 0-based CSV
index is not 2 mod 3; rows with i % 3 == 2 are held out) by minimising the mean absolute
percentage error of the predicted throughput (tokens/s per GPU, equivalently MFU with the
row's own FLOP count). It prints both errors; tests/test_calibration.py asserts the
held-out error stays below the bound measured when these constants were fitted.

Fit of the shipped constants (77 scored runs: 52 calibration, 25 held out): calibration
MAPE 10.4% (10.0% once the fp8 ratio applies to its one fp8 row, MPT-3b: +38.8% -> +19.0%;
the bf16 predictions are unchanged), held-out MAPE 6.9%; Korthikanti et al. 2022's eight iteration times, never
fitted, 4.9%. Leave-one-source-out refits transfer worse across frameworks on H100
(Megatron-Core 24%, MosaicML 25%; A100 sources 10-11%): eta_max at 989 TFLOP/s rests on
two H100 sources with different software stacks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from optimizer.units import TERA

REFERENCE_PEAK_LOW_FLOP_PER_S = 312 * TERA     # A100 SXM dense bf16 (NVIDIA A100 datasheet)
REFERENCE_PEAK_HIGH_FLOP_PER_S = 989.4 * TERA  # H100 SXM dense bf16 (NVIDIA H100 datasheet)

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


@dataclass(frozen=True)
class EfficiencyConstants:
    """The constants of the achievable-compute model (see the module docstring)."""

    eta_max_low_peak: float       # GEMM efficiency ceiling at a 312 TFLOP/s device
    eta_max_high_peak: float      # GEMM efficiency ceiling at a 989 TFLOP/s device
    tokens_half: float            # tokens per micro-batch per GPU at half of the ceiling
    elementwise_passes: float     # kappa: HBM traffic of non-GEMM work per stored activation byte
    fp8_gemm_ratio: float = FP8_GEMM_EFFICIENCY_RATIO   # fp8 linear-GEMM efficiency / bf16's (below)

    def as_vector(self) -> np.ndarray:
        """The four bf16 constants (the fp8 ratio is fitted separately, on bf16/fp8 pairs)."""
        return np.array([self.eta_max_low_peak, self.eta_max_high_peak, self.tokens_half,
                         self.elementwise_passes])

    @classmethod
    def from_vector(cls, x) -> "EfficiencyConstants":
        """Inverse of ``as_vector``; the fp8 ratio keeps its shipped value."""
        return cls(*[float(v) for v in x])


CALIBRATED = EfficiencyConstants(
    eta_max_low_peak=0.8157,
    eta_max_high_peak=0.6184,
    tokens_half=249.4,
    elementwise_passes=9.172,
)
"""Fitted by benchmarks/calibrate_efficiency.py (see its output for the errors)."""


def gemm_efficiency_max(peak_flop_per_s: float, c: EfficiencyConstants = CALIBRATED) -> float:
    """eta_max for a device of dense bf16 peak ``peak_flop_per_s``: the A100 value at or
    below 312 TFLOP/s, the H100 value at or above 989, log-linear between. Dimensionless."""
    lo, hi = np.log(REFERENCE_PEAK_LOW_FLOP_PER_S), np.log(REFERENCE_PEAK_HIGH_FLOP_PER_S)
    x = (np.log(max(peak_flop_per_s, 1.0)) - lo) / (hi - lo)
    x = min(max(x, 0.0), 1.0)
    return c.eta_max_low_peak + (c.eta_max_high_peak - c.eta_max_low_peak) * x


def gemm_efficiency(peak_bf16_flop_per_s: float, tokens, c: EfficiencyConstants = CALIBRATED):
    """Achievable fraction of dense peak for the GEMMs of a micro-batch:
    eta_max(P) * T/(T + T_half), ``tokens`` T = micro-batch tokens on the GPU (b*s/CP),
    scalar or array. Dimensionless."""
    t = np.asarray(tokens, dtype=float)
    return gemm_efficiency_max(peak_bf16_flop_per_s, c) * t / (t + c.tokens_half)


def linear_gemm_efficiency_ratio(precision: str, c: EfficiencyConstants = CALIBRATED) -> float:
    """Achieved linear-GEMM efficiency of ``precision`` relative to bf16's at the same size:
    ``c.fp8_gemm_ratio`` for fp8 (see ``FP8_GEMM_EFFICIENCY_RATIO``), 1 otherwise.
    Dimensionless."""
    return c.fp8_gemm_ratio if precision == "fp8" else 1.0
