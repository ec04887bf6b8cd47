"""Serving estimates against published measurements (tests/data/serving_public.csv).

Run: ``.venv/bin/python benchmarks/validate_serving.py`` (add ``--fit`` to redo the grid fit of
the achievable fractions on the calibration rows). Prints predicted vs measured per row, then
the error per metric on the calibration rows and on the held-out rows.

How each row is read (the notes column of the CSV says which engine and what was measured):

* TensorRT-LLM 0.6.1 ``performance.md`` (gptSessionBenchmark): STATIC batching - the whole
  batch prefilled together, then decoded in lockstep - at the row's batch and fixed lengths.
  The H100 table is output tokens/s per GPU. The A100 table's heading lacks '/GPU'; it is read
  as per GPU too: read per system, LLaMA-70B at batch 1280 (compute-bound: 1280 x 2 x 69e9
  FLOPs per decode step on 4 x 312 TFLOP/s) would run at ~7% of peak, against ~50% on H100 in
  the same document. TensorRT-LLM 0.6.1 predates the Hopper XQA kernels for LLaMA-2-70B
  (TensorRT-LLM 0.10.0 release notes): its decode attention loads each GQA KV head once per
  query head, so these rows run with ``kv_read_per_query_head=True`` (no effect on MHA 7B).
* TensorRT-LLM 1.0 ``perf-overview.md`` (trtllm-bench, infinite request rate): continuous
  batching with every slot full. Slots = the requests whose full-length KV fits in 0.95 of the
  memory left after weights, activations and reserve (``kv_cache_free_gpu_mem_fraction`` 0.95),
  at most 4096; the token budget is trtllm-bench's own rule (``tuning.py finetune_setting``:
  min(slots x (1 + ISL/OSL), 32768), rounded up to 256/512/1024). Metric: output tokens/s of the
  whole system (= one replica). KV dtype not stated: FP8, as the ModelOpt FP8 checkpoints ship
  KV-cache quantisation.
* AIConfigurator silicon rows: continuous batching with ``batch_or_concurrency`` closed-loop
  clients, token budget 8192 (TensorRT-LLM ``max_num_tokens`` and vLLM v1 serving defaults).
  ttft_ms -> ``ttft_s``; tpot_ms -> ``tpot_s`` (mean gap between tokens after the first, prefill
  interference included). KV dtype: FP8 for TensorRT-LLM FP8 rows, 16-bit for vLLM ('auto') and
  for the rows whose precision is blank (weights bf16, as the notes suggest).

Calibration split (documented, fixed): within each source group, rows in file order
alternate calibration / held out, starting with calibration (17 calibration rows, 14 held
out). The three achievable fractions (HBM_EFFICIENCY, COMPUTE_EFFICIENCY,
LOW_PRECISION_COMPUTE_EFFICIENCY in optimizer/formulas/serving_time.py) are the point of a
0.05-step grid minimising the median absolute log error over the calibration rows only
(``--fit`` reruns it, ~30 s). All other constants come from their cited sources.
"""

from __future__ import annotations

import csv
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from optimizer.catalog import load_catalog                   # noqa: E402
from optimizer.formulas import serving_memory as sm          # noqa: E402
from optimizer.formulas import serving_time as st            # noqa: E402
from optimizer.formulas.hardware import Hardware             # noqa: E402
from optimizer.formulas.serving import estimate_serving      # noqa: E402
from optimizer.model import get_preset                       # noqa: E402
from optimizer.model.spec import ModelSpec                   # noqa: E402

TRT_BENCH_MAX_BATCH = 4096          # trtllm-bench tuning.py: cap on the runtime batch
TRT_BENCH_MAX_TOKENS = 32768        # trtllm-bench tuning.py: cap on max_num_tokens
TRT_KV_FREE_FRACTION = 0.95         # perf-overview.md: kv_cache_free_gpu_mem_fraction
SERVE_MAX_BATCHED_TOKENS = 8192     # TensorRT-LLM max_num_tokens / vLLM v1 serving default


def load_rows(path: Path = DATA / "serving_public.csv") -> list[dict]:
    with open(path, newline="") as f:
        lines = [ln for ln in f if not ln.startswith("#")]
    return list(csv.DictReader(lines))


#: The model names of serving_public.csv -> clusteropt presets. 'LLaMA 7B/70B' (TensorRT-LLM 0.6.1)
#: are read as Llama-2 (the note: the 70B uses GQA); Llama-3.3-70B has Llama-3.1-70B's architecture.
MODEL_PRESETS = {
    "LLaMA 7B": "llama-2-7b", "LLaMA 70B": "llama-2-70b",
    "Llama-3.1-8B-Instruct-FP8": "llama-3.1-8b", "Llama-3.1-8B-Instruct": "llama-3.1-8b",
    "Llama-3.1-70B": "llama-3.1-70b", "Llama-3.3-70B-Instruct-FP8": "llama-3.1-70b",
    "Llama-3.1-405B-Instruct-FP8": "llama-3.1-405b",
}


def load_specs() -> dict[str, ModelSpec]:
    """ModelSpecs for the model names used in serving_public.csv (from the presets)."""
    return {name: get_preset(preset) for name, preset in MODEL_PRESETS.items()}


#: GPU names of serving_public.csv -> catalog ids. The A100 table does not say 40 or 80 GB; the
#: 80 GB part is assumed (LLaMA-70B in fp16 at batch 1280 on 4 GPUs needs > 40 GB each).
GPU_IDS = {"H100-SXM-80GB": "H100-SXM5-80GB", "H200-SXM-141GB": "H200-SXM-141GB",
           "A100-SXM-80GB (variant not stated)": "A100-SXM4-80GB"}


def load_hardware() -> dict[str, Hardware]:
    """Hardware for the GPU names used in serving_public.csv and for their catalog ids."""
    cat = load_catalog()
    out = {}
    for name, gid in GPU_IDS.items():
        out[name] = out[gid] = cat.hardware(gid)
    return out


@dataclass(frozen=True)
class Case:
    """One row turned into estimator inputs and the figure it is compared on."""

    index: int
    group: str                 # 'trtllm-0.6.1-static', 'trtllm-1.0-bench', 'aic-silicon'
    label: str
    spec: ModelSpec
    hw: Hardware
    kwargs: dict
    metric: str                # ServeEstimate attribute compared
    scale: float               # predicted attribute x scale -> the row's unit
    measured: float
    calibration: bool


def _ceil_to(x: float, step: int) -> int:
    return int(step * math.ceil(x / step))


def _trt_bench_tokens(slots: float, isl: int, osl: int) -> int:
    """trtllm-bench's max_num_tokens (tuning.py finetune_setting)."""
    raw = min(slots * (1 + isl / osl), TRT_BENCH_MAX_TOKENS)
    if raw < 4096:
        return max(2048, _ceil_to(raw, 256))
    return _ceil_to(raw, 512) if raw < 8192 else _ceil_to(raw, 1024)


def _trt_bench_slots(spec, hw, tp, weights, kv, isl, osl) -> int:
    """Requests in flight under trtllm-bench at max load: full-length KV in 0.95 of free memory."""
    w = sm.weight_bytes_per_gpu(spec, tp=tp, weights=weights).total
    act = sm.profile_activation_bytes(spec, tp=tp)
    free = sm.kv_cache_capacity_bytes(sm.runtime_memory_bytes(hw.memory_bytes), weights_bytes=w,
                                      activation_bytes=act, reserve_bytes=sm.non_torch_reserve_bytes(tp),
                                      gpu_memory_utilization=1.0)
    per_seq = sm.kv_cache_bytes_per_seq(spec, isl + osl, kv=kv, tp=tp)
    return int(min(sm.max_concurrent_seqs(TRT_KV_FREE_FRACTION * free, per_seq), TRT_BENCH_MAX_BATCH))


def build_cases(rows=None, specs=None, hws=None) -> list[Case]:
    rows = load_rows() if rows is None else rows
    specs = load_specs() if specs is None else specs
    hws = load_hardware() if hws is None else hws
    cases, seen = [], {}
    for i, r in enumerate(rows):
        spec, hw = specs[r["model_name"]], hws[r["gpu_type"]]
        tp, n_gpus = int(r["tp"]), int(r["n_gpus"])
        isl, osl = int(r["input_len"]), int(r["output_len"])
        weights = r["precision_weights"] or "bf16"
        engine, metric = r["engine"], r["metric"]
        if "0.6.1" in engine:
            group = "trtllm-0.6.1-static"
            kv = r["precision_kv"] or weights
            kwargs = dict(batch=int(r["batch_or_concurrency"]), scheduling="static", kv_read_per_query_head=True)
            attr, scale = "output_tokens_per_s_per_gpu", 1.0
        elif "max load" in r["batch_or_concurrency"]:
            group = "trtllm-1.0-bench"
            kv = "fp8" if weights == "fp8" else weights
            slots = _trt_bench_slots(spec, hw, tp, weights, kv, isl, osl)
            kwargs = dict(batch=max(slots, 1), max_batched_tokens=_trt_bench_tokens(slots, isl, osl))
            attr, scale = "output_tokens_per_s", 1.0
        else:
            group = "aic-silicon"
            kv = "fp8" if (weights == "fp8" and "TensorRT" in engine) else "bf16"
            kwargs = dict(batch=int(r["batch_or_concurrency"]), max_batched_tokens=SERVE_MAX_BATCHED_TOKENS)
            attr, scale = {"ttft_ms": ("ttft_s", 1e3), "tpot_ms": ("tpot_s", 1e3)}[metric]
        kwargs.update(tp=tp, weights=weights, kv=kv, prompt_len=isl, output_len=osl)
        if n_gpus != tp:
            raise ValueError(f"row {i}: n_gpus {n_gpus} != tp {tp}; every published row is one replica")
        k = seen.get(group, 0)
        seen[group] = k + 1
        label = f"{r['model_name'][:26]} {r['gpu_type'][:9]} tp{tp} {weights}/{kv} b={kwargs['batch']} {isl}/{osl}"
        cases.append(Case(i, group, label, spec, hw, kwargs, attr, scale, float(r["value"]), k % 2 == 0))
    return cases


def predict(case: Case, **constants) -> float:
    est = estimate_serving(case.spec, case.hw, **case.kwargs, **constants)
    return float(getattr(est, case.metric)) * case.scale


def error_summary(cases, preds) -> dict:
    """{(split, metric): (n, median |error| %, mean |error| % (MAPE))}."""
    out = {}
    for split in ("calibration", "held-out"):
        for metric in sorted({c.metric for c in cases}) + ["all"]:
            errs = [abs(p / c.measured - 1) * 100 for c, p in zip(cases, preds)
                    if (c.calibration == (split == "calibration")) and metric in (c.metric, "all")]
            if errs:
                out[(split, metric)] = (len(errs), float(np.median(errs)), float(np.mean(errs)))
    return out


def fit_constants(cases) -> dict:
    """Grid search of the two achievable fractions on the calibration rows (median |log error|)."""
    cal = [c for c in cases if c.calibration]
    best = None
    grid = np.round(np.arange(0.30, 0.951, 0.05), 2)
    for hbm in grid[grid >= 0.5]:
        for comp in grid:
            for low in grid:
                k = dict(hbm_efficiency=float(hbm), compute_efficiency=float(comp),
                         low_precision_compute_efficiency=float(low))
                err = float(np.median([abs(math.log(predict(c, **k) / c.measured)) for c in cal]))
                if best is None or err < best[0]:
                    best = (err, k)
    return best[1]


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    cases = build_cases()
    constants = fit_constants(cases) if "--fit" in argv else {}
    if constants:
        print(f"fitted on calibration rows: {constants}")
    else:
        print(f"constants: hbm_efficiency={st.HBM_EFFICIENCY}, compute_efficiency={st.COMPUTE_EFFICIENCY}, "
              f"allreduce_latency_s={st.ALLREDUCE_LATENCY_S}, link_efficiency={st.LINK_EFFICIENCY}, "
              f"pass_overhead_s={st.PASS_OVERHEAD_S}")
    preds = [predict(c, **constants) for c in cases]
    print(f"{'row':>3} {'split':<5} {'group':<20} {'case':<72} {'metric':<28} {'measured':>10} {'predicted':>10} {'err%':>7}")
    for c, p in zip(cases, preds):
        print(f"{c.index:>3} {'cal' if c.calibration else 'held':<5} {c.group:<20} {c.label:<72} "
              f"{c.metric:<28} {c.measured:>10.4g} {p:>10.4g} {100 * (p / c.measured - 1):>+7.1f}")
    print()
    print(f"{'split':<12} {'metric':<28} {'n':>3} {'median |err| %':>15} {'MAPE %':>8}")
    for (split, metric), (n, med, mape) in error_summary(cases, preds).items():
        print(f"{split:<12} {metric:<28} {n:>3} {med:>15.1f} {mape:>8.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
