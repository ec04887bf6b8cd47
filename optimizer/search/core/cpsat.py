"""The CP-SAT model: choose one row of a candidate table, under linear limits, lexicographically best.

Notation (OR-Tools sample order: data, model, variables, constraints, objective, solve, decode)

    r in R            candidate rows (one configuration each), from ``space``/``tables``
    x[r] in {0, 1}    row r is the chosen configuration
    a[c] in {0, 1}    enforcement literal of limit family c (memory, budget, deadline, ...)
    lhs[c][r] (int)   row r's use of limit c, in that limit's integer unit (see ``scales``)
    rhs[c]    (int)   the limit
    key[j][r] (int)   the j-th objective key (primary first), all in integer units

    sum_r x[r] = 1                                            (exactly one configuration)
    a[c]  =>  sum_r lhs[c][r] * x[r] <= rhs[c]                 for every limit family c
    minimise key[0] . x, then key[1] . x with key[0] fixed at its optimum, ... (lexicographic)

Nonlinear figures (memory, step time, cost) enter only through the integer tables lhs and
key, computed by the very formulas that ``evaluate`` uses, so the two cannot disagree.
Top-K: after the k-th optimum row r_k is decoded, ``x[r_k] = 0`` is added and the model is
solved again; this returns the K best DISTINCT rows in objective order (collecting
intermediate solutions from a callback does not: those are not ranked).

One weighted objective would overflow int64 for large tables (cost in 1e-4 USD times a
time weight), so objectives are solved lexicographically instead; ``check_int64`` verifies
at build time that every sum the model can form stays below 2^62.
"""

from __future__ import annotations

import time


from dataclasses import dataclass, field

import numpy as np
from ortools.sat.python import cp_model

INT64_SAFE = 2**62


@dataclass(frozen=True)
class Limit:
    """One limit family: sum_r lhs[r] x[r] <= rhs, optionally only over rows in ``mask``.

    ``group`` limits (stock per GPU type) are several Limits with the same ``family``.
    """

    family: str
    lhs: np.ndarray
    rhs: int
    label: str = ""


@dataclass
class TopK:
    rows: list[int]
    status: str                      # optimal | feasible | infeasible
    solve_time_s: float
    n_solves: int
    objective_values: list[tuple[int, ...]] = field(default_factory=list)
    limit_reached: bool = False      # the time (or deterministic-time) limit stopped the search
    deterministic_time: float = 0.0  # CP-SAT's deterministic time used, summed over the solves


def _binding_rhs(lim: Limit) -> int | None:
    """The limit's right-hand side, or None when no row can reach it (exactly one row is chosen,
    so the left-hand side never exceeds the largest entry): a budget of 10^19 units would not
    fit CP-SAT's int64 and binds nothing anyway (issue 20)."""
    if len(lim.lhs) == 0:
        return None
    if int(np.max(lim.lhs)) <= lim.rhs:
        return None
    return int(lim.rhs)


def check_int64(arrays: list[np.ndarray], what: str = "table") -> None:
    """Fail loudly if a table value could overflow when CP-SAT sums it (exactly one row is chosen,
    so a sum never exceeds the largest absolute entry; we still demand a 4x margin)."""
    for a in arrays:
        if len(a) and int(np.max(np.abs(a))) * 4 >= INT64_SAFE:
            raise OverflowError(f"{what}: integer table entry {int(np.max(np.abs(a)))} too large for int64 headroom")


def _combine_keys(keys: list[np.ndarray]) -> list[np.ndarray]:
    """Replace lexicographic keys by one equivalent integer key when it fits in int64.

    Each key is mapped to its dense rank among the rows (order-preserving, ties kept), and
    the ranks are combined in mixed radix: key0_rank * (R1*R2*...) + key1_rank * (R2*...) + ...
    Minimising that single key is exactly the lexicographic minimum, with one solve instead
    of one per key. If the radix product would pass 2^62 the keys are kept apart.
    """
    if len(keys) <= 1:
        return keys
    ranks, sizes = [], []
    for kk in keys:
        uniq, inv = np.unique(kk, return_inverse=True)
        ranks.append(inv.astype(np.int64))
        sizes.append(len(uniq))
    total = 1
    for s_ in sizes:
        total *= s_
        if total >= INT64_SAFE:
            return keys
    combined = np.zeros_like(ranks[0])
    for rk, s_ in zip(ranks, sizes):
        combined = combined * s_ + rk
    return [combined]


def _build(n_rows: int, limits: list[Limit]):
    model = cp_model.CpModel()
    x = [model.new_bool_var(f"x[{r}]") for r in range(n_rows)]
    model.add_exactly_one(x)
    enforce = {}
    for lim in limits:
        lit = enforce.get(lim.family)
        if lit is None:
            lit = enforce[lim.family] = model.new_bool_var(f"a[{lim.family}]")
        rhs = _binding_rhs(lim)
        if rhs is None:                            # met by every row: nothing to constrain
            continue
        rhs = max(rhs, -INT64_SAFE)                # below every row: infeasible either way
        nz = np.nonzero(lim.lhs)[0]
        expr = cp_model.LinearExpr.weighted_sum([x[r] for r in nz], [int(lim.lhs[r]) for r in nz])
        model.add(expr <= rhs).only_enforce_if(lit)
    return model, x, enforce


#: CP-SAT's wall-clock limit when the search is bounded by deterministic time only: a guard
#: against a stalled solver, not a limit that is expected to bind (24 hours).
WALL_GUARD_S = 86400.0


def solve_top_k(keys: list[np.ndarray], k: int, limits: list[Limit] = (), *,
                time_limit_s: float = 30.0, workers: int = 1, deterministic: bool = False) -> TopK:
    """The k best distinct rows under ``limits``, ordered by ``keys`` lexicographically.

    The last key should be unique per row (a canonical row order) so that ties are broken
    deterministically: same input, same output.

    ``time_limit_s`` bounds the wall-clock time of all solves together; on a busy machine a
    limit that binds can then stop at different points run to run. With ``deterministic`` it
    bounds CP-SAT's deterministic time instead (its work counter, independent of load;
    ``max_deterministic_time``) on one worker, and no wall clock is read: the same input gives
    the same answer on a busy and an idle machine. ``limit_reached`` says whether the limit
    stopped the search before every solve was proven.
    """
    if deterministic:
        workers = 1
    keys = [np.asarray(kk, dtype=np.int64) for kk in keys]
    n = len(keys[0]) if keys else 0
    keys = _combine_keys(keys)
    check_int64(keys + [lim.lhs for lim in limits], "cp-sat tables")
    t0 = time.perf_counter()
    if n == 0:
        return TopK([], "infeasible", 0.0, 0)
    det_used = 0.0
    limit_reached = False
    model, x, enforce = _build(n, limits)
    for lit in enforce.values():
        model.add(lit == 1)
    rows: list[int] = []
    values: list[tuple[int, ...]] = []
    status_all = "optimal"
    n_solves = 0
    for _ in range(min(k, n)):
        m = model.clone()
        xs = [m.get_bool_var_from_proto_index(v.index) for v in x]
        fixed: list[int] = []
        chosen = None
        for key in keys:
            m.minimize(cp_model.LinearExpr.weighted_sum(xs, [int(v) for v in key]))
            used = det_used if deterministic else time.perf_counter() - t0
            remaining = time_limit_s - used
            if remaining <= 0:
                status_all = "feasible" if rows else "unknown"
                limit_reached = True
                break
            solver = cp_model.CpSolver()
            if deterministic:
                solver.parameters.max_deterministic_time = remaining
                solver.parameters.max_time_in_seconds = WALL_GUARD_S
            else:
                solver.parameters.max_time_in_seconds = remaining
            solver.parameters.num_workers = workers
            st = solver.solve(m)
            det_used += solver.response_proto.deterministic_time
            n_solves += 1
            if st == cp_model.INFEASIBLE:
                chosen = None
                break
            if st not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
                status_all = "feasible" if rows else "unknown"
                limit_reached = True
                chosen = None
                break
            if st == cp_model.FEASIBLE:
                status_all = "feasible"
                limit_reached = True
            val = int(round(solver.objective_value))
            fixed.append(val)
            m.add(cp_model.LinearExpr.weighted_sum(xs, [int(v) for v in key]) == val)
            chosen = next(r for r in range(n) if solver.boolean_value(xs[r]))
        if chosen is None:
            break
        rows.append(chosen)
        values.append(tuple(fixed))
        model.add(x[chosen] == 0)
    if not rows:
        status_all = "infeasible" if status_all == "optimal" else status_all
    return TopK(rows, status_all, time.perf_counter() - t0, n_solves, values, limit_reached, det_used)
