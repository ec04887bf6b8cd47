"""clusteropt calibrate on published data: per source, calibrate on its first three runs and
report the throughput error on its other runs before and after (MAPE), and how wide the
calibrated 80% interval is against the regime intervals.

    PYTHONPATH=$PWD python benchmarks/bench_calibrate.py
"""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from optimizer.calibration import apply_to_estimate, calibrate, mape_pct  # noqa: E402
from optimizer.catalog import load_catalog  # noqa: E402
from optimizer.formulas.training import estimate_training  # noqa: E402
from optimizer.runs import run_from_row  # noqa: E402


def main() -> int:
    spec = importlib.util.spec_from_file_location("validate_memory", ROOT / "benchmarks" / "validate_memory.py")
    vm = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = vm
    spec.loader.exec_module(vm)
    cat = load_catalog()
    rows, _ = vm.published_rows()
    by: dict[str, list] = {}
    for i, r in rows:
        run = run_from_row(r, i, cat)
        if run.tokens_per_s_per_gpu:
            # MoE runs of a source form their own group: a profile fitted on dense runs is not
            # claimed to carry over to them
            src = run.source.split(" ")[0].split("/")[0] + (" MoE" if run.spec.moe is not None else "")
            by.setdefault(src, []).append(run)
    print(f"{'source':16} {'runs':>4} {'fit on':>6} {'err before %':>12} {'err after %':>11} "
          f"{'compute':>7} {'network':>7} {'overlap':>7} {'interval':>15}")
    tot_b = tot_a = n_all = cov_in = 0
    for src, runs in by.items():
        if len(runs) < 5:
            continue
        prof, _ = calibrate(runs[:3])
        rest = runs[3:]
        ests = [estimate_training(r.spec, r.hw, r.layout, **r.options) for r in rest]
        meas = [r.tokens_per_s_per_gpu * r.layout.n_gpus for r in rest]
        b = mape_pct(meas, [e.tokens_per_s for e in ests])
        cal = [apply_to_estimate(e, prof) for e in ests]
        a = mape_pct(meas, cal)
        inside = sum(prof.log_ratio_p10 <= math.log(m / c) <= prof.log_ratio_p90 for m, c in zip(meas, cal))
        cov_in += inside
        tot_b += b * len(rest)
        tot_a += a * len(rest)
        n_all += len(rest)
        print(f"{src:16} {len(runs):4} {3:6} {b:12.1f} {a:11.1f} {prof.compute_scale:7.2f} {prof.network_scale:7.2f} "
              f"{prof.overlap_scale:7.2f}   x{math.exp(prof.log_ratio_p10):.2f}-x{math.exp(prof.log_ratio_p90):.2f}")
    print(f"\nall sources, runs not used for their calibration: {n_all}; MAPE before {tot_b / n_all:.1f}% "
          f"after {tot_a / n_all:.1f}%; calibrated 80% intervals cover {100 * cov_in / n_all:.1f}% of them")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
