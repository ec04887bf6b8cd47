"""What a training layout asks of each GPU server (node): host RAM, CPU cores and PCIe time
(issue 10, 'Hosts').

Conventions: bytes, bytes/s, seconds; per node unless the name says per GPU. Arrays broadcast.

Host RAM per node = gpus_per_node x (process + data-loader workers + pinned staging buffers
                                     + ZeRO-Offload optimizer states + CPU checkpoint copy)
CPU cores per node = gpus_per_node x (1 training process + data-loader workers)
"""

from __future__ import annotations

from dataclasses import dataclass

from optimizer.formulas._checks import as_array as _arr, scalar_or_array as _out
from optimizer.units import GIB

DEFAULT_PROCESS_BYTES = 8 * GIB
"""ASSUMPTION: resident host memory of one training process (Python, PyTorch, CUDA context and
libraries, NCCL buffers) - a typical RSS of a Megatron/FSDP rank is a few GiB to ~10 GiB."""
DEFAULT_DATA_WORKERS_PER_GPU = 2
"""Megatron-LM's ``--num-workers`` default (2 data-loader worker processes per rank)."""
DEFAULT_WORKER_BYTES = 1 * GIB
"""ASSUMPTION: resident memory of one data-loader worker holding memory-mapped token shards."""
DEFAULT_PINNED_BYTES_PER_GPU = 2 * GIB
"""ASSUMPTION: page-locked staging buffers per rank (data-loader pin_memory, NCCL/UCX host
buffers; more with ZeRO-Offload, which pins its transfer buckets)."""
OFFLOAD_BYTES_PER_PARAM = 14.0
"""ZeRO-Offload (Ren et al. 2021, USENIX ATC, Sec. 4.1 and Fig. 2): the CPU holds the fp32
master parameters, momentum and variance (12 bytes/param, the K of ZeRO) and the fp16
gradients sent down each step (2 bytes/param); the GPU keeps only fp16 parameters."""
OFFLOAD_PCIE_BYTES_PER_PARAM = 4.0
"""ZeRO-Offload per step and parameter: fp16 gradients GPU->CPU (2 bytes) and updated fp16
parameters CPU->GPU (2 bytes) (Ren et al. 2021, Fig. 2, the 2M + 2M edges)."""




@dataclass(frozen=True)
class HostMemory:
    """Host RAM per node, bytes; the parts sum to ``total``."""

    processes: object
    data_workers: object
    pinned: object
    offload: object
    checkpoint_copy: object
    total: object


def offload_bytes_per_rank(params_per_rank, offload_optimizer: bool = True):
    """Host bytes one rank's ZeRO-Offload state takes: 14 bytes per parameter the rank updates
    (its ZeRO shard), 0 without offload."""
    p = _arr("params_per_rank", params_per_rank)
    return _out(p * (OFFLOAD_BYTES_PER_PARAM if offload_optimizer else 0.0))


def host_memory_per_node(gpus_per_node, *, offload_bytes_per_gpu=0.0, checkpoint_copy_bytes_per_gpu=0.0,
                         process_bytes=DEFAULT_PROCESS_BYTES, data_workers_per_gpu=DEFAULT_DATA_WORKERS_PER_GPU,
                         worker_bytes=DEFAULT_WORKER_BYTES, pinned_bytes_per_gpu=DEFAULT_PINNED_BYTES_PER_GPU) -> HostMemory:
    """Host RAM a node needs, bytes: per GPU rank its process, data-loader workers, pinned
    staging buffers, ZeRO-Offload state and (asynchronous checkpointing) the CPU copy of its
    checkpoint shard (MegaScale, Jiang et al. 2024, Sec. 3.5; ByteCheckpoint: the snapshot is
    taken into host memory and persisted from there)."""
    g = _arr("gpus_per_node", gpus_per_node, lo_open=True)
    parts = {
        "processes": g * _arr("process_bytes", process_bytes),
        "data_workers": g * _arr("data_workers_per_gpu", data_workers_per_gpu) * _arr("worker_bytes", worker_bytes),
        "pinned": g * _arr("pinned_bytes_per_gpu", pinned_bytes_per_gpu),
        "offload": g * _arr("offload_bytes_per_gpu", offload_bytes_per_gpu),
        "checkpoint_copy": g * _arr("checkpoint_copy_bytes_per_gpu", checkpoint_copy_bytes_per_gpu),
    }
    total = sum(parts.values())
    return HostMemory(**{k: _out(v) for k, v in parts.items()}, total=_out(total))


def cpu_cores_needed(gpus_per_node, data_workers_per_gpu=DEFAULT_DATA_WORKERS_PER_GPU):
    """Physical cores a node needs: one per training process plus one per data-loader worker
    (each worker is a process that decodes and collates batches)."""
    g = _arr("gpus_per_node", gpus_per_node, lo_open=True)
    return _out(g * (1.0 + _arr("data_workers_per_gpu", data_workers_per_gpu)))


def pcie_offload_s_per_step(params_per_rank, pcie_bytes_per_s_per_gpu):
    """PCIe time per optimizer step for ZeRO-Offload: 4 bytes/param (fp16 gradients down, fp16
    parameters up; Ren et al. 2021 Fig. 2) over the GPU's host link (one direction each way,
    full duplex, so the larger direction - 2 bytes/param - sets the time)."""
    p = _arr("params_per_rank", params_per_rank)
    bw = _arr("pcie_bytes_per_s_per_gpu", pcie_bytes_per_s_per_gpu, lo_open=True)
    return _out(p * (OFFLOAD_PCIE_BYTES_PER_PARAM / 2.0) / bw)
