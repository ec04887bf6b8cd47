"""Co-design explanations: what binds at the chosen plan, or why there is none."""

from __future__ import annotations

import numpy as np

from optimizer.formulas import scaling as sc
from optimizer.model.families import get_family
from optimizer.search.codesign.table import CodesignData

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
