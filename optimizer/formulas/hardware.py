"""The hardware figures the estimators take as typed input.

Formulas never read the catalog: ``optimizer.catalog`` turns a validated catalog row
into this frozen value. Conventions: bytes, bytes/s (unidirectional, per GPU), FLOP/s
(DENSE peak; datasheets often print sparse figures at twice these), watts.
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class KernelProfile:
    """What the operator-level compute model (formulas/operators.py) needs beyond the
    datasheet peaks, from catalog/gpu_kernels.csv (one row per accelerator, with source).

    ``arch``: GPU generation key (``ampere``, ``ada``, ``hopper``, ``blackwell``, ``volta``,
    ``cdna2``, ``cdna3``, ``other``); ``sm_count``: streaming multiprocessors (AMD: compute
    units) that GEMM tiles are scheduled on; ``tile_m`` x ``tile_n``: the output tile of the
    library's large bf16 GEMM kernels on that generation."""

    arch: str
    sm_count: int
    tile_m: int
    tile_n: int


@dataclass(frozen=True)
class Hardware:
    name: str
    memory_bytes: int                 # device memory capacity (datasheet '80 GB' HBM = 80 GiB)
    hbm_bytes_per_s: float            # memory bandwidth
    fp32_flop_per_s: float            # dense, non-tensor FP32
    tf32_flop_per_s: float            # dense; 0 where the device has none
    bf16_flop_per_s: float            # dense bf16/fp16 tensor throughput
    fp8_flop_per_s: float             # dense; 0 where the device has no FP8 tensor cores
    int8_op_per_s: float              # dense; 0 where none
    intra_node_bytes_per_s: float     # per GPU, one direction, inside the scale-up (NVLink) domain
    intra_node_domain: int            # GPUs that share that domain (8 for an HGX board)
    gpus_per_node: int                # typical GPUs per server
    inter_node_bytes_per_s: float     # per GPU, one direction, scale-out network (NIC share)
    tdp_w: float                      # board power
    sparse_2_4: bool = False          # 2:4 sparse tensor cores (matmul at 2x the dense peak)
    kernels: KernelProfile | None = None   # SMs and tiles (None: formulas/operators.py's default by peak)
    pcie_bytes_per_s: float = 0.0     # host link per GPU, one direction (0: not stated; offload assumes Gen4 x16)
    network_oversubscription: float = 1.0   # the fabric's leaf down:up ratio (scenario system.oversubscription)
    power_limit_w: float = 0.0        # board power limit set by the operator (nvidia-smi -pl); 0: the TDP

    def peak_flop_per_s(self, precision: str) -> float:
        """Dense peak for the matmul precision of a training or serving layout.

        'bf16'/'fp16' -> bf16 tensor peak; 'fp8' -> fp8 peak, falling back to bf16 where the
        device has no FP8 units (the run then computes in bf16); 'int8' -> int8 op/s, same fallback.
        """
        if precision in ("bf16", "fp16"):
            return self.bf16_flop_per_s
        if precision == "fp8":
            return self.fp8_flop_per_s or self.bf16_flop_per_s
        if precision == "int8":
            return self.int8_op_per_s or self.bf16_flop_per_s
        if precision in ("fp32", "tf32"):
            return self.tf32_flop_per_s or self.fp32_flop_per_s
        raise ValueError(f"precision: unknown {precision!r}; allowed: bf16, fp16, fp8, int8, fp32, tf32")

    def with_inter_node_bytes_per_s(self, bytes_per_s: float) -> "Hardware":
        return replace(self, inter_node_bytes_per_s=bytes_per_s)


def power_limited_clock_fraction(hw: Hardware) -> float:
    """Fraction of the datasheet tensor-core rate a GPU sustains under an operator's power
    limit below its TDP (``hw.power_limit_w``; 1 without one or at/above the TDP).

    Compute-bound kernels run at the clock the power budget allows. Dynamic CMOS power is
    P = C V^2 f and, in the voltage-frequency range a GPU's DVFS uses, V grows about
    linearly with f, so P ~ f^3 and the sustained clock under a cap is f / f_max =
    (limit / TDP)^(1/3) (Weste & Harris, 'CMOS VLSI Design', 4th ed., Sec. 5.1-5.2: dynamic
    power and voltage scaling). Static power and the HBM's share of the budget make the
    real loss somewhat larger (UNCERTAIN: a lower bound of the slowdown; no fitted constant).
    Example: Meta's Grand Teton H100s run at their default 500 W limit of a 700 W part
    (pytorch/torchtitan docs, async TP benchmarks, 'Hardware'): (500/700)^(1/3) = 0.894.
    HBM-bound work keeps its bandwidth (memory clocks are not lowered by the limit).
    Dimensionless."""
    if not hw.power_limit_w or hw.power_limit_w >= hw.tdp_w or hw.tdp_w <= 0:
        return 1.0
    return float((hw.power_limit_w / hw.tdp_w) ** (1.0 / 3.0))
