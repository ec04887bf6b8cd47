"""The CP-SAT row model against a direct sort (issue 4: top-K distinct, lexicographic, exact)."""

import numpy as np
from hypothesis import given, settings, strategies as st

from optimizer.search.core.cpsat import Limit, _combine_keys, check_int64, solve_top_k
from optimizer.search.core.pareto import pareto_indices


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 60), st.integers(1, 12), st.integers(0, 2**31), st.integers(0, 50))
def test_top_k_equals_sorted_feasible_rows(n, k, seed, budget):
    rng = np.random.default_rng(seed)
    cost = rng.integers(0, 50, n)          # many ties: the later keys must break them
    days = rng.integers(0, 5, n)
    gpus = rng.integers(1, 4, n)
    order = np.arange(n)
    res = solve_top_k([cost, days, order], k, [Limit("budget", cost, budget), Limit("max_gpus", gpus, 2)])
    feas = [r for r in range(n) if cost[r] <= budget and gpus[r] <= 2]
    expected = sorted(feas, key=lambda r: (cost[r], days[r], r))[:k]
    assert res.rows == expected
    assert res.status == ("optimal" if expected else "infeasible")


def test_combined_key_preserves_lexicographic_order():
    rng = np.random.default_rng(1)
    a, b, c = rng.integers(-5, 5, 200), rng.integers(0, 10**12, 200), np.arange(200)
    (combined,) = _combine_keys([a, b, c])
    assert list(np.argsort(combined, kind="stable")) == list(np.lexsort((c, b, a)))


def test_int64_headroom_is_checked():
    check_int64([np.array([2**58])])
    try:
        check_int64([np.array([2**61])])
    except OverflowError:
        pass
    else:
        raise AssertionError("an entry near 2^62 must be refused")


def test_pareto_front_is_non_dominated_and_complete():
    rng = np.random.default_rng(3)
    cost, time = rng.integers(0, 100, 300), rng.integers(0, 100, 300)
    front = set(pareto_indices(cost, time).tolist())
    for i in range(300):
        dominated = any((cost[j] <= cost[i] and time[j] <= time[i] and (cost[j] < cost[i] or time[j] < time[i]))
                        for j in range(300))
        duplicate_earlier = any(cost[j] == cost[i] and time[j] == time[i] for j in range(i))
        assert (i in front) == (not dominated and not duplicate_earlier)
