"""Failures, checkpoints and goodput of a long training job (issue 10).

Conventions: seconds, bytes, bytes/s; failure rates per GPU-hour and per node-hour (the
catalog's unit), converted to seconds inside. Failures are a Poisson process (exponential
inter-arrival times), the assumption of Young 1974 and Daly 2006. Every function accepts
scalars or numpy arrays (broadcast) unless it takes a layout.

Model of one job
----------------
* Job failure rate: lambda = n_gpus * lambda_gpu + n_nodes * lambda_node; MTBI = 1 / lambda.
* Checkpoint: the state needed to resume (weights, fp32 master copy, optimizer moments;
  gradients are recomputed and not saved). Written to a storage tier limited by
  min(tier aggregate bandwidth, n_nodes * per-node network bandwidth). Blocking writes stall
  training for the whole write; asynchronous writes stall only for the device->host snapshot
  and become durable ``write_s`` later.
* Restart after a failure: detect + reschedule + reload checkpoint + warm up.
* Interval between checkpoints: Young 1974 (first order) or Daly 2006 (higher order).
* Expected wall-clock time: Daly 2006's complete model (below); goodput = useful compute
  time / wall-clock time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from optimizer.errors import ClusteroptError
from optimizer.formulas._checks import as_array as _arr, scalar_or_array as _out
from optimizer.formulas.layout import ep_fits_expert_grid, expert_tp_degree
from optimizer.units import BYTES_PER, SECONDS_PER_HOUR

# Restart-phase defaults (seconds). Each is a parameter of ``restart_time``.
DEFAULT_DETECT_S = 600.0
"""Jiang et al. 2024 (MegaScale, NSDI, arXiv:2402.15627), Sec. 3.5: faults are detected and
diagnosed within 10 minutes; 10 min is also PyTorch's default NCCL collective timeout, the
worst case for a hang that raises no error."""
DEFAULT_RESCHEDULE_S = 300.0
"""ASSUMPTION: evict the failed node, take a hot spare, relaunch the job. Kokolis et al. 2024
(arXiv:2410.21680, Sec. IV) assume 5-20 min of total restart overhead [SECONDARY copies]."""
DEFAULT_WARMUP_S = 120.0
"""ASSUMPTION: process start, NCCL communicator init (< 30 s on > 10,000 GPUs in MegaScale,
Sec. 6.3) and the first steps' compilation/data-loader warm-up."""

# Bytes per parameter of the optimizer's saved state (moments), by optimizer kind.
_MOMENTS = {
    "adam": 2,       # Kingma & Ba 2015: first and second moment (m, v), each in moment_dtype
    "sgd": 1,        # momentum buffer
    "adam8bit": 2,   # Dettmers et al. 2022 (8-bit optimizers): m, v in 8 bits (block absmax scales ignored: 4 B / 2048 params)
    "adafactor": 0,  # Shazeer & Stern 2018: factored second moment O(rows + cols), no first moment by default
    "adam_bf16": 2,  # pure bf16 training: m, v in the parameters' bf16 (formulas/memory.py OPTIMIZER_STATE_BYTES)
}
_MOMENT_DTYPE = {"adam": "fp32", "sgd": "fp32", "adam8bit": "int8", "adafactor": "fp32", "adam_bf16": "bf16"}




# --------------------------------------------------------------------------- failure rates

@dataclass(frozen=True)
class FailureRates:
    """Poisson failure rates: per GPU per GPU-hour, and per node (host, NIC, switch port,
    cable) per node-hour. ``source`` names the catalog row or calibration."""

    per_gpu_hour: float
    per_node_hour: float
    source: str = ""


def split_failure_rate(interruptions_per_gpu_hour, gpu_share, gpus_per_node, source: str = "") -> FailureRates:
    """Split a job-level rate (interruptions per GPU-hour on nodes of ``gpus_per_node`` GPUs)
    into a GPU part (share ``gpu_share``) and a per-node part (the rest, per node-hour).

    For jobs on the same node size the split does not change the job MTBI; it matters when a
    layout uses nodes of another size. Grattafiori et al. 2024 (Llama 3, arXiv:2407.21783,
    Sec. 3.3.4, Table 5): 'GPU issues ... 58.7% of all unexpected issues'.
    """
    r = float(_arr("interruptions_per_gpu_hour", interruptions_per_gpu_hour))
    s = float(_arr("gpu_share", gpu_share))
    if s > 1:
        raise ClusteroptError("gpu_share", f"must be a fraction (got {gpu_share!r})", "allowed: 0 to 1")
    g = float(_arr("gpus_per_node", gpus_per_node, lo=0.0, lo_open=True))
    return FailureRates(per_gpu_hour=s * r, per_node_hour=(1.0 - s) * r * g, source=source)


def calibrated_rate_per_gpu_hour(interruptions, gpu_hours):
    """Default failure rate from several published runs: the geometric mean of the per-run
    rates interruptions_i / gpu_hours_i (interruptions per GPU-hour).

    Why not pool (sum of counts / sum of GPU-hours): published rates differ ~10x between fleets
    and eras while each run's own Poisson error is 10-20%; pooling lets the largest run decide
    alone. The log-scale mean treats each fleet as one observation (a random-effects view),
    and equals the median for three runs spread as the published ones are.
    """
    n = _arr("interruptions", interruptions, lo=0.0, lo_open=True)
    h = _arr("gpu_hours", gpu_hours, lo=0.0, lo_open=True)
    return float(np.exp(np.mean(np.log(n / h))))


def job_mtbi_s(n_gpus, n_nodes, rates: FailureRates):
    """Mean time between interruptions of a job, seconds: 1 / (n_gpus lambda_gpu + n_nodes lambda_node).

    Independent exponential failures add their rates (superposition of Poisson processes).
    """
    g = _arr("n_gpus", n_gpus, lo=0.0, lo_open=True)
    nodes = _arr("n_nodes", n_nodes, lo=0.0, lo_open=True)
    per_hour = g * rates.per_gpu_hour + nodes * rates.per_node_hour
    if np.any(per_hour <= 0):
        raise ClusteroptError("failure_rates", "give a positive GPU or node failure rate", "allowed: > 0 per hour")
    with np.errstate(over="ignore"):         # a vanishing rate: MTBI inf, i.e. no failures (goodput 1)
        return _out(SECONDS_PER_HOUR / per_hour)


def expected_interruptions(wall_clock_s, mtbi_s):
    """Expected failures during a wall-clock span: T / MTBI (Poisson mean; by Wald's identity
    also exact for a random wall-clock time that ends at a completion)."""
    return _out(_arr("wall_clock_s", wall_clock_s) / _arr("mtbi_s", mtbi_s, lo_open=True))


# --------------------------------------------------------------------------- checkpoint size

@dataclass(frozen=True)
class CheckpointBytes:
    """Bytes of resumable training state; parts sum to ``total``. ``gradients`` is 0 unless
    asked for (checkpoints do not store them; the ZeRO model-state count does)."""

    weights: object
    master_weights: object
    optimizer_states: object
    gradients: object
    total: object


def _per_param(optimizer: str, weight_dtype: str, master_dtype: str | None, include_gradients: bool,
               grad_dtype: str) -> tuple[float, float, float, float]:
    if optimizer not in _MOMENTS:
        raise ClusteroptError("optimizer", f"unknown optimizer {optimizer!r}", "allowed: " + ", ".join(_MOMENTS))
    for field, dt in (("weight_dtype", weight_dtype), ("grad_dtype", grad_dtype)) + (
            (("master_dtype", master_dtype),) if master_dtype is not None else ()):
        if dt not in BYTES_PER:
            raise ClusteroptError(field, f"unknown dtype {dt!r}", "allowed: " + ", ".join(BYTES_PER))
    w = BYTES_PER[weight_dtype]
    m = BYTES_PER[master_dtype] if master_dtype is not None else 0.0
    o = _MOMENTS[optimizer] * BYTES_PER[_MOMENT_DTYPE[optimizer]]
    g = BYTES_PER[grad_dtype] if include_gradients else 0.0
    return w, m, o, g


def checkpoint_bytes(n_params, *, optimizer: str = "adam", weight_dtype: str = "bf16",
                     master_dtype: str | None = "fp32", include_gradients: bool = False,
                     grad_dtype: str = "bf16") -> CheckpointBytes:
    """Bytes of a full checkpoint of a model with ``n_params`` parameters (all ranks, each
    tensor once).

    Mixed-precision Adam (Rajbhandari et al. 2020, ZeRO, Sec. 3.1): 2 bytes/param of 16-bit
    weights, K = 12 bytes/param of optimizer state (fp32 master weights 4 + momentum 4 +
    variance 4); with 2 bytes of 16-bit gradients the model states are 2 + 2 + 12 = 16
    bytes/param. A checkpoint saves weights, master copy and moments: 2 + 4 + 8 = 14 bytes/param
    (gradients are recomputed after a restart). FP8 training keeps bf16 weights and an fp32
    master copy (the FP8 copies are transient), so ``weight_dtype`` stays 'bf16'.
    ``master_dtype=None`` for training without a separate master copy.
    """
    n = _arr("n_params", n_params, lo=0.0, lo_open=True)
    w, m, o, g = _per_param(optimizer, weight_dtype, master_dtype, include_gradients, grad_dtype)
    parts = [n * w, n * m, n * o, n * g]
    return CheckpointBytes(*(_out(p) for p in parts), total=_out(sum(parts)))


def checkpoint_bytes_per_rank(n_params, n_expert_params=0, *, tp: int = 1, pp: int = 1, dp: int = 1,
                              cp: int = 1, ep: int = 1, zero: int = 0, optimizer: str = "adam",
                              weight_dtype: str = "bf16", master_dtype: str | None = "fp32",
                              include_gradients: bool = False, grad_dtype: str = "bf16") -> CheckpointBytes:
    """Training state held by one GPU (what its snapshot copies), stages assumed equal in size.
    The layout degrees and ``zero`` may be numpy arrays (one layout per row).

    Sharding (Megatron-LM / DeepSpeed conventions):
      dense weights  / (tp * pp), and / (dp * cp) at ZeRO-3;
      expert weights / (ep * etp * pp), and / (tp * dp * cp / (ep * etp)) at ZeRO-3, with the
      experts' own TP etp = layout.expert_tp_degree (TP unless EP exceeds DP x CP);
      master copy and moments as the weights, and / (data-parallel group) from ZeRO-1 on
      (Rajbhandari et al. 2020, Sec. 5: P_os, P_os+g, P_os+g+p; Megatron's distributed
      optimizer is ZeRO-1 over dp * cp);
      gradients (if included) / data-parallel group from ZeRO-2 on.
    Check: Rajbhandari et al. 2020, Fig. 1 (7.5e9 params, N_d = 64): 120, 31.4, 16.6, 1.9 GB
    per GPU at stages 0-3 with gradients included (tests/test_reliability.py).
    """
    ints = {}
    for field, v in (("tp", tp), ("pp", pp), ("dp", dp), ("cp", cp), ("ep", ep)):
        a = np.asarray(v)
        if np.any(a.astype(np.int64) != a) or np.any(a < 1):
            raise ClusteroptError(field, f"must be a positive integer (got {v!r})", "allowed: 1, 2, 3, ...")
        ints[field] = a.astype(np.int64)
    z = np.asarray(zero)
    if np.any(~np.isin(z, (0, 1, 2, 3))):
        raise ClusteroptError("zero", f"unknown ZeRO stage {zero!r}", "allowed: 0, 1, 2, 3")
    if not np.all(ep_fits_expert_grid(ints["tp"], ints["dp"], ints["cp"], ints["ep"])):
        raise ClusteroptError("ep", f"expert parallel degree {ep} does not fit tp x dp x cp = {tp * dp * cp}",
                              "a divisor of dp x cp, or a multiple of it dividing tp x dp x cp")
    n = _arr("n_params", n_params, lo=0.0, lo_open=True)
    n_exp = _arr("n_expert_params", n_expert_params)
    if np.any(n_exp > n):
        raise ClusteroptError("n_expert_params", f"exceeds n_params ({n_expert_params!r} > {n_params!r})",
                              "allowed: 0 to n_params")
    w, m, o, g = _per_param(optimizer, weight_dtype, master_dtype, include_gradients, grad_dtype)
    dense = n - n_exp
    dp_group = dp * cp
    # Parameters per rank before data-parallel sharding.
    p_rank = dense / (tp * pp) + n_exp / (ep * expert_tp_degree(tp, dp, cp, ep) * pp)
    # The same after sharding across the (expert-)data-parallel group: dense over dp*cp,
    # experts over dp*cp/ep; both give dense/(tp*pp*dp*cp) + n_exp/(tp*pp*dp*cp).
    p_shard = n / (tp * pp * dp_group)
    weights = np.where(z >= 3, p_shard, p_rank) * w
    master = np.where(z >= 1, p_shard, p_rank) * m
    optim = np.where(z >= 1, p_shard, p_rank) * o
    grads = np.where(z >= 2, p_shard, p_rank) * g
    parts = [weights, master, optim, grads]
    return CheckpointBytes(*(_out(p) for p in parts), total=_out(sum(parts)))


# --------------------------------------------------------------------------- write and restart

@dataclass(frozen=True)
class CheckpointWrite:
    """``write_s``: time to persist the checkpoint; ``blocking_s``: training stall per checkpoint;
    ``durable_lag_s``: time after the stall until the checkpoint is safe (0 when blocking)."""

    write_s: object
    blocking_s: object
    durable_lag_s: object
    bandwidth_bytes_per_s: object


def checkpoint_write(total_bytes, per_rank_bytes, n_nodes, storage_write_bytes_per_s, node_network_bytes_per_s,
                     *, asynchronous: bool = False, d2h_bytes_per_s=None) -> CheckpointWrite:
    """Time to write a checkpoint of ``total_bytes`` (each tensor once, all ranks writing their
    shard in parallel, as Megatron's fully-parallel distributed checkpoint and PyTorch DCP do).

    bandwidth = min(storage tier aggregate write bandwidth, n_nodes x per-node network bandwidth);
    write_s = total_bytes / bandwidth.
    Blocking: training stalls for write_s. Asynchronous (e.g. MegaScale Sec. 3.5, Jiang et al.
    2024: copy to host memory in seconds, then persist in the background; ByteCheckpoint,
    Wan et al. 2025): training stalls only for the device->host copy of each rank's state,
    per_rank_bytes / d2h_bytes_per_s, and the checkpoint is durable write_s later.
    """
    total = _arr("total_bytes", total_bytes, lo=0.0, lo_open=True)
    nodes = _arr("n_nodes", n_nodes, lo=0.0, lo_open=True)
    bw = np.minimum(_arr("storage_write_bytes_per_s", storage_write_bytes_per_s, lo_open=True),
                    nodes * _arr("node_network_bytes_per_s", node_network_bytes_per_s, lo_open=True))
    write = total / bw
    if asynchronous:
        if d2h_bytes_per_s is None:
            raise ClusteroptError("d2h_bytes_per_s", "asynchronous checkpointing needs the device-to-host bandwidth",
                                  "allowed: > 0 bytes/s (PCIe Gen5 x16: ~64e9 per direction)")
        blocking = _arr("per_rank_bytes", per_rank_bytes, lo_open=True) / _arr("d2h_bytes_per_s", d2h_bytes_per_s, lo_open=True)
        lag = write
    else:
        blocking = write
        lag = np.zeros_like(write)
    return CheckpointWrite(write_s=_out(write), blocking_s=_out(blocking), durable_lag_s=_out(lag),
                           bandwidth_bytes_per_s=_out(bw))


@dataclass(frozen=True)
class RestartTime:
    """Seconds from a failure until training makes new progress; parts sum to ``total``."""

    detect: object
    reschedule: object
    reload: object
    warmup: object
    total: object


def restart_time(checkpoint_total_bytes, n_nodes, storage_read_bytes_per_s, node_network_bytes_per_s, *,
                 detect_s=DEFAULT_DETECT_S, reschedule_s=DEFAULT_RESCHEDULE_S,
                 warmup_s=DEFAULT_WARMUP_S) -> RestartTime:
    """Restart time = detect + reschedule + reload + warm-up (see the DEFAULT_* constants for
    the sources of the defaults). reload = checkpoint bytes / min(tier aggregate read bandwidth,
    n_nodes x per-node network bandwidth)."""
    total = _arr("checkpoint_total_bytes", checkpoint_total_bytes, lo_open=True)
    bw = np.minimum(_arr("storage_read_bytes_per_s", storage_read_bytes_per_s, lo_open=True),
                    _arr("n_nodes", n_nodes, lo_open=True) * _arr("node_network_bytes_per_s", node_network_bytes_per_s, lo_open=True))
    d, r, w = _arr("detect_s", detect_s), _arr("reschedule_s", reschedule_s), _arr("warmup_s", warmup_s)
    reload = total / bw
    return RestartTime(detect=_out(d), reschedule=_out(r), reload=_out(reload), warmup=_out(w),
                       total=_out(d + r + reload + w))


# --------------------------------------------------------------------------- interval and goodput

def young_interval_s(checkpoint_s, mtbi_s):
    """Young 1974, 'A first order approximation to the optimum checkpoint interval' (CACM 17(9)):
    compute time between checkpoints tau = sqrt(2 delta M), delta the checkpoint cost, M the MTBI.
    It minimises the first-order waste delta/tau + tau/(2M)."""
    d = _arr("checkpoint_s", checkpoint_s)
    m = _arr("mtbi_s", mtbi_s, lo_open=True)
    return _out(np.sqrt(2.0 * d * m))


def daly_interval_s(checkpoint_s, mtbi_s):
    """Daly 2006, 'A higher order estimate of the optimum checkpoint interval for restart dumps'
    (FGCS 22(3)), higher-order optimum of the complete model:
        tau = sqrt(2 delta M) [1 + (1/3) sqrt(delta/(2M)) + (1/9) (delta/(2M))] - delta,  delta < 2M
        tau = M,                                                                        delta >= 2M.
    Daly's Figs. 3-5 (M = 24 h, 6 h, 15 min; delta = 5 min) give 117, 57 and 9.1 min."""
    d = _arr("checkpoint_s", checkpoint_s)
    m = _arr("mtbi_s", mtbi_s, lo_open=True)
    x = d / (2.0 * m)
    tau = np.where(d < 2.0 * m, np.sqrt(2.0 * d * m) * (1.0 + np.sqrt(x) / 3.0 + x / 9.0) - d, m)
    return _out(tau)


def expected_wall_clock_s(compute_s, interval_s, checkpoint_s, restart_s, mtbi_s):
    """Expected wall-clock time to finish ``compute_s`` of failure-free work (Daly 2006,
    complete model): T_w = M exp(R/M) (exp((tau + delta)/M) - 1) T_s / tau.

    Each of the T_s/tau segments (tau of work + delta of checkpoint) is retried until it runs
    without a failure; every failure costs a restart R, itself exposed to failures. The
    expected time of one segment, M e^{R/M}(e^{(tau+delta)/M} - 1), follows from the renewal
    equation E = (1 - q)/lambda + (1 - q)(E_R + E), q = e^{-lambda(tau+delta)},
    E_R = (e^{lambda R} - 1)/lambda.
    """
    ts = _arr("compute_s", compute_s)
    tau = _arr("interval_s", interval_s, lo_open=True)
    d = _arr("checkpoint_s", checkpoint_s)
    r = _arr("restart_s", restart_s)
    m = _arr("mtbi_s", mtbi_s, lo_open=True)
    with np.errstate(over="ignore"):       # goodput -> 0 saturates at inf (callers cap it)
        return _out(m * np.exp(r / m) * np.expm1((tau + d) / m) * ts / tau)


def wasted_s_per_interruption(interval_s, checkpoint_s, restart_s):
    """First-order work lost per failure: half a segment (a failure strikes uniformly within
    tau + delta since the last checkpoint) plus the restart: (tau + delta)/2 + R."""
    return _out((_arr("interval_s", interval_s) + _arr("checkpoint_s", checkpoint_s)) / 2.0
                + _arr("restart_s", restart_s))


@dataclass(frozen=True)
class Goodput:
    """Expected outcome of a run; useful + checkpoint + failure == wall_clock (seconds)."""

    interval_s: object
    wall_clock_s: object
    useful_s: object
    checkpoint_s: object          # failure-free time spent in blocking checkpoint writes
    failure_s: object             # rework and restarts caused by failures
    expected_interruptions: object
    goodput: object               # useful / wall_clock, in [0, 1]


def goodput(compute_s, mtbi_s, checkpoint_blocking_s, restart_s, *, interval_s=None, durable_lag_s=0.0) -> Goodput:
    """Goodput = useful training time / wall-clock time for ``compute_s`` of failure-free work.

    Interval: Daly 2006's optimum for the blocking cost unless given. Asynchronous checkpoints
    (``durable_lag_s`` > 0): a failure within the lag after a snapshot rolls back one interval
    more, which costs lag seconds per failure in expectation (probability lag/tau, loss tau); we
    add it to the restart cost, and the interval is at least the lag (writes must not queue).
    Wall-clock time from ``expected_wall_clock_s``; expected interruptions = T_w / M. An infinite
    MTBI (no failures) gives wall-clock = compute, no checkpoints and goodput 1.
    """
    ts = _arr("compute_s", compute_s)
    m_in = _arr("mtbi_s", mtbi_s, lo_open=True, allow_inf=True)
    # no failures (or an MTBI beyond 1e100 s, where the interval would overflow and failures
    # change nothing at float precision): no checkpoints needed, goodput 1
    none = ~np.isfinite(m_in) | (m_in > 1e100)
    m = np.where(none, 1.0, m_in)
    d = _arr("checkpoint_blocking_s", checkpoint_blocking_s)
    lag = _arr("durable_lag_s", durable_lag_s)
    r_eff = _arr("restart_s", restart_s) + lag
    tau = daly_interval_s(d, m) if interval_s is None else _arr("interval_s", interval_s, lo_open=True)
    tau = np.maximum(np.maximum(tau, lag), 1e-9)
    wall = np.asarray(expected_wall_clock_s(ts, tau, d, r_eff, m), dtype=float)
    ckpt = ts * d / tau
    wall, ckpt = np.where(none, ts, wall), np.where(none, 0.0, ckpt)
    tau = np.where(none, np.inf, tau)
    with np.errstate(invalid="ignore"):
        fail = wall - ts - ckpt
    with np.errstate(invalid="ignore", divide="ignore"):
        gp = np.where(wall > 0, ts / wall, 1.0)
    return Goodput(interval_s=_out(tau), wall_clock_s=_out(wall), useful_s=_out(np.broadcast_to(ts, wall.shape) + 0.0),
                   checkpoint_s=_out(ckpt), failure_s=_out(fail),
                   expected_interruptions=_out(np.where(none, 0.0, wall / m)), goodput=_out(gp))
