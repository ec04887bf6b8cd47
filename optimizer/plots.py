"""PNG charts: the sensitivity tornado, the cost/time Pareto front and a sweep's frontier.

matplotlib with the non-interactive Agg backend (no display needed). Each function draws
what its caption (the figure title) says from figures the search returned, writes a PNG to
``path`` and returns the path. Nothing is computed here.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from optimizer.formatting import usd  # noqa: E402

_OBJECTIVE_LABEL = {"cost": "cost (USD)", "time": "wall-clock days", "gpus": "GPUs",
                    "cost_per_mtoken": "USD per million tokens", "loss": "predicted loss"}


def _money(x: float) -> str:
    """formatting.usd with the '$' escaped (matplotlib reads a pair of '$' as mathtext)."""
    return usd(x, tex=True)


def _fmt(objective: str, x: float) -> str:
    if objective in ("cost", "cost_per_mtoken"):
        return _money(x)
    return f"{x:,.3g}"


def _money_tick(x: float) -> str:
    """A money tick label with three significant digits ($100, $2.5k, $1.2M)."""
    return usd(x, significant=3, tex=True)


def _money_axis(axis, log: bool = False) -> None:
    """Dollars on an axis ($1.2M, $450k), never matplotlib's '1e6' offset or '10^6' log labels."""
    if log:
        _log_ticks(axis)
    axis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: _money_tick(v)))


def _log_ticks(axis, fmt=None) -> None:
    """A log axis ticked at 1, 2, 3 and 5 of each decade (1, 2, 5 past 1.5 decades; 1 past 3, so
    labels never crowd), labelled in plain numbers (``fmt``)."""
    import math

    lo, hi = axis.get_data_interval()
    decades = math.log10(hi / lo) if lo > 0 and hi > lo else 1.0
    subs = (1.0, 2.0, 3.0, 5.0) if decades < 1.5 else (1.0, 2.0, 5.0) if decades < 3 else (1.0,)
    axis.set_major_locator(matplotlib.ticker.LogLocator(base=10, subs=subs))
    axis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    if fmt is not None:
        axis.set_major_formatter(matplotlib.ticker.FuncFormatter(fmt))


def _spans_decades(values) -> bool:
    """Whether positive values span at least a factor of 10 (then a log axis shows them all)."""
    v = [float(x) for x in values if x is not None and float(x) > 0]
    return len(v) > 1 and max(v) >= 10 * min(v)


def _save(fig, path) -> Path:
    """Lay out, write the PNG and free the figure (every chart ends here)."""
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def _gpu_colours(names) -> dict:
    cmap = plt.get_cmap("tab10")
    return {g: cmap(i % 10) for i, g in enumerate(sorted(set(names)))}


def _best_ends(e: dict, fleet: bool) -> tuple:
    """(low, high) of the re-optimised best at -X% and +X%: serving tornados already hold it;
    training entries carry it beside the chosen configuration's value (``reoptimised``)."""
    if fleet or "note" in e:
        return e["low"], e["high"]
    return e["reoptimised"]["down"]["best_objective"], e["reoptimised"]["up"]["best_objective"]


def tornado(sens: dict, path, *, scenario: str = "") -> Path:
    """Horizontal bars: the RE-OPTIMISED best objective at -X% (blue) and +X% (red) of each input,
    sorted by that swing. A hatched end is where the best configuration switches; a black tick
    marks the chosen configuration's own objective there when it differs (what keeping it costs)."""
    objective = sens.get("objective", "cost")
    fleet = "base_fleet" in sens              # serving: each end re-plans the fleet
    rows = [e for e in sens["tornado"] if "note" not in e]
    ends = {e["input"]: _best_ends(e, fleet) for e in rows}
    rows.sort(key=lambda e: -abs((ends[e["input"]][1] or 0) - (ends[e["input"]][0] or 0))
              if None not in ends[e["input"]] else float("-inf"))
    base = sens.get("base_objective", rows[0]["base"] if rows else 0.0)
    x = sens.get("swing_pct", 20.0)
    fig, ax = plt.subplots(figsize=(9, 0.5 * max(len(rows), 3) + 1.8))
    for i, e in enumerate(reversed(rows)):
        lo, hi = ends[e["input"]]
        kept_lo, kept_hi = (e["reoptimised"][d].get("objective") for d in ("down", "up"))   # base config kept
        for val, colour, key, kept in ((lo, "#4477aa", "down", kept_lo), (hi, "#cc6677", "up", kept_hi)):
            if val is None:                      # no feasible answer at that end
                ax.text(base, i, ("infeasible  " if key == "down" else "  infeasible"), va="center",
                        ha="right" if key == "down" else "left", fontsize=8, color=colour)
                continue
            changes = e["reoptimised"][key]["changes"]
            ax.barh(i, val - base, left=base, color=colour, alpha=0.85, hatch="//" if changes else None,
                    edgecolor="black" if changes else colour)
            if changes and not fleet and kept is not None and abs(kept - val) > 1e-9 * max(abs(base), 1.0):
                ax.plot([kept, kept], [i - 0.35, i + 0.35], color="black", linewidth=1.5)
        vals = [v for v in (lo, hi) if v is not None]
        if vals:
            switch = [d for d in ("down", "up") if e["reoptimised"][d]["changes"]]
            ax.text(max(vals + [base] + [v for v in (kept_lo, kept_hi) if v is not None]), i,
                    "  " + _fmt(objective, min(vals)) + " .. " + _fmt(objective, max(vals))
                    + (f"  (switch at {'/'.join('-' if d == 'down' else '+' for d in switch)}{x:g}%)" if switch else ""),
                    va="center", fontsize=8)
    ax.set_yticks(range(len(rows)), [e["input"] for e in reversed(rows)], fontsize=9)
    ax.axvline(base, color="black", linewidth=1)
    label = "USD per hour" if fleet and objective == "cost" else _OBJECTIVE_LABEL.get(objective, objective)
    ax.set_xlabel(f"{label} of the re-optimised best {'fleet' if fleet else 'configuration'} "
                  f"(base {_fmt(objective, base)})")
    ax.set_title(f"Sensitivity{' of ' + scenario if scenario else ''}: each input at -{x:g}% (blue) "
                 f"and +{x:g}% (red), re-solved\nhatched: the best configuration switches there"
                 + ("" if fleet else "; black tick: the base configuration kept"), fontsize=10)
    allv = [v for e in rows for v in ends[e["input"]] + tuple(e["reoptimised"][d].get("objective")
                                                               for d in ("down", "up")) if v is not None]
    lo_all, hi_all = min([base] + allv), max([base] + allv)
    pad = (hi_all - lo_all) * 0.6 or abs(base) * 0.1 or 1.0     # room for the end labels
    ax.set_xlim(lo_all - pad * 0.2, hi_all + pad)
    if objective in ("cost", "cost_per_mtoken"):
        _money_axis(ax.xaxis)
    return _save(fig, path)


def fleet_pareto(configs, front, path, *, scenario: str = "") -> Path:
    """Serving: $/hour against the worst replica p99 TTFT, the Pareto front (line) and the
    ranked fleets; the rank-1 fleet ringed."""
    fig, ax = plt.subplots(figsize=(8, 5))
    if len(front):
        f = front.sort_values("worst_ttft_s")
        ax.step(f["worst_ttft_s"] * 1e3, f["usd_per_hour"], where="post", color="grey", linewidth=1,
                label="Pareto front")
        ax.scatter(f["worst_ttft_s"] * 1e3, f["usd_per_hour"], color="#4477aa", s=28, zorder=2, label="front fleets")
    if len(configs):
        ax.scatter(configs["worst_ttft_s"] * 1e3, configs["usd_per_hour"], color="#cc6677", marker="x", s=40,
                   zorder=3, label="ranked fleets")
        top = configs.iloc[0]
        ax.scatter([top["worst_ttft_s"] * 1e3], [top["usd_per_hour"]], s=180, facecolors="none",
                   edgecolors="black", linewidths=1.5, zorder=4, label="rank 1")
    ttft = list(front["worst_ttft_s"] * 1e3) + list(configs["worst_ttft_s"] * 1e3)
    dollars = list(front["usd_per_hour"]) + list(configs["usd_per_hour"])
    log_x, log_y = _spans_decades(ttft), _spans_decades(dollars)
    if log_x:
        ax.set_xscale("log")
        _log_ticks(ax.xaxis, lambda v, _: f"{v:,.3g}")
    if log_y:
        ax.set_yscale("log")
    ax.set_xlabel("worst replica p99 TTFT (ms" + (", log scale)" if log_x else ")"))
    ax.set_ylabel("fleet cost (USD per hour" + (", log scale)" if log_y else ")"))
    _money_axis(ax.yaxis, log=log_y)
    ax.set_title(f"Fleet cost against p99 time to first token{' - ' + scenario if scenario else ''}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def loss_pareto(configs, front, path, *, scenario: str = "") -> Path:
    """Co-design: predicted loss against training cost, the Pareto front (line, each point
    labelled with its model size and tokens) and the ranked plans, coloured by GPU type."""
    fig, ax = plt.subplots(figsize=(8, 5))
    col = _gpu_colours(list(front["gpu"]) + list(configs["gpu"]))
    if len(front):
        f = front.sort_values("cost_usd")
        ax.step(f["cost_usd"], f["predicted_loss"], where="post", color="grey", linewidth=1, label="Pareto front")
        for g, sub in f.groupby("gpu"):
            ax.scatter(sub["cost_usd"], sub["predicted_loss"], color=col[g], s=28, zorder=2, label=f"{g} (front)")
        step = max(1, len(f) // 12)                  # at most ~12 labels, evenly along the front
        for _, r in f.iloc[::-1].iloc[::step].iterrows():
            ax.annotate(f"{r['model_params'] / 1e9:.0f}B/{r['train_tokens'] / 1e12:.1f}T",
                        (r["cost_usd"], r["predicted_loss"]), textcoords="offset points", xytext=(4, 4), fontsize=7)
    if len(configs):
        top = configs.iloc[0]
        ax.scatter([top["cost_usd"]], [top["predicted_loss"]], s=180, facecolors="none", edgecolors="black",
                   linewidths=1.5, zorder=4, label="rank 1")
    ax.set_xscale("log")
    _money_axis(ax.xaxis, log=True)
    ax.set_xlabel("training cost (USD, log scale); labels: parameters / training tokens")
    ax.set_ylabel("predicted loss")
    ax.set_title(f"Predicted loss against cost{' - ' + scenario if scenario else ''}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, path)


def pareto(configs, front, path, *, scenario: str = "") -> Path:
    """Cost against wall-clock days: the Pareto front (line) and the ranked configurations,
    coloured by GPU type; the rank-1 choice ringed. Serving fleets: fleet_pareto."""
    if "replicas" in configs.columns or "replicas" in front.columns:
        return fleet_pareto(configs, front, path, scenario=scenario)
    if "predicted_loss" in configs.columns or "predicted_loss" in front.columns:
        return loss_pareto(configs, front, path, scenario=scenario)
    fig, ax = plt.subplots(figsize=(8, 5))
    names = list(front["gpu"]) + list(configs["gpu"])
    col = _gpu_colours(names)
    if len(front):
        f = front.sort_values("wall_clock_days")
        ax.step(f["wall_clock_days"], f["cost_usd"], where="post", color="grey", linewidth=1, zorder=1,
                label="Pareto front")
        for g, sub in f.groupby("gpu"):
            ax.scatter(sub["wall_clock_days"], sub["cost_usd"], color=col[g], s=28, zorder=2, label=f"{g} (front)")
    if len(configs):
        for g, sub in configs.groupby("gpu"):
            ax.scatter(sub["wall_clock_days"], sub["cost_usd"], color=col[g], marker="x", s=40, zorder=3,
                       label=f"{g} (ranked)")
        top = configs.iloc[0]
        ax.scatter([top["wall_clock_days"]], [top["cost_usd"]], s=180, facecolors="none", edgecolors="black",
                   linewidths=1.5, zorder=4, label="rank 1")
    ax.set_xlabel("wall-clock days")
    ax.set_ylabel("cost (USD)")
    _money_axis(ax.yaxis)
    ax.set_title(f"Cost against time{' - ' + scenario if scenario else ''}: Pareto front and ranked configurations",
                 fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    return _save(fig, path)


def frontier(df, path, *, x_axis: str | None = None, scenario: str = "") -> Path:
    """A sweep's best points: cost against wall-clock days coloured by GPU type (infeasible
    points listed in the caption); with ``predicted_loss`` in the frame (co-design), predicted
    loss against the varied budget instead."""
    ok = df[df["status"] != "infeasible"]
    n_bad = int((df["status"] == "infeasible").sum())
    fig, ax = plt.subplots(figsize=(8, 5))
    col = _gpu_colours(ok["gpu"].astype(str)) if len(ok) else {}
    loss_mode = "predicted_loss" in ok.columns and ok["predicted_loss"].notna().any()
    if loss_mode:
        xa = x_axis or next((c for c in df.columns if c.endswith("budget_usd")), df.columns[0])
        for g, sub in ok.groupby(ok["gpu"].astype(str)):
            ax.scatter(sub[xa], sub["predicted_loss"], color=col[g], s=36, label=g, zorder=2)
        o = ok.sort_values(xa)
        ax.plot(o[xa], o["predicted_loss"], color="grey", linewidth=1, zorder=1)
        if {"model_params", "train_tokens"} <= set(o.columns):
            for _, r in o.iterrows():
                ax.annotate(f"{r['model_params'] / 1e9:.0f}B / {r['train_tokens'] / 1e12:.1f}T",
                            (r[xa], r["predicted_loss"]), textcoords="offset points", xytext=(4, 6), fontsize=7)
        ax.set_xscale("log")
        if xa.endswith("_usd"):
            _money_axis(ax.xaxis, log=True)
        ax.set_xlabel(xa + (" (USD, log scale)" if xa.endswith("_usd") else " (log scale)")
                      + "; labels: parameters / training tokens")
        ax.set_ylabel("predicted loss")
        title = "Predicted loss against budget"
    else:
        varied = list(df.columns[: list(df.columns).index("status")]) if "status" in df.columns else []
        others = varied[1:]
        groups = ok.groupby(others, sort=False) if others else [((), ok)]
        styles = ["-", "--", ":", "-."]
        for j, (key, sub) in enumerate(groups):
            key = key if isinstance(key, tuple) else (key,)
            o = sub.sort_values("wall_clock_days")
            label = ", ".join(f"{k}={v}" for k, v in zip(others, key)) or None
            ax.plot(o["wall_clock_days"], o["cost_usd"], color="grey", linewidth=1, zorder=1,
                    linestyle=styles[j % len(styles)], label=label)
        for g, sub in ok.groupby(ok["gpu"].astype(str)):
            ax.scatter(sub["wall_clock_days"], sub["cost_usd"], color=col[g], s=36, label=g, zorder=2)
        first = varied[0] if varied else None
        if first is not None:                   # each point labelled with its value(s) of the first varied input
            labels: dict = {}
            for _, r in ok.iterrows():
                v = r[first]
                text = (_money(float(v)) if first.endswith("_usd") else
                        f"{float(v):,.3g}" if isinstance(v, (int, float)) else str(v))
                where = (round(float(r["wall_clock_days"]), 6), round(float(r["cost_usd"]), 2))
                if text not in labels.setdefault(where, []):
                    labels[where].append(text)
            for (days, cost), texts in labels.items():       # points that coincide share one label
                ax.annotate(", ".join(texts), (days, cost), textcoords="offset points", xytext=(4, 4), fontsize=7)
        ax.set_xlabel("wall-clock days" + (f"; labels: {first}" if first else ""))
        ax.set_ylabel("cost (USD)")
        _money_axis(ax.yaxis)
        title = "Cost-time frontier of the sweep's best plans"
    ax.set_title(f"{title}{' - ' + scenario if scenario else ''}, coloured by GPU type"
                 + (f"\n{n_bad} infeasible point(s) not drawn" if n_bad else ""), fontsize=10)
    ax.grid(alpha=0.3)
    if len(ok):
        ax.legend(fontsize=8, title="GPU type / sweep line")
    return _save(fig, path)
