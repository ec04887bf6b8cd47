"""Rendering: tables, Markdown, CSV and JSON built from the search's raw numbers.

Nothing here computes a figure: it formats what ``optimizer.search`` and the estimators
returned. JSON is built from the same data with plain Python scalars.
"""

from __future__ import annotations

import json
import math
from typing import Any, Iterable

import pandas as pd

from optimizer.formatting import plain, usd  # noqa: F401  (re-exported: report.plain, report.usd)
from optimizer.units import GB

from optimizer.schema import SCHEMA_VERSION  # noqa: E402  (one version for every document)
from optimizer.search.sweep import fleet_label  # noqa: E402


# ----------------------------------------------------------------------------------------
# plain values
# ----------------------------------------------------------------------------------------

def records(df: pd.DataFrame) -> list[dict]:
    return [plain(r) for r in df.to_dict(orient="records")]


def dumps(obj: Any) -> str:
    return json.dumps(plain(obj), indent=2, allow_nan=False)


# ----------------------------------------------------------------------------------------
# text tables
# ----------------------------------------------------------------------------------------

def text_table(headers: list[str], rows: Iterable[list[str]], align: str | None = None) -> str:
    rows = [list(map(str, r)) for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    align = align or ("l" + "r" * (len(headers) - 1))

    def fmt(cells):
        return "  ".join(c.ljust(w) if a == "l" else c.rjust(w) for c, w, a in zip(cells, widths, align)).rstrip()

    out = [fmt(headers), "  ".join("-" * w for w in widths)]
    out += [fmt(r) for r in rows]
    return "\n".join(out)


def markdown_table(headers: list[str], rows: Iterable[list[str]]) -> str:
    rows = [list(map(str, r)) for r in rows]
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def gbytes(x: float) -> str:
    return f"{x / GB:.1f} GB"


SOLVE_HEADERS = ["rank", "gpu", "gpus", "nodes", "tp/pp/dp/cp/ep", "zero", "prec", "mb", "acc",
                 "recompute", "sp", "mem/GPU (headroom)", "mfu", "days w/o failures", "goodput", "wall days", "cost",
                 "offer (provider instance, region, mode; interconnect)"]


def offer_label(r: dict) -> str:
    """Where a configuration is bought (issue 17): provider and instance, region, pricing mode and
    what the offer can span; 'owned' or the scenario's own price otherwise."""
    if r.get("provider"):
        where = f"{r['region']}, " if r.get("region") else ""
        return f"{r['provider']} {r['instance_type']} ({where}{r.get('pricing_mode')}; {r.get('interconnect')})"
    return str(r.get("offer", ""))


def _goodput(r: dict) -> str:
    g = r.get("goodput")
    return "-" if g is None or (isinstance(g, float) and math.isnan(g)) else f"{g:.1%}"


def solve_rows(df: pd.DataFrame) -> list[list[str]]:
    out = []
    for r in df.to_dict(orient="records"):
        out.append([
            r.get("rank", ""), r["gpu"], r["n_gpus"], r["n_nodes"],
            f"{r['tp']}/{r['pp']}/{r['dp']}/{r['cp']}/{r['ep']}", r["zero"], r["precision"],
            r["micro_batch"], r["grad_accum"], r["recompute"], "y" if r["sequence_parallel"] else "n",
            f"{gbytes(r['memory_per_gpu_bytes'])} ({r['memory_headroom']:.0%})",
            f"{r['mfu']:.1%}", f"{r['train_days']:.1f}", _goodput(r), f"{r['wall_clock_days']:.1f}",
            usd(r["cost_usd"]), offer_label(r),
        ])
    return out


def solve_json(result, scenario=None) -> dict:
    out = {
        "schema_version": SCHEMA_VERSION,
        "kind": "solve",
        "scenario": result.scenario,
        "workload": getattr(result, "workload", None) or _workload(scenario),
        "status": result.status,
        "objective": result.objective,
        "configs": records(result.configs),
        "pareto": records(result.pareto),
        "explanation": plain(result.explanation),
        "stats": plain(result.stats),
    }
    law = getattr(result, "scaling_law", None) or (result.explanation or {}).get("scaling_law")
    if law:
        out["scaling_law"] = law
    extra = getattr(result, "sensitivity", None)
    if extra is not None:
        out["sensitivity"] = plain(extra)
    return out


def _workload(scenario) -> str:
    return "train" if scenario is None else scenario.workload


def explanation_lines(expl: dict) -> list[str]:
    return (list(expl.get("lines", [])) + [f"warning: {w}" for w in expl.get("warnings", [])]
            + [f"note: {n}" for n in expl.get("notes", [])])


FLEET_HEADERS = ["rank", "fleet (replicas x gpu tp weights/kv batch)", "gpus", "$/hour", "$/M out tok",
                 "$/1k req", "$/month", "capacity req/s", "util", "p99 TTFT", "ITL", "min headroom",
                 "instances (count x provider instance, region, mode)"]


def instances_label(instances) -> str:
    """'2 x Azure Standard_NC24ads_A100_v4 (eastus, reserved)' per billing pool of a fleet."""
    return "; ".join(f"{i['count']} x {i['offer']}" for i in instances or [])

CODESIGN_HEADERS = ["rank", "model", "params", "tokens", "tok/param", "loss", "gpu", "gpus",
                    "tp/pp/dp", "prec", "days w/o failures", "goodput", "wall days", "cost", "lifetime cost"]


def _compressed(df: pd.DataFrame) -> bool:
    """Whether any fleet uses a lossy or paid compression option (then the table shows them)."""
    return any(c in df.columns and bool((df[c].fillna(0) > 0).any()) for c in ("quality_loss_pct", "one_off_usd"))


def fleet_rows(df: pd.DataFrame) -> list[list[str]]:
    out = []
    for r in df.to_dict(orient="records"):
        row = [r.get("rank", ""), fleet_label(r["replicas"]), r["n_gpus"], usd(r["usd_per_hour"]),
               usd(r["usd_per_mtoken"]), usd(r["usd_per_1k_requests"]), usd(r["usd_per_month"]),
               f"{r['capacity_requests_per_s']:.1f}", f"{r['utilization']:.0%}",
               f"{r['worst_ttft_s'] * 1e3:.0f} ms", f"{r['worst_itl_s'] * 1e3:.1f} ms",
               f"{r['min_memory_headroom']:.0%}", instances_label(r.get("instances"))]
        if _compressed(df):
            q, once = _num(r, "quality_loss_pct"), _num(r, "one_off_usd")
            row += ["-" if q is None else f"{q:.2f}%", "-" if not once else usd(once)]
        out.append(row)
    return out


def codesign_rows(df: pd.DataFrame) -> list[list[str]]:
    out = []
    for r in df.to_dict(orient="records"):
        life = r.get("lifetime_cost_usd")
        out.append([r.get("rank", ""), r.get("model", ""), f"{r['model_params'] / 1e9:.2f}B",
                    f"{r['train_tokens'] / 1e12:.2f}T", f"{r['tokens_per_param']:.1f}", f"{r['predicted_loss']:.4f}",
                    r["gpu"], r["n_gpus"], f"{r['tp']}/{r['pp']}/{r['dp']}", r["precision"],
                    f"{r['train_days']:.1f}", _goodput(r), f"{r['wall_clock_days']:.1f}", usd(r["cost_usd"]),
                    "-" if life is None or (isinstance(life, float) and math.isnan(life)) else usd(life)])
    return out


def result_table(df: pd.DataFrame, markdown: bool = False) -> str:
    """The ranked table of any workload: training layouts, serving fleets or co-design plans."""
    if "replicas" in df.columns:
        h, rows = FLEET_HEADERS, fleet_rows(df)
        if _compressed(df):
            h = h + ["quality loss", "one-off"]
    elif "predicted_loss" in df.columns:
        h, rows = CODESIGN_HEADERS, codesign_rows(df)
    else:
        h, rows = SOLVE_HEADERS, solve_rows(df)
    align = "ll" + "r" * (len(h) - 2) if "replicas" in df.columns else None
    if "rank" not in df.columns:
        h, rows = h[1:], [r[1:] for r in rows]
        align = align[1:] if align else None
    return markdown_table(h, rows) if markdown else text_table(h, rows, align)


def solve_text(result, markdown: bool = False) -> str:
    head = (f"scenario {result.scenario}: {result.status}, objective {result.objective}, "
            f"{len(result.configs)} configuration(s)")
    law = getattr(result, "scaling_law", None)
    if law:
        head += f", scaling law {law}"
    parts = [head, ""]
    if len(result.configs):
        parts.append(result_table(result.configs, markdown))
        if len(result.pareto):
            if "replicas" in result.pareto.columns:
                parts += ["", "Pareto front ($/hour vs worst p99 TTFT):", result_table(result.pareto, markdown)]
            elif "predicted_loss" in result.pareto.columns:
                parts += ["", "Pareto front (predicted loss vs cost):", result_table(result.pareto, markdown)]
            else:
                parts += ["", "Pareto front (cost vs wall-clock days):"]
                prow = [[r["gpu"], r["n_gpus"], f"{r['tp']}/{r['pp']}/{r['dp']}/{r['cp']}/{r['ep']}",
                         _goodput(r), f"{r['wall_clock_days']:.1f}", usd(r["cost_usd"])]
                        for r in result.pareto.to_dict(orient="records")]
                h = ["gpu", "gpus", "tp/pp/dp/cp/ep", "goodput", "wall days", "cost"]
                parts.append(markdown_table(h, prow) if markdown else text_table(h, prow))
    lines = explanation_lines(result.explanation)
    if lines:
        if parts[-1] != "":
            parts.append("")
        parts += [("- " if markdown else "") + ln for ln in lines]
    return "\n".join(parts).rstrip() + "\n"


def solve_csv(result) -> str:
    return result.configs.to_csv(index=False)


# ----------------------------------------------------------------------------------------
# sensitivity
# ----------------------------------------------------------------------------------------

def _cfg_short(cfg) -> str:
    """A 12-key training configuration, or a serving fleet (list of replica groups), on one line."""
    if not cfg:
        return "-"
    if isinstance(cfg, list):
        return fleet_label(cfg)
    return (f"{cfg['n_gpus']}x {cfg['gpu']} tp{cfg['tp']}/pp{cfg['pp']}/dp{cfg['dp']} z{cfg['zero']} "
            f"{cfg['precision']} mb{cfg['micro_batch']} {cfg['recompute']}")


def _objective_value(objective: str, x: float | None) -> str:
    if x is None:
        return "infeasible"
    return usd(x) if objective in ("cost", "cost_per_mtoken") else f"{x:,.4g}"


def _slack(key: str, v) -> str:
    if key.endswith("_bytes"):
        return f"{key[:-6]} {gbytes(v)}"
    if key.endswith("_usd"):
        return f"{key[:-4]} {usd(v)}"
    if key.endswith("_days"):
        return f"{key[:-5]} {v:,.1f} days"
    return f"{key} {v:,.4g}" if isinstance(v, float) else f"{key} {v}"


def sensitivity_text(sens: dict, markdown: bool = False) -> str:
    """The tornado (sorted by swing), the switching thresholds and the slack at the optimum."""
    obj = sens.get("objective", "cost")
    if not sens.get("tornado"):
        return f"sensitivity: {sens.get('note', 'nothing to analyse')}\n"
    x = sens["swing_pct"]
    rows = []
    for e in sens["tornado"]:
        flips = [d for d in ("down", "up") if e["reoptimised"][d]["changes"]]
        rows.append([e["input"], _objective_value(obj, e["low"]), _objective_value(obj, e["high"]),
                     _objective_value(obj, e["swing"]), ", ".join(flips) or ("-" if "note" not in e else e["note"])])
    h = ["input", f"-{x:g}%", f"+{x:g}%", "swing", "best changes at"]
    table = markdown_table if markdown else text_table
    what = "re-optimised best fleet's" if "base_fleet" in sens else "chosen configuration's"
    parts = [f"Sensitivity of the {what} {obj} (base {_objective_value(obj, sens['base_objective'])}):",
             "", table(h, rows), "",
             f"Switching thresholds (within +-{sens['range_pct']:g}%, to {sens['tolerance_pct']:g} percentage points):", ""]
    trows = []
    for t in sens["thresholds"]:
        if t["change_pct"] is None:
            continue
        trows.append([t["input"], t["direction"], f"{t['change_pct']:+.1f}%", _cfg_short(t["new_best"])])
    parts.append(table(["input", "direction", "change", "new best"], trows) if trows
                 else "none: the best configuration holds over the whole range for every input")
    quiet: dict[str, list[str]] = {}
    for t in sens["thresholds"]:
        if t["change_pct"] is None and "note" not in t:
            quiet.setdefault(t["input"], []).append(t["direction"])
    if quiet:
        parts += ["", "no switch within the range: " + ", ".join(
            f"{k} ({'both' if len(v) == 2 else v[0]})" for k, v in quiet.items())]
    slack = sens.get("slack", {})
    if slack:
        parts += ["", "Slack at the optimum: " + ", ".join(_slack(k, v) for k, v in slack.get("slack", {}).items())]
    bvr = sens.get("buy_vs_rent")
    if bvr:
        r, u, g = (bvr[k]["flip"] for k in ("discount_rate", "utilization_scale", "gpu_price_scale"))
        parts += ["", f"Buy vs rent (NPV {usd(bvr['npv_usd'])} at {bvr['discount_rate']:.1%} over {bvr['years']:g} years): "
                  + ", ".join([f"renting wins above a {r:.1%} discount rate" if r is not None else "no discount rate flips it",
                               f"flips at {u:.2f} x the utilisation" if u is not None else "utilisation 0.1-10x does not flip it",
                               f"flips at {g:.2f} x the GPU price" if g is not None else "GPU price 0.1-10x does not flip it"])]
    return "\n".join(parts) + "\n"


# ----------------------------------------------------------------------------------------
# sweeps
# ----------------------------------------------------------------------------------------

SWEEP_COLUMNS = ("status", "gpu", "n_gpus", "tp", "pp", "dp", "zero", "precision", "wall_clock_days",
                 "cost_usd", "days_saved_per_extra_musd")


def varied_columns(df: pd.DataFrame) -> list[str]:
    return list(df.columns[: list(df.columns).index("status")])


def _num(r: dict, k: str):
    v = r.get(k)
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else v


def sweep_rows(df: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """One row per point; the best plan's columns depend on the workload (training, co-design, serving)."""
    varied = varied_columns(df)
    serving = "usd_per_hour" in df.columns
    codesign = "predicted_loss" in df.columns
    if serving:
        tail = ["status", "best fleet", "gpus", "$/hour", "$/M out tok", "p99 TTFT"]
    elif codesign:
        tail = ["status", "model", "tokens", "loss", "best", "gpus", "days", "cost"]
    else:
        tail = ["status", "best", "gpus", "days w/o failures", "goodput", "wall days", "cost", "days saved / +$1M"]
    rows = []
    for r in df.to_dict(orient="records"):
        cells = [(usd(r[v]) if v.endswith("_usd") else (f"{r[v]:g}" if isinstance(r[v], float) else str(r[v])))
                 for v in varied]
        if r["status"] == "infeasible":
            cells += ["infeasible", (r.get("explanation") or "")[:70]] + ["-"] * (len(tail) - 2)
        elif serving:
            cells += [r["status"], r.get("fleet", r.get("gpu", "")), f"{int(r['n_gpus'])}", usd(r["usd_per_hour"]),
                      usd(r["usd_per_mtoken"]), f"{r['worst_ttft_s'] * 1e3:.0f} ms"]
        else:
            best = f"{r['gpu']} tp{int(r['tp'])}/pp{int(r['pp'])}/dp{int(r['dp'])} z{int(r['zero'])} {r['precision']}"
            if codesign:
                cells += [r["status"], f"{r['model_params'] / 1e9:.1f}B", f"{r['train_tokens'] / 1e12:.2f}T",
                          f"{r['predicted_loss']:.4f}", best, f"{int(r['n_gpus'])}", f"{r['wall_clock_days']:.1f}",
                          usd(r["cost_usd"])]
            else:
                m = _num(r, "days_saved_per_extra_musd")
                cells += [r["status"], best, f"{int(r['n_gpus'])}", f"{r['train_days']:.1f}", _goodput(r),
                          f"{r['wall_clock_days']:.1f}", usd(r["cost_usd"]), "-" if m is None else f"{m:.2f}"]
        rows.append(cells)
    return varied + tail, rows


def sweep_text(df: pd.DataFrame, markdown: bool = False, title: str = "") -> str:
    headers, rows = sweep_rows(df)
    body = markdown_table(headers, rows) if markdown else text_table(headers, rows, "l" * len(headers))
    return (f"{title}\n\n" if title else "") + body + "\n"


#: Sweep columns that hold whole numbers (a frame with infeasible points stores them as floats).
SWEEP_INT_COLUMNS = ("n_gpus", "n_nodes", "tp", "pp", "dp", "cp", "ep", "zero", "micro_batch", "grad_accum",
                     "global_batch", "n_gpus_used", "n_replicas")


def sweep_json(df: pd.DataFrame, scenario: str, vary: dict, objective: str | None) -> dict:
    points = records(df)
    for p in points:
        for k in SWEEP_INT_COLUMNS:
            if isinstance(p.get(k), float) and p[k].is_integer():
                p[k] = int(p[k])
    return {"schema_version": SCHEMA_VERSION, "kind": "sweep", "scenario": scenario, "objective": objective,
            "vary": plain({k: list(v) for k, v in vary.items()}), "points": points}


# ----------------------------------------------------------------------------------------
# the Markdown report
# ----------------------------------------------------------------------------------------

def _png_data_uri(path) -> str:
    import base64
    from pathlib import Path

    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def solve_report(result, scenario, *, sensitivity: dict | None = None, memory: dict | None = None,
                 pareto_png=None, tornado_png=None) -> str:
    """A self-contained Markdown report: inputs, ranked table, memory breakdown of the top
    choice, Pareto and tornado plots (embedded as data URIs), thresholds and binding limits."""
    import yaml

    doc = scenario.model_dump(mode="json", exclude_none=True, exclude_unset=True)     # as the user wrote it
    parts = [f"# clusteropt report: {result.scenario}", "",
             f"Status **{result.status}** (objective: {result.objective}); "
             f"{len(result.configs)} configuration(s) ranked; {result.stats.get('rows', '?')} candidate layouts, "
             f"{result.stats.get('feasible_rows', '?')} feasible.", "",
             "## Inputs", "", "```yaml", yaml.safe_dump(doc, sort_keys=False).rstrip(), "```", ""]
    if getattr(scenario, "description", ""):
        parts[-1:-1] = [scenario.description, ""]
    parts += ["## Ranked configurations", ""]
    if len(result.configs):
        parts.append(result_table(result.configs, markdown=True))
    else:
        parts.append("No configuration meets every limit.")
    parts.append("")
    if memory and "tp" in result.configs.columns:
        total = memory.get("memory_per_gpu_bytes") or sum(v for k, v in memory.items() if k != "memory_per_gpu_bytes")
        top = result.configs.iloc[0]
        parts += ["## Memory per GPU of the top choice", "",
                  f"{top['gpu']}, {int(top['n_gpus'])} GPUs, tp {int(top['tp'])} / pp {int(top['pp'])} / "
                  f"dp {int(top['dp'])}, ZeRO {int(top['zero'])}, {top['recompute']} recompute:", ""]
        rows = [[k, gbytes(v), f"{v / total:.1%}" if total else "-"] for k, v in memory.items()
                if k != "memory_per_gpu_bytes"]
        rows.append(["total", gbytes(total), "100%"])
        cap = float(top["memory_capacity_bytes"])
        rows.append(["capacity", gbytes(cap), f"headroom {1 - total / cap:.0%}"])
        parts += [markdown_table(["part", "bytes", "share"], rows), ""]
    if pareto_png is not None:
        serving = "replicas" in result.configs.columns
        codesign = "predicted_loss" in result.configs.columns
        title = ("Cost against p99 time to first token" if serving else
                 "Predicted loss against cost" if codesign else "Cost against time")
        alt = ("Pareto front of $/hour against p99 TTFT" if serving else
               "Pareto front of predicted loss against training cost" if codesign else
               "Pareto front of cost against wall-clock days")
        parts += [f"## {title}", "", f"![{alt}]({_png_data_uri(pareto_png)})", ""]
        if len(result.pareto):
            parts += [result_table(result.pareto, markdown=True), ""]
    if sensitivity is not None:
        parts += ["## Sensitivity", ""]
        if tornado_png is not None:
            parts += [f"![Tornado: objective at -/+{sensitivity.get('swing_pct', 20):g}% of each input]"
                      f"({_png_data_uri(tornado_png)})", ""]
        parts += [sensitivity_text(sensitivity, markdown=True), ""]
    lines = explanation_lines(result.explanation)
    if lines:
        parts += ["## Binding constraints and explanation", ""] + [f"- {ln}" for ln in lines] + [""]
    parts += [f"_clusteropt {__import__('optimizer').__version__}, result schema {SCHEMA_VERSION}_", ""]
    return "\n".join(parts)
