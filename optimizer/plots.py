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

_OBJECTIVE_LABEL = {"cost": "cost (USD)", "time": "wall-clock days", "gpus": "GPUs",
                    "cost_per_mtoken": "USD per million tokens", "loss": "predicted loss"}


def _money(x: float) -> str:
    """'$1.23M' with the dollar sign escaped (matplotlib reads a pair of '$' as mathtext)."""
    if abs(x) >= 1e6:
        return f"\\${x / 1e6:,.2f}M"
    if abs(x) >= 1e3:
        return f"\\${x / 1e3:,.0f}k"
    return f"\\${x:,.2f}"


def _fmt(objective: str, x: float) -> str:
    if objective in ("cost", "cost_per_mtoken"):
        return _money(x)
    return f"{x:,.3g}"


def _save(fig, path) -> Path:
    """Lay out, write the PNG and free the figure (every chart ends here)."""
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def _gpu_colours(names) -> dict:
    cmap = plt.get_cmap("tab10")
    return {g: cmap(i % 10) for i, g in enumerate(sorted(set(names)))}


def tornado(sens: dict, path, *, scenario: str = "") -> Path:
    """Horizontal bars: the chosen configuration's objective at -X% (left) and +X% (right) of
    each input, sorted by swing; a bar end is hatched when the re-optimised best differs there."""
    objective = sens.get("objective", "cost")
    rows = [e for e in sens["tornado"] if "note" not in e]
    base = sens.get("base_objective", rows[0]["base"] if rows else 0.0)
    x = sens.get("swing_pct", 20.0)
    fig, ax = plt.subplots(figsize=(9, 0.5 * max(len(rows), 3) + 1.6))
    for i, e in enumerate(reversed(rows)):
        lo, hi = e["low"], e["high"]
        for val, colour, key in ((lo, "#4477aa", "down"), (hi, "#cc6677", "up")):
            if val is None:                      # no feasible answer at that end
                ax.text(base, i, ("infeasible  " if key == "down" else "  infeasible"), va="center",
                        ha="right" if key == "down" else "left", fontsize=8, color=colour)
                continue
            changes = e["reoptimised"][key]["changes"]
            ax.barh(i, val - base, left=base, color=colour, alpha=0.85, hatch="//" if changes else None,
                    edgecolor="black" if changes else colour)
        vals = [v for v in (lo, hi) if v is not None]
        if vals:
            ax.text(max(vals + [base]), i, "  " + _fmt(objective, min(vals)) + " .. " + _fmt(objective, max(vals)),
                    va="center", fontsize=8)
    ax.set_yticks(range(len(rows)), [e["input"] for e in reversed(rows)], fontsize=9)
    ax.axvline(base, color="black", linewidth=1)
    fleet = "base_fleet" in sens              # serving: each end re-plans the fleet
    label = "USD per hour" if fleet and objective == "cost" else _OBJECTIVE_LABEL.get(objective, objective)
    ax.set_xlabel(f"{label} of the {'re-optimised best fleet' if fleet else 'chosen configuration'} "
                  f"(base {_fmt(objective, base)})")
    ax.set_title(f"Sensitivity{' of ' + scenario if scenario else ''}: each input at -{x:g}% (blue) "
                 f"and +{x:g}% (red)\nhatched: the best configuration changes at that end", fontsize=10)
    ends = [v for e in rows for v in (e["low"], e["high"]) if v is not None]
    lo_all, hi_all = min([base] + ends), max([base] + ends)
    pad = (hi_all - lo_all) * 0.35 or abs(base) * 0.1 or 1.0
    ax.set_xlim(lo_all - pad * 0.2, hi_all + pad)
    if objective in ("cost", "cost_per_mtoken"):
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: _money(v)))
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
    ax.set_xlabel("worst replica p99 TTFT (ms)")
    ax.set_ylabel("fleet cost (USD per hour)")
    ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: _money(v)))
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
    ax.set_xlabel("training cost (USD); labels: parameters / training tokens")
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
    ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: _money(v)))
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
        ax.set_xlabel(xa + (" (USD)" if xa.endswith("_usd") else "") + "; labels: parameters / training tokens")
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
        ax.set_xlabel("wall-clock days")
        ax.set_ylabel("cost (USD)")
        ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: _money(v)))
        title = "Cost-time frontier of the sweep's best plans"
    ax.set_title(f"{title}{' - ' + scenario if scenario else ''}, coloured by GPU type"
                 + (f"\n{n_bad} infeasible point(s) not drawn" if n_bad else ""), fontsize=10)
    ax.grid(alpha=0.3)
    if len(ok):
        ax.legend(fontsize=8, title="GPU type / sweep line")
    return _save(fig, path)
