"""Co-design solve time: a 30-rung Llama-3 ladder over 3 GPU types (issue 9's speed target, < 2 s).

Prints, per case: rungs, layout rows estimated, rows after the per-rung reduction and the token
expansion, rows given to CP-SAT, status, and three times:
  cold_s   first solve in the process: every rung's table estimated (tables.build_table), then
           repriced over the token grid, reduced and solved;
  warm_s   the same solve again (rung tables cached, as in a sweep over budget or deadline):
           repricing over the token grid, reduction, CP-SAT top-5 and re-evaluation;
  cpsat_s  CP-SAT's own time inside warm_s.
Cases: the full layout space (max 4096 GPUs) and a pinned one (search: tp, pp, micro_batch...).
Also checks the answer against a numpy lexsort of the whole expanded table.
Run: python benchmarks/bench_codesign.py
"""

from __future__ import annotations

import time

import numpy as np

from optimizer.formulas.sizing import ladder
from optimizer.search.codesign.table import codesign_keys
from optimizer.search.codesign.solve import solve_codesign
from optimizer.catalog import load_catalog  # noqa: E402

CATALOG = load_catalog()          # the planners take the caller's catalog (issue 18)

GPUS = ["H100-SXM5-80GB", "H200-SXM-141GB", "A100-SXM4-80GB"]
PINNED = {"tp": [1, 2, 4, 8], "pp": [1, 2, 4, 8, 16], "cp": [1], "micro_batch": [1], "recompute": ["selective"],
          "zero": [1], "precision": ["bf16"], "sequence_parallel": [True]}


def scenario(search: dict | None) -> dict:
    # 1e9 * 1.25^29 ~ 646e9: 30 targets; repeats are dropped by the ladder
    return {"name": "bench-codesign-30", "top_k": 5, "objective": "loss",
            "train": {"model": {"family": "llama-3", "min_params": 1e9, "max_params": 1e9 * 1.25**29},
                      "tokens": "auto", "seq_len": 8192, "global_batch_tokens": 4e6, "scaling_law": "besiroglu2024"},
            "constraints": {"budget_usd": 20e6, "deadline_days": 90, "max_gpus": 4096, "gpus": GPUS},
            **({"search": search} if search else {})}


def main():
    n_rungs = len(ladder("llama-3", 1e9, 1e9 * 1.25**29))
    print(f"ladder rungs: {n_rungs}; GPU types: {len(GPUS)}")
    print(f"{'case':8s} {'rungs':>5s} {'estimated':>9s} {'rows':>7s} {'cpsat':>5s} {'status':>8s} "
          f"{'cold_s':>7s} {'warm_s':>7s} {'cpsat_s':>7s}  best")
    for label, search in (("pinned", PINNED), ("full", None)):
        s = scenario(search)
        t0 = time.perf_counter()
        solve_codesign(s, catalog=CATALOG)
        cold = time.perf_counter() - t0
        t0 = time.perf_counter()
        res = solve_codesign(s, catalog=CATALOG)
        warm = time.perf_counter() - t0
        st = res.stats
        table = res.table
        feas = np.nonzero(table.feasible)[0]
        keys = [k[feas] for k in codesign_keys(table, "loss")]
        brute = int(feas[np.lexsort(keys[::-1])[0]])
        top = res.configs.iloc[0]
        assert float(table.cols["predicted_loss"][brute]) == top.predicted_loss
        print(f"{label:8s} {st['rungs']:5d} {st['rows_estimated']:9d} {st['rows']:7d} {st['cpsat_rows']:5d} "
              f"{res.status:>8s} {cold:7.2f} {warm:7.2f} {st['cpsat_time_s']:7.3f}  "
              f"{top.model} {top.train_tokens:.3g} tokens loss {top.predicted_loss:.4f} on {top.n_gpus} x {top.gpu}")


if __name__ == "__main__":
    main()
