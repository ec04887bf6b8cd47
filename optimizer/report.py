"""Rendering: tables, Markdown, CSV and JSON built from the search's raw numbers.

Nothing here computes a figure: it formats what ``optimizer.search`` and the estimators
returned. JSON is built from the same data with plain Python scalars.
"""

from __future__ import annotations

import json
import math
from typing import Any, Iterable

import numpy as np
import pandas as pd

from optimizer.units import GB

SCHEMA_VERSION = "1.0"


# ----------------------------------------------------------------------------------------
# plain values
# ----------------------------------------------------------------------------------------

def plain(x: Any) -> Any:
    """numpy/pandas scalars and containers -> JSON-ready Python values (NaN -> None)."""
    if isinstance(x, dict):
        return {str(k): plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [plain(v) for v in x]
    if isinstance(x, np.ndarray):
        return [plain(v) for v in x.tolist()]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and (math.isnan(x) or math.isinf(x)):
        return None
    if hasattr(x, "__dataclass_fields__"):
        return {k: plain(getattr(x, k)) for k in x.__dataclass_fields__}
    return x


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


def usd(x: float) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if abs(x) >= 1e6:
        return f"${x / 1e6:,.2f}M"
    if abs(x) >= 1e3:
        return f"${x / 1e3:,.1f}k"
    return f"${x:,.2f}"


def gbytes(x: float) -> str:
    return f"{x / GB:.1f} GB"


SOLVE_HEADERS = ["rank", "gpu", "gpus", "nodes", "tp/pp/dp/cp/ep", "zero", "prec", "mb", "acc",
                 "recompute", "sp", "mem/GPU (headroom)", "mfu", "days", "cost"]


def solve_rows(df: pd.DataFrame) -> list[list[str]]:
    out = []
    for r in df.to_dict(orient="records"):
        out.append([
            r.get("rank", ""), r["gpu"], r["n_gpus"], r["n_nodes"],
            f"{r['tp']}/{r['pp']}/{r['dp']}/{r['cp']}/{r['ep']}", r["zero"], r["precision"],
            r["micro_batch"], r["grad_accum"], r["recompute"], "y" if r["sequence_parallel"] else "n",
            f"{gbytes(r['memory_per_gpu_bytes'])} ({r['memory_headroom']:.0%})",
            f"{r['mfu']:.1%}", f"{r['wall_clock_days']:.1f}", usd(r["cost_usd"]),
        ])
    return out


def solve_json(result, scenario=None) -> dict:
    out = {
        "schema_version": SCHEMA_VERSION,
        "scenario": result.scenario,
        "status": result.status,
        "objective": result.objective,
        "configs": records(result.configs),
        "pareto": records(result.pareto),
        "explanation": plain(result.explanation),
        "stats": plain(result.stats),
    }
    extra = getattr(result, "sensitivity", None)
    if extra is not None:
        out["sensitivity"] = plain(extra)
    return out


def explanation_lines(expl: dict) -> list[str]:
    return list(expl.get("lines", [])) + [f"note: {n}" for n in expl.get("notes", [])]


def solve_text(result, markdown: bool = False) -> str:
    head = (f"scenario {result.scenario}: {result.status}, objective {result.objective}, "
            f"{len(result.configs)} configuration(s)")
    parts = [head, ""]
    if len(result.configs):
        rows = solve_rows(result.configs)
        parts.append(markdown_table(SOLVE_HEADERS, rows) if markdown else text_table(SOLVE_HEADERS, rows))
        if len(result.pareto):
            parts += ["", "Pareto front (cost vs wall-clock days):"]
            prow = [[r["gpu"], r["n_gpus"], f"{r['tp']}/{r['pp']}/{r['dp']}/{r['cp']}/{r['ep']}",
                     f"{r['wall_clock_days']:.1f}", usd(r["cost_usd"])]
                    for r in result.pareto.to_dict(orient="records")]
            h = ["gpu", "gpus", "tp/pp/dp/cp/ep", "days", "cost"]
            parts.append(markdown_table(h, prow) if markdown else text_table(h, prow))
    lines = explanation_lines(result.explanation)
    if lines:
        if parts[-1] != "":
            parts.append("")
        parts += [("- " if markdown else "") + ln for ln in lines]
    return "\n".join(parts).rstrip() + "\n"


def solve_csv(result) -> str:
    return result.configs.to_csv(index=False)
