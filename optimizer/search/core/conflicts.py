"""Minimal conflicting sets of rules: the table analogue of CP-SAT's infeasible core, shared by the
training and serving explanations."""

from __future__ import annotations

import itertools

from optimizer.formatting import usd
from optimizer.units import GB


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


def binding_line(name: str, slack, what: str = "layout") -> str:
    """'binding: deadline ...' in one line that says why a limit with slack still binds: the
    chosen answer is well inside it, but every better answer lies beyond it."""
    left = _slack_words(slack)
    if left is None:
        return f"binding: {name} (without it the optimum would improve)"
    return (f"binding: {name} - the chosen {what} has {left} of slack, but every better {what} breaks it "
            f"(without it the optimum would improve)")


def _slack_words(slack) -> str | None:
    """Slack in words ('23.2 days', '$51.17M', '47.7 GB', '3 GPUs'); None when none is left or the
    value is not one number (per-GPU stock)."""
    if not isinstance(slack, dict) or len(slack) != 1:
        return None
    (key, v), = slack.items()
    if not isinstance(v, (int, float)) or v <= 0:
        return None
    if key.endswith("_bytes"):
        return f"{v / GB:,.1f} GB"
    if key.endswith("_usd_per_hour"):
        return f"${v:,.2f}/hour"
    if key.endswith("_usd"):
        return usd(v)
    if key.endswith("_days"):
        return f"{v:,.1f} days"
    if key == "max_replica_types":
        return f"{int(v)} replica type(s)"
    return f"{int(v):,d} GPUs"
