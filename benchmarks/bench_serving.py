"""Solve times of the serving planner on every shipped serving scenario.

Prints, per scenario: replica options in the table, options meeting every rule, options left
after the dominance reduction (what CP-SAT sees), status, the time to build the table (one
vectorised estimator call per GPU/format/TP/PP group), the CP-SAT top-K time, the whole
``solve_serving`` call (explanation and Pareto front included; warm process), the best fleet's
$/hour and, for comparison, the cheapest fleet of a single GPU type (each type solved alone).
Then, for scenarios with ``serve.disaggregation`` (issue 16): the aggregated/disaggregated
fleet of ``search.serve.disaggregation.plan_disaggregated`` from a cold option cache (every pool option simulated
at the SLOs), its wall and CPU seconds, the simulations run, and the verdict.

Then the same scenarios with ``serve.capacity: simulated`` (issue 16: each replica option's
capacity at the SLOs from the simulation, refined lazily, search/serve/capacity.py): the whole
``solve_serving`` from a cold capacity cache and again warm, the rows simulated, the best fleet's
$/hour beside the closed-form one.

Run: python benchmarks/bench_serving.py [scenario ...]
     python benchmarks/bench_serving.py --no-simulated [scenario ...]   (skip the simulated part)
"""

from __future__ import annotations

import math
import sys
import time

from optimizer.scenario import list_scenarios, load_scenario
from optimizer.search.serve.solve import solve_serving
from optimizer.catalog import load_catalog  # noqa: E402

CATALOG = load_catalog()          # the planners take the caller's catalog (issue 18)


def _serving_names() -> list[str]:
    return [n for n in list_scenarios() if load_scenario(n).workload == "serve"]


def main(names: list[str]) -> None:
    print(f"{'scenario':24s} {'rows':>5s} {'ok':>5s} {'cpsat':>5s} {'status':>10s} {'table_s':>7s} "
          f"{'cpsat_s':>7s} {'solve_s':>7s} {'usd_per_h':>10s} {'single_usd_per_h':>16s}  best fleet")
    for name in names:
        sc = load_scenario(name)
        solve_serving(sc, top_k=1, catalog=CATALOG)                          # warm caches (model, catalog)
        t0 = time.perf_counter()
        res = solve_serving(sc, catalog=CATALOG)
        total = time.perf_counter() - t0
        s = res.stats
        best = res.configs.iloc[0] if len(res.configs) else None
        single = math.inf
        if best is not None and sc.constraints.gpus:
            for g in sc.constraints.gpus:
                r = solve_serving(sc.with_overrides({"constraints.gpus": [g]}), top_k=1, catalog=CATALOG)
                if len(r.configs):
                    single = min(single, float(r.configs["usd_per_hour"].iloc[0]))
        usd = f"{best['usd_per_hour']:10.2f}" if best is not None else f"{'-':>10s}"
        single_s = f"{single:16.2f}" if math.isfinite(single) else f"{'-':>16s}"
        print(f"{name:24s} {s['rows']:5d} {s['feasible_rows']:5d} {s['cpsat_options']:5d} {res.status:>10s} "
              f"{s['table_time_s']:7.3f} {s['cpsat_time_s']:7.3f} {total:7.3f} {usd} {single_s}  "
              f"{best['gpu'] if best is not None else res.explanation.get('reason', '')}")


def disaggregation(names: list[str]) -> None:
    from optimizer.formulas.serving_load import slo_capacity
    from optimizer.search.serve.disaggregation import plan_disaggregated, pool_options

    cat = CATALOG

    print(f"\n{'scenario (disaggregation)':34s} {'options':>7s} {'sims':>5s} {'wall_s':>7s} {'cpu_s':>7s} "
          f"{'usd_per_h':>9s} {'agg_only':>9s} {'disagg_only':>11s}")
    for name in names:
        sc = load_scenario(name)
        if sc.serve.disaggregation is None:
            continue
        slo_capacity.cache_clear()
        w0, c0 = time.perf_counter(), time.process_time()
        p = plan_disaggregated(sc, cat)
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        opts = pool_options(sc, cat)                              # cached now: counts only
        sims = sum(o.capacity.simulations for o in opts)
        fmt = lambda x: f"{x:9.2f}" if x is not None else f"{'-':>9s}"  # noqa: E731
        print(f"{name:34s} {len(opts):7d} {sims:5d} {wall:7.2f} {cpu:7.2f} {p.usd_per_hour:9.2f} "
              f"{fmt(p.aggregated_only_usd_per_hour)} {fmt(p.disaggregated_only_usd_per_hour):>11s}")


def simulated(names: list[str]) -> None:
    from optimizer.formulas.serving_load import slo_capacity

    print(f"\n{'scenario (simulated capacity)':34s} {'cold_s':>7s} {'warm_s':>7s} {'sim_rows':>8s} {'capacities':>10s} "
          f"{'status':>8s} {'usd_per_h':>9s} {'closed_usd_per_h':>16s}  best fleet")
    for name in names:
        sc = load_scenario(name)
        closed = solve_serving(sc, top_k=1, catalog=CATALOG, pareto=False, explain=False)
        sim = sc.with_overrides({"serve.capacity": "simulated"})
        slo_capacity.cache_clear()
        t0 = time.perf_counter()
        res = solve_serving(sim, catalog=CATALOG)
        cold = time.perf_counter() - t0
        calls = slo_capacity.cache_info().misses
        t0 = time.perf_counter()
        solve_serving(sim, catalog=CATALOG)
        warm = time.perf_counter() - t0
        best = res.configs.iloc[0] if len(res.configs) else None
        usd = f"{best['usd_per_hour']:9.2f}" if best is not None else f"{'-':>9s}"
        cu = f"{closed.configs['usd_per_hour'].iloc[0]:16.2f}" if len(closed.configs) else f"{'-':>16s}"
        print(f"{name:34s} {cold:7.2f} {warm:7.2f} {int(res.table.cols['capacity_simulated'].sum()):8d} {calls:10d} "
              f"{res.status:>8s} {usd} {cu}  {best['gpu'] if best is not None else ''}")


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    chosen = args or _serving_names()
    main(chosen)
    disaggregation(chosen)
    if "--no-simulated" not in sys.argv:
        simulated(chosen)
