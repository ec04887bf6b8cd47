"""A training layout: how one job is split over GPUs (the typed input of the estimators).

Conventions (Megatron-LM): n_gpus = tp * pp * dp * cp; expert parallelism ep divides
dp * cp and shards only the expert weights; global_batch counts sequences and equals
micro_batch * dp * grad_accum exactly. ``zero`` is the ZeRO stage (0-3); Megatron's
distributed optimizer is ZeRO-1. ``interleave`` is the number of virtual pipeline chunks
per stage (v in Narayanan et al. 2021, Sec. 2.2.2).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Recompute = Literal["none", "selective", "full"]
Precision = Literal["bf16", "fp8"]
OptimizerKind = Literal["adam", "sgd", "adam8bit", "adafactor"]

RECOMPUTE_MODES = ("none", "selective", "full")
TRAIN_PRECISIONS = ("bf16", "fp8")
OPTIMIZERS = ("adam", "sgd", "adam8bit", "adafactor")


@dataclass(frozen=True)
class TrainLayout:
    seq_len: int
    global_batch: int                 # sequences per optimizer step
    tp: int = 1
    pp: int = 1
    dp: int = 1
    cp: int = 1
    ep: int = 1
    zero: int = 0
    micro_batch: int = 1
    recompute: Recompute = "selective"
    sequence_parallel: bool = False
    precision: Precision = "bf16"
    interleave: int = 1
    optimizer: OptimizerKind = "adam"
    offload_optimizer: bool = False
    flash_attention: bool = True

    @property
    def n_gpus(self) -> int:
        return self.tp * self.pp * self.dp * self.cp

    @property
    def grad_accum(self) -> int:
        """Micro-batches per step per data-parallel rank (m in Narayanan et al. 2021)."""
        return self.global_batch // (self.micro_batch * self.dp)

    @property
    def tokens_per_step(self) -> int:
        return self.global_batch * self.seq_len


def sequence_parallel_rule(tp: int, sequence_parallel: bool) -> str | None:
    """The one rule on sequence parallelism, shared by the search space, ``evaluate`` and
    ``estimate``: SP shards the activations outside the tensor-parallel regions over the TP group
    (Korthikanti et al. 2022, Sec. 4.2.2), so at tp = 1 there is nothing to shard and Megatron-LM
    switches it off ('Disabling sequence parallelism because tensor model parallelism is disabled',
    megatron/training/arguments.py). SP at tp = 1 is therefore the same layout as without it, not a
    distinct configuration. Returns the broken rule's one-line message, or None."""
    if sequence_parallel and tp == 1:
        return ("sequence_parallel at tp=1 is the same layout as without it (no tensor-parallel group to "
                "shard over; Megatron-LM turns it off); use sequence_parallel=false")
    return None
