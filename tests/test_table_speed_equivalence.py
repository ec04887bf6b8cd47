"""The fast candidate-table path gives the same figures as the plain one, column by column.

The fast path (tables.estimate_rows default) evaluates one representative of each distinct
pipeline stage and every pp in one numpy pass (training.py, 'stages evaluated per layout');
the reference path (``reference=True``) evaluates every stage of each pipeline degree
separately, as the estimator did before. The figures must agree exactly (every float column
bit for bit; the tolerance below only admits last-bit noise, and is not needed today).
Scenarios cover dense and MoE models (MLA with a dense first layer, sliding-window attention),
pp > 1 with even and uneven stages, interleaving, cp > 1, ZeRO 0-3, fp8 and bf16, full and
selective recomputation, with and without flash attention, sequence parallelism on and off.
"""

from __future__ import annotations

import numpy as np
import pytest

import optimizer
from optimizer.catalog import load_catalog
from optimizer.search.train import table as tables
from optimizer.pricing import gpu_options
from optimizer.search.train.space import enumerate_layouts
from optimizer.search.train.table import build_table, estimate_rows

REL_TOL = 1e-12

# (base scenario, overrides). Search spaces are pinned where the full one would be slow.
CASES = {
    "dense-uneven-pp": ("llama3-70b-pretrain", {"constraints.gpus": ["H100-SXM5-80GB", "A100-SXM4-80GB"],
                                                 "search.pp": [1, 2, 3, 6, 7, 32, 64]}),
    "dense-interleave-noflash": ("llama3-8b-pretrain", {"train.interleave": 2, "train.flash_attention": False,
                                                        "search.sequence_parallel": [True, False]}),
    "moe-cp": ("mixtral-8x7b-pretrain", {"train.seq_len": 65536, "search.pp": [1, 4, 8, 32],
                                         "search.micro_batch": [1]}),
    "mla-moe-dense-first": ("mixtral-8x7b-pretrain", {"model": "deepseek-v2-lite", "search.pp": [1, 2, 3, 9, 27],
                                                      "search.micro_batch": [1, 2]}),
    "sliding-window": ("llama3-8b-pretrain", {"model": "gemma-2-9b", "search.pp": [1, 2, 4, 7, 21, 42]}),
    "405b-fp8": ("llama31-405b-pretrain", {"search.precision": ["fp8"], "search.pp": [1, 7, 16, 63, 126]}),
}


def _scenario(name):
    base, overrides = CASES[name]
    return optimizer.load_scenario(base).with_overrides(overrides)


def _assert_same(fast: dict, ref: dict, label: str) -> None:
    assert fast.keys() == ref.keys(), label
    for k in ref:
        a, b = np.asarray(fast[k]), np.asarray(ref[k])
        assert a.dtype == b.dtype and a.shape == b.shape, f"{label}: {k}"
        if np.array_equal(a, b, equal_nan=True):
            continue
        both_nan = np.isnan(a) & np.isnan(b)
        rel = np.abs(a - b) / np.maximum(np.abs(b), np.finfo(float).tiny)
        worst = np.max(np.where(both_nan, 0.0, rel))
        assert worst <= REL_TOL, f"{label}: column {k} differs by {worst:.3g} (relative)"


@pytest.mark.parametrize("merge_rows", [0, 10**9])
@pytest.mark.parametrize("name", list(CASES))
def test_fast_rows_match_reference(name, merge_rows, monkeypatch):
    """Both fast groupings: one call per ZeRO stage and SP setting (merge_rows=0) and one call
    for all of them (every group merged)."""
    monkeypatch.setattr(tables, "_MERGED_GROUP_ROWS", merge_rows)
    sc = _scenario(name)
    gpus, _ = gpu_options(sc, load_catalog())
    spec = sc.spec()
    cols = enumerate_layouts(spec, sc, gpus, gpu_count_limits=False)
    assert len(cols["tp"]) > 0
    fast = estimate_rows(spec, sc, gpus, cols)
    ref = estimate_rows(spec, sc, gpus, cols, reference=True)
    _assert_same(fast, ref, name)


def test_cases_cover_the_space():
    """The cases above do exercise what they claim (a check on the test, not the code)."""
    seen = {k: set() for k in ("zero", "precision", "recompute", "sequence_parallel", "cp")}
    uneven = moe = False
    for name in CASES:
        sc = _scenario(name)
        gpus, _ = gpu_options(sc, load_catalog())
        spec = sc.spec()
        cols = enumerate_layouts(spec, sc, gpus, gpu_count_limits=False)
        for k in seen:
            seen[k] |= set(np.unique(cols[k]).tolist())
        uneven |= bool(np.any(spec.total_layers % cols["pp"]))
        moe |= spec.moe is not None
    assert seen["zero"] == {0, 1, 2, 3}
    assert seen["precision"] == {0, 1}                       # bf16, fp8
    assert {0, 1, 2} <= seen["recompute"]                    # none, selective, full
    assert seen["sequence_parallel"] == {False, True}
    assert max(seen["cp"]) > 1 and uneven and moe


def test_fast_table_matches_reference_table():
    """Whole tables (prices, integer views, limit flags) agree too."""
    sc = _scenario("moe-cp")
    gpus, _ = gpu_options(sc, load_catalog())
    spec = sc.spec()
    fast = build_table(spec, sc, gpus)
    cols = enumerate_layouts(spec, sc, gpus, gpu_count_limits=True)
    ref_cols = dict(cols)
    ref_cols.update(estimate_rows(spec, sc, gpus, cols, reference=True))
    from optimizer.search.train.table import Table, reprice

    ref = reprice(Table(gpus, ref_cols), sc, gpus, spec=spec)
    _assert_same(fast.cols, ref.cols, "table")
    _assert_same(fast.violations, ref.violations, "violations")


@pytest.mark.parametrize("name", ["moe-cp", "405b-fp8", "dense-interleave-noflash"])
def test_fit_only_rows_that_fit_are_unchanged(name):
    """build_table(fit_only=True): rows within the memory limit are identical to the full build
    (every column); the others keep memory figures, the memory flag and the GPU-count flags,
    and have no time figures (NaN)."""
    sc = _scenario(name)
    gpus, _ = gpu_options(sc, load_catalog())
    spec = sc.spec()
    full = build_table(spec, sc, gpus, gpu_count_limits=False)
    fit_only = build_table(spec, sc, gpus, gpu_count_limits=False, fit_only=True)
    fits = ~full.violations["memory"]
    assert fits.any() and (~fits).any()                  # both kinds of rows are exercised
    assert full.cols.keys() == fit_only.cols.keys()
    for k, v in full.cols.items():
        assert v.dtype == fit_only.cols[k].dtype, k
        np.testing.assert_array_equal(fit_only.cols[k][fits], v[fits], err_msg=k)
    for k in ("memory_per_gpu_bytes", "memory_units", "memory_stage", "n_gpus", "gpu", "tp", "pp"):
        np.testing.assert_array_equal(fit_only.cols[k], full.cols[k], err_msg=k)
    for fam in ("memory", "stock", "max_gpus", "min_gpus"):
        np.testing.assert_array_equal(fit_only.violations[fam], full.violations[fam], err_msg=fam)
    for fam, v in full.violations.items():
        np.testing.assert_array_equal(fit_only.violations[fam][fits], v[fits], err_msg=fam)
    for k in ("step_time_s", "tokens_per_s", "mfu", "comm_dp_s", "cost_usd"):
        assert np.isnan(fit_only.cols[k][~fits]).all(), k


def test_fit_only_table_refuses_a_looser_memory_limit():
    """Repricing a fit_only table where skipped rows would fit is an error, not wrong figures."""
    from optimizer.errors import ClusteroptError
    from optimizer.search.train.table import reprice

    sc = _scenario("moe-cp").with_overrides({"constraints.memory_headroom": 0.25})
    gpus, _ = gpu_options(sc, load_catalog())
    table = build_table(sc.spec(), sc, gpus, fit_only=True)
    reprice(table, sc.with_overrides({"constraints.budget_usd": 1e6}), gpus, spec=sc.spec())   # same limit: fine
    with pytest.raises(ClusteroptError):
        reprice(table, sc.with_overrides({"constraints.memory_headroom": 0.0}), gpus, spec=sc.spec())
