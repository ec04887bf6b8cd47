"""One rule function serves the space, evaluate and estimate (issues 18 and 20).

Before: ``evaluate`` accepted sequence parallelism at TP = 1 as a feasible configuration distinct
from the same layout without it (same figures), which ``solve`` never returned, so solve's top-K
was not the top-K of the space it documents. Now ``formulas.layout.sequence_parallel_rule`` is
the rule the space skips, ``evaluate`` reports and ``estimate`` warns about; solve's top-K equals
an exhaustive enumeration through the public ``evaluate`` of every configuration the scenario
pins, ``sequence_parallel: [false, true]`` with ``tp: [1, 2]`` included, and likewise for the two
other same-layout rules: ZeRO > 0 at DP = 1 (``zero_rule``, ``zero: [0, 1]``) and selective
recomputation under flash attention (``recompute_rule``, ``recompute: [none, selective, full]``).
``estimate`` rejects impossible layouts with the rules ``evaluate`` reports
(``structural_rules``).
"""

from __future__ import annotations

import itertools

import pytest

import optimizer
from optimizer.errors import ClusteroptError
from optimizer.formulas.layout import recompute_rule, sequence_parallel_rule, structural_rules, zero_rule
from optimizer.model import load_model

CONFIG_KEYS = ("gpu", "n_gpus", "tp", "pp", "dp", "cp", "ep", "zero", "precision", "micro_batch", "recompute",
               "sequence_parallel")


def _scenario(objective: str = "cost", **constraints):
    # small on purpose (a few dozen configurations): llama-2-7b, 16 sequences, one node of H100s
    return optimizer.load_scenario({
        "name": "sp-rule", "model": "llama-2-7b",
        "train": {"tokens": 1e10, "seq_len": 2048, "global_batch": 16},
        "constraints": {"gpus": ["H100-SXM5-80GB"], "max_gpus": 8, **constraints},
        "search": {"tp": [1, 2], "pp": [1], "cp": [1], "micro_batch": [1, 2], "zero": [0, 1],
                   "recompute": ["none", "selective", "full"],
                   "precision": ["bf16"], "sequence_parallel": [False, True]},
        "objective": objective, "top_k": 500,
    })


def _enumerate(sc) -> list:
    """Every combination of the pinned lists (and every DP that divides the batch), through the
    public evaluate; the feasible ones sorted by the contract's objective order."""
    s, g = sc.search, sc.train.global_batch
    out = []
    for tp, mb, sp, zero, rec in itertools.product(s.tp, s.micro_batch, s.sequence_parallel, s.zero, s.recompute):
        for dp in range(1, g // mb + 1):
            if g % (mb * dp):
                continue
            cfg = {"gpu": "H100-SXM5-80GB", "n_gpus": tp * dp, "tp": tp, "pp": 1, "dp": dp, "cp": 1, "ep": 1,
                   "zero": zero, "precision": "bf16", "micro_batch": mb, "recompute": rec,
                   "sequence_parallel": sp}
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


def test_same_layout_rules():
    assert zero_rule(1, 1, 1) is not None and zero_rule(1, 1, 3) is not None
    assert zero_rule(1, 1, 0) is None and zero_rule(2, 1, 1) is None and zero_rule(1, 2, 1) is None
    assert recompute_rule("selective", True) is not None
    assert recompute_rule("selective", False) is None and recompute_rule("full", True) is None


@pytest.mark.parametrize("change, rule", [
    ({"zero": 1, "dp": 1, "n_gpus": 2}, zero_rule(1, 1, 1)),
    ({"recompute": "selective"}, recompute_rule("selective", True)),
])
def test_evaluate_rejects_the_same_layout_under_another_name(change, rule):
    sc = _scenario()
    cfg = {"gpu": "H100-SXM5-80GB", "n_gpus": 4, "tp": 2, "pp": 1, "dp": 2, "cp": 1, "ep": 1, "zero": 0,
           "precision": "bf16", "micro_batch": 1, "recompute": "none", "sequence_parallel": True}
    bad = optimizer.evaluate(sc, dict(cfg, **change))
    canonical = optimizer.evaluate(sc, dict(cfg, **{k: v for k, v in change.items() if k in ("dp", "n_gpus")}))
    assert canonical.feasible and not bad.feasible and bad.violations == [rule]
    # the same layout: every figure equal, only the verdict differs
    assert bad.cost_usd == canonical.cost_usd and bad.memory_per_gpu_bytes == canonical.memory_per_gpu_bytes


def test_selective_is_its_own_layout_without_flash_attention():
    sc = optimizer.load_scenario(dict(_scenario().model_dump(exclude_none=True),
                                      train={"tokens": 1e10, "seq_len": 2048, "global_batch": 16,
                                             "flash_attention": False}))
    res = optimizer.solve(sc)
    assert set(res.configs.recompute) == {"none", "selective", "full"}


@pytest.mark.parametrize("kw, field", [
    (dict(tp=3), "--tp"), (dict(pp=33), "--pp"), (dict(ep=2), "--ep"),
])
def test_estimate_rejects_what_evaluate_reports_with_the_same_rule(kw, field):
    spec = load_model("llama-2-7b")
    layout = dict(tp=1, pp=1, dp=8, cp=1, ep=1) | kw
    broken = structural_rules(spec, **layout)
    assert broken and "--" + broken[0].field == field
    with pytest.raises(ClusteroptError) as e:
        optimizer.estimate("llama-2-7b", gpu="H100-SXM5-80GB", seq_len=2048, **layout)
    assert e.value.field == field and e.value.problem == broken[0].message


def test_estimate_accepts_uneven_stages_and_tp_across_nodes():
    assert structural_rules(load_model("llama-2-7b"), tp=16, pp=5, dp=1, cp=1, ep=1) == []
    data = optimizer.estimate("llama-2-7b", gpu="H100-SXM5-80GB", seq_len=2048, tp=16, pp=5, dp=1)
    assert data["train"]["layout"]["pp"] == 5 and any("NVLink" in w for w in data["train"]["warnings"])


def test_estimate_warns_with_the_same_rule():
    data = optimizer.estimate("llama-2-7b", gpu="H100-SXM5-80GB", tp=1, dp=8, seq_len=2048, sequence_parallel=True)
    assert sequence_parallel_rule(1, True) in data["train"]["warnings"]


@pytest.mark.parametrize("objective", ["cost", "time"])
def test_top_k_equals_exhaustive_enumeration_through_evaluate(objective):
    sc = _scenario(objective)
    ref = _enumerate(sc)
    res = optimizer.solve(sc)
    assert res.status == "optimal" and 4 < len(ref) < sc.top_k
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
    # ZeRO > 0 only where DP > 1 shards it; selective never (flash attention): both as evaluate says
    assert set(res.configs.loc[res.configs.dp == 1, "zero"]) == {0}
    assert set(res.configs.loc[res.configs.dp > 1, "zero"]) == {0, 1}
    assert set(res.configs.recompute) == {"none", "full"}
