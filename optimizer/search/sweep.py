"""Sweeps: solve a grid of scenario variants and compare them row by row.

``sweep(scenario, vary={"constraints.budget_usd": [1e6, 2e6], "pricing.mode": ["on_demand", "spot"]})``
solves every combination and returns a DataFrame, one row per point: the varied values,
status, the best configuration, its cost, wall-clock days and GPUs, the marginal value of
each step along the first varied input (days saved per extra $1M), and, for infeasible
points, the explanation instead of a gap.

Points that differ only in limits, tokens or prices share one candidate table (the
estimator figures do not depend on them: train.table.reprice); points that change the table
(model, sequence length, batch, search space, GPU list) are solved in worker processes,
one group of points per table. Every point gives what a single ``solve`` call gives; the
tests check that point by point.
"""

from __future__ import annotations

import itertools
import math
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any

import numpy as np
import pandas as pd

from optimizer.errors import ClusteroptError
from optimizer.pricing import gpu_options
from optimizer.scenario import Scenario, load_scenario
from optimizer.search.serve.sensitivity import TABLE_FREE
from optimizer.search.serve.solve import solve_serving
from optimizer.search.train.solve import solve_training
from optimizer.search.planners import planner
from optimizer.catalog import Catalog
from optimizer.search.train.table import build_table, reprice


#: Scenario paths that leave the estimator columns unchanged (re-price only).
REPRICE_ONLY = ("constraints.budget_usd", "constraints.deadline_days",
                "constraints.memory_headroom", "constraints.budget_usd_per_hour",
                "train.tokens", "top_k", "objective", "pricing.")

SWEEP_SCHEMA_VERSION = "1.0"

#: A shared-table group is split across worker processes only with at least this many points
#: per worker (each worker builds the table once, about as long as 20 re-priced solves).
MIN_POINTS_PER_WORKER = 20


#: Most points one sweep solves (each point is a solve): a grid past this is a typo, not a plan.
MAX_POINTS = 10_000


def parse_values(text: str, field: str = "--vary") -> list[Any]:
    """'1e6:1e8:20:log' (start:stop:count[:log|lin]) or 'a,b,c' (numbers parsed when they are numbers)."""
    if ":" in text and "," not in text:
        parts = text.split(":")
        if len(parts) not in (3, 4):
            raise ClusteroptError(field, f"range {text!r} is not start:stop:count[:log|lin]", "e.g. 1e6:1e8:20:log")
        try:
            a, b, n_f = float(parts[0]), float(parts[1]), float(parts[2])
        except ValueError:
            raise ClusteroptError(field, f"range {text!r} has a non-number", "e.g. 1e6:1e8:20:log") from None
        if not (np.isfinite(a) and np.isfinite(b) and np.isfinite(n_f)) or not n_f.is_integer():
            raise ClusteroptError(field, f"range {text!r}", "finite ends and a whole count, e.g. 1e6:1e8:20:log")
        n = int(n_f)
        if n > MAX_POINTS:
            raise ClusteroptError(field, f"range {text!r} has {n:,} points", f"at most {MAX_POINTS:,} points per sweep")
        scale = parts[3] if len(parts) == 4 else "lin"
        if n < 1 or scale not in ("log", "lin"):
            raise ClusteroptError(field, f"range {text!r}", "count >= 1 and scale 'log' or 'lin'")
        if scale == "log":
            if a <= 0 or b <= 0:
                raise ClusteroptError(field, f"log range {text!r} needs positive ends", "start, stop > 0")
            return [float(v) for v in np.geomspace(a, b, n)]
        return [float(v) for v in np.linspace(a, b, n)]
    out = []
    for tok in text.split(","):
        tok = tok.strip()
        try:
            v: Any = float(tok)
            if v.is_integer() and "e" not in tok.lower() and "." not in tok:
                v = int(v)
        except ValueError:
            v = {"true": True, "false": False}.get(tok.lower(), tok)
        out.append(v)
    return out


def resolve_path(scenario, path: str) -> str:
    """A dotted scenario path; a bare name (budget_usd) resolves to the one block that has it."""

    if "." in path:
        return path
    if path in Scenario.model_fields:
        return path
    hits = []
    for block in ("train", "constraints", "pricing", "search", "serve"):
        sub = Scenario.model_fields[block].annotation
        fields = getattr(sub, "model_fields", None)
        if fields is None:
            for arg in getattr(sub, "__args__", ()):
                fields = getattr(arg, "model_fields", None)
                if fields:
                    break
        if fields and path in fields:
            hits.append(f"{block}.{path}")
    if len(hits) != 1:
        raise ClusteroptError("--vary", f"{path!r} names " + ("no scenario field" if not hits else f"several: {hits}"),
                              "use a dotted path such as constraints.budget_usd")
    return hits[0]


def _reprice_only(paths) -> bool:
    return all(any(p == r or (r.endswith(".") and p.startswith(r)) for r in REPRICE_ONLY) for p in paths)


#: Columns a training point copies from its best configuration (in this order).
TRAIN_POINT_KEYS = ("gpu", "n_gpus", "n_nodes", "tp", "pp", "dp", "cp", "ep", "zero", "precision", "micro_batch",
                    "grad_accum", "recompute", "sequence_parallel", "mfu", "train_days", "wall_clock_days",
                    "cost_usd", "memory_per_gpu_bytes")


def fleet_label(replicas) -> str:
    """'14x H100-SXM5-80GB tp2 int4/fp8 b64 + ...': a serving fleet on one line; a compression
    option (int4 GPTQ, 2:4 sparsity, a pruned and distilled student...) in brackets."""
    def one(r):
        tags = [t for t in (r.get("compression"), "2:4" if r.get("sparse_2_4") else None) if t and t != "none"]
        return (f"{r['count']}x {r['gpu']} tp{r['tp']}" + (f"pp{r['pp']}" if r.get("pp", 1) > 1 else "")
                + f" {r['weights']}/{r['kv']} b{r['batch']}" + (f" [{', '.join(tags)}]" if tags else ""))
    return " + ".join(one(r) for r in replicas)


def _point_row(values: dict, result) -> dict:
    """One sweep row: the varied values, status, the best configuration's scalar figures
    (training, co-design or serving fleet alike) and the explanation."""
    row = dict(values)
    row["status"] = result.status
    if getattr(result, "scaling_law", None):          # co-design: the law behind predicted_loss
        row["scaling_law"] = result.scaling_law
    lines = "; ".join(result.explanation.get("lines", []))
    if len(result.configs):
        best = result.configs.iloc[0].to_dict()
        keys = [k for k in TRAIN_POINT_KEYS if k in best] + [k for k in best if k not in TRAIN_POINT_KEYS]
        for k in keys:
            v = best[k]
            if k == "rank" or isinstance(v, (list, dict, tuple)):
                continue
            row[k] = v.item() if hasattr(v, "item") else v
        if "replicas" in best:
            row["fleet"] = fleet_label(best["replicas"])
        row["explanation"] = lines
    else:
        row["explanation"] = lines or result.explanation.get("reason", "")
    return row


def _solve_group(base_dict: dict, points: list[dict], objective, top_k, catalog) -> list[tuple[int, dict]]:
    """Solve points that share one candidate table (worker-process entry point). Serving and
    co-design points are solved one by one (their planners keep their own caches)."""

    base = load_scenario(base_dict)
    out = []
    table = None
    for p in points:
        sc = base.with_overrides(p["values"])
        if sc.workload == "serve":            # one replica table per group (TABLE_FREE paths)

            res = solve_serving(sc, objective=objective, top_k=top_k, catalog=catalog, table=table, pareto=False)
            table = res.table if res.table is not None else table
            out.append((p["index"], _point_row(p["values"], res)))
            continue
        if sc.workload == "codesign":         # co-design keeps its own rung-table cache
            res = planner(sc.workload).solve(sc, objective=objective, top_k=top_k, catalog=catalog)
            out.append((p["index"], _point_row(p["values"], res)))
            continue
        gpus, _ = gpu_options(sc, catalog)
        if table is None or [(g.name, g.offer, g.available) for g in gpus] != [(g.name, g.offer, g.available)
                                                                             for g in table.gpus]:
            table = build_table(sc.spec(), sc, gpus, gpu_count_limits=False)
        t = reprice(table, sc, gpus)
        res = solve_training(sc, table=t, full_table=t, objective=objective, top_k=top_k, catalog=catalog)
        out.append((p["index"], _point_row(p["values"], res)))
    return out


def sweep(scenario, vary: dict[str, Any], *, objective: str | None = None, top_k: int = 1,
          workers: int | None = None, executor: str = "process", progress: bool = False,
          catalog: Catalog) -> pd.DataFrame:
    """Solve the grid of ``vary`` (path -> list of values, or a 'start:stop:n:log' string)."""

    from optimizer.inputs import integer

    scenario = load_scenario(scenario)
    if not isinstance(vary, dict) or not vary:
        raise ClusteroptError("vary", f"expected a mapping of paths to values, got {vary!r}",
                              "e.g. {'constraints.budget_usd': '1e6:1e8:5:log'}")
    top_k = integer("top_k", top_k, 1, 1000)
    if workers is not None:
        workers = integer("workers", workers, 1, 1024)
    if executor not in ("process", "ray"):
        raise ClusteroptError("executor", f"unknown executor {executor!r}", "allowed: process, ray")
    axes = {}
    for path, vals in vary.items():
        p = resolve_path(scenario, path)
        axes[p] = parse_values(vals, f"--vary {path}") if isinstance(vals, str) else list(vals)
    names = list(axes)
    n_points = int(np.prod([len(v) for v in axes.values()], dtype=float)) if axes else 0
    if n_points > MAX_POINTS:
        raise ClusteroptError("--vary", f"{n_points:,} points in the grid", f"at most {MAX_POINTS:,} points per sweep")
    grid = list(itertools.product(*axes.values()))
    points = [{"index": i, "values": dict(zip(names, combo))} for i, combo in enumerate(grid)]
    # validate early (one-line error before any progress or worker): every point of a small
    # grid, else every value of each axis on its own
    checks = [p["values"] for p in points] if len(points) <= 1000 else [
        {n: v} for n, vals in axes.items() for v in vals]
    for values in checks:
        scenario.with_overrides(values)
    base_dict = scenario.model_dump(mode="python")
    base_dict["base_dir"] = scenario.base_dir
    if scenario.workload == "serve":
        table_paths = [n for n in names if not any(n == t or n.startswith(t + ".") for t in TABLE_FREE)]
    else:
        table_paths = [n for n in names if not _reprice_only([n])]
    groups: dict[tuple, list[dict]] = {}
    for p in points:
        key = tuple(repr(p["values"][n]) for n in table_paths)
        groups.setdefault(key, []).append(p)
    n_workers = max(1, workers or os.cpu_count() or 1)
    if executor == "process" and len(groups) < n_workers:
        # one shared table but many points: split the points across workers (each builds the
        # table once; worth it when the points outnumber the build cost)
        split: dict[tuple, list[dict]] = {}
        for key, pts in groups.items():
            parts = min(n_workers, max(1, len(pts) // MIN_POINTS_PER_WORKER))
            for j in range(parts):
                split[key + (j,)] = pts[j::parts]
        groups = split
    rows: dict[int, dict] = {}
    done = 0
    total = len(points)

    bar = _progress_bar(total) if progress else None

    def tick(n):
        nonlocal done
        done += n
        if bar is not None:
            bar.update(bar.task_ids[0], completed=done)
            if done >= total:
                bar.stop()

    try:
        _run(executor, groups, base_dict, objective, top_k, rows, tick, n_workers, catalog)
    finally:
        if bar is not None and done < total:      # end the bar's line: an error starts on its own
            bar.stop()
    df = pd.DataFrame([rows[i] for i in range(total)])
    _add_marginal(df, names[0] if names else None)
    return df


def _run(executor, groups, base_dict, objective, top_k, rows, tick, n_workers, catalog) -> None:
    if executor == "ray":
        _run_ray(base_dict, list(groups.values()), objective, top_k, rows, tick, catalog)
    elif len(groups) == 1 or n_workers <= 1:
        for g in groups.values():
            for i, r in _solve_group(base_dict, g, objective, top_k, catalog):
                rows[i] = r
            tick(len(g))
    else:
        with ProcessPoolExecutor(max_workers=min(n_workers, len(groups))) as ex:
            futs = [ex.submit(_solve_group, base_dict, g, objective, top_k, catalog) for g in groups.values()]
            for f in as_completed(futs):
                res = f.result()
                for i, r in res:
                    rows[i] = r
                tick(len(res))


def _progress_bar(total: int):
    """A started rich progress bar on stderr (stdout carries only the result, CONTRACTS.md)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(TextColumn("sweep"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   console=Console(stderr=True))
    bar.add_task("sweep", total=total)
    bar.start()
    return bar


def _add_marginal(df: pd.DataFrame, first: str | None) -> None:
    """The marginal value of each step along the first varied input, between consecutive feasible
    points with the other inputs equal. Training: days saved per extra $1M
    (``days_saved_per_extra_musd``). Serving: $/hour added per unit of the input, e.g. per extra
    request/s (``marginal_usd_per_hour_per_unit``)."""
    serving = "usd_per_hour" in df.columns
    col = "marginal_usd_per_hour_per_unit" if serving else "days_saved_per_extra_musd"
    df[col] = math.nan
    if first is None or ("cost_usd" not in df and not serving):
        return
    others = [c for c in df.columns[: list(df.columns).index("status")] if c != first]
    groups = df.groupby([df[o].astype(str) for o in others], sort=False) if others else [(None, df)]
    for _, g in groups:
        prev = None
        for i in g.index:
            if df.at[i, "status"] == "infeasible":
                continue
            if prev is not None and serving:
                try:
                    dx = float(df.at[i, first]) - float(df.at[prev, first])
                except (TypeError, ValueError):
                    return
                if dx:
                    df.at[i, col] = (df.at[i, "usd_per_hour"] - df.at[prev, "usd_per_hour"]) / dx
            elif prev is not None:
                d_cost = df.at[i, "cost_usd"] - df.at[prev, "cost_usd"]
                d_days = df.at[prev, "wall_clock_days"] - df.at[i, "wall_clock_days"]
                if d_cost > 0:
                    df.at[i, col] = d_days / (d_cost / 1e6)
            prev = i


def _run_ray(base_dict, groups, objective, top_k, rows, tick, catalog) -> None:
    try:
        import ray
    except ImportError:
        raise ClusteroptError("--executor", "ray is not installed", "pip install 'clusteropt[ray]', or use --executor process") from None
    if not ray.is_initialized():
        ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False, log_to_driver=False)
    task = ray.remote(_solve_group)
    refs = [task.remote(base_dict, g, objective, top_k, catalog) for g in groups]
    for ref in refs:
        res = ray.get(ref)
        for i, r in res:
            rows[i] = r
        tick(len(res))
