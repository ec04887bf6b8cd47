"""Selective state-space (Mamba) layers: weights a token passes through, FLOPs and the
per-sequence state cache. Used for the Mamba layers of hybrid models (Jamba).

Shapes (Gu & Dao 2023, 'Mamba: Linear-Time Sequence Modeling with Selective State
Spaces', arXiv:2312.00752, Sec. 3.2-3.4, Algorithm 2, Fig. 3; Jamba: Lieber et al. 2024,
arXiv:2403.19887, Sec. 2), with D = hidden size, E = d_inner (expand x D), N = d_state,
R = dt_rank, K = d_conv:

* in_proj ``D -> 2E`` (x and the gate z), a depthwise causal conv of width K over the E
  channels, x_proj ``E -> R + 2N`` (Delta's low-rank input, B, C), dt_proj ``R -> E``,
  the selective scan, and out_proj ``E -> D``.
* The scan per token, channel and state element (the recurrent form of eqs. 2a-2b with the
  zero-order-hold discretisation of eq. 4 and Sec. 3.5.2's simplification B-bar = Delta B):
  A-bar = exp(Delta A) (1 multiply), B-bar x = Delta B x (2 multiplies),
  h = A-bar h + B-bar x (1 multiply-add = 2 FLOPs), y += C h (2 FLOPs): 7 FLOPs per (E, N)
  element. Per channel: the skip D x (2 FLOPs) and the gate y * silu(z) (1 multiply).
  The exponential and silu are counted as one FLOP each like any elementwise op (they are
  not multiply-adds; Kaplan et al. 2020 leave such ops out of C_forward, and so does the
  matmul part here). Units: FLOPs.
* State cache of one sequence (what a serving engine keeps between decode steps instead
  of K/V): the conv state ``(K - 1) x E`` and the SSM state ``E x N`` elements per Mamba
  layer, split over TP by channels (vLLM ``MambaStateShapeCalculator.mamba1_state_shape``:
  conv ``(conv_kernel - 1, intermediate / tp)``, temporal ``(intermediate / tp, state_size)``).
  It does not grow with the context. Units: bytes.

Unlike attention, nothing here depends on the context length: a Mamba layer's cost per
token is constant (Gu & Dao 2023, Sec. 3.3: linear time in sequence length).
"""

from __future__ import annotations

import numpy as np

from optimizer.model.spec import MambaSpec

SCAN_FLOPS_PER_STATE_ELEMENT = 7.0   # exp-argument multiply, Delta*B*x (2), h update (2), C h (2)
SCAN_FLOPS_PER_CHANNEL = 3.0         # skip D x (2) and the gate multiply (1)


def mamba_matmul_weights(m: MambaSpec, hidden_size: int) -> int:
    """Weights of the four projections one token passes through: in_proj, x_proj, dt_proj,
    out_proj (biases, A, D and the conv excluded). Units: weights."""
    e = m.d_inner
    return hidden_size * 2 * e + e * (m.dt_rank + 2 * m.d_state) + m.dt_rank * e + e * hidden_size


def mamba_mixer_flops_per_token(m: MambaSpec) -> float:
    """FLOPs of one token in one Mamba layer outside the projections: the depthwise conv
    (2 K FLOPs per channel) and the selective scan (module docstring). Independent of the
    context length. Units: FLOPs."""
    e = float(m.d_inner)
    return 2.0 * m.d_conv * e + SCAN_FLOPS_PER_STATE_ELEMENT * e * m.d_state + SCAN_FLOPS_PER_CHANNEL * e


def mamba_state_bytes_per_seq(m: MambaSpec, bytes_per_element: float, tp=1):
    """Conv + SSM state of one sequence in one Mamba layer on one GPU: ((K - 1) + N) x E / TP
    elements (module docstring). Jamba-v0.1 (E = 8192, N = 16, K = 4) in bf16 at TP 1:
    (3 + 16) x 8192 x 2 = 311,296 bytes per layer. Units: bytes."""
    per_gpu_channels = m.d_inner / np.asarray(tp, dtype=float)
    return ((m.d_conv - 1) + m.d_state) * per_gpu_channels * bytes_per_element


def mamba_activation_bytes_per_token(m: MambaSpec, bytes_per_element: float = 2.0) -> float:
    """Activations one Mamba layer's mixer keeps for the backward pass, per token, on one GPU
    before TP: the in_proj output (x and z, 2E), the conv output u (E), the x_proj output
    (R + 2N: Delta's low-rank input, B, C), Delta (E) and the gated scan output y (E, the
    out_proj input); 16-bit each. The selective-scan kernel does not store the E x N hidden
    states: it recomputes them in the backward pass (Gu & Dao 2023, Sec. 3.3.2,
    'Recomputation'). Units: bytes per token.
    """
    e = m.d_inner
    return bytes_per_element * (5.0 * e + m.dt_rank + 2.0 * m.d_state)
