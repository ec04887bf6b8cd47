"""Rendering of portfolio plans (`clusteropt plan`): JSON, CSV and text tables built from
``optimizer.search.portfolio``'s result. Nothing here computes a figure."""

from __future__ import annotations

import csv
import io

from optimizer.report import SCHEMA_VERSION, markdown_table, plain, text_table, usd
from optimizer.search.portfolio.solve import PlanResult


# ----------------------------------------------------------------------------------------
# portfolio plans (the CLI's `clusteropt plan` only calls these)
# ----------------------------------------------------------------------------------------

def plan_json(result: PlanResult) -> dict:
    """One JSON document: schema_version, status, objective, plan, alternatives, explanation, stats."""
    doc = {"schema_version": SCHEMA_VERSION, "kind": "plan", "portfolio": result.portfolio, "status": result.status,
           "objective": result.objective, "plan": result.plan, "alternatives": result.alternatives,
           "explanation": result.explanation, "stats": result.stats}
    if result.sensitivity is not None:
        doc["sensitivity"] = result.sensitivity
    return plain(doc)


SCHEDULE_COLUMNS = ("job", "kind", "gpu", "source", "n_gpus", "n_nodes", "start_day", "end_day", "duration_days",
                    "deadline_days", "cost_usd", "layout")


def plan_csv(result: PlanResult) -> str:
    """The best plan's schedule, one row per job (SCHEDULE_COLUMNS); empty body when no plan."""

    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(SCHEDULE_COLUMNS)
    for r in (result.plan or {}).get("schedule", []):
        w.writerow([_layout(r) if k == "layout" else ("" if r.get(k) is None else r.get(k)) for k in SCHEDULE_COLUMNS])
    return buf.getvalue()


def _layout(r: dict) -> str:
    cfg = r.get("config")
    if cfg:
        return (f"tp{cfg['tp']} pp{cfg['pp']} dp{cfg['dp']}" + (f" cp{cfg['cp']}" if cfg["cp"] > 1 else "")
                + f" zero{cfg['zero']} {cfg['precision']} mb{cfg['micro_batch']} {cfg['recompute']}")
    return r.get("layout", "")


def plan_text(result: PlanResult, markdown: bool = False) -> str:
    """The plan as text (or Markdown): cost split, fleet to buy, schedule, alternatives, explanation."""
    table = markdown_table if markdown else text_table
    out = [f"portfolio {result.portfolio}: {result.status}, objective {result.objective}"]
    pl = result.plan
    if pl is not None:
        c = pl["cost"]
        out += ["", f"total {usd(c['total_usd'])} over the horizon = capex share {usd(c['capex_usd'])} + "
                    f"opex {usd(c['opex_usd'])} + rent {usd(c['rent_usd'])}; purchase {usd(c['purchase_usd'])}"]
        inv = pl.get("investment")
        if inv:
            pb = "never" if inv["payback_years"] is None else f"{inv['payback_years']:.1f} years"
            out.append(f"owned fleet vs renting its jobs: NPV {usd(inv['npv_usd'])} at {inv['discount_rate']:.1%}, "
                       f"payback {pb}, ROI {inv['roi_pct']:.0f}% over {inv['years']:g} years "
                       f"(residual {inv['residual_pct']:g}%, staff {usd(inv['staff_usd_per_year'])}/year)")
        if pl["fleet"]:
            out += ["", "fleet to buy:"]
            out.append(table(["gpu", "nodes", "gpus", "purchase", "IT kW", "utilization"],
                                  [[f["gpu"], f["nodes"], f["gpus"], usd(f["purchase_usd"]), f"{f['it_power_kw']:,.0f}",
                                    f"{f['utilization']:.0%}"] for f in pl["fleet"]]))
        else:
            out += ["", "fleet to buy: none"]
        out += ["", "schedule:"]
        rows = []
        for r in pl["schedule"]:
            rows.append([r["job"], r["kind"], r["gpu"], r["source"], r["n_gpus"], f"{r['start_day']:.1f}",
                         f"{r['end_day']:.1f}", _layout(r), usd(r["cost_usd"])])
        out.append(table(["job", "kind", "gpu", "source", "gpus", "start d", "end d", "layout", "power/rent"], rows))
        for i, alt in enumerate(result.alternatives, start=2):
            fl = ", ".join(f"{f['nodes']} x {f['gpu']} nodes" for f in alt["fleet"]) or "no purchase"
            rented = sorted({r["gpu"] for r in alt["rent"]})
            out.append(f"alternative {i}: {usd(alt['cost']['total_usd'])}; {fl}"
                       + (f"; rents {', '.join(rented)}" if rented else ""))
    lines = list(result.explanation.get("lines", [])) + [f"note: {n}" for n in result.explanation.get("notes", [])]
    sens = result.sensitivity or {}
    thresholds = sens.get("thresholds", []) if isinstance(sens, dict) else sens
    for e in sens.get("tornado", []) if isinstance(sens, dict) else []:
        lo, hi = (usd(e[k]) if e[k] is not None else "infeasible" for k in ("low", "high"))
        lines.append(f"tornado: {e['input']} -{e['swing_pct']:g}%: {lo}, +{e['swing_pct']:g}%: {hi}"
                     + (" (fleet changes)" if any(e["changes"].values()) else ""))
    for t in thresholds:
        if t.get("change_pct") is not None:
            lines.append(f"sensitivity: {t['input']} {t['change_pct']:+.1f}% changes the fleet")
    if lines:
        out.append("")
        out += [("- " if markdown else "") + ln for ln in lines]
    return "\n".join(out).rstrip() + "\n"
