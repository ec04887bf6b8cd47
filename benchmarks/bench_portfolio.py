"""Portfolio planner speed (issue 7): six concurrent jobs, and eight training jobs time-sharing a
fleet plus two serving jobs.

Prints, per case: jobs, CP-SAT options after the exact reduction, time slots, the size of the
space a brute force would walk (option choices x start slots), the time to build the options
(training tables and serving fleets; cold, then warm from the cache), the CP-SAT time to a
PROVEN optimum ('proof1': the solves that find and prove the best plan; 'top1': plus the
schedule compaction; 'top3': three distinct fleets) for each objective, and the time of the
binding-limit analysis. Targets (issue 7): proven optimal under 1 s (six concurrent jobs) and
under 5 s (8 + 2) on the 2-core machine. Run: python benchmarks/bench_portfolio.py [--workers N]
"""

from __future__ import annotations

import math
import sys
import time

from optimizer.search.portfolio.instance import build_instance
from optimizer.search.portfolio.model import solve_instance
from optimizer.catalog import load_catalog  # noqa: E402

CATALOG = load_catalog()          # the planners take the caller's catalog (issue 18)

FLEET = ["H100-SXM5-80GB", "H200-SXM-141GB", "B200-SXM-180GB"]
TRAIN = [  # (model, tokens, seq_len, global batch tokens)
    ("llama-3-8b", 3e12, 8192, 4e6), ("llama-3.1-8b", 2e12, 8192, 4e6), ("mistral-7b", 2e12, 4096, 4e6),
    ("llama-2-13b", 1.5e12, 4096, 4e6), ("llama-3-70b", 1e12, 8192, 8e6), ("llama-3.1-70b", 0.8e12, 8192, 8e6),
    ("gemma-2-9b", 2e12, 8192, 4e6), ("llama-2-7b", 2e12, 4096, 4e6),
]
SERVE = {"requests_per_s": 40, "prompt_tokens": {"mean": 1500, "p99": 6000}, "output_tokens": {"mean": 300, "p99": 1200},
         "slo": {"ttft_p99_s": 1.0, "itl_p99_s": 0.05}, "redundancy": "n+1"}


def _train(i: int, **kw) -> dict:
    m, tok, seq, gbt = TRAIN[i]
    return {"name": f"train-{i}", "train": {"model": m, "tokens": tok, "seq_len": seq, "global_batch_tokens": gbt},
            "max_gpus": 1024, **kw}


def concurrent_six() -> dict:
    """Six pre-training runs due within the same 60 days: they compete for one fleet."""
    return {"name": "bench-6-concurrent",
            "fleet": {"buy": {"budget_usd": 60e6, "max_power_kw": 2500, "max_nodes": 250},
                      "rent": {"mode": "on_demand", "max_gpus": 1024}, "gpus": FLEET},
            "jobs": [_train(i, deadline_days=60) for i in range(6)], "horizon_days": 60}


def timeshare_eight_plus_two() -> dict:
    """Eight training runs over a year (two chains of precedence, staggered deadlines) sharing a
    fleet with two serving products that run all year."""
    jobs = []
    for i in range(8):
        kw = {"deadline_days": 90 + 35 * i}
        if i in (2, 3, 6, 7):
            kw["start_after"] = f"train-{i - 2}"
        jobs.append(_train(i, **kw))
    jobs.append({"name": "chat-70b", "model": "llama-3-70b", "serve": SERVE})
    jobs.append({"name": "api-8b", "model": "llama-3-8b", "serve": {**SERVE, "requests_per_s": 60}, "from_day": 30})
    return {"name": "bench-8-train-2-serve",
            "fleet": {"buy": {"budget_usd": 80e6, "max_power_kw": 3000, "max_nodes": 300},
                      "rent": {"mode": "on_demand", "max_gpus": 1024}, "gpus": FLEET},
            "jobs": jobs, "horizon_days": 365}


def space_size(inst) -> float:
    """log10 of option choices x start slots a brute force would walk."""
    total = 0.0
    for job in inst.jobs:
        starts = 1 if job.kind == "serve" else max(1, (job.deadline or inst.horizon_slots) - job.release)
        total += math.log10(max(1, len(job.options))) + math.log10(starts)
    return total


def main(workers: int = 2) -> None:
    print(f"workers={workers}")
    print(f"{'case':24s} {'jobs':>4s} {'opts':>5s} {'slots':>5s} {'log10 space':>11s} {'build cold':>10s} "
          f"{'warm':>6s} {'objective':>10s} {'status':>8s} {'proof1 s':>8s} {'top1 s':>7s} {'top3 s':>7s} {'binding s':>9s}")
    for case in (concurrent_six(), timeshare_eight_plus_two()):
        t0 = time.perf_counter()
        inst = build_instance(case, catalog=CATALOG)
        t_cold = time.perf_counter() - t0
        t0 = time.perf_counter()
        inst = build_instance(case, catalog=CATALOG)
        t_warm = time.perf_counter() - t0
        n_opts = sum(len(j.options) for j in inst.jobs)
        for obj in ("total_cost", "makespan", "gpus"):
            r1 = solve_instance(inst, obj, 1, time_limit_s=60, workers=workers, binding=False)
            r3 = solve_instance(inst, obj, 3, time_limit_s=60, workers=workers, binding=False)
            rb = solve_instance(inst, obj, 1, time_limit_s=60, workers=workers, binding=True)
            print(f"{case['name']:24s} {len(inst.jobs):4d} {n_opts:5d} {inst.horizon_slots:5d} {space_size(inst):11.1f} "
                  f"{t_cold:10.2f} {t_warm:6.2f} {obj:>10s} {r1['status']:>8s} {r1['proof_s'][0]:8.3f} {r1['solve_time_s']:7.3f} "
                  f"{r3['solve_time_s']:7.3f} {rb['time_s'] - rb['solve_time_s']:9.3f}")


if __name__ == "__main__":
    w = int(sys.argv[sys.argv.index("--workers") + 1]) if "--workers" in sys.argv else 2
    main(w)
