"""The configs DataFrame and the solver-versus-evaluate check, one concept for every planner.

Every planner returns its ranked configurations as ``ranked_frame(records, columns)``: one row per
configuration, the planner's fixed column order (its ``*_COLUMNS`` tuple), ``rank`` from 1, raw
numbers. After decoding, every planner re-evaluates each chosen configuration through its own
``evaluate`` and calls ``check_agreement`` on the figures the solver used: a disagreement is a bug
and raises.
"""

from __future__ import annotations

import math
from typing import Iterable

import pandas as pd


def ranked_frame(records: Iterable[dict], columns: tuple[str, ...], ranked: bool = True) -> pd.DataFrame:
    """One row per record in the given column order, ``rank`` 1, 2, ... (dropped when not ``ranked``)."""
    recs = [dict(r, rank=i + 1) for i, r in enumerate(records)]
    df = pd.DataFrame.from_records(recs, columns=list(columns))
    return df if ranked else df.drop(columns=["rank"])


def check_agreement(what: str, key: str, solver_value: float, evaluated: float, config, *,
                    rel_tol: float = 1e-9, abs_tol: float = 1e-9) -> None:
    """Raise when the solver's figure ``key`` and ``what``'s re-evaluation of ``config`` differ."""
    a, b = float(solver_value), float(evaluated)
    if not math.isclose(a, b, rel_tol=rel_tol, abs_tol=abs_tol):
        raise RuntimeError(f"solver and {what} disagree on {key} for {config}: {a} vs {b}")
