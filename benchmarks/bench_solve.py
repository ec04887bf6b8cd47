"""Solve time for top-10 on every shipped scenario, against exhaustive enumeration of the same space.

Prints, per scenario: candidate rows, CP-SAT rows, solve wall time (table build + CP-SAT
top-10, warm process), the time of a brute-force ranking of the full table (every row
estimated, numpy lexsort), and the extrapolated time of enumerating every row through the
scalar ``evaluate()`` (timed on a sample of rows). Run: python benchmarks/bench_solve.py
"""

from __future__ import annotations

import sys
import time

import numpy as np

import optimizer
from optimizer.catalog import load_catalog
from optimizer.scenario import list_scenarios
from optimizer.pricing import gpu_options
from optimizer.search.api import solve
from optimizer.search.train.table import build_table, objective_keys


def main(names):
    print(f"{'scenario':26s} {'rows':>8s} {'cpsat':>6s} {'status':>8s} {'solve_s':>8s} "
          f"{'brute_np_s':>10s} {'evaluate_all_s':>14s} {'ratio':>7s}")
    for name in names:
        if name == "405b-whole-catalog":
            # the largest case of issue 4: 405B over every datacenter GPU, up to 16,384 GPUs
            sc = optimizer.load_scenario("llama31-405b-pretrain").with_overrides({"constraints.gpus": None})
        else:
            sc = optimizer.load_scenario(name)
        solve(sc)                                    # warm caches (model, catalog)
        t0 = time.perf_counter()
        res = solve(sc)
        t_solve = time.perf_counter() - t0
        cat = load_catalog()
        gpus, _ = gpu_options(sc, cat)
        t0 = time.perf_counter()
        full = build_table(sc.spec(), sc, gpus, gpu_count_limits=False)
        feas = np.nonzero(full.feasible)[0]
        keys = [k[feas] for k in objective_keys(full, sc.objective)]
        top = feas[np.lexsort(keys[::-1])[:10]]
        t_brute = time.perf_counter() - t0
        assert [full.config(int(r)) for r in top][:1] == [
            {k: (v.item() if hasattr(v, "item") else v) for k, v in res.configs.iloc[0][list(full.config(0))].items()}]
        sample = np.random.default_rng(0).choice(len(full), size=min(40, len(full)), replace=False)
        t0 = time.perf_counter()
        for r in sample:
            optimizer.evaluate(sc, full.config(int(r)), catalog=cat)
        per_row = (time.perf_counter() - t0) / len(sample)
        t_eval = per_row * len(full)
        print(f"{name:26s} {len(full):8d} {res.stats['cpsat_rows']:6d} {res.status:>8s} {t_solve:8.3f} "
              f"{t_brute:10.3f} {t_eval:14.1f} {t_eval / t_solve:7.0f}x")


def training_scenarios() -> list[str]:
    """Built-in scenarios with a fixed model and a train block (serving: bench_serving.py;
    co-design: bench_codesign.py)."""
    out = []
    for name in list_scenarios():
        sc = optimizer.load_scenario(name)
        if sc.workload == "train":
            out.append(name)
    return out


if __name__ == "__main__":
    main(sys.argv[1:] or training_scenarios() + ["405b-whole-catalog"])
