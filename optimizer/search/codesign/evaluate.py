"""``evaluate_codesign``: every figure of one co-design plan (a rung of the ladder, a token count
and a training layout), through the training planner's own ``evaluate_training`` at that rung and
token count, plus the law's predicted loss and, with inference demand, the lifetime cost that the
co-design budget caps. The same figures the co-design solver checks its choices against.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

from optimizer.catalog import Catalog
from optimizer.errors import ClusteroptError
from optimizer.formulas import scaling as sc
from optimizer.formulas.params import count_params
from optimizer.pricing import gpu_options
from optimizer.search.codesign.space import rungs_of, serve_params, serving_usd_per_token
from optimizer.search.codesign.table import with_tokens
from optimizer.search.train.evaluate import Evaluation, evaluate_training
from optimizer.search.train.table import CONFIG_KEYS

#: Keys a co-design configuration has beyond the 12 layout keys.
PLAN_KEYS = ("model_params", "train_tokens")


def evaluate_codesign(scenario, config: Mapping[str, Any], *, catalog: Catalog,
                      efficiency_scale: float = 1.0) -> Evaluation:
    """The figures of one co-design plan: ``config`` holds the 12 layout keys plus
    ``model_params`` (the size of one of the ladder's rungs, within 0.5%) and ``train_tokens``;
    keys beyond those (a row of ``solve``'s configs) are ignored. Returns the training
    ``Evaluation`` with ``model``, ``model_params``, ``train_tokens``, ``predicted_loss``,
    ``scaling_law``, ``train_flop``, ``inference_cost_usd`` and ``lifetime_cost_usd`` among its
    figures; a predicted loss above ``train.target_loss`` or a lifetime cost over the budget (with
    inference demand) is a violation. Units: parameters, tokens, FLOP, USD."""
    train = scenario.train
    missing = [k for k in CONFIG_KEYS + PLAN_KEYS if k not in config]
    if missing:
        raise ClusteroptError("config", f"missing keys {missing}",
                              "a co-design plan has the 12 layout keys plus model_params and train_tokens")
    specs = rungs_of(train)
    sizes = [float(count_params(s).total) for s in specs]
    n = float(config["model_params"])
    m = min(range(len(sizes)), key=lambda i: abs(math.log(sizes[i] / n)) if n > 0 else math.inf)
    if not (n > 0 and abs(sizes[m] / n - 1) <= 0.005):
        raise ClusteroptError("config.model_params", f"{n:.4g} is not a rung of the ladder",
                              "rungs: " + ", ".join(f"{s.name} ({z:.4g})" for s, z in zip(specs, sizes)))
    d = float(config["train_tokens"])
    if not (math.isfinite(d) and d > 0):
        raise ClusteroptError("config.train_tokens", f"{config['train_tokens']!r}", "a positive number of tokens")
    law = sc.law_by_name(train.scaling_law, "train.scaling_law")
    spec = specs[m]
    gpus, _ = gpu_options(scenario, catalog)
    ev = evaluate_training(with_tokens(scenario, d), {k: config[k] for k in CONFIG_KEYS}, gpus=gpus, spec=spec,
                           efficiency_scale=efficiency_scale)
    loss = float(sc.predicted_loss(law, sizes[m], d))
    d_inf = train.inference.tokens if train.inference is not None else 0.0
    inference = serving_usd_per_token(spec, gpus, *serve_params(train)).usd_per_token * d_inf if d_inf > 0 else 0.0
    lifetime = ev.cost_usd + inference
    ev.figures.update(model=spec.name, model_params=sizes[m], train_tokens=d, predicted_loss=loss,
                      scaling_law=law.name, train_flop=float(sc.training_flop(sizes[m], d)),
                      inference_cost_usd=inference, lifetime_cost_usd=lifetime)
    budget = scenario.constraints.budget_usd
    if d_inf > 0 and budget is not None and not lifetime <= budget:
        ev.violations.append(f"budget: lifetime cost ${lifetime:,.0f} (training ${ev.cost_usd:,.0f} + inference "
                             f"${inference:,.0f}) exceeds constraints.budget_usd ${budget:,.0f}")
    if train.target_loss is not None and loss > train.target_loss:
        ev.violations.append(f"target_loss: predicted loss {loss:.4f} ({law.name}) is above train.target_loss "
                             f"{train.target_loss}")
    ev.feasible = not ev.violations
    return ev
