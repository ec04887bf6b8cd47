"""Space rules shared by the training and serving planners (tensor-parallel degrees)."""

from __future__ import annotations

from optimizer.formulas.layout import tp_rules


def pow2_upto(n: int) -> list[int]:
    out, v = [], 1
    while v <= n:
        out.append(v)
        v *= 2
    return out


def tp_values(spec, search, domain: int) -> list[int]:
    cand = search.tp if search.tp is not None else pow2_upto(max(domain, 1) if not search.allow_tp_across_nodes else 64)
    out = []
    for tp in cand:
        if tp_rules(spec, tp):          # the heads rules evaluate reports and estimate rejects
            continue
        if not search.allow_tp_across_nodes and tp > domain:
            continue
        out.append(tp)
    return sorted(set(out))
