"""The sequence length a model family was pre-trained at (``train_seq_len.csv``, one sourced
row per family, optionally per released context length), the default of ``estimate``.

A model's context length (``max_position_embeddings``) is what it can read at inference; its
pre-training ran mostly at a much shorter length (Llama 3.1: 8K of a 128K context), and
per-token FLOPs and activation memory grow with the length. So a training estimate uses the
family's training length unless the user gives ``--seq-len``, and says which it used.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from optimizer.model.spec import ModelSpec

TABLE = Path(__file__).parent / "train_seq_len.csv"
#: Used when a family has no published pre-training length: the context length capped at the
#: most common pre-training length of the table's recent families (Qwen2/3, DeepSeek, OLMo 2,
#: Granite, Phi-3: 4096), stated in the output.
FALLBACK_CAP = 4096


@dataclass(frozen=True)
class TrainLength:
    seq_len: int        # tokens
    source: str         # where it comes from (one line)
    kind: str           # "family" | "fallback"


@lru_cache(maxsize=1)
def _rows() -> dict[tuple[str, int | None], tuple[int, str]]:
    out = {}
    with TABLE.open(encoding="utf-8") as f:
        for r in csv.DictReader(f):
            ctx = int(r["context"]) if r["context"] else None
            out[(r["family"], ctx)] = (int(r["train_seq_len"]), r["source"])
    return out


def family_train_seq_len(spec: ModelSpec) -> TrainLength:
    """The training sequence length of ``spec``'s family (the row for its context length, else
    the family's row); without one, min(context, FALLBACK_CAP) with a source that says so."""
    rows = _rows()
    hit = rows.get((spec.family, spec.max_position_embeddings)) or rows.get((spec.family, None))
    if hit is not None:
        n, src = hit
        return TrainLength(min(n, spec.max_position_embeddings), f"{spec.family} family pre-training length ({src})",
                           "family")
    n = min(spec.max_position_embeddings, FALLBACK_CAP)
    return TrainLength(n, f"no published pre-training length for family {spec.family or '(none)'!r}: "
                          f"context length {spec.max_position_embeddings} capped at {FALLBACK_CAP}; "
                          "give --seq-len", "fallback")
