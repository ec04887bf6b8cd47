"""Switching thresholds by parametric re-solving (grid then bisection), shared by every planner's
sensitivity analysis."""

from __future__ import annotations


import math

from optimizer.errors import ClusteroptError

def find_threshold(best_at, base_key, name: str, direction: str, *, range_pct: float, grid: int,
                   tol_pct: float, note: str | None = None, down_cap_pct: float = 99.9) -> dict:
    """The smallest change (grid then bisection) at which the best answer changes.

    ``best_at(factor) -> (key, payload)``: the best answer's identity and what to report as
    ``new_best`` (a 12-key training configuration, or a serving fleet). Shared by training
    (Perturber) and serving (serve.sensitivity) sensitivity.
    """
    sign = 1 if direction == "up" else -1
    step = range_pct / grid
    out = {"input": name, "direction": direction, "change_pct": None, "range_pct": range_pct,
           "new_best": None, "unchanged_pct": None, "new_status": None,
           "grid_step_pct": step, "tolerance_pct": tol_pct}
    if note:
        out["note"] = note
        return out
    lo, hi = 0.0, None
    cap = range_pct if sign > 0 else min(range_pct, down_cap_pct, 99.9)
    for i in range(1, grid + 1):
        pct = min(step * i, cap)
        if best_at(1 + sign * pct / 100)[0] != base_key:
            hi = pct
            break
        lo = pct
        if pct >= cap:
            break
    if hi is None:
        return out
    while hi - lo > tol_pct:
        mid = (lo + hi) / 2
        if best_at(1 + sign * mid / 100)[0] != base_key:
            hi = mid
        else:
            lo = mid
    key, payload = best_at(1 + sign * hi / 100)
    out.update(change_pct=sign * hi, unchanged_pct=sign * lo, new_best=payload,
               new_status="feasible" if key is not None else "infeasible")
    return out


def check_ranges(swing_pct: float, range_pct: float, grid: int = 10, tol_pct: float = 0.1) -> None:
    """The tornado swing and the threshold range as percentages, the grid's step count and the
    bisection tolerance (one-line errors; grid=0 divided by zero)."""
    from optimizer.inputs import integer, number

    for field, v, lo, hi in (("swing_pct", swing_pct, 0, 99.9), ("range_pct", range_pct, 0, 1000)):
        number(f"sensitivity.{field}", v)
        if not lo < v <= hi:
            raise ClusteroptError(f"sensitivity.{field}", f"{v!r}", f"a percentage in ({lo}, {hi}]")
    integer("sensitivity.grid", grid, 1, 1000)
    number("sensitivity.tol_pct", tol_pct, gt=0, le=100)


def select_inputs(all_inputs: list[tuple[str, str | None]], inputs: list[str] | None) -> list[tuple[str, str | None]]:
    """The (input, note) pairs named by ``inputs`` (all when None); unknown names are an error."""

    if inputs is None:
        return all_inputs
    known = {n for n, _ in all_inputs}
    bad = [n for n in inputs if n not in known]
    if bad:
        raise ClusteroptError("sensitivity.inputs", f"unknown {bad}", "allowed: " + ", ".join(sorted(known)))
    return [(n, note) for n, note in all_inputs if n in inputs]


def tornado_entry(name: str, ends: dict, base_value: float, note: str | None = None) -> dict:
    """One tornado bar: the re-optimised best objective at each end (``ends[direction]
    ["best_objective"]``, None where nothing is feasible), its swing (inf when an end is
    infeasible), the base objective, both ends' details and an optional note. The training and
    serving sensitivities build their bars with it."""
    lo, hi = ends["down"]["best_objective"], ends["up"]["best_objective"]
    entry = {"input": name, "low": lo, "high": hi,
             "swing": abs(hi - lo) if lo is not None and hi is not None else math.inf, "base": base_value,
             "reoptimised": ends}
    if note:
        entry["note"] = note
    return entry
