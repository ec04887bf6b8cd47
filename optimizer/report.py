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
from optimizer.formulas.scaling import LAWS
from optimizer.units import GB

#: The scaling laws the CLI offers (formulas/scaling.py LAWS), for its --law choices.
SCALING_LAWS = tuple(LAWS)

from optimizer.schema import SCHEMA_VERSION  # noqa: E402  (one version for every document)
from optimizer.search.planners import planner  # noqa: E402
from optimizer.search.sweep import fleet_label  # noqa: E402
import base64
from pathlib import Path
import yaml


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
    """A plain-text table (tabulate's 'simple' format): columns two spaces apart, a dashed rule
    under the headers, ``align`` one 'l'/'r' per column (default: first left, rest right)."""
    import tabulate as tb

    rows = [list(map(str, r)) for r in rows]
    align = align or ("l" + "r" * (len(headers) - 1))
    saved, tb.MIN_PADDING = tb.MIN_PADDING, 0          # column width = its widest cell, as before
    try:
        text = tb.tabulate(rows, headers=headers, tablefmt="simple", disable_numparse=True,
                           colalign=[{"l": "left", "r": "right"}[a] for a in align])
    finally:
        tb.MIN_PADDING = saved
    return "\n".join(line.rstrip() for line in text.splitlines())


def markdown_table(headers: list[str], rows: Iterable[list[str]]) -> str:
    """A GitHub-flavoured Markdown table (tabulate's 'github' format; cells escaped of '|')."""
    from tabulate import tabulate

    rows = [[str(c).replace("|", "\\|") for c in r] for r in rows]
    return tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)


def csv_table(headers: list[str], rows: Iterable[list]) -> str:
    """The same cells as CSV (the standard library's quoting)."""
    import csv
    import io

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(headers)
    w.writerows(rows)
    return buf.getvalue()


def shorten(text: str, width: int) -> str:
    """Text cut to ``width`` at a word boundary with ' ...' (never in the middle of a number)."""
    import textwrap

    text = " ".join(str(text).split())
    return text if len(text) <= width else textwrap.shorten(text, width, placeholder=" ...")


def flat_rows(data: Any, prefix: str = "") -> list[list[str]]:
    """A nested document as [dotted key, value] rows (lists as JSON)."""
    rows: list[list[str]] = []
    for k, v in plain(data).items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            rows += flat_rows(v, key + ".")
        else:
            rows.append([key, json.dumps(v) if isinstance(v, list) else ("" if v is None else v)])
    return rows


def figures_text(data: dict) -> str:
    """``key: value`` lines (floats to 4 significant digits, nested keys dotted)."""
    return "\n".join(f"{k}: {v:.4g}" if isinstance(v, float) else f"{k}: {v}" for k, v in flat_rows(data)) + "\n"


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
            f"{r['mfu']:.1%}", _days(r, "train_days"), _goodput(r), _days(r, "wall_clock_days"),
            _usd_range(r), offer_label(r),
        ])
    return out


def _finite(x) -> bool:
    return x is not None and not (isinstance(x, float) and math.isnan(x))


def _days(r: dict, key: str) -> str:
    """'13.9 d (12.6-15.8)': days with the 80% interval when the row has one."""
    lo, hi = r.get(f"{key}_p10"), r.get(f"{key}_p90")
    if _finite(lo) and _finite(hi):
        return f"{r[key]:.1f} d ({lo:.1f}-{hi:.1f})"
    return f"{r[key]:.1f}"


def _usd_range(r: dict) -> str:
    lo, hi = r.get("cost_usd_p10"), r.get("cost_usd_p90")
    if _finite(lo) and _finite(hi):
        return f"{usd(r['cost_usd'])} ({usd(lo)}-{usd(hi)})"
    return usd(r["cost_usd"])


def launch_context(scenario, result=None) -> dict | None:
    """What ``clusteropt export`` needs beside a configuration row to write a launch file: the
    model's architecture, the sequence length and tokens (training), the longest request (serving),
    the pricing mode and the GPUs per instance of the offers the rows are priced on. None for
    co-design (the model differs per row)."""
    if scenario is None or scenario.workload == "codesign":
        return None
    spec = scenario.spec()
    moe = spec.moe
    model = {"name": spec.name, "family": spec.family, "source": spec.source, "num_layers": spec.num_layers,
             "hidden_size": spec.hidden_size, "ffn_size": spec.ffn_size, "num_heads": spec.num_heads,
             "num_kv_heads": spec.kv_heads, "head_dim": spec.head_size, "vocab_size": spec.vocab_size,
             "max_position_embeddings": spec.max_position_embeddings, "norm_kind": spec.norm_kind,
             "ffn_kind": spec.ffn_kind, "activation": spec.activation, "position": spec.position,
             "tie_word_embeddings": spec.tie_word_embeddings, "qkv_bias": spec.qkv_bias, "ffn_bias": spec.ffn_bias,
             "moe": None if moe is None else {"num_experts": moe.num_experts, "experts_per_token": moe.experts_per_token,
                                              "expert_ffn_size": moe.expert_ffn_size,
                                              "shared_ffn_size": moe.shared_ffn_size}}
    theta = getattr(spec, "rope_theta", None) or _preset_config(spec.name).get("rope_theta")
    if theta:
        model["rope_theta"] = float(theta)
    out = {"model": model, "pricing_mode": scenario.pricing.mode}
    if scenario.workload == "train":
        tokens = scenario.train.tokens
        out.update(seq_len=scenario.train.seq_len, tokens=tokens if isinstance(tokens, (int, float)) else None)
    else:
        s = scenario.serve
        out.update(max_prompt_tokens=int(s.prompt_tokens.p99 or s.prompt_tokens.mean),
                   max_output_tokens=int(s.output_tokens.p99 or s.output_tokens.mean))
    if result is not None and len(result.configs):          # GPUs per instance of each priced offer
        per = {}
        for g in getattr(getattr(result, "table", None), "gpus", None) or []:
            if getattr(g, "offer", None) and getattr(g, "gpus_per_instance", None):
                per[g.offer] = int(g.gpus_per_instance)
                ch = getattr(g, "choice", None)          # issue 17: also by 'provider instance_type'
                if ch is not None:
                    per[f"{ch.offer.provider} {ch.offer.instance_type}"] = int(g.gpus_per_instance)
        for insts in (result.configs["instances"] if "instances" in result.configs.columns else []):
            for i in insts or []:
                if i.get("offer"):
                    per[i["offer"]] = int(i["gpus_per_instance"])
                if i.get("provider"):
                    per[f"{i['provider']} {i['instance_type']}"] = int(i["gpus_per_instance"])
        out["gpus_per_instance"] = per
    return out


def _preset_config(name: str) -> dict:
    """The published config.json of a preset (what the spec does not keep, e.g. rope_theta); {}
    for a model that is not a preset."""
    from optimizer.model import registry

    try:
        key = registry._index().get(name.lower())
        return dict(registry._raw_presets()[key]["config"]) if key else {}
    except (AttributeError, KeyError):              # a registry without the preset table
        return {}


def solve_json(result, scenario=None) -> dict:
    out = {
        "schema_version": SCHEMA_VERSION,
        "kind": "solve",
        "scenario": result.scenario,
        "workload": result.workload,
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
    launch = launch_context(scenario, result)
    if launch is not None:
        out["launch"] = plain(launch)
    profile = scenario.calibration_profile() if (scenario is not None and result.workload == "train"
                                                 and getattr(scenario, "calibration", None)) else None
    if profile is not None:
        out["calibration"] = {"path": str(scenario.calibration), **profile.model_dump()}
    return out


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


def _render(df: pd.DataFrame) -> str:
    """Which table a frame holds when no result names its planner (sweep points, Pareto fronts)."""
    return "fleets" if "replicas" in df.columns else "models" if "predicted_loss" in df.columns else "layouts"


def result_table(df: pd.DataFrame, markdown: bool = False, render: str | None = None) -> str:
    """The ranked table of any workload: training layouts, serving fleets or co-design plans
    (``render``: the planner's table kind, ``planners.Planner.render``)."""
    render = render or _render(df)
    if render == "fleets":
        h, rows = FLEET_HEADERS, fleet_rows(df)
        if _compressed(df):
            h = h + ["quality loss", "one-off"]
    elif render == "models":
        h, rows = CODESIGN_HEADERS, codesign_rows(df)
    else:
        h, rows = SOLVE_HEADERS, solve_rows(df)
    align = "ll" + "r" * (len(h) - 2) if render == "fleets" else None
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
    render = planner(result.workload).render
    if len(result.configs):
        parts.append(result_table(result.configs, markdown, render))
        if len(result.pareto):
            if render == "fleets":
                parts += ["", "Pareto front ($/hour vs worst p99 TTFT):", result_table(result.pareto, markdown, render)]
            elif render == "models":
                parts += ["", "Pareto front (predicted loss vs cost):", result_table(result.pareto, markdown, render)]
            else:
                parts += ["", "Pareto front (cost vs wall-clock days):"]
                prow = [[r["gpu"], r["n_gpus"], f"{r['tp']}/{r['pp']}/{r['dp']}/{r['cp']}/{r['ep']}",
                         _goodput(r), _days(r, "wall_clock_days"), _usd_range(r)]
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
    """The ranked table as CSV; nested columns (a fleet's replicas, the system breakdown) as JSON
    text in their cell, not Python reprs."""
    return frame_csv(result.configs)


def frame_csv(df: pd.DataFrame) -> str:
    df = df.copy()
    for col in df.columns:
        if df[col].dtype == object and df[col].map(lambda v: isinstance(v, (dict, list, tuple))).any():
            df[col] = df[col].map(lambda v: json.dumps(plain(v)) if isinstance(v, (dict, list, tuple)) else v)
    return df.to_csv(index=False)


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


def _reoptimised_ends(e: dict) -> tuple:
    """The re-optimised best objective at -X% and +X% (an input with a note keeps the base)."""
    if "note" in e:
        return e["low"], e["high"]
    return e["reoptimised"]["down"].get("best_objective"), e["reoptimised"]["up"].get("best_objective")


def _reoptimised_swing(e: dict) -> float | None:
    lo, hi = _reoptimised_ends(e)
    return None if lo is None or hi is None else abs(hi - lo)


def sensitivity_text(sens: dict, markdown: bool = False) -> str:
    """The tornado (sorted by swing), the switching thresholds and the slack at the optimum."""
    obj = sens.get("objective", "cost")
    if not sens.get("tornado"):
        return f"sensitivity: {sens.get('note', 'nothing to analyse')}\n"
    x = sens["swing_pct"]
    fleet = "base_fleet" in sens
    rows = []
    for e in sorted(sens["tornado"], key=lambda e: -(_reoptimised_swing(e) or 0.0)):
        lo, hi = _reoptimised_ends(e)
        flips = [d for d in ("down", "up") if e["reoptimised"][d]["changes"]]
        row = [e["input"], _objective_value(obj, lo), _objective_value(obj, hi),
               "-" if _reoptimised_swing(e) is None else _objective_value(obj, _reoptimised_swing(e)),
               ", ".join(flips) or ("-" if "note" not in e else e["note"])]
        if not fleet:                    # what keeping the base configuration would give at each end
            kept = [e["reoptimised"][d].get("objective") for d in ("down", "up")]
            row.append("-" if not flips else f"{_objective_value(obj, kept[0])} / {_objective_value(obj, kept[1])}")
        rows.append(row)
    h = ["input", f"-{x:g}%", f"+{x:g}%", "swing", "best changes at"] + ([] if fleet else ["base kept -/+"])
    table = markdown_table if markdown else text_table
    what = "best fleet" if fleet else "best configuration"
    parts = [f"Sensitivity of the re-optimised {what}'s {obj} (base {_objective_value(obj, sens['base_objective'])}); "
             f"each input at -{x:g}% and +{x:g}%, re-solved:", "", table(h, rows), "",
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
        parts += ["", f"Buy vs rent (NPV {usd(bvr['npv_usd'])} at {bvr['at_discount_rate']:.1%} over {bvr['years']:g} years): "
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
            cells += ["infeasible", shorten(r.get("explanation") or "", 70)] + ["-"] * (len(tail) - 2)
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
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def solve_report(result, scenario, *, sensitivity: dict | None = None, memory: dict | None = None,
                 pareto_png=None, tornado_png=None) -> str:
    """A self-contained Markdown report: inputs, ranked table, memory breakdown of the top
    choice, Pareto and tornado plots (embedded as data URIs), thresholds and binding limits."""

    doc = scenario.model_dump(mode="json", exclude_none=True, exclude_unset=True)     # as the user wrote it
    parts = [f"# clusteropt report: {result.scenario}", "",
             f"Status **{result.status}** (objective: {result.objective}); "
             f"{len(result.configs)} configuration(s) ranked; {result.stats.get('rows', '?')} candidate layouts, "
             f"{result.stats.get('feasible_rows', '?')} feasible."
             + (f" Predicted losses by the scaling law **{result.scaling_law}**."
                if getattr(result, "scaling_law", None) else ""), "",
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
        render = planner(result.workload).render
        serving, codesign = render == "fleets", render == "models"
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


def with_range(value, p10=None, p90=None, unit: str = "", digits: int = 4) -> str:
    """'13.9 d (12.6-15.8)': a figure with its 80% interval (CONTRACTS.md 'Estimates with a
    range'); the figure alone when it has no interval."""
    fmt = lambda x: f"{x:.{digits}g}"  # noqa: E731
    u = f" {unit}" if unit else ""
    if p10 is None or p90 is None:
        return f"{fmt(value)}{u}"
    return f"{fmt(value)}{u} ({fmt(p10)}-{fmt(p90)})"


def calibration_text(data: dict) -> str:
    """``clusteropt calibrate`` as text: the factors with their uncertainty, the error on the
    user's rows before and after, on held-out rows when there are enough, and the interval."""
    import math

    pr = data["profile"]
    lines = [f"calibration profile written to {data['out']} ({data['n_runs']} runs with measured throughput)", ""]
    rows = []
    for k in ("compute", "network", "overlap"):
        v, sd = pr[f"{k}_scale"], pr[f"{k}_scale_sd_log"]
        rows.append([f"{k}_scale", f"{v:.3f}", f"{v * math.exp(-sd):.3f}-{v * math.exp(sd):.3f}"])
    if pr["n_memory_runs"]:
        rows.append(["memory_reserve_bytes", f"{pr['memory_reserve_bytes'] / 1e9:+.2f} GB",
                     f"+/- {pr['memory_reserve_sd_bytes'] / 1e9:.2f} GB ({pr['n_memory_runs']} runs)"])
    lines.append(text_table(["factor", "value", "1-sd range"], rows))
    lines += ["", f"throughput error on your rows: before {data['error_before_pct']:.1f}%  after "
                  f"{data['error_after_pct']:.1f}%"]
    if "held_out_error_before_pct" in data:
        lines.append(f"on held-out rows {data['held_out_rows']} (fitted without them): before "
                     f"{data['held_out_error_before_pct']:.1f}%  after {data['held_out_error_after_pct']:.1f}%")
    if "memory_error_before_pct" in data:
        lines.append(f"peak-memory error: before {data['memory_error_before_pct']:.1f}%  after "
                     f"{data['memory_error_after_pct']:.1f}%")
    lines.append(f"80% interval of measured/predicted after calibration: x{math.exp(pr['log_ratio_p10']):.3f}"
                 f"-x{math.exp(pr['log_ratio_p90']):.3f}")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------
# estimates
# ----------------------------------------------------------------------------------------

def estimate_text(data: dict) -> str:
    p = data["params"]
    lines = []
    for part in ("train", "serve"):
        if part in data and not data[part]["fits"]:
            lines.append("fits: false")            # before any figure of a layout that does not fit
    lines += [f"model {data['model']}",
              f"seq_len {data['seq_len']}: {data['seq_len_source']}" if "seq_len_source" in data else ""]
    lines += [f"note: {n}" for n in data.get("notes", [])]
    lines.append("")
    rows = [[k, f"{v:,}"] for k, v in p.items()]
    lines.append(text_table(["parameters", "count"], rows))
    f = data["flops_per_token"]
    lines += ["", text_table(["FLOPs per token (seq_len %d)" % f["seq_len"], "FLOPs"],
                                    [[k, f"{v:.4g}"] for k, v in f.items() if k != "seq_len"])]
    if "train" in data:
        t = data["train"]
        m = t["memory_per_gpu_bytes"]
        lines += ["", f"training on {t['gpu']}: {t['layout']['n_gpus']} GPUs, fits: {str(t['fits']).lower()}",
                  text_table(["memory per GPU", "GB"], [[k, f"{v / GB:.2f}"] for k, v in m.items()
                                                               if isinstance(v, (int, float))])]
        keys = ["step_time_s", "compute_time_s", "exposed_comm_time_s", "bubble_time_s", "tokens_per_s", "mfu",
                "hfu", "model_tflops_per_gpu", "hardware_tflops_per_gpu", "train_days", "goodput", "wall_clock_days",
                "expected_interruptions", "checkpoint_interval_s", "gpu_hours", "cost_usd"]
        lines.append(text_table(["figure", "value (80% interval)"],
                                [["fits", str(t["fits"]).lower()]]
                                + [[k, with_range(t[k], t.get(f"{k}_p10"), t.get(f"{k}_p90"))]
                                   for k in keys if t.get(k) is not None]))
        if t.get("calibrated"):
            lines.append("80% intervals: from your runs (clusteropt calibrate)")
        elif t.get("interval_regime"):
            lines.append(f"80% intervals: regime {t['interval_regime']}, published runs of sources the model never "
                         "saw (catalog/step_time_intervals.csv)")
        for w in t.get("warnings", []):
            lines.append(f"warning: {w}")
    if "serve" in data:
        s = data["serve"]
        lines += ["", f"serving on {s['gpu']}"]
        lines += [f"{k}: {str(v).lower() if isinstance(v, bool) else v}" for k, v in s.items()
                  if k not in ("gpu", "load")]
        if "load" in s:
            lines += ["", "simulated load (one replica)"] + [f"{k}: {v}" for k, v in s["load"].items()]
    return "\n".join(lines) + "\n"


def buy_vs_rent_lines(plan: dict | None) -> list[str]:
    """Where buying a plan's fleet stops beating renting its jobs (``plan --sensitivity``): one
    line per flip point of the plan's investment figures (search.portfolio.solve.plan_investment)."""
    inv = (plan or {}).get("investment")
    if not inv:
        return []
    f = inv["flips"]
    verdict = "beats" if inv["npv_usd"] > 0 else "does not beat"
    out = [f"buy vs rent: buying {verdict} renting at a {inv['discount_rate']:.1%} discount rate "
           f"(NPV {usd(inv['npv_usd'])} over {inv['years']:g} years)"]
    r = f["discount_rate"]["flip"]
    out.append("buy vs rent: " + (f"renting wins above a {r:.1%} discount rate (the IRR)" if r is not None
                                  else "no discount rate between -99% and 1000% flips it"))
    for key, what in (("utilization_scale", "the owned fleet's busy hours"), ("gpu_price_scale", "the GPU price")):
        k = f[key]["flip"]
        out.append(f"buy vs rent: flips at {k:.2f} x {what}" if k is not None
                   else f"buy vs rent: {what} between 0.1x and 10x does not flip it")
    return out


def offer_table(offers: list[dict], detailed: bool = False) -> tuple[list[str], list[list], str]:
    """(headers, rows, align) of catalog offers for ``clusteropt catalog``: what each can span
    and the date its price was read (issue 17); ``detailed`` adds fabric, reach and commitments."""
    if detailed:
        rows = [[o["provider"], o["instance_type"], o["gpus_per_instance"], o["interconnect"],
                 o.get("fabric_gbit_per_s_per_gpu") or "-", o.get("max_gpus") or "-", o.get("on_demand_usd_per_hour"),
                 o.get("spot_usd_per_hour") or "-", o.get("reserved_usd_per_hour") or "-",
                 o.get("reserved_3y_usd_per_hour") or "-", o.get("region"), o["as_of"]] for o in offers]
        return (["provider", "instance", "gpus", "interconnect", "fabric Gb/s/GPU", "max gpus", "on-demand $/h",
                 "spot $/h", "1y $/h", "3y $/h", "region", "as of"], rows, "llrlrrrrrrll")
    rows = [[o["provider"], o["instance_type"], o["gpu"], o["gpus_per_instance"], o["interconnect"],
             o.get("on_demand_usd_per_hour") or "-", o.get("spot_usd_per_hour") or "-", o.get("region"), o["as_of"]]
            for o in offers]
    return (["provider", "instance", "gpu", "gpus", "interconnect", "on-demand $/h", "spot $/h", "region", "as of"],
            rows, "lllrlrrll")
