"""Calibrate and check the achievable-compute model (optimizer/formulas/efficiency.py)
against published training runs.

    .venv/bin/python benchmarks/calibrate_efficiency.py          # evaluate the shipped constants
    .venv/bin/python benchmarks/calibrate_efficiency.py --fit    # refit them on the calibration rows

Data: tests/data/training_runs_public.csv (copied from shared/validation with its notes),
the per-source assumptions in tests/data/training_runs_assumptions.csv, the GPU datasheet
figures in tests/data/training_gpus.csv, and the extra held-out Korthikanti et al. 2022
runs in tests/data/korthikanti_runs.csv. The split is fixed (training_runs_public.md):
scored row i (0-based data row) is held out when i % 3 == 2.

Measured and predicted quantity: tokens/s per GPU (a percentage error on it is the same
percentage error on the row's MFU, HFU or TFLOP/s, since each row's FLOP count per token
is fixed). Error: mean absolute percentage error (MAPE).

fp8 (``--fit-fp8``): the fp8 linear-GEMM efficiency ratio
(``efficiency.FP8_GEMM_EFFICIENCY_RATIO``) is fitted on the published bf16/fp8 pairs of
tests/data/fp8_training_pairs.csv (same model, GPUs and layout, one run per precision;
sources in fp8_training_pairs.md), with the four bf16 constants held fixed. Quantity: the
fp8/bf16 throughput ratio of a pair (its speed-up); error: MAPE of the predicted ratio.
Split, fixed before fitting: the pairs' model groups in file order, 0-based group index
odd = held out (a whole model is held out, not a sibling scale of a calibrated one).
Pairs whose bf16 run the model misses by more than ``FP8_BF16_MISS_LIMIT_PCT`` are
reported but neither fitted nor scored: the fp8 term cannot repair a bf16 miss.
"""

from __future__ import annotations

import argparse
import csv
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dataclasses import replace  # noqa: E402

from optimizer.catalog import load_catalog  # noqa: E402
from optimizer.formulas.efficiency import CALIBRATED, EfficiencyConstants  # noqa: E402
from optimizer.formulas.hardware import Hardware  # noqa: E402
from optimizer.formulas.layout import TrainLayout  # noqa: E402
from optimizer.formulas.training import estimate_training  # noqa: E402
from optimizer.model.registry import get_preset  # noqa: E402
from optimizer.model.spec import ModelSpec  # noqa: E402
from optimizer.units import GB, GIB, GIGABIT, TERA  # noqa: E402

DATA = ROOT / "tests" / "data"
HELD_OUT_MOD = 3          # scored row i is held out when i % 3 == 2
HELD_OUT_REM = 2


@dataclass(frozen=True)
class Run:
    index: int                 # 0-based data-row index in training_runs_public.csv (or 'K' rows)
    source: str                # short source key
    name: str
    spec: ModelSpec
    hw: Hardware
    layout: TrainLayout
    framework: dict            # overlap_grad_reduce / tp_comm_overlap as the source states
    measured_tokens_per_gpu_s: float
    held_out: bool
    reported: str              # what the row reports (for the table)


def load_gpus() -> dict[str, Hardware]:
    out = {}
    with open(DATA / "training_gpus.csv") as f:
        for r in csv.DictReader(f):
            out[r["gpu"]] = Hardware(
                name=r["gpu"], memory_bytes=int(float(r["memory_gib"]) * GIB),
                hbm_bytes_per_s=float(r["hbm_gb_per_s"]) * GB, fp32_flop_per_s=0.0, tf32_flop_per_s=0.0,
                bf16_flop_per_s=float(r["bf16_dense_tflops"]) * TERA,
                fp8_flop_per_s=float(r["fp8_dense_tflops"]) * TERA, int8_op_per_s=0.0,
                intra_node_bytes_per_s=float(r["nvlink_gb_per_s_one_way"]) * GB,
                intra_node_domain=int(r["nvlink_domain"]), gpus_per_node=8,
                inter_node_bytes_per_s=0.0, tdp_w=0.0)
    return out


def gpt_spec(name: str, *, layers: int, hidden: int, heads: int, kv_heads: int | None, ffn: int,
             vocab: int, seq_len: int) -> ModelSpec:
    """A GPT-style decoder (learned positions, LayerNorm with bias, biases, GeLU MLP, tied
    embeddings): the architecture of the Megatron GPT, MPT and vTrain runs."""
    return ModelSpec(name=name, family="gpt", vocab_size=vocab, hidden_size=hidden, num_layers=layers,
                     num_heads=heads, num_kv_heads=kv_heads, ffn_kind="mlp", ffn_size=ffn,
                     activation="gelu", norm_kind="layernorm", norm_bias=True, qkv_bias=True,
                     attn_out_bias=True, ffn_bias=True, position="learned",
                     max_position_embeddings=seq_len, tie_word_embeddings=True)


def _num(x: str):
    x = (x or "").strip()
    return float(x) if x else None


def _assumptions() -> list[dict]:
    with open(DATA / "training_runs_assumptions.csv") as f:
        return list(csv.DictReader(f))


GPU_NAMES = {"A100-SXM-80GB": "A100-SXM4-80GB", "A100-SXM-40GB": "A100-SXM4-40GB",
             "H100-SXM-80GB": "H100-SXM5-80GB", "A100": "A100-SXM4-80GB"}


def load_runs() -> tuple[list[Run], list[tuple[int, str, str]]]:
    """Scored runs of training_runs_public.csv and the rows left out (index, name, why)."""
    gpus = load_gpus()
    rules = _assumptions()
    runs, skipped = [], []
    with open(DATA / "training_runs_public.csv") as f:
        rows = list(csv.DictReader(f))
    for i, r in enumerate(rows):
        rule = next((a for a in rules if r["source"].startswith(a["source_prefix"])), None)
        if rule is None:
            skipped.append((i, r["model_name"], "parallel layout not published"))
            continue
        L, h, a = int(_num(r["n_layers"])), int(_num(r["d_model"])), int(_num(r["n_heads"]))
        kv = int(_num(r["n_kv_heads"])) if _num(r["n_kv_heads"]) else a
        ffn = int(_num(r["d_ff"])) if _num(r["d_ff"]) else 4 * h
        vocab = int(_num(r["vocab"])) if _num(r["vocab"]) else int(rule["vocab"])
        s = int(_num(r["seq_len"]))
        spec = gpt_spec(r["model_name"], layers=L, hidden=h, heads=a, kv_heads=kv, ffn=ffn, vocab=vocab, seq_len=s)
        gpu = rule["gpu"] or GPU_NAMES[r["gpu_type"]]
        net = _num(rule["inter_node_gbps_per_gpu"])
        if net is None:   # MosaicML: A100 tables 1600 Gb/s per node, H100 tables assumed 3200
            net = 200.0 if gpu.startswith("A100") else 400.0
        hw = gpus[gpu].with_inter_node_bytes_per_s(net * GIGABIT)
        tp, pp, dp = (int(_num(r[k]) or 1) for k in ("tp", "pp", "dp"))
        mb = int(_num(r["micro_batch"]) or _num(rule["micro_batch"]))
        recompute = (r["recompute"] or "selective").strip()
        precision = "fp8" if "fp8" in r["precision"] else "bf16"
        layout = TrainLayout(seq_len=s, global_batch=int(_num(r["global_batch"])), tp=tp, pp=pp, dp=dp,
                             micro_batch=mb, zero=int(rule["zero"]), recompute=recompute,
                             sequence_parallel=rule["sequence_parallel"] == "yes" and tp > 1,
                             precision=precision, interleave=int(rule["interleave"]),
                             flash_attention=rule["flash_attention"] == "yes")
        n = tp * pp * dp
        kind = rule["measured"]
        if kind == "tokens_per_sec":
            meas = _num(r["tokens_per_sec"]) / n
            reported = "tokens/s"
        elif kind == "hfu_tflops_narayanan":     # 96 L h^2 (1 + s/6h + V/16Lh) per token
            per_tok = 96.0 * L * h * h * (1 + s / (6.0 * h) + vocab / (16.0 * L * h))
            meas = _num(r["achieved_tflops_per_gpu"]) * TERA / per_tok
            reported = "HFU TFLOP/s"
        elif kind == "mfu_tflops_megatron":      # 72 L h^2 (1 + s/6h + V/12Lh) per token
            per_tok = 72.0 * L * h * h * (1 + s / (6.0 * h) + vocab / (12.0 * L * h))
            meas = _num(r["achieved_tflops_per_gpu"]) * TERA / per_tok
            reported = "MFU TFLOP/s"
        else:
            raise ValueError(kind)
        src = rule["source_prefix"].split()[0].split("'")[0]
        fw = {"overlap_grad_reduce": rule["overlap_grad_reduce"] == "yes",
              "tp_comm_overlap": rule["tp_comm_overlap"] == "yes"}
        if rule.get("fused_cross_entropy") == "yes":       # memory only: the loss kernel's logits
            fw["fused_cross_entropy"] = True
        runs.append(Run(index=i, source=src, name=r["model_name"], spec=spec, hw=hw, layout=layout,
                        framework=fw,
                        measured_tokens_per_gpu_s=meas, held_out=i % HELD_OUT_MOD == HELD_OUT_REM,
                        reported=reported))
    return runs, skipped


def load_korthikanti() -> list[tuple[Run, float, float | None]]:
    """(run, measured iteration time s, reported MFU fraction or None) for Korthikanti
    et al. 2022 Table 3/4 (never used in the fit)."""
    gpus = load_gpus()
    hw = gpus["A100-SXM4-80GB"].with_inter_node_bytes_per_s(200 * GIGABIT)
    out = []
    with open(DATA / "korthikanti_runs.csv") as f:
        for k, r in enumerate(csv.DictReader(f)):
            L, h, a, s, V = (int(r[x]) for x in ("layers", "hidden", "heads", "seq_len", "vocab"))
            spec = gpt_spec(f"{r['model']} ({r['mode']})", layers=L, hidden=h, heads=a, kv_heads=None,
                            ffn=4 * h, vocab=V, seq_len=s)
            tp, pp, gb = int(r["tp"]), int(r["pp"]), int(r["global_batch"])
            dp = int(r["gpus"]) // (tp * pp)
            layout = TrainLayout(seq_len=s, global_batch=gb, tp=tp, pp=pp, dp=dp,
                                 micro_batch=int(r["micro_batch"]), interleave=int(r["interleave"]),
                                 recompute=r["recompute"], sequence_parallel=r["sequence_parallel"] == "yes",
                                 flash_attention=False, zero=0)
            t = float(r["iteration_time_s"])
            meas = gb * s / t / int(r["gpus"])
            mfu = float(r["mfu_pct"]) / 100 if r["mfu_pct"] else None
            out.append((Run(index=k, source="Korthikanti2022", name=spec.name, spec=spec, hw=hw, layout=layout,
                            framework={"overlap_grad_reduce": True, "tp_comm_overlap": False},
                            measured_tokens_per_gpu_s=meas, held_out=True, reported="iteration s"), t, mfu))
    return out


def predict(run: Run, constants: EfficiencyConstants = CALIBRATED) -> float:
    """Predicted tokens/s per GPU."""
    est = estimate_training(run.spec, run.hw, run.layout, constants=constants, **run.framework)
    return est.tokens_per_s / run.layout.n_gpus


def ape(run: Run, constants: EfficiencyConstants = CALIBRATED) -> float:
    """Signed percentage error of the prediction (positive: over-predicts)."""
    return 100.0 * (predict(run, constants) / run.measured_tokens_per_gpu_s - 1.0)


def mape(runs, constants: EfficiencyConstants = CALIBRATED) -> float:
    return float(np.mean([abs(ape(r, constants)) for r in runs]))


# ---- fitting: Nelder-Mead on transformed constants (numpy only) ---------------------------

def _to_constants(z: np.ndarray) -> EfficiencyConstants:
    sig = lambda x: 1.0 / (1.0 + np.exp(-x))  # noqa: E731
    return EfficiencyConstants(eta_max_low_peak=float(sig(z[0])), eta_max_high_peak=float(sig(z[1])),
                               tokens_half=float(np.exp(z[2])), elementwise_passes=float(np.exp(z[3])))


def _from_constants(c: EfficiencyConstants) -> np.ndarray:
    logit = lambda p: np.log(p / (1 - p))  # noqa: E731
    return np.array([logit(c.eta_max_low_peak), logit(c.eta_max_high_peak), np.log(c.tokens_half),
                     np.log(c.elementwise_passes)])


def nelder_mead(f, x0, step=0.3, iters=400, tol=1e-6):
    n = len(x0)
    pts = [np.array(x0, dtype=float)] + [np.array(x0, dtype=float) + step * np.eye(n)[i] for i in range(n)]
    vals = [f(p) for p in pts]
    for _ in range(iters):
        order = np.argsort(vals)
        pts = [pts[i] for i in order]
        vals = [vals[i] for i in order]
        if abs(vals[-1] - vals[0]) < tol:
            break
        c = np.mean(pts[:-1], axis=0)
        xr = c + (c - pts[-1])
        fr = f(xr)
        if fr < vals[0]:
            xe = c + 2 * (c - pts[-1])
            fe = f(xe)
            pts[-1], vals[-1] = (xe, fe) if fe < fr else (xr, fr)
        elif fr < vals[-2]:
            pts[-1], vals[-1] = xr, fr
        else:
            xc = c + 0.5 * (pts[-1] - c)
            fc = f(xc)
            if fc < vals[-1]:
                pts[-1], vals[-1] = xc, fc
            else:
                pts = [pts[0]] + [pts[0] + 0.5 * (p - pts[0]) for p in pts[1:]]
                vals = [vals[0]] + [f(p) for p in pts[1:]]
    i = int(np.argmin(vals))
    return pts[i], vals[i]


def fit(runs, start: EfficiencyConstants = CALIBRATED) -> EfficiencyConstants:
    best_z, best_v = None, np.inf
    for restart in range(3):
        z0 = _from_constants(start) if best_z is None else best_z
        z, v = nelder_mead(lambda z: mape(runs, _to_constants(z)), z0, step=0.4 / (restart + 1))
        if v < best_v:
            best_z, best_v = z, v
    return _to_constants(best_z)


# ---- fp8: published bf16/fp8 pairs ----------------------------------------------------------

FP8_BF16_MISS_LIMIT_PCT = 25.0   # pairs whose bf16 run misses by more are not fitted or scored


@dataclass(frozen=True)
class Fp8Pair:
    pair_id: str
    group: str                 # model group (the split unit)
    held_out: bool
    bf16: Run
    fp8: Run

    @property
    def measured_ratio(self) -> float:
        """Measured fp8/bf16 throughput (the speed-up fp8 gave)."""
        return self.fp8.measured_tokens_per_gpu_s / self.bf16.measured_tokens_per_gpu_s


def _pair_spec(r: dict) -> ModelSpec:
    """A preset when the row names one (no shape columns); MPT rows as the GPT-style decoder
    of the main calibration; other shapes (Nemotron-4) as a non-gated-MLP decoder with
    RoPE, GQA and LayerNorm, untied embeddings."""
    if not r["n_layers"]:
        return get_preset(r["model"])
    L, h, a, ffn, V, s = (int(r[k]) for k in ("n_layers", "d_model", "n_heads", "d_ff", "vocab", "seq_len"))
    kv = int(r["n_kv_heads"]) if r["n_kv_heads"] else None
    if r["model"].startswith("mpt"):
        return gpt_spec(r["model"], layers=L, hidden=h, heads=a, kv_heads=kv, ffn=ffn, vocab=V, seq_len=s)
    return ModelSpec(name=r["model"], family=r["group"], vocab_size=V, hidden_size=h, num_layers=L, num_heads=a,
                     num_kv_heads=kv, ffn_kind="mlp", ffn_size=ffn, activation="relu2", norm_kind="layernorm",
                     position="rope", max_position_embeddings=s)


def load_fp8_pairs() -> list[Fp8Pair]:
    """The bf16/fp8 pairs of tests/data/fp8_training_pairs.csv with the documented split."""
    cat = load_catalog()
    with open(DATA / "fp8_training_pairs.csv") as f:
        rows = list(csv.DictReader(f))
    groups = list(dict.fromkeys(r["group"] for r in rows))
    runs: dict[tuple[str, str], Run] = {}
    for i, r in enumerate(rows):
        hw = cat.hardware(r["gpu"]).with_inter_node_bytes_per_s(float(r["inter_node_gbps_per_gpu"]) * GIGABIT)
        tp = int(r["tp"])
        layout = TrainLayout(seq_len=int(r["seq_len"]), global_batch=int(r["global_batch"]), tp=tp,
                             pp=int(r["pp"]), dp=int(r["dp"]), cp=int(r["cp"]), ep=int(r["ep"]),
                             micro_batch=int(r["micro_batch"]), zero=int(r["zero"]), recompute=r["recompute"],
                             sequence_parallel=tp > 1 and r["sequence_parallel"] != "no",
                             precision=r["precision"], interleave=int(r["vp"]),
                             flash_attention=r["flash_attention"] == "yes")
        if layout.n_gpus != int(r["n_gpus"]):
            raise ValueError(f"fp8_training_pairs.csv row {i}: tp x pp x dp x cp != n_gpus")
        held = groups.index(r["group"]) % 2 == 1
        runs[(r["pair_id"], r["precision"])] = Run(
            index=i, source=r["source"], name=f"{r['model']} {r['precision']} x{r['n_gpus']}", spec=_pair_spec(r),
            hw=hw, layout=layout,
            framework={"overlap_grad_reduce": True, "tp_comm_overlap": r["tp_comm_overlap"] == "yes"},
            measured_tokens_per_gpu_s=float(r["tokens_per_s_per_gpu"]), held_out=held, reported="tokens/s")
    out = []
    for pid in dict.fromkeys(r["pair_id"] for r in rows):
        b, f8 = runs[(pid, "bf16")], runs[(pid, "fp8")]
        group = next(r["group"] for r in rows if r["pair_id"] == pid)
        out.append(Fp8Pair(pair_id=pid, group=group, held_out=b.held_out, bf16=b, fp8=f8))
    return out


def fp8_bf16_ok(p: Fp8Pair, constants: EfficiencyConstants = CALIBRATED) -> bool:
    """Whether the bf16 run of the pair is modelled within FP8_BF16_MISS_LIMIT_PCT."""
    return abs(ape(p.bf16, constants)) <= FP8_BF16_MISS_LIMIT_PCT


def predicted_ratio(p: Fp8Pair, constants: EfficiencyConstants = CALIBRATED) -> float:
    """Predicted fp8/bf16 throughput of the pair."""
    return predict(p.fp8, constants) / predict(p.bf16, constants)


def ratio_ape(p: Fp8Pair, constants: EfficiencyConstants = CALIBRATED) -> float:
    """Signed percentage error of the predicted speed-up (positive: over-predicts fp8's gain)."""
    return 100.0 * (predicted_ratio(p, constants) / p.measured_ratio - 1.0)


def ratio_mape(pairs, constants: EfficiencyConstants = CALIBRATED) -> float:
    return float(np.mean([abs(ratio_ape(p, constants)) for p in pairs]))


def fit_fp8_ratio(pairs, start: EfficiencyConstants = CALIBRATED, lo: float = 0.3,
                  hi: float = 1.0) -> EfficiencyConstants:
    """Golden-section search of ``fp8_gemm_ratio`` in [lo, hi] minimising the speed-up MAPE
    of ``pairs`` (bf16 constants fixed). Every predicted speed-up rises monotonically with
    the ratio, so each pair's error is V-shaped in it; on the shipped data the search lands
    on the minimum of a 0.01 grid over [0.5, 1]."""
    f = lambda x: ratio_mape(pairs, replace(start, fp8_gemm_ratio=float(x)))  # noqa: E731
    g = (np.sqrt(5.0) - 1.0) / 2.0
    a, b = lo, hi
    c, d = b - g * (b - a), a + g * (b - a)
    fc, fd = f(c), f(d)
    while b - a > 1e-4:
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = f(d)
    return replace(start, fp8_gemm_ratio=round(float((a + b) / 2.0), 3))


def fp8_report(constants: EfficiencyConstants = CALIBRATED, file=sys.stdout) -> dict:
    """Per pair: bf16 and fp8 throughput errors, measured and predicted speed-ups; MAPEs."""
    pairs = load_fp8_pairs()
    print(f"\nfp8/bf16 pairs (tests/data/fp8_training_pairs.csv), fp8_gemm_ratio = {constants.fp8_gemm_ratio}",
          file=file)
    print(f"{'pair':22} {'split':5} {'bf16 err %':>10} {'fp8 err %':>10} {'speed-up meas':>13} {'pred':>6} "
          f"{'err %':>6}", file=file)
    for p in pairs:
        ok = fp8_bf16_ok(p, constants)
        print(f"{p.pair_id:22} {'HOLD' if p.held_out else 'cal':5} {ape(p.bf16, constants):10.1f} "
              f"{ape(p.fp8, constants):10.1f} {p.measured_ratio:13.3f} {predicted_ratio(p, constants):6.3f} "
              f"{ratio_ape(p, constants):6.1f}" + ("" if ok else "  (bf16 missed: not scored)"), file=file)
    scored = [p for p in pairs if fp8_bf16_ok(p, constants)]
    cal = [p for p in scored if not p.held_out]
    held = [p for p in scored if p.held_out]
    res = {
        "fp8_ratio_mape_calibration": ratio_mape(cal, constants),
        "fp8_ratio_mape_held_out": ratio_mape(held, constants),
        "fp8_throughput_mape_calibration": mape([p.fp8 for p in cal], constants),
        "fp8_throughput_mape_held_out": mape([p.fp8 for p in held], constants),
        "bf16_throughput_mape_pairs": mape([p.bf16 for p in scored], constants),
    }
    print(f"scored pairs: {len(cal)} calibration ({len({p.group for p in cal})} models), "
          f"{len(held)} held out ({len({p.group for p in held})} models); "
          f"{len(pairs) - len(scored)} not scored", file=file)
    print(f"  speed-up MAPE:        calibration {res['fp8_ratio_mape_calibration']:.1f}%   "
          f"held out {res['fp8_ratio_mape_held_out']:.1f}%", file=file)
    print(f"  fp8 throughput MAPE:  calibration {res['fp8_throughput_mape_calibration']:.1f}%   "
          f"held out {res['fp8_throughput_mape_held_out']:.1f}%   "
          f"(bf16 runs of the scored pairs: {res['bf16_throughput_mape_pairs']:.1f}%)", file=file)
    return res


# ---- report ------------------------------------------------------------------------------

def likely_cause(r: Run, err_pct: float) -> str:
    """A rule-based reading of a miss (what the model leaves out for this kind of row)."""
    lay, h = r.layout, r.spec.hidden_size
    tokens = lay.micro_batch * lay.seq_len / lay.cp
    if lay.precision == "fp8":
        return ("fp8 linear GEMMs at 0.77 of bf16's efficiency (fitted on NeMo/llm-foundry pairs); the rest "
                "is likely the bf16 miss of this llm-foundry table (its MPT-3b bf16 runs at 8K/32K tokens: +42%/+100%)")
    if r.source == "vTrain" and lay.tp == 2 and lay.pp >= 8:
        return ("tp=2 with a deep pipeline: vTrain measures 1.2-1.5x slower than modelled, while the same "
                "model at tp=4/8 and pp=16 is within 7% - not explained by the model's terms")
    if tokens <= 4096 and h / lay.tp <= 1024 and err_pct > 0:
        return (f"tiny per-GPU GEMMs (h/tp = {h // lay.tp}, {int(tokens)} tokens per micro-batch): "
                "kernel-launch and framework overheads per layer are not modelled")
    if r.source == "MosaicML" and lay.grad_accum <= 1:
        return ("one micro-batch per step under FSDP: parameter gathers and the optimizer step have "
                "little compute to hide behind; H100 table predates later llm-foundry updates")
    if r.source == "Megatron-LM":
        return ("micro-batch, interleaving and recomputation unstated (1, 1, selective assumed); "
                "TE TP-overlap taken as perfect")
    if r.source == "vTrain" and lay.tp * lay.cp > 8:
        return "TP spans two nodes: NCCL's hierarchical all-reduce over 8 NICs approximated"
    if r.source == "Narayanan2021":
        return "micro-batch and interleaving not published (1 assumed)"
    return "within the spread of the source"


def _table(runs, constants) -> list[tuple]:
    out = []
    for r in runs:
        p = predict(r, constants)
        out.append((r, p, 100.0 * (p / r.measured_tokens_per_gpu_s - 1.0)))
    return out


def report(constants: EfficiencyConstants = CALIBRATED, file=sys.stdout) -> dict:
    runs, skipped = load_runs()
    cal = [r for r in runs if not r.held_out]
    held = [r for r in runs if r.held_out]
    rows = _table(runs, constants)
    print(f"constants: {constants}", file=file)
    print(f"\n{'row':>4} {'split':5} {'source':15} {'model':42} {'layout':26} {'reports':12} "
          f"{'meas tok/s/GPU':>14} {'pred':>9} {'err %':>7}", file=file)
    for r, p, e in rows:
        lay = (f"t{r.layout.tp} p{r.layout.pp} d{r.layout.dp} b{r.layout.micro_batch} "
               f"{r.layout.recompute[:3]}{' fp8' if r.layout.precision == 'fp8' else ''}")
        print(f"{r.index:>4} {'HOLD' if r.held_out else 'cal':5} {r.source:15} {r.name[:42]:42} {lay:26} "
              f"{r.reported:12} {r.measured_tokens_per_gpu_s:14.1f} {p:9.1f} {e:7.1f}", file=file)
    for i, name, why in skipped:
        print(f"{i:>4} skip  {name[:60]:60} ({why})", file=file)
    m_cal, m_held = mape(cal, constants), mape(held, constants)
    print(f"\ncalibration rows: {len(cal)}  MAPE {m_cal:.1f}%", file=file)
    print(f"held-out rows:    {len(held)}  MAPE {m_held:.1f}%", file=file)
    for src in sorted({r.source for r in runs}):
        sub = [e for r, _, e in rows if r.source == src]
        sub_h = [e for r, _, e in rows if r.source == src and r.held_out]
        print(f"  {src:15} n={len(sub):3}  MAPE {np.mean(np.abs(sub)):5.1f}%  "
              f"(held-out n={len(sub_h)}: {np.mean(np.abs(sub_h)) if sub_h else float('nan'):5.1f}%)", file=file)

    kor = load_korthikanti()
    print("\nextra held-out: Korthikanti et al. 2022 Table 4 iteration times (never fitted)", file=file)
    k_err = []
    for run, t_meas, mfu in kor:
        est = estimate_training(run.spec, run.hw, run.layout, constants=constants, **run.framework)
        e = 100.0 * (t_meas / est.step_time_s - 1.0)   # throughput error
        k_err.append(e)
        print(f"  {run.name:16} measured {t_meas:7.2f} s  predicted {est.step_time_s:7.2f} s  "
              f"throughput err {e:6.1f}%  MFU pred {est.mfu:.3f}" + (f" (paper {mfu:.3f})" if mfu else ""),
              file=file)
    m_k = float(np.mean(np.abs(k_err)))
    print(f"  MAPE {m_k:.1f}%", file=file)

    worst = sorted(rows, key=lambda x: -abs(x[2]))[:6]
    print("\nlargest misses:", file=file)
    for r, p, e in worst:
        print(f"  row {r.index} {r.name[:40]} ({r.source}, {'held out' if r.held_out else 'calibration'}): "
              f"{e:+.1f}% - {likely_cause(r, e)}", file=file)
    return {"calibration_mape": m_cal, "held_out_mape": m_held, "korthikanti_mape": m_k}


def leave_one_source_out(file=sys.stdout) -> None:
    """Refit on the calibration rows of all sources but one; report that source's MAPE on
    all its rows (a harder check than the row split: the source's framework is unseen)."""
    runs, _ = load_runs()
    print("\nleave-one-source-out (refit without the source, MAPE on all its rows):", file=file)
    for src in sorted({r.source for r in runs}):
        cal = [r for r in runs if not r.held_out and r.source != src]
        c = fit(cal)
        print(f"  {src:15} MAPE {mape([r for r in runs if r.source == src], c):5.1f}%   ({c})", file=file)


def batch_speed(n: int = 100_000, file=sys.stdout) -> float:
    """Seconds for estimate_training_batch over n random layouts of a 70B dense model."""
    import time

    from optimizer.formulas.training import estimate_training_batch

    spec = gpt_spec("gpt-70b-like", layers=80, hidden=8192, heads=64, kv_heads=8, ffn=28672, vocab=128256,
                    seq_len=8192)
    hw = load_gpus()["H100-SXM5-80GB"].with_inter_node_bytes_per_s(400 * GIGABIT)
    rng = np.random.default_rng(0)
    arr = {"tp": rng.choice([1, 2, 4, 8], n), "pp": rng.choice([1, 2, 4, 5, 8, 10, 16, 20], n),
           "dp": rng.choice([1, 2, 4, 8, 16, 32, 64, 128], n), "micro_batch": rng.choice([1, 2, 4], n),
           "seq_len": np.full(n, 8192), "interleave": np.ones(n, dtype=int)}
    arr["global_batch"] = arr["micro_batch"] * arr["dp"] * 8
    cat = {"zero": 1, "recompute": "selective", "sequence_parallel": True}
    estimate_training_batch(spec, hw, {k: v[:10] for k, v in arr.items()}, cat)   # warm the caches
    t0 = time.perf_counter()
    estimate_training_batch(spec, hw, arr, cat)
    dt = time.perf_counter() - t0
    print(f"\nestimate_training_batch: {n} layouts in {dt:.3f} s ({n / dt:,.0f} layouts/s)", file=file)
    return dt


# ---- prediction intervals (issue 15): leave-one-source-out residuals per regime ------------

def _regime(spec, layout) -> str:
    from optimizer.formulas.intervals import regime_of
    from optimizer.formulas.params import count_params

    return regime_of(params_total=count_params(spec).total, tp=layout.tp, pp=layout.pp, cp=layout.cp,
                     ep=layout.ep, zero=layout.zero, precision=layout.precision, moe=spec.moe is not None)


def loso_residuals(file=sys.stdout) -> list[tuple[str, str, float, str]]:
    """(regime, source, ln(measured/predicted tokens/s), run name) for every run predicted by
    constants that never saw its source: the public rows by the leave-one-source-out refits of
    ``leave_one_source_out``; Korthikanti et al. 2022 and tests/data/training_runs_extra.csv
    (never used in any fit) by the shipped constants."""
    import importlib.util

    runs, _ = load_runs()
    out = []
    for src in sorted({r.source for r in runs}):
        c = fit([r for r in runs if not r.held_out and r.source != src])
        for r in (r for r in runs if r.source == src):
            out.append((_regime(r.spec, r.layout), src, float(np.log(r.measured_tokens_per_gpu_s / predict(r, c))),
                        r.name))
    for run, _, _ in load_korthikanti():
        out.append((_regime(run.spec, run.layout), run.source,
                    float(np.log(run.measured_tokens_per_gpu_s / predict(run))), run.name))
    spec_vm = importlib.util.spec_from_file_location("validate_memory", ROOT / "benchmarks" / "validate_memory.py")
    vm = importlib.util.module_from_spec(spec_vm)
    sys.modules[spec_vm.name] = vm
    spec_vm.loader.exec_module(vm)
    from optimizer.runs import run_from_row

    cat = load_catalog()
    rows, _ = vm.published_rows()
    for i, row in rows:
        if "unconfirmed" in (row.get("activation_checkpointing") or "").lower():
            row = {**row, "recompute": ""}          # time: the framework's default recomputation
        r = run_from_row(row, i, cat, file_label="training_runs_extra.csv")
        if not r.tokens_per_s_per_gpu:
            continue
        e = estimate_training(r.spec, r.hw, r.layout, **r.options)
        pred = e.tokens_per_s / r.layout.n_gpus
        src = r.source.split(" ")[0].split("/")[0]
        out.append((_regime(r.spec, r.layout), src, float(np.log(r.tokens_per_s_per_gpu / pred)), r.name))
    return out


def intervals_from_file(residuals_path, path=None, file=sys.stdout) -> dict:
    """catalog/step_time_intervals.csv recomputed from a residuals file (no refits): this
    issue's tests/data/step_time_loso_residuals.csv or issue 14's tests/data/loso_results.csv."""
    import datetime

    from optimizer.formulas import intervals as IV

    rows = IV.read_residuals(residuals_path)
    ivs = IV.intervals_from_residuals(rows, method="random-effects normal over sources of leave-one-source-out "
                                                    f"residuals ({Path(residuals_path).name})",
                                      as_of=datetime.date.today().isoformat())
    IV.write_intervals(ivs, path or IV.INTERVALS_FILE)
    cov, n = IV.nested_coverage(rows)
    print(f"80% interval coverage on held-out sources: {100 * cov:.1f}% of {n} runs", file=file)
    return {"coverage": cov, "runs": n}


def write_intervals(path=None, residuals_path=DATA / "step_time_loso_residuals.csv", file=sys.stdout) -> dict:
    """Write catalog/step_time_intervals.csv from ``loso_residuals`` (and the residuals themselves
    to tests/data, which the interval test reads) and print the per-regime table and the nested
    coverage of the 80% intervals on held-out sources."""
    import datetime

    from optimizer.formulas import intervals as IV

    res = loso_residuals(file)
    as_of = datetime.date.today().isoformat()
    ivs = IV.intervals_from_residuals([(g, s, x) for g, s, x, _ in res],
                                      method="random-effects normal over sources of leave-one-source-out "
                                             "residuals (benchmarks/calibrate_efficiency.py --write-intervals)",
                                      as_of=as_of)
    IV.write_intervals(ivs, path or IV.INTERVALS_FILE)
    with open(residuals_path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["regime", "source", "log_ratio", "run"])
        for g, s, x, name in res:
            w.writerow([g, s, f"{x:.5f}", name])
    cov, n = IV.nested_coverage([(g, s, x) for g, s, x, _ in res])
    print("\nprediction intervals (ln measured/predicted tokens/s, leave-one-source-out):", file=file)
    for reg in (*IV.REGIMES, IV.POOLED):
        i = ivs[reg]
        print(f"  {reg:12} runs {i.n_runs:4} sources {i.n_sources:3}  p10 {i.log_ratio_p10:+.3f} "
              f"(x{np.exp(i.log_ratio_p10):.2f})  p90 {i.log_ratio_p90:+.3f} (x{np.exp(i.log_ratio_p90):.2f})"
              + ("  [pooled]" if "pooled" in i.method else ""), file=file)
    print(f"80% interval coverage on held-out sources (intervals from the other sources): "
          f"{100 * cov:.1f}% of {n} runs", file=file)
    return {"coverage": cov, "runs": n}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fit", action="store_true", help="refit the constants on the calibration rows")
    ap.add_argument("--fit-fp8", action="store_true",
                    help="refit the fp8 GEMM efficiency ratio on the calibration bf16/fp8 pairs")
    ap.add_argument("--loso", action="store_true", help="also run the leave-one-source-out refits (~1 min)")
    ap.add_argument("--speed", action="store_true", help="also time the vectorised estimator on 1e5 layouts")
    ap.add_argument("--intervals-from", metavar="CSV", default=None,
                    help="recompute catalog/step_time_intervals.csv from a residuals CSV (no refits)")
    ap.add_argument("--write-intervals", action="store_true",
                    help="write catalog/step_time_intervals.csv from leave-one-source-out residuals (several minutes)")
    args = ap.parse_args(argv)
    constants = CALIBRATED
    if args.fit:
        runs, _ = load_runs()
        cal = [r for r in runs if not r.held_out]
        constants = fit(cal)
        print(f"fitted: {constants}\n")
    if args.fit_fp8:
        pairs = [p for p in load_fp8_pairs() if not p.held_out and fp8_bf16_ok(p, constants)]
        constants = fit_fp8_ratio(pairs, constants)
        print(f"fitted fp8_gemm_ratio: {constants.fp8_gemm_ratio}\n")
    report(constants)
    fp8_report(constants)
    if args.loso:
        leave_one_source_out()
    if args.speed:
        batch_speed()
    if args.write_intervals:
        write_intervals()
    if args.intervals_from:
        intervals_from_file(args.intervals_from)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
