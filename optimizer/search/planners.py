"""The one dispatcher: workload -> the planner's solve, evaluate, sensitivity and render hooks.

``Scenario.workload`` ('train', 'serve', 'codesign') says which planner solves a scenario; the
public API (search/api.py), the CLI, ``report`` and ``sweep`` ask this table instead of deciding
again. Every planner package has the same shape (space, table, solve, evaluate, explain,
sensitivity) and returns the one ``core.result.SolveResult``. Portfolios are planned from their
own document (``api.plan``), not from a scenario.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

from optimizer.errors import ClusteroptError
from optimizer.search.codesign.evaluate import evaluate_codesign
from optimizer.search.codesign.solve import solve_codesign
from optimizer.search.serve.evaluate import evaluate_fleet
from optimizer.search.serve.sensitivity import serving_sensitivity
from optimizer.search.serve.solve import solve_serving
from optimizer.search.train.evaluate import evaluate_training
from optimizer.search.train.sensitivity import training_sensitivity
from optimizer.search.train.solve import solve_training


@dataclass(frozen=True)
class Planner:
    """What one workload's planner offers. ``solve(scenario, *, top_k, objective, time_limit_s,
    catalog, efficiency_scale)``; ``evaluate(scenario, config, *, catalog)``;
    ``sensitivity(result, scenario, **options)``; ``render``: which table the report draws
    ('layouts', 'fleets' or 'models')."""

    workload: str
    solve: Callable[..., Any]
    evaluate: Optional[Callable[..., Any]]
    sensitivity: Optional[Callable[..., dict]]
    render: str


def _solve_serving(scenario, *, top_k=None, objective=None, time_limit_s=30.0, catalog, efficiency_scale=1.0):
    if efficiency_scale != 1.0:
        raise ClusteroptError("efficiency_scale", "not available for serving scenarios", "1.0")
    return solve_serving(scenario, top_k=top_k, objective=objective, time_limit_s=time_limit_s, catalog=catalog)


def _evaluate_serving(scenario, config, *, catalog, efficiency_scale=1.0):
    if efficiency_scale != 1.0:
        raise ClusteroptError("efficiency_scale", "not available for serving scenarios", "1.0")
    replicas = config.get("replicas") if isinstance(config, dict) else config
    if not isinstance(replicas, list):
        raise ClusteroptError("config", "a serving configuration is a fleet",
                              "{'replicas': [{gpu, tp, pp, weights, kv, batch, count}, ...]} or that list")
    return evaluate_fleet(scenario, replicas, catalog=catalog)


PLANNERS: dict[str, Planner] = {
    "train": Planner("train", solve_training, evaluate_training, training_sensitivity, "layouts"),
    "serve": Planner("serve", _solve_serving, _evaluate_serving, serving_sensitivity, "fleets"),
    "codesign": Planner("codesign", solve_codesign, evaluate_codesign, None, "models"),
}


def planner(workload: str) -> Planner:
    """The planner of a workload ('train', 'serve', 'codesign')."""
    try:
        return PLANNERS[workload]
    except KeyError:
        raise ClusteroptError("workload", f"unknown workload {workload!r}", "allowed: " + ", ".join(PLANNERS)) from None
