"""One rule function serves the space, evaluate and estimate (issue 18).

Before: ``evaluate`` accepted sequence parallelism at TP = 1 as a feasible configuration distinct
from the same layout without it (same figures), which ``solve`` never returned, so solve's top-K
was not the top-K of the space it documents. Now ``formulas.layout.sequence_parallel_rule`` is
the rule the space skips, ``evaluate`` reports and ``estimate`` warns about; solve's top-K equals
an exhaustive enumeration through the public ``evaluate`` of every configuration the scenario
pins, ``sequence_parallel: [false, true]`` with ``tp: [1, 2]`` included.
"""

from __future__ import annotations

import itertools

import pytest

import optimizer
from optimizer.formulas.layout import sequence_parallel_rule

CONFIG_KEYS = ("gpu", "n_gpus", "tp", "pp", "dp", "cp", "ep", "zero", "precision", "micro_batch", "recompute",
               "sequence_parallel")


def _scenario(objective: str = "cost", **constraints):
    # small on purpose (a few dozen configurations): llama-2-7b, 16 sequences, one node of H100s
    return optimizer.load_scenario({
        "name": "sp-rule", "model": "llama-2-7b",
        "train": {"tokens": 1e10, "seq_len": 2048, "global_batch": 16},
        "constraints": {"gpus": ["H100-SXM5-80GB"], "max_gpus": 8, **constraints},
        "search": {"tp": [1, 2], "pp": [1], "cp": [1], "micro_batch": [1, 2], "zero": [1], "recompute": ["full"],
                   "precision": ["bf16"], "sequence_parallel": [False, True]},
        "objective": objective, "top_k": 100,
    })


def _enumerate(sc) -> list:
    """Every combination of the pinned lists (and every DP that divides the batch), through the
    public evaluate; the feasible ones sorted by the contract's objective order."""
    s, g = sc.search, sc.train.global_batch
    out = []
    for tp, mb, sp in itertools.product(s.tp, s.micro_batch, s.sequence_parallel):
        for dp in range(1, g // mb + 1):
            if g % (mb * dp):
                continue
            cfg = {"gpu": "H100-SXM5-80GB", "n_gpus": tp * dp, "tp": tp, "pp": 1, "dp": dp, "cp": 1, "ep": 1,
                   "zero": 1, "precision": "bf16", "micro_batch": mb, "recompute": "full", "sequence_parallel": sp}
            ev = optimizer.evaluate(sc, cfg)
            if ev.feasible:
                out.append(ev)
    key = {"cost": lambda e: (e.cost_usd, e.wall_clock_days, e.config["n_gpus"]),
           "time": lambda e: (e.wall_clock_days, e.cost_usd, e.config["n_gpus"])}[sc.objective]
    return sorted(out, key=key)


def test_the_rule():
    assert sequence_parallel_rule(1, True) is not None
    assert sequence_parallel_rule(1, False) is None and sequence_parallel_rule(2, True) is None


def test_evaluate_rejects_sequence_parallel_at_tp1_with_the_rules_message():
    sc = _scenario()
    cfg = {"gpu": "H100-SXM5-80GB", "n_gpus": 4, "tp": 1, "pp": 1, "dp": 4, "cp": 1, "ep": 1, "zero": 1,
           "precision": "bf16", "micro_batch": 1, "recompute": "full", "sequence_parallel": True}
    ev = optimizer.evaluate(sc, cfg)
    assert not ev.feasible
    assert sequence_parallel_rule(1, True) in ev.violations
    assert optimizer.evaluate(sc, dict(cfg, sequence_parallel=False)).feasible


def test_estimate_warns_with_the_same_rule():
    data = optimizer.estimate("llama-2-7b", gpu="H100-SXM5-80GB", tp=1, dp=8, seq_len=2048, sequence_parallel=True)
    assert sequence_parallel_rule(1, True) in data["train"]["warnings"]


@pytest.mark.parametrize("objective", ["cost", "time"])
def test_top_k_equals_exhaustive_enumeration_through_evaluate(objective):
    sc = _scenario(objective)
    ref = _enumerate(sc)
    res = optimizer.solve(sc)
    assert res.status == "optimal" and len(ref) > 4
    # the same set of configurations ...
    got = {tuple(r[k] for k in CONFIG_KEYS) for r in res.configs.to_dict(orient="records")}
    want = {tuple(e.config[k] for k in CONFIG_KEYS) for e in ref}
    assert got == want
    # ... in the same objective order, with the same figures
    col = {"cost": "cost_usd", "time": "wall_clock_days"}[objective]
    assert list(res.configs[col]) == pytest.approx([e[col] for e in ref], rel=1e-12)
    # SP appears exactly where TP > 1 may carry it
    assert set(res.configs.loc[res.configs.tp == 1, "sequence_parallel"]) == {False}
    assert set(res.configs.loc[res.configs.tp == 2, "sequence_parallel"]) == {False, True}
