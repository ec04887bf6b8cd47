"""The training configs DataFrame: one row per configuration, fixed column order (LAYOUT_COLUMNS), raw numbers."""

from __future__ import annotations

import pandas as pd

from optimizer.search.core.frame import ranked_frame
from optimizer.catalog import load_system_catalog
from optimizer.pricing import offer_keys, scenario_mode
from optimizer.search.train.system import system_breakdown
from optimizer.search.train.table import INTERVAL_REGIMES, OBJECTIVE_COLUMN_BY_NAME, Table

#: Column order of the configs DataFrame (and of the JSON configs), defined once.
LAYOUT_COLUMNS = ("rank", "objective", "gpu", "n_gpus", "n_nodes", "tp", "pp", "dp", "cp", "ep", "zero",
           "precision", "micro_batch", "grad_accum", "global_batch", "recompute",
           "sequence_parallel", "framework", "interleave", "memory_per_gpu_bytes", "memory_capacity_bytes",
           "memory_headroom",
           "mfu", "hfu", "step_time_s", "tokens_per_s", "train_days", "wall_clock_days",
           "gpu_hours", "usd_per_gpu_hour", "cost_usd", "cost_per_mtoken_usd", "offer",
           "tokens_per_s_p10", "tokens_per_s_p90", "train_days_p10", "train_days_p90", "wall_clock_days_p10",
           "wall_clock_days_p90", "cost_usd_p10", "cost_usd_p90", "interval_regime",
           "provider", "instance_type", "region", "interconnect", "offer_max_gpus", "offer_as_of", "pricing_mode",
           "npv_usd", "payback_years", "roi_pct", "goodput", "expected_interruptions", "job_mtbi_s", "checkpoint_bytes", "checkpoint_write_s",
           "checkpoint_interval_s", "storage_tier", "system")

#: Float columns copied from the table row as they are (system columns: table.SYSTEM_COLUMNS).
_FLOAT_COLUMNS = ("mfu", "hfu", "step_time_s", "tokens_per_s", "train_days", "wall_clock_days", "gpu_hours",
                  "usd_per_gpu_hour", "cost_usd", "cost_per_mtoken_usd", "goodput", "expected_interruptions",
                  "job_mtbi_s", "checkpoint_bytes", "checkpoint_write_s", "checkpoint_interval_s",
                  "tokens_per_s_p10", "tokens_per_s_p90", "train_days_p10", "train_days_p90", "wall_clock_days_p10",
                  "wall_clock_days_p90", "cost_usd_p10", "cost_usd_p90")

OBJECTIVE_COLUMN = OBJECTIVE_COLUMN_BY_NAME


def _framework_of(scenario, rec: dict) -> str:
    """The framework the row's figures assume (train.framework; auto resolved per layout)."""
    from optimizer.formulas.training import resolve_framework

    fw = scenario.train.framework if scenario.train is not None else "auto"
    return str(resolve_framework(fw, tp=rec["tp"], pp=rec["pp"], cp=rec["cp"], ep=rec["ep"]))


def _tier_name(i: int) -> str:
    return list(load_system_catalog().storage_tiers)[i]


def _plain(x):
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x.item() if hasattr(x, "item") else x


def _framework_name(c, r: int) -> str | None:
    """The framework whose schedule timed row r (training.FRAMEWORKS), None where not recorded."""
    from optimizer.formulas.training import FRAMEWORKS

    return FRAMEWORKS[int(c["framework_index"][r])] if "framework_index" in c else None


def layout_frame(table: Table, rows, scenario, objective: str, ranked: bool = True, row_context=None) -> pd.DataFrame:
    """One row per configuration, fixed column order (LAYOUT_COLUMNS), raw numbers; ``system`` holds the
    storage, hosts, fabric, TCO and reliability breakdown (train/system.py).

    ``row_context(r) -> (spec, scenario)``: the model and scenario of row r where they vary by
    row (co-design: each rung and token count); default the scenario's own."""

    if row_context is None:
        spec = scenario.spec() if len(rows) else None
        row_context = lambda r: (spec, scenario)  # noqa: E731
    recs = []
    for i, r in enumerate(rows):
        r = int(r)
        c = table.cols
        g = table.gpus[int(c["gpu"][r])]
        rec = table.config(r)
        rec.update({
            "rank": i + 1,
            "objective": float(c[OBJECTIVE_COLUMN[objective]][r]),
            "n_nodes": int(c["n_nodes"][r]),
            "grad_accum": int(c["grad_accum"][r]),
            "global_batch": int(c["global_batch"][r]),
            "memory_per_gpu_bytes": float(c["memory_per_gpu_bytes"][r]),
            "memory_capacity_bytes": int(g.hardware.memory_bytes),
            "memory_headroom": 1.0 - float(c["memory_per_gpu_bytes"][r]) / g.hardware.memory_bytes,
            "offer": g.offer,
            "framework": _framework_name(c, r),
            "interleave": int(c["interleave"][r]) if "interleave" in c else scenario.train.interleave,
        })
        for k in _FLOAT_COLUMNS:
            rec[k] = float(c[k][r])
        rec["storage_tier"] = _tier_name(int(c["storage_tier"][r]))
        rec.update(offer_keys(g, scenario_mode(scenario)))
        rec["interval_regime"] = INTERVAL_REGIMES[int(c["interval_regime_code"][r])]
        if rec["framework"] is None:                     # a table without the per-row choice
            rec["framework"] = _framework_of(scenario, rec)
        r_spec, r_scenario = row_context(r)
        rec["system"] = _plain(system_breakdown(r_spec, r_scenario, g, {k: v[r] for k, v in c.items()}))
        inv = (rec["system"].get("tco") or {}).get("investment") if rec["interconnect"] == "owned" else None
        for k in ("npv_usd", "payback_years", "roi_pct"):
            rec[k] = None if inv is None else inv[k]
        recs.append(rec)
    return ranked_frame(recs, LAYOUT_COLUMNS, ranked)
