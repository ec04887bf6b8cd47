"""Co-design explanations: what binds at the chosen plan, or why there is none."""

from __future__ import annotations

import numpy as np

from optimizer.formulas import scaling as sc
from optimizer.formulas.params import count_params
from optimizer.model.families import get_family
from optimizer.search.codesign.table import CodesignData

#: Limit families that do not scale with the training tokens (a layout breaking one is out at any D).
_TOKEN_FREE_SKIP = ("budget", "deadline", "target_loss", "compute")


def compute_optimal_check(data: CodesignData, r: int, law, scenario=None, objective: str = "loss") -> dict:
    """Where the chosen size sits against the law's closed-form optimum for the plan's OWN compute
    C = 6 N D (Hoffmann et al. 2022, Eq. 4; ``scaling.compute_optimal``), counted in rungs of the
    ladder (nearest rung by log size). When the choice is more than one rung away, ``line`` says
    which cost difference between the sizes moved it: the training cost per FLOP of the best
    layout (one that fits and meets the GPU-count limits) of the chosen rung against that of the
    rung nearest the optimum; with inference demand, or an objective other than loss, it says that
    instead (the plan is not meant to be compute-optimal then). Units: FLOP, parameters, tokens, USD."""
    table = data.table
    c = table.cols
    n, d = float(c["model_params"][r]), float(c["train_tokens"][r])
    compute = float(sc.training_flop(n, d))
    n_opt, d_opt = (float(x) for x in sc.compute_optimal(law, compute))
    sizes = np.array([float(count_params(s).total) for s in data.specs])
    nearest = int(np.argmin(np.abs(np.log(sizes / n_opt))))
    chosen = int(c["model_index"][r])
    away = abs(chosen - nearest)
    out = {"compute_flop": compute, "optimal_params": n_opt, "optimal_tokens": d_opt,
           "chosen_rung": data.specs[chosen].name, "nearest_rung": data.specs[nearest].name, "rungs_away": away,
           "usd_per_exaflop": None}
    line = (f"compute-optimal check ({law.name}): the plan's 6ND = {compute:.3g} FLOP is best spent on "
            f"{n_opt / 1e9:.3g}B parameters x {d_opt:.3g} tokens (nearest rung {data.specs[nearest].name}); "
            f"chosen {data.specs[chosen].name}, {away} rung(s) away")
    if not sizes.min() / 1.5 <= n_opt <= sizes.max() * 1.5:
        out["outside_ladder"] = True
        line += (f" (the optimum lies outside the ladder {sizes.min() / 1e9:.3g}B-{sizes.max() / 1e9:.3g}B: "
                 "widen train.model.min_params / max_params)")
    d_inf = (scenario.train.inference.tokens if scenario is not None and scenario.train.inference is not None
             else 0.0)
    if away > 1 and d_inf > 0:
        line += (f"; moved by the inference demand: {d_inf:.3g} served tokens make a smaller model trained longer "
                 "cheaper over the model's life (training + serving; Sardana et al. 2024)")
    elif away > 1 and objective != "loss":
        line += (f"; objective {objective}: the plan reaches train.target_loss at the least {objective}, it does not "
                 "spend a fixed compute on the least loss")
    elif away > 1:
        ok = np.ones(len(table), dtype=bool)
        for fam, v in table.violations.items():
            if fam not in _TOKEN_FREE_SKIP:
                ok &= ~v
        per_flop = {}
        for m in (chosen, nearest):
            sel = ok & (c["model_index"] == m)
            per_flop[m] = float(np.min(c["cost_usd"][sel] / c["train_flop"][sel])) if sel.any() else None
        out["usd_per_exaflop"] = {data.specs[m].name: (v * 1e18 if v is not None else None) for m, v in per_flop.items()}
        a, b = per_flop[chosen], per_flop[nearest]
        if b is None:
            line += (f"; moved by the limits: {data.specs[nearest].name} has no layout that fits in memory within "
                     "the GPU-count limits")
        else:
            cost = (f"training {data.specs[nearest].name} costs ${b * 1e18:,.2f} per 1e18 FLOP on its best layout "
                    f"against ${a * 1e18:,.2f} for {data.specs[chosen].name} ({b / a - 1:+.1%})")
            line += (f"; moved by cost: {cost}, so the same money buys more compute on the chosen size" if b > a
                     else f"; not moved by cost per FLOP ({cost}): the deadline or the GPU-count limits moved it")
    out["line"] = line
    return out


def explain_codesign(data: CodesignData, rows, scenario, objective: str, law, notes: list[str]) -> dict:
    """scaling_law, warnings (outside the fitted range, dense law on an MoE), and for an
    infeasible scenario the limit families that rule out every row."""
    table = data.table
    out: dict = {"scaling_law": law.name, "scaling_law_source": law.source, "notes": list(notes) + data.notes,
                 "warnings": []}
    fam = get_family(scenario.train.model.family)
    if fam.kind == "moe":
        out["warnings"].append(f"{law.name} was fitted on dense models; applied here to the MoE's total parameters")
    if len(rows):
        r = int(rows[0])
        n, d = float(table.cols["model_params"][r]), float(table.cols["train_tokens"][r])
        if bool(sc.outside_fitted_range(law, n, d)):
            f = sc.fitted_range(law)
            out["warnings"].append(
                f"predicted loss is an extrapolation: N = {n:.3g}, D = {d:.3g} lies outside the range {law.name} "
                f"was fitted on (N {f.n_params_min:.2g}-{f.n_params_max:.2g}, D {f.n_tokens_min:.2g}-{f.n_tokens_max:.2g})")
        out["chosen"] = {"model": data.specs[int(table.cols["model_index"][r])].name, "model_params": n,
                         "train_tokens": d, "predicted_loss": float(table.cols["predicted_loss"][r])}
        binding = []
        c = scenario.constraints
        if c.budget_usd is not None:
            spent = float(table.cols["lifetime_cost_usd"][r] if scenario.train.inference else table.cols["cost_usd"][r])
            binding.append({"limit": "budget", "used": spent, "limit_value": c.budget_usd, "share": spent / c.budget_usd})
        if c.deadline_days is not None:
            used = float(table.cols["wall_clock_days"][r])
            binding.append({"limit": "deadline", "used": used, "limit_value": c.deadline_days, "share": used / c.deadline_days})
        out["binding"] = binding
        check = compute_optimal_check(data, r, law, scenario, objective)
        out["compute_optimal"] = check
        out["notes"].append(check["line"])
        return out
    out["infeasible"] = True
    reasons = []
    if not len(table):
        reasons.append("no layout of any rung fits in memory or within the GPU-count limits")
    else:
        for fam_name, v in table.violations.items():
            if v.all():
                reasons.append(f"{fam_name}: every (model size, tokens, layout) breaks it")
        if not reasons:
            reasons.append("the limits together rule out every candidate: " + ", ".join(
                f for f, v in table.violations.items() if v.any()))
        if scenario.train.target_loss is not None and table.violations["target_loss"].all():
            best = float(np.min(table.cols["predicted_loss"]))
            reasons.append(f"target_loss {scenario.train.target_loss} is below the best predicted loss {best:.4f} "
                           "in the ladder and token range")
    out["reasons"] = reasons
    return out
