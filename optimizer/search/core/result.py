"""The one result type of every planner: ``SolveResult``, readable as attributes and as a mapping."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd


class AttrMapping:
    """Readable both as attributes and as a mapping (CONTRACTS.md)."""

    def __getitem__(self, key):
        try:
            return getattr(self, key)
        except AttributeError:
            raise KeyError(key) from None

    def __contains__(self, key):
        return hasattr(self, key)

    def keys(self):
        return [f for f in self.__dataclass_fields__]


@dataclass
class SolveResult(AttrMapping):
    scenario: str
    status: str                       # optimal | feasible | infeasible
    objective: str
    configs: pd.DataFrame
    pareto: pd.DataFrame
    explanation: dict
    stats: dict = field(default_factory=dict)
    table: Any = None                 # the full candidate Table (for sensitivity, plots)
    workload: str = "train"           # the planner that produced it: train | serve | codesign
