"""The public API works for every workload it applies to, with typed errors (issue 18).

Before: ``optimizer.evaluate`` on a serving scenario answered with training-key errors,
``optimizer.sensitivity`` on a serving result raised ``KeyError: 'tp'``, and there was no
``optimizer.plan`` or ``optimizer.estimate``. Expected figures here are the solver's own
(evaluate must reproduce what solve reported), never hard-coded numbers.
"""

from __future__ import annotations

import inspect

import pytest

import optimizer
from optimizer.errors import ClusteroptError

SERVE = "llama31-8b-rag"
TRAIN = {"name": "api-train", "model": "llama-2-7b", "train": {"tokens": 1e10, "seq_len": 2048, "global_batch": 16},
         "constraints": {"gpus": ["H100-SXM5-80GB"], "max_gpus": 8},
         "search": {"tp": [1, 2], "pp": [1], "micro_batch": [1], "zero": [1], "recompute": ["full"],
                    "precision": ["bf16"]}, "top_k": 3}


@pytest.fixture(scope="module")
def served():
    sc = optimizer.load_scenario(SERVE)
    return sc, optimizer.solve(sc, top_k=2, time_limit_s=20)


@pytest.fixture(scope="module")
def trained():
    sc = optimizer.load_scenario(TRAIN)
    return sc, optimizer.solve(sc)


def test_evaluate_a_serving_fleet_reproduces_the_solver(served):
    sc, res = served
    assert res.workload == "serve" and res.status == "optimal"
    best = res.configs.iloc[0]
    ev = optimizer.evaluate(sc, {"replicas": list(best["replicas"])})
    assert ev["feasible"], ev["violations"]
    for k in ("usd_per_hour", "n_gpus", "capacity_requests_per_s"):
        assert float(ev[k]) == pytest.approx(float(best[k]), rel=1e-9)
    assert optimizer.evaluate(sc, list(best["replicas"]))["usd_per_hour"] == pytest.approx(ev["usd_per_hour"])


def test_evaluate_a_too_small_fleet_names_the_broken_rule(served):
    sc, res = served
    one = [dict(list(res.configs.iloc[0]["replicas"])[0], count=1)]
    ev = optimizer.evaluate(sc.with_overrides({"serve.requests_per_s": 1e5}), {"replicas": one})
    assert not ev["feasible"] and ev["violations"]


@pytest.mark.parametrize("bad", [{"gpu": "H100-SXM5-80GB", "tp": 1}, {"replicas": "x"}, 42])
def test_evaluate_serving_bad_configs_are_typed_errors(served, bad):
    sc, _ = served
    with pytest.raises(ClusteroptError):
        optimizer.evaluate(sc, bad)


def test_sensitivity_on_a_serving_scenario(served):
    sc, res = served
    sens = optimizer.sensitivity(res, sc, swing_pct=20, range_pct=30, grid=3, inputs=["serve.requests_per_s"])
    assert {t["input"] for t in sens["thresholds"]} == {"serve.requests_per_s"}
    assert {t["direction"] for t in sens["thresholds"]} == {"up", "down"}
    up = next(t for t in sens["thresholds"] if t["direction"] == "up")
    if up["change_pct"] is not None:      # a switch inside the range: the best fleet differs there
        assert up["new_best"] is not None


def test_sensitivity_with_the_wrong_scenario_is_a_typed_error(served, trained):
    sc, res = served
    tsc, tres = trained
    with pytest.raises(ClusteroptError, match="result"):
        optimizer.sensitivity(res, tsc)
    with pytest.raises(ClusteroptError, match="result"):
        optimizer.sensitivity(tres, sc)
    with pytest.raises(ClusteroptError, match="result"):
        optimizer.sensitivity({"configs": []}, sc)


def test_training_evaluate_accepts_a_row_of_solve(trained):
    sc, res = trained
    row = res.configs.iloc[0].to_dict()
    ev = optimizer.evaluate(sc, row)
    assert ev.feasible and ev.cost_usd == pytest.approx(row["cost_usd"], rel=1e-12)
    with pytest.raises(ClusteroptError, match="config"):
        optimizer.evaluate(sc, {"gpu": "H100-SXM5-80GB"})            # missing keys: typed, not KeyError
    parts = optimizer.memory_breakdown(sc, row)
    assert sum(v for k, v in parts.items() if k != "memory_per_gpu_bytes") == pytest.approx(
        parts["memory_per_gpu_bytes"], rel=1e-9)


def test_codesign_evaluate_reproduces_the_plan():
    sc = optimizer.load_scenario({
        "name": "api-codesign", "train": {"model": {"family": "llama-3", "params": "auto", "min_params": 1e9,
                                                    "max_params": 4e9}, "tokens": "auto", "seq_len": 4096,
                                          "global_batch_tokens": 2e6},
        "constraints": {"budget_usd": 5000.0, "max_gpus": 64, "gpus": ["H100-SXM5-80GB"]}, "objective": "loss",
        "top_k": 1})
    res = optimizer.solve(sc)
    row = res.configs.iloc[0].to_dict()
    ev = optimizer.evaluate(sc, row)
    assert ev.feasible
    for k in ("predicted_loss", "cost_usd", "train_tokens", "model_params"):
        assert float(ev[k]) == pytest.approx(float(row[k]), rel=1e-9)
    assert ev["scaling_law"] == res.scaling_law
    with pytest.raises(ClusteroptError, match="model_params"):
        optimizer.evaluate(sc, dict(row, model_params=row["model_params"] * 1.3))
    with pytest.raises(ClusteroptError, match="sensitivity"):
        optimizer.sensitivity(res, sc)


def test_estimate_training_and_serving():
    t = optimizer.estimate("llama-3-8b", gpu="H100-SXM5-80GB", tp=1, dp=8)
    s = optimizer.estimate("llama-3-8b", gpu="H100-SXM5-80GB", serve=True, batch=8)
    assert t["train"]["fits"] in (True, False) and s["serve"]["itl_s"] > 0
    with pytest.raises(ClusteroptError):
        optimizer.estimate("llama-3-8b", gpu="H100-SXMX")


def test_plan_and_sweep_through_the_api():
    r = optimizer.plan("rent-vs-buy", top_k=1, binding=False)
    assert r.status in ("optimal", "feasible") and r.slack is not None
    df = optimizer.sweep(TRAIN, {"constraints.budget_usd": [1e3, 1e5]}, workers=1)
    assert list(df["constraints.budget_usd"]) == [1e3, 1e5]


@pytest.mark.parametrize("name", ["estimate", "evaluate", "solve", "sensitivity", "sweep", "plan",
                                  "memory_breakdown", "scaling_plan", "load_scenario"])
def test_public_entry_points_have_docstrings_and_type_hints(name):
    fn = getattr(optimizer, name)
    assert (fn.__doc__ or "").strip()
    sig = inspect.signature(fn)
    assert sig.return_annotation is not inspect.Signature.empty
    for p in sig.parameters.values():
        if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
            assert p.annotation is not inspect.Parameter.empty, (name, p.name)
