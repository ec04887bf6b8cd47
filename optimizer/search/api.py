"""The public API: ``solve``, ``evaluate``, ``sensitivity``, ``sweep``, ``plan``, ``estimate``.

The only place below the CLI that loads the default catalog when the caller passes none; every
layer below receives the caller's catalog (default rows plus the user's files), so a GPU that
exists only in a user's file is planned like any other. Which planner runs is decided once, by
``Scenario.workload`` through ``planners.planner``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Optional, Union

import pandas as pd

from optimizer.catalog import Catalog, load_catalog
from optimizer.errors import ClusteroptError
from optimizer.inputs import integer, number
from optimizer.portfolio_schema import Portfolio
from optimizer.scenario import Scenario, load_scenario
from optimizer.search import estimate as _estimate_mod
from optimizer.search.core.cpsat import WALL_GUARD_S
from optimizer.search.core.result import SolveResult
from optimizer.search.planners import planner
from optimizer.search.portfolio.sensitivity import plan_slack, portfolio_sensitivity
from optimizer.search.portfolio.solve import PlanResult
from optimizer.search.portfolio.solve import plan as _plan
from optimizer.search.sweep import sweep as _sweep
from optimizer.search.train.evaluate import evaluate_training
from optimizer.search.train.table import CONFIG_KEYS

ScenarioLike = Union[str, Path, dict, Scenario]


def _catalog(catalog: Optional[Catalog]) -> Catalog:
    return catalog if catalog is not None else load_catalog()


def disaggregation(scenario: ScenarioLike, *, catalog: Optional[Catalog] = None, time_limit_s: float = 10.0):
    """A serving scenario's cheapest fleet of aggregated replicas and disaggregated prefill/decode
    pools, each option's capacity simulated at the p99 SLOs (search/serve/disaggregation.py), with
    the aggregated-only and disaggregated-only optima and why one wins."""
    from optimizer.search.serve.disaggregation import plan_disaggregated

    sc = load_scenario(scenario)
    if sc.serve is None:
        raise ClusteroptError("serve", "missing", "a serving scenario")
    return plan_disaggregated(sc, _catalog(catalog), time_limit_s=time_limit_s)


def solve(scenario: ScenarioLike, *, top_k: Optional[int] = None, objective: Optional[str] = None,
          time_limit_s: float = 30.0, catalog: Optional[Catalog] = None, efficiency_scale: float = 1.0,
          deterministic: bool = False) -> SolveResult:
    """Rank the K best distinct feasible configurations of a scenario (training layouts, serving
    fleets or co-design plans), proven by CP-SAT. ``catalog``: default catalog when None.

    ``top_k`` 1..1000 (None: the scenario's); ``time_limit_s`` seconds of wall clock (inf: none);
    with ``deterministic`` (training) the same number bounds CP-SAT's deterministic time on one
    worker instead, so the answer does not depend on the machine's load. The result's ``stats``
    say whether the limit stopped the search (``time_limit_reached``)."""
    sc = load_scenario(scenario)
    top_k = None if top_k is None else integer("top_k", top_k, 1, 1000)
    time_limit_s = min(number("time_limit_s", time_limit_s, gt=0, allow_inf=True), WALL_GUARD_S)
    efficiency_scale = number("efficiency_scale", efficiency_scale, gt=0, le=10)
    extra = {}
    if deterministic:
        if sc.workload != "train":
            raise ClusteroptError("deterministic", f"not available for {sc.workload} scenarios",
                                  "training scenarios (serving and co-design searches are bounded by wall clock)")
        extra["deterministic"] = True
    return planner(sc.workload).solve(sc, top_k=top_k, objective=objective, time_limit_s=time_limit_s,
                                      catalog=_catalog(catalog), efficiency_scale=efficiency_scale, **extra)


def evaluate(scenario: ScenarioLike, config: Any, *, catalog: Optional[Catalog] = None,
             efficiency_scale: float = 1.0) -> Any:
    """Every figure of one configuration of a scenario, its feasibility and the rules it breaks.

    Training: the 12 configuration keys (CONTRACTS.md) -> ``Evaluation`` (attributes and mapping).
    Serving: a fleet, ``{'replicas': [{gpu, tp, pp, weights, kv, batch, count}, ...]}`` or that
    list -> a dict with ``feasible``, ``violations`` and the fleet's figures. Co-design: the 12
    keys plus ``model_params`` (a rung) and ``train_tokens`` -> ``Evaluation`` with
    ``predicted_loss`` and ``lifetime_cost_usd``. A row of ``solve``'s configs works as it is for
    training and co-design (other keys are ignored there). Bad input raises ClusteroptError."""
    sc = load_scenario(scenario)
    p = planner(sc.workload)
    if p.workload == "train" and isinstance(config, Mapping):
        from_row = {k: config[k] for k in CONFIG_KEYS if k in config}
        config = from_row if "rank" in config else config
    if p.workload != "serve" and not isinstance(config, Mapping):
        raise ClusteroptError("config", f"a {type(config).__name__}, not a mapping",
                              "a dict with the keys " + ", ".join(CONFIG_KEYS))
    return p.evaluate(sc, config, catalog=_catalog(catalog), efficiency_scale=efficiency_scale)


def memory_breakdown(scenario: ScenarioLike, config: Mapping[str, Any], *,
                     catalog: Optional[Catalog] = None) -> dict:
    """Memory per GPU of one training configuration by part (bytes) and its total; ``config`` may
    be a row of ``solve``'s configs (keys beyond the 12 configuration keys are ignored)."""
    sc = load_scenario(scenario)
    cfg = {k: config[k] for k in CONFIG_KEYS}
    return evaluate_training(sc, cfg, catalog=_catalog(catalog)).memory_breakdown()


def sensitivity(result: Union[SolveResult, PlanResult], scenario: ScenarioLike, *,
                catalog: Optional[Catalog] = None, **options: Any) -> dict:
    """Tornado, switching thresholds and slack of a solved training or serving scenario, or of a
    planned portfolio (``result`` from ``plan``, ``scenario`` its portfolio)."""
    if isinstance(result, PlanResult):
        return portfolio_sensitivity(result, scenario, catalog=_catalog(catalog), **options)
    if not isinstance(result, SolveResult):
        raise ClusteroptError("result", f"a {type(result).__name__}", "the result of optimizer.solve or optimizer.plan")
    sc = load_scenario(scenario)
    if result.workload != sc.workload:
        raise ClusteroptError("result", f"solved a {result.workload} scenario, but {sc.name!r} is a {sc.workload} "
                              "scenario", "the scenario the result was solved from")
    p = planner(sc.workload)
    if p.sensitivity is None:
        raise ClusteroptError("sensitivity", f"not available for {sc.workload} scenarios",
                              "training and serving scenarios; for co-design sweep constraints.budget_usd")
    return p.sensitivity(result, sc, **options)


def sweep(scenario: ScenarioLike, vary: dict[str, Any], *, objective: Optional[str] = None, top_k: int = 1,
          workers: Optional[int] = None, executor: str = "process", progress: bool = False,
          catalog: Optional[Catalog] = None) -> pd.DataFrame:
    """Solve the grid of ``vary`` (path -> values or 'start:stop:n:log') and compare the points."""
    return _sweep(scenario, vary, objective=objective, top_k=top_k, workers=workers, executor=executor,
                  progress=progress, catalog=_catalog(catalog))


def plan(portfolio: Union[str, Path, dict, Portfolio], *, top_k: Optional[int] = None, objective: Optional[str] = None, time_limit_s: float = 30.0,
         catalog: Optional[Catalog] = None, **options: Any) -> PlanResult:
    """Plan one fleet for a portfolio of training and serving jobs (what to buy, rent, and when)."""
    result = _plan(portfolio, top_k=top_k, objective=objective, time_limit_s=time_limit_s,
                   catalog=_catalog(catalog), **options)
    result.slack = plan_slack(result)
    return result


def scaling_plan(*, compute: Optional[float] = None, params: Optional[float] = None,
                 law: str = "besiroglu2024") -> dict:
    """The compute-optimal parameters and tokens for a FLOP budget (or tokens for a size) by ``law``."""
    return _estimate_mod.scaling_plan(compute=compute, params=params, law=law)


def estimate(model: str, *, catalog: Optional[Catalog] = None, **options: Any) -> dict:
    """Parameters, FLOPs and (with ``gpu=``) the training or serving estimate of one layout."""
    return _estimate_mod.estimate(model, catalog=_catalog(catalog), **options)
