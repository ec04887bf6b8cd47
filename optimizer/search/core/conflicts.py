"""Minimal conflicting sets of rules: the table analogue of CP-SAT's infeasible core, shared by the
training and serving explanations."""

from __future__ import annotations

import itertools


def minimal_subsets_failing(check, families: list[str]) -> list[list[str]]:
    """Every minimal set S of ``families`` with ``check(S)`` False (nothing meets all of S), by
    increasing size; a superset of a set already found is skipped. Each list keeps the order of
    ``families``. Shared by the training and serving explanations."""
    conflicts: list[set[str]] = []
    for size in range(1, len(families) + 1):
        for combo in itertools.combinations(families, size):
            s = set(combo)
            if any(c <= s for c in conflicts):
                continue
            if not check(s):
                conflicts.append(s)
    return [sorted(c, key=families.index) for c in conflicts]
