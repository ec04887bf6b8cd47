"""Argument checks and array conventions shared by the estimators.

Estimators accept scalars or numpy arrays (the search evaluates whole tables at once) and
return the same: a 0-d result comes back as a Python-compatible scalar. Out-of-range input
raises a one-line ClusteroptError naming the argument, the value and what is allowed.
"""

from __future__ import annotations

import numpy as np

from optimizer.errors import ClusteroptError


def as_array(field: str, value, *, lo: float = 0.0, lo_open: bool = False, hi: float | None = None,
             allow_inf: bool = False) -> np.ndarray:
    """``value`` as a float array, checked finite (or +inf with ``allow_inf``) and >= lo (> lo when
    ``lo_open``), <= hi."""
    a = np.asarray(value, dtype=float)
    bad = (np.isnan(a) | (a == -np.inf) if allow_inf else ~np.isfinite(a)) | ((a <= lo) if lo_open else (a < lo))
    if hi is not None:
        bad |= a > hi
    if np.any(bad):
        allowed = f"allowed: {'>' if lo_open else '>='} {lo:g}" + (f" and <= {hi:g}" if hi is not None else "")
        # name the first offending value, never an array's repr (it spans lines and hides which)
        first = a[bad][0] if a.ndim else a[()]
        where = f" at {int(np.flatnonzero(bad)[0])} of {a.size} values" if a.ndim and a.size > 1 else ""
        raise ClusteroptError(field, f"out of range (got {float(first):g}{where})", allowed)
    return a


def scalar_or_array(x):
    """A 0-d result as a numpy scalar, anything larger as the array."""
    x = np.asarray(x, dtype=float)
    return x[()] if x.ndim == 0 else x
