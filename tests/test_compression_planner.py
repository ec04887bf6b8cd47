"""Compression as a serving-planner choice (issue 9, 'Compression as a search choice'): the quality
limit, explanations that name it, one-off work amortised into $/hour, 2:4 sparsity only where the
GPU has sparse tensor cores, the edge power cap, and the planner's estimator against published
measurements of compressed models (tests/data/compression_measurements.csv; no constant of the
estimator was fitted on these rows: all held out)."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest

from optimizer.catalog import load_catalog, load_compression
from optimizer.errors import ClusteroptError
from optimizer.formulas.compression import option_quality, quality_loss_pct
from optimizer.formulas.params import count_params
from optimizer.formulas.serving import estimate_serving
from optimizer.model import get_preset
from optimizer.scenario import load_scenario
from optimizer.search.serve.evaluate import evaluate_fleet
from optimizer.search.serve.solve import solve_serving
from optimizer.units import GIB
import functools  # noqa: E402

# The planners take the caller's catalog (issue 18); these tests pass the default one.
_CAT = load_catalog()
solve_serving = functools.partial(solve_serving, catalog=_CAT)
evaluate_fleet = functools.partial(evaluate_fleet, catalog=_CAT)


LOOSE = "llama3-70b-chat-compressed"          # max_loss_pct 2.0
STRICT = "llama3-70b-chat-strict-quality"     # max_loss_pct 1.0
MEASURED = list(csv.DictReader(open(Path(__file__).parent / "data" / "compression_measurements.csv")))
ROWS = load_compression()


_SOLVED: dict = {}


def _solve(name: str, overrides: tuple = ()):
    """solve_serving of a shipped scenario with dotted overrides, once per distinct call."""
    key = (name, repr(overrides))
    if key not in _SOLVED:
        sc = load_scenario(name).with_overrides(dict(overrides)) if overrides else load_scenario(name)
        _SOLVED[key] = solve_serving(sc, top_k=3, pareto=False)
    return _SOLVED[key]


def _int4(row) -> bool:
    return any(x["weights"] == "int4" for x in row["replicas"])


# ---------------------------------------------------------------------------- quality limit

def test_quality_figures_come_from_the_catalog_for_the_family():
    # INT4 GPTQ on Llama-3: Neural Magic's Llama-3.1-8B-Instruct w4a16 card, 98.9% OpenLLM recovery
    assert option_quality(ROWS, "weights_int4_gptq", "llama-3", 70.6e9).quality_loss_pct == pytest.approx(1.1)
    # FP8 RTN: auto-round's 12-task average 0.6311 -> 0.6297
    fp8 = option_quality(ROWS, "weights_fp8", "llama-3", 70.6e9).quality_loss_pct
    assert fp8 == pytest.approx(quality_loss_pct(0.6311, 0.6297, True)) and fp8 < 1.0
    t = _solve(LOOSE).table
    c = t.cols
    for label, loss in (("weights_int4_gptq", 1.1), ("weights_fp8", fp8), ("none", 0.0)):
        rows = c["compression"] == label
        assert rows.any() and np.allclose(c["quality_loss_pct"][rows], loss)


def test_quality_limit_forbids_int4_at_1pct_and_allows_it_at_2pct():
    loose, strict = _solve(LOOSE), _solve(STRICT)
    assert loose.status == strict.status == "optimal"
    best2, best1 = loose.configs.iloc[0], strict.configs.iloc[0]
    # at 2% INT4 (1.1% loss) is allowed and makes the cheapest fleet
    assert _int4(best2) and best2["quality_loss_pct"] == pytest.approx(1.1)
    # at 1% no returned fleet serves INT4, and every replica keeps within the limit
    for _, row in strict.configs.iterrows():
        assert not _int4(row) and row["quality_loss_pct"] <= 1.0
    assert best2["usd_per_hour"] < best1["usd_per_hour"] - 1.0
    # the table rule is exactly loss <= limit
    c = strict.table.cols
    assert np.array_equal(c["ok_quality"], c["quality_loss_pct"] <= 1.0 + 1e-12)
    assert not c["ok_quality"][c["weights"] == "int4"].any()
    # the quality limit binds at 1% (without it the optimum improves) and not at 2%
    assert "quality" in strict.explanation["binding"]
    assert any("quality limit" in line for line in strict.explanation["lines"])
    assert "quality" not in loose.explanation["binding"]
    # the 2% optimum, checked under the 1% scenario, breaks exactly the quality rule
    ev = evaluate_fleet(load_scenario(STRICT), best2["replicas"])
    assert not ev["feasible"] and ev["violations"] and all(v.startswith("quality:") for v in ev["violations"])
    assert evaluate_fleet(load_scenario(LOOSE), best2["replicas"])["feasible"]


def test_without_compression_the_fleet_costs_more():
    """Compression changes the cheapest fleet: bf16 only > FP8 (1% limit) > INT4 (2% limit)."""
    dense = _solve(LOOSE, (("search.compression", None), ("search.weights", ["bf16"]), ("search.kv", ["bf16"])))
    d, s, lo = (r.configs.iloc[0]["usd_per_hour"] for r in (dense, _solve(STRICT), _solve(LOOSE)))
    assert d > s > lo


def test_infeasible_explanation_names_the_quality_limit():
    # a budget only INT4 fleets meet: infeasible at 1%; the explanation says raising the limit fixes it
    budget = (_solve(LOOSE).configs.iloc[0]["usd_per_hour"] + _solve(STRICT).configs.iloc[0]["usd_per_hour"]) / 2
    r = _solve(STRICT, (("constraints.budget_usd_per_hour", budget),))
    e = r.explanation
    assert r.status == "infeasible" and "quality" in e["binding"]
    assert e["relaxations"]["max_loss_pct"] == pytest.approx(1.1)
    assert any("serve.quality.max_loss_pct" in line for line in e["lines"])
    fixed = _solve(STRICT, (("constraints.budget_usd_per_hour", budget),
                            ("serve.quality.max_loss_pct", e["relaxations"]["max_loss_pct"])))
    assert fixed.status == "optimal"
    # one H100 per replica: only INT4 weights fit in 80 GB, so memory and quality conflict per option
    r = _solve(STRICT, (("constraints.gpus", ["H100-SXM5-80GB"]), ("search.tp", [1]), ("serve.slo.ttft_p99_s", 5.0),
                        ("serve.slo.itl_p99_s", 0.2)))
    assert r.status == "infeasible" and ["memory", "quality"] in r.explanation["conflicts"]
    assert any("quality limit" in line for line in r.explanation["lines"])


def test_unknown_option_is_a_one_line_error_with_a_suggestion():
    with pytest.raises(ClusteroptError) as e:
        load_scenario(LOOSE).with_overrides({"search.compression": ["weights_fp8", "weights_int4_gtpq"]})
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("search.compression") and "weights_int4_gptq" in msg


# ---------------------------------------------------------------------------- one-off cost

def _gptq_one_off_by_hand(sc) -> float:
    """GPTQ calibration: 0.0229 GPU-hours per billion parameters (4 A100-hours for 175B, Frantar et
    al. 2023) at the cheapest $/GPU-hour among the scenario's eligible GPUs."""
    from optimizer.pricing import gpu_options

    gpus, _ = gpu_options(sc, load_catalog())
    n = count_params(sc.spec()).total
    return 0.0229 * n / 1e9 * min(g.usd_per_gpu_hour for g in gpus)


def test_one_off_amortised_by_hand():
    sc = load_scenario(LOOSE)
    row = _solve(LOOSE).configs.iloc[0]
    usd = _gptq_one_off_by_hand(sc)
    assert row["one_off_usd"] == pytest.approx(usd, rel=1e-9)
    assert row["one_off_usd_per_hour"] == pytest.approx(usd / (365 * 24), rel=1e-9)
    # $/hour includes the amortised one-off; the instances are billed beside it
    assert row["usd_per_hour"] == pytest.approx(row["gpu_usd_per_hour"] + row["one_off_usd_per_hour"], rel=1e-12)
    assert row["gpu_usd_per_hour"] == pytest.approx(sum(i["usd_per_hour"] for i in row["instances"]))
    # a shorter horizon spreads the same work over fewer hours
    short = _solve(LOOSE, (("serve.horizon_days", 30.0),)).configs.iloc[0]
    assert short["one_off_usd_per_hour"] == pytest.approx(usd / (30 * 24), rel=1e-9)
    # FP8 round-to-nearest needs no calibration: no one-off
    assert _solve(STRICT).configs.iloc[0]["one_off_usd"] == 0.0


def test_one_off_paid_once_per_fleet():
    sc = load_scenario(LOOSE)
    usd = _gptq_one_off_by_hand(sc)
    base = {"gpu": "H100-SXM5-80GB", "pp": 1, "kv": "bf16", "batch": 32}
    two = [dict(base, tp=2, weights="int4", compression="weights_int4_gptq", count=10),
           dict(base, tp=4, weights="int4", compression="weights_int4_gptq", count=2),
           dict(base, tp=4, weights="bf16", compression="none", count=1)]
    assert evaluate_fleet(sc, two)["one_off_usd"] == pytest.approx(usd, rel=1e-9)
    assert evaluate_fleet(sc, two[2:])["one_off_usd"] == 0.0


def test_compression_pays_for_itself_only_when_it_does():
    """With the GPTQ one-off amortised over so short a horizon that it costs more per hour than INT4
    saves, the planner keeps FP8; over a horizon where it costs less, INT4 wins, at its price plus
    the amortised one-off."""
    sc = load_scenario(LOOSE)
    usd = _gptq_one_off_by_hand(sc)
    cheap = _solve(LOOSE).configs.iloc[0]["gpu_usd_per_hour"]
    fp8 = _solve(STRICT).configs.iloc[0]["usd_per_hour"]
    saving = fp8 - cheap
    dear_days = usd / (2.0 * saving) / 24        # amortised = 2 x saving
    worth_days = usd / (0.5 * saving) / 24       # amortised = saving / 2
    dear = _solve(LOOSE, (("serve.horizon_days", dear_days),)).configs.iloc[0]
    worth = _solve(LOOSE, (("serve.horizon_days", worth_days),)).configs.iloc[0]
    assert not _int4(dear) and dear["usd_per_hour"] == pytest.approx(fp8)
    assert _int4(worth) and worth["usd_per_hour"] == pytest.approx(cheap + 0.5 * saving, rel=1e-9)


def test_recovery_and_distillation_one_offs_by_hand():
    from optimizer.formulas.sizing import generate
    from optimizer.pricing import gpu_options
    from optimizer.search.serve.compression import compression_plan

    sc = load_scenario(LOOSE).with_overrides({"search.compression": ["weights_fp8", "sparse_2_4",
                                                                     {"option": "prune_distill", "params": 35e9}]})
    spec = sc.spec()
    gpus, _ = gpu_options(sc, load_catalog())
    plan = compression_plan(spec, sc, gpus)
    n = count_params(spec).total
    student = generate("llama-3", 35e9)
    ns = count_params(student).total
    assert [m.name for m in plan.models] == [spec.name, student.name]
    sparse = next(o for o in plan.one_offs if o.label == f"sparse_2_4 on {spec.name}")
    # Sparse-Llama: 13B recovery tokens for 8.03B parameters; teacher (dense) and student (sparse) both N
    assert sparse.recovery_tokens == pytest.approx(13e9 / 8.03e9 * n, rel=1e-3)
    assert sparse.recovery_flop == pytest.approx(sparse.recovery_tokens * 8 * n)
    distil = next(o for o in plan.one_offs if o.label.startswith("prune_distill"))
    # Minitron: 94B tokens for an 8.03B teacher, FLOPs = tokens x (6 N_student + 2 N_teacher)
    assert distil.recovery_tokens == pytest.approx(94e9 / 8.03e9 * n, rel=1e-3)
    assert distil.recovery_flop == pytest.approx(distil.recovery_tokens * (6 * ns + 2 * n))
    for o in (sparse, distil):
        g = next(x for x in gpus if x.name == o.priced_on)
        peak_usd = o.recovery_flop / g.hardware.bf16_flop_per_s / 3600 * g.usd_per_gpu_hour
        assert 1.0 / 0.9 * peak_usd < o.usd < 1.0 / 0.15 * peak_usd   # an MFU between 15% and 90%
    # the student's variants carry the distillation item and its quality loss (Minitron, MMLU)
    sv = [v for v in plan.variants if v.model == 1]
    assert sv and all(v.label.startswith("prune_distill:") for v in sv)
    assert all(plan.one_offs.index(distil) in v.items for v in sv)
    assert min(v.quality_loss_pct for v in sv) == pytest.approx(100 * (65.3 - 58.7) / 65.3)


# ---------------------------------------------------------------------------- 2:4 sparsity

def test_catalog_sparse_capability_reaches_hardware():
    cat = load_catalog()
    for a in cat.accelerators:
        assert cat.hardware(a.id).sparse_2_4 == a.sparse_2_4
    assert cat.hardware("A100-SXM4-80GB").sparse_2_4 and not cat.hardware("T4").sparse_2_4


@pytest.mark.parametrize("gpu,has_sparse_cores", [("A100-SXM4-80GB", True), ("L4", True), ("T4", False)])
def test_sparse_tensor_core_rate_only_where_the_catalog_has_it(gpu, has_sparse_cores):
    spec = get_preset("llama-3-8b")
    hw = load_catalog().hardware(gpu)
    kw = dict(batch=1, prompt_len=4096, output_len=64, weights="fp8" if gpu == "T4" else "bf16")
    dense = estimate_serving(spec, hw, **kw)
    sparse = estimate_serving(spec, hw, sparse_2_4=True, **kw)
    # weights held: the blocks' linear layers at 1.125 / 2 bytes per weight (bf16) or 0.625 / 1 (fp8):
    # half the values + a 2-bit index per kept value (Mishra et al. 2021); embedding, head, norms dense
    r = {"bf16": 1.125 / 2, "fp8": 0.625 / 1}[kw["weights"]]
    w = dense.weights_per_gpu
    assert sparse.memory_per_gpu.weights == pytest.approx(w.embedding + w.lm_head + w.norm
                                                          + r * (w.attention + w.ffn + w.experts), rel=1e-12)
    # a 4k-token prefill is compute-bound: it speeds up only on sparse tensor cores
    ratio = dense.prefill_time_s / sparse.prefill_time_s
    if has_sparse_cores:
        assert ratio > 1.5
    else:
        assert ratio == pytest.approx(1.0, abs=0.02)
    # batch-1 decode is bandwidth-bound: fewer bytes make it faster everywhere
    assert sparse.itl_s < dense.itl_s


def test_default_estimate_is_dense():
    spec, hw = get_preset("llama-3-8b"), load_catalog().hardware("H100-SXM5-80GB")
    a = estimate_serving(spec, hw, batch=8, prompt_len=1000, output_len=200)
    b = estimate_serving(spec, hw, batch=8, prompt_len=1000, output_len=200, sparse_2_4=False)
    assert a == b


# ---------------------------------------------------------------------------- edge

def test_edge_scenario_picks_jetson_within_the_power_cap():
    r = solve_serving("llama3-8b-edge", top_k=1, pareto=False)
    assert r.status == "optimal"
    best = r.configs.iloc[0]
    assert {x["gpu"] for x in best["replicas"]} == {"Jetson-AGX-Orin-64GB"}
    assert best["quality_loss_pct"] <= 2.0
    # bf16 misses the ITL target on 205 GB/s LPDDR5; compression makes the device usable
    dense = _solve("llama3-8b-edge", (("search.compression", None), ("search.weights", ["bf16"]),
                                      ("search.kv", ["bf16"])))
    assert dense.status == "infeasible" and "itl" in dense.explanation["binding"]
    # a 50 W cap leaves the 60 W module out, with a note
    capped = _solve("llama3-8b-edge", (("constraints.max_power_w_per_device", 50.0),))
    assert capped.status == "infeasible"
    assert any("max_power_w_per_device" in n for n in capped.explanation["notes"])


def test_power_cap_filters_any_gpu_list():
    from optimizer.pricing import gpu_options

    sc = load_scenario(LOOSE).with_overrides({"constraints.max_power_w_per_device": 400.0})
    gpus, notes = gpu_options(sc, load_catalog())
    assert {g.name for g in gpus} == {"L40S", "A100-SXM4-80GB"}           # H100 SXM5 is 700 W
    assert all(g.hardware.tdp_w <= 400 for g in gpus) and any("H100-SXM5-80GB" in n for n in notes)


# ---------------------------------------------------------------------------- against published figures

@pytest.mark.parametrize("row", [r for r in MEASURED if r["kind"] == "weights_bytes"],
                         ids=lambda r: f"{r['model']}-{r['option_weights']}-sparse{r['option_sparse']}")
def test_planner_weight_memory_against_published(row):
    """Weights the planner's estimator holds (FP8, 2:4 + FP8) vs the published checkpoint sizes:
    within 5% (measured: -0.5% and -1.3%)."""
    e = estimate_serving(get_preset(row["model"]), load_catalog().hardware("H100-SXM5-80GB"),
                         weights=row["option_weights"], sparse_2_4=row["option_sparse"] == "true",
                         batch=1, prompt_len=128, output_len=128)
    assert abs(e.memory_per_gpu.weights / GIB / float(row["measured"]) - 1) < 0.05


LOADED = list(csv.DictReader(open(Path(__file__).parent / "data" / "compression_planner_measurements.csv")))


@pytest.mark.parametrize("row", LOADED, ids=lambda r: f"{r['model']}-{r['weights']}-{r['measured_gib']}")
def test_planner_weight_memory_against_vllm_logs(row):
    """Weights vLLM reported loading for Llama-3.1-8B-Instruct in bf16, AWQ and GPTQ INT4 (group 128)
    against the planner's estimator: within 3% (measured: bf16 -0.2%, AWQ -0.8%, GPTQ -0.3%)."""
    e = estimate_serving(get_preset(row["model"]), load_catalog().hardware("H100-SXM5-80GB"), weights=row["weights"],
                         sparse_2_4=row["sparse_2_4"] == "true", batch=1, prompt_len=100, output_len=250)
    assert abs(e.memory_per_gpu.weights / GIB / float(row["measured_gib"]) - 1) < 0.03


def _decode_speedup(row) -> float:
    """Decode pass time of the base over the option at the row's batch and context."""
    spec, hw = get_preset(row["model"]), load_catalog().hardware(row["gpu"])
    b, ctx = int(row["batch"]), int(row["context_len"])

    def itl(weights, sparse):
        return estimate_serving(spec, hw, weights=weights, sparse_2_4=sparse, batch=b, prompt_len=ctx,
                                output_len=2, max_num_seqs=max(b, 256)).itl_s

    return itl(row["base_weights"], row["base_sparse"] == "true") / itl(row["option_weights"],
                                                                       row["option_sparse"] == "true")


@pytest.mark.parametrize("row", [r for r in MEASURED if r["kind"] == "decode_speedup"],
                         ids=lambda r: f"{r['gpu']}-{r['option_weights']}-sparse{r['option_sparse']}-b{r['batch']}")
def test_planner_decode_speedup_against_published(row):
    """Decode speed-up of INT4 (L4, AWQ-Marlin) and 2:4 (+FP8) on H100 by the planner's estimator,
    against published measurements. Roofline overstates sparse kernels at batch 1 and the published
    latencies include prefill (measured errors: 2:4 +17%, 2:4 + FP8 +61%, 2:4 FP8 at batch 64 -10%,
    INT4 on L4 -5%): within a factor 1.7, in the right direction."""
    pred, meas = _decode_speedup(row), float(row["measured"])
    assert pred > 1 and meas > 1
    assert abs(math.log(pred / meas)) < math.log(1.7)


def test_dense_int4_and_sparse_errors_are_small_where_kernels_reach_the_roofline():
    """The rows where the kernels are mature (INT4 Marlin; 2:4 at batch 64) are within 15%."""
    rows = [r for r in MEASURED if r["kind"] == "decode_speedup"
            and (r["option_weights"] == "int4" or int(r["batch"]) >= 64)]
    assert len(rows) == 2
    for r in rows:
        assert abs(_decode_speedup(r) / float(r["measured"]) - 1) < 0.15


# ---------------------------------------------------------------------------- formats without search.compression

def test_formats_without_compression_carry_their_published_loss():
    """A lossy format chosen through search.weights / search.kv carries its default option's figure
    (review of issue 9: int4/fp8 solved as lossless without search.compression). INT4 on Llama-3:
    of GPTQ and AWQ only GPTQ has a Llama-3 row (Neural Magic w4a16, 98.9% recovery) -> 1.1%; FP8 KV:
    vLLM's conservative 94% recovery -> 6%; the two add."""
    from optimizer.search.serve.compression import format_quality

    spec = load_scenario("llama3-70b-chat").spec()
    n = count_params(spec).total
    int4 = format_quality(ROWS, "weights", "int4", "llama-3", n)
    assert int4.option == "weights_int4_gptq" and int4.quality_loss_pct == pytest.approx(1.1)
    assert format_quality(ROWS, "kv", "fp8", "llama-3", n).quality_loss_pct == pytest.approx(6.0)
    assert format_quality(ROWS, "weights", "bf16", "llama-3", n) is None
    # Llama-2 7B has both int4 methods: the more conservative (GPTQ 5.47 -> 5.69 perplexity, not AWQ's 5.60)
    q = format_quality(ROWS, "weights", "int4", "llama-2", 6.74e9)
    assert q.option == "weights_int4_gptq" and q.quality_loss_pct == pytest.approx(100 * (5.69 - 5.47) / 5.47)
    # no kv_int8 row in the catalog: kv_fp8's figure stands in
    assert format_quality(ROWS, "kv", "int8", "llama-3", n).option == "kv_fp8"
    # the shipped scenario (weights bf16/fp8/int4, KV bf16/fp8, no quality limit) keeps its answer and reports it
    r = solve_serving("llama3-70b-chat", top_k=3, pareto=False)
    assert r.status == "optimal"
    fp8 = option_quality(ROWS, "weights_fp8", "llama-3", n).quality_loss_pct
    for _, row in r.configs.iterrows():
        for x in row["replicas"]:
            w = {"int4": int4.quality_loss_pct, "fp8": fp8, "bf16": 0.0}[x["weights"]]
            k = {"fp8": 6.0, "bf16": 0.0}[x["kv"]]
            assert x["quality_loss_pct"] == pytest.approx(w + k) and x["compression"] == "none"
        assert row["quality_loss_pct"] == pytest.approx(max(x["quality_loss_pct"] for x in row["replicas"]))
        assert row["one_off_usd"] == 0.0
    assert any(_int4(row) and row["quality_loss_pct"] > 1.0 for _, row in r.configs.iterrows())


def test_quality_limit_applies_without_search_compression():
    """The review's bypass: max_loss_pct 0.5 with int4 weights and fp8 KV pinned through search.weights /
    search.kv (no search.compression). INT4 alone loses 1.1%, fp8 KV 6%: no option is within 0.5%, so the
    scenario is infeasible and the explanation names the quality limit and the least limit that works."""
    sc = load_scenario("llama3-70b-chat").with_overrides(
        {"serve.quality": {"max_loss_pct": 0.5}, "search.weights": ["int4"], "search.kv": ["fp8"]})
    r = solve_serving(sc, top_k=1, pareto=False)
    e = r.explanation
    assert r.status == "infeasible" and e["binding"] == ["quality"] and e["conflicts"] == [["quality"]]
    assert e["relaxations"]["max_loss_pct"] == pytest.approx(1.1 + 6.0)
    assert any("serve.quality.max_loss_pct" in line for line in e["lines"])
    assert any("weights_int4_gptq" in line and "kv_fp8" in line for line in e["lines"])
    assert not r.table.cols["ok_quality"].any()
    # the same fleet as the unlimited optimum breaks exactly the quality rule under the limit
    best = solve_serving(load_scenario("llama3-70b-chat").with_overrides(
        {"search.weights": ["int4"], "search.kv": ["fp8"]}), top_k=1, pareto=False).configs.iloc[0]
    assert _int4(best) and best["quality_loss_pct"] == pytest.approx(7.1)
    ev = evaluate_fleet(sc, best["replicas"])
    assert not ev["feasible"] and all(v.startswith("quality:") for v in ev["violations"])
    assert "int4 weights with fp8 KV" in ev["violations"][0]


def test_quality_limit_picks_formats_within_it_without_search_compression():
    """At a 2% limit over the shipped search space (bf16/fp8/int4 weights, bf16/fp8 KV) no replica may
    use fp8 KV (6%); the planner picks formats within the limit and reports their loss, and every
    (weights, KV) pair's rule is exactly loss <= limit."""
    sc = load_scenario("llama3-70b-chat").with_overrides({"serve.quality": {"max_loss_pct": 2.0}})
    r = solve_serving(sc, top_k=3, pareto=False)
    assert r.status == "optimal"
    for _, row in r.configs.iterrows():
        assert 0.0 <= row["quality_loss_pct"] <= 2.0
        assert all(x["kv"] == "bf16" for x in row["replicas"])
    c = r.table.cols
    assert np.array_equal(c["ok_quality"], c["quality_loss_pct"] <= 2.0 + 1e-12)
    assert not c["ok_quality"][c["kv"] == "fp8"].any()
    assert c["ok_quality"][(c["weights"] == "int4") & (c["kv"] == "bf16")].all()
    assert any("weights int4 carries weights_int4_gptq" in n for n in r.explanation["notes"])
    # a limit that allows everything gives back the unlimited answer
    free = solve_serving("llama3-70b-chat", top_k=1, pareto=False).configs.iloc[0]
    wide = solve_serving(load_scenario("llama3-70b-chat").with_overrides({"serve.quality": {"max_loss_pct": 50.0}}),
                         top_k=1, pareto=False).configs.iloc[0]
    assert wide["usd_per_hour"] == pytest.approx(free["usd_per_hour"]) and wide["replicas"] == free["replicas"]


def test_evaluate_fleet_reports_format_loss_outside_the_search_lists():
    """evaluate_fleet of a replica whose formats the scenario does not search still carries their loss."""
    sc = load_scenario("llama31-8b-rag")          # search.weights [bf16, fp8]
    rep = {"gpu": "MI300X", "tp": 1, "pp": 1, "weights": "int4", "kv": "fp8", "batch": 32, "count": 6}
    ev = evaluate_fleet(sc, [rep])
    n = count_params(sc.spec()).total
    assert ev["quality_loss_pct"] == pytest.approx(option_quality(ROWS, "weights_int4_gptq", "llama-3", n)
                                                   .quality_loss_pct + 6.0)
