"""The cost/time Pareto front of the feasible configurations."""

from __future__ import annotations


import numpy as np


def pareto_indices(cost: np.ndarray, time: np.ndarray) -> np.ndarray:
    """Indices of the points not dominated in (cost, time), both minimised, sorted by cost.

    A point is dominated when another is no worse in both and better in one. Exact: sort by
    (cost, time) and keep each point whose time is strictly below every cheaper point's.
    Of identical (cost, time) points, the first in input order is kept.
    """
    order = np.lexsort((np.arange(len(cost)), time, cost))
    keep = []
    best_t = np.inf
    for i in order:
        if time[i] < best_t:
            keep.append(i)
            best_t = time[i]
    return np.array(keep, dtype=np.int64)


def pareto_front(table) -> np.ndarray:
    """Row indices of the table's feasible cost/wall-clock Pareto front (integer views)."""
    feas = np.nonzero(table.feasible)[0]
    if len(feas) == 0:
        return feas
    c = table.cols
    return feas[pareto_indices(c["cost_units"][feas], c["time_units"][feas])]
