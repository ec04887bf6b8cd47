"""The whole system (issue 10): storage, hosts, fabric, TCO, and failures inside the search.

Reference figures: tests/data/fabric_superpod.csv (NVIDIA DGX SuperPOD H100 and B200 reference
architectures), catalog/failure_rates.csv (published runs; Llama 3 405B held out), ZeRO and
ZeRO-Offload bytes per parameter.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import optimizer
from optimizer.catalog import load_catalog
from optimizer.catalog import load_system_catalog
from optimizer.formulas import cost as C
from optimizer.formulas import fabric as F
from optimizer.formulas import hosts as H
from optimizer.formulas import reliability as R
from optimizer.formulas import storage as S
from optimizer.formulas import tco as T
from optimizer.pricing import gpu_options
from optimizer.search.train.space import enumerate_layouts
from optimizer.search.train.system import system_breakdown, system_columns
from optimizer.search.train.table import LIMIT_FAMILIES, SYSTEM_COLUMNS, estimate_rows, price_rows
from optimizer.units import GB, GIB, SECONDS_PER_HOUR, TIB

DATA = Path(__file__).parent / "data"
FABRIC = pd.read_csv(DATA / "fabric_superpod.csv")
LLAMA3 = dict(gpu="H100-SXM5-80GB", n_gpus=16384, tp=8, pp=16, dp=128, cp=1, ep=1, zero=1, precision="bf16",
              micro_batch=1, recompute="full", sequence_parallel=True)


# --------------------------------------------------------------------------- catalog

def test_system_catalog_rows_are_sourced_and_typed():
    cat = load_system_catalog()
    for table in (cat.hosts, cat.storage_tiers, cat.switches, cat.optics, cat.tco, cat.failure_rates):
        assert table
        for row in table.values():
            assert len(row.source) > 5 and len(row.as_of) >= 4
    # DGX H100 datasheet: 2 x 56 cores, 2 TB, 8 x 400 Gb/s ConnectX-7, PCIe Gen5.
    h = cat.host("dgx-h100")
    assert (h.cpu_cores, h.host_ram_gib, h.compute_nics, h.compute_nic_gbit_per_s, h.pcie_gen) == (112, 2048, 8, 400, 5)
    assert cat.switch("qm9700").ports == 64 and cat.switch("qm9700").port_gbit_per_s == 400
    assert cat.default_failure_rate().use == "default"
    assert cat.default_host("H100-SXM5-80GB").id == "dgx-h100"


# --------------------------------------------------------------------------- fabric

@pytest.mark.parametrize("row", list(FABRIC.itertuples(index=False)), ids=lambda r: f"{r.design}-{r.su}su")
def test_fat_tree_reproduces_superpod_reference_designs(row):
    # NVIDIA's published switch and cable counts for rail-optimised, non-blocking QM9700 fabrics.
    d = F.fat_tree(row.nodes, row.nics_per_node, row.radix)
    assert (d.leaf, d.spine, d.core) == (row.leaf, row.spine, row.core)
    assert (d.links_node_leaf, d.links_leaf_spine, d.links_spine_core) == (
        row.cables_node_leaf, row.cables_leaf_spine, row.cables_spine_core)
    assert d.tiers == (3 if row.core else 2)


def test_fabric_options_change_counts_as_they_should():
    # 20 nodes x 8 NICs: rail-optimised takes one leaf per rail (8), packed takes ceil(160/32) = 5.
    assert F.fat_tree(20, 8, 64).leaf == 8
    assert F.fat_tree(20, 8, 64, rail_optimized=False).leaf == 5
    # 2:1 oversubscription: leaves have 42 down / 22 up ports -> fewer leaves and uplinks.
    nb, ov = F.fat_tree(256, 8, 64), F.fat_tree(256, 8, 64, oversubscription=2.0)
    assert F.leaf_ports(64, 2.0) == (42, 22)
    assert ov.switches < nb.switches and ov.links_leaf_spine < nb.links_leaf_spine
    # one switch when every endpoint fits
    assert F.fat_tree(4, 8, 64).switches == 1
    d = F.fat_tree(127, 8, 64, switch_price_usd=10.0, switch_power_w=1.0, switch_optic_price_usd=2.0,
                   node_optic_price_usd=3.0, cable_price_usd=0.5)
    assert d.capex_usd == d.switches * 10 + d.switch_transceivers * 2 + d.node_transceivers * 3 + d.cables * 0.5
    assert d.switch_transceivers == (1016 + 2 * 1024) / 2      # twin-port modules on every used switch port
    with pytest.raises(optimizer.ClusteroptError):
        F.fat_tree(10**9, 8, 64)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 8000), st.integers(1, 500), st.sampled_from([1, 4, 8]), st.sampled_from([1.0, 1.5, 3.0]))
def test_more_nodes_never_need_fewer_switches(n, extra, nics, over):
    a = F.fat_tree(n, nics, 64, oversubscription=over)
    b = F.fat_tree(n + extra, nics, 64, oversubscription=over)
    assert b.switches >= a.switches and b.cables >= a.cables


# --------------------------------------------------------------------------- storage and hosts

def test_storage_formulas_against_hand_figures():
    # Llama 3: 15.6e12 tokens of a 128,256-id vocabulary -> uint32 ids, 62.4 TB.
    assert S.bytes_per_token_for_vocab(128256) == 4 and S.bytes_per_token_for_vocab(32000) == 2
    assert S.dataset_bytes(15.6e12, 4) == pytest.approx(62.4e12)
    assert S.checkpoint_capacity_bytes(5.68e12, 3) == pytest.approx(4 * 5.68e12)
    # FSx Persistent-125 with 10 TiB: 1.25e9 B/s... (125 MB/s per TiB), below 64 nodes x 12.5 GB/s.
    bw = S.tier_bandwidth_bytes_per_s(64, 12.5e9, mb_per_s_per_tib=125, capacity_bytes=10 * TIB)
    assert bw == pytest.approx(1.25e9)
    assert S.tier_bandwidth_bytes_per_s(2, 12.5e9, aggregate_bytes_per_s=2e12) == pytest.approx(25e9)
    assert S.read_bytes_per_s_per_node(2.5e6, 2048, 4) == pytest.approx(2.5e6 * 4 / 2048)
    # 10 TB for one 30.44-day month at $23/TB-month
    assert S.storage_cost_usd(10e12, 23.0, 365.25 / 12 * 86400) == pytest.approx(230.0)


def test_host_memory_parts_and_zero_offload_bytes():
    # ZeRO-Offload (Ren et al. 2021, Fig. 2): 12 bytes/param of fp32 states + 2 of fp16 grads on CPU.
    assert H.offload_bytes_per_rank(1e9) == 14e9 and H.offload_bytes_per_rank(1e9, False) == 0
    m = H.host_memory_per_node(8, offload_bytes_per_gpu=14e9, checkpoint_copy_bytes_per_gpu=1e9)
    parts = m.processes + m.data_workers + m.pinned + m.offload + m.checkpoint_copy
    assert m.total == pytest.approx(parts) and m.offload == 8 * 14e9
    assert H.cpu_cores_needed(8, 2) == 24
    # 1e9 params: 2 GB each way over a 64 GB/s Gen5 x16 link, full duplex -> 2e9 / 64e9 s
    assert H.pcie_offload_s_per_step(1e9, 64e9) == pytest.approx(2e9 / 64e9)


# --------------------------------------------------------------------------- TCO

def test_owned_tco_reuses_the_cost_model_and_breaks_even_where_it_should():
    # GPUs alone, power at TDP x DGX overhead: identical to cost.owned_usd_per_gpu_hour.
    alone = T.owned_tco(1024, 8, 30000.0, server_usd_per_node=0.0,
                        node_power_w=700 * 8 * (1 + C.SERVER_POWER_OVERHEAD), utilization=0.7)
    ref = C.owned_usd_per_gpu_hour(30000.0, 700.0, 0.7)
    assert alone.usd_per_gpu_hour.total == pytest.approx(ref.total)
    full = T.owned_tco(1024, 8, 30000.0, server_usd_per_node=80000.0, node_power_w=10200.0,
                       fabric_capex_usd=5e6, fabric_power_w=2e5, storage_capex_usd=1e6, storage_power_w=1e4,
                       utilization=0.7, rental_usd_per_gpu_hour=4.0)
    cap = full.capex
    assert cap.gpus + cap.servers + cap.fabric + cap.storage == pytest.approx(cap.total)
    assert cap.servers == 128 * 80000.0 and full.usd_per_gpu_hour.total > alone.usd_per_gpu_hour.total
    # At the break-even utilisation the owned rate equals the rental rate.
    u = float(full.break_even_utilization)
    at_u = T.owned_tco(1024, 8, 30000.0, server_usd_per_node=80000.0, node_power_w=10200.0,
                       fabric_capex_usd=5e6, fabric_power_w=2e5, storage_capex_usd=1e6, storage_power_w=1e4,
                       utilization=min(u, 1.0))
    assert 0 < u <= 1 and at_u.usd_per_gpu_hour.total == pytest.approx(4.0, rel=1e-9)


# --------------------------------------------------------------------------- failures

def test_held_out_llama3_interruptions_from_calibration_rows_only():
    # Grattafiori et al. 2024 (Llama 3), Sec. 3.3.4: 419 unexpected interruptions in 54 days on
    # 16,384 H100s. The rate is fitted here from the 'calibration' rows alone (the held-out row
    # is not read except for its size and window). Measured: 496 predicted (+18.5%).
    rows = list(load_system_catalog().failure_rates.values())
    cal = [r for r in rows if r.use == "calibration"]
    assert "llama3-405b" not in {r.id for r in cal}
    rate = R.calibrated_rate_per_gpu_hour([r.interruptions for r in cal], [r.n_gpus * r.window_hours for r in cal])
    rates = R.split_failure_rate(rate, 0.587, 8)
    held = next(r for r in rows if r.id == "llama3-405b")
    mtbi = R.job_mtbi_s(held.n_gpus, held.n_gpus // held.gpus_per_node, rates)
    predicted = R.expected_interruptions(held.window_hours * SECONDS_PER_HOUR, mtbi)
    assert predicted == pytest.approx(held.interruptions, rel=0.25)
    # The search uses the same default: the Llama 3 layout's MTBI in evaluate() agrees.
    sc = optimizer.load_scenario("llama31-405b-pretrain")
    ev = optimizer.evaluate(sc, LLAMA3)
    assert ev.figures["job_mtbi_s"] == pytest.approx(mtbi, rel=2e-3)


def test_llama3_layout_goodput_at_the_published_interruption_rate():
    # At Llama 3's own rate (419 in 54 days, 2 TB/s Tectonic, blocking writes) the paper reports
    # 'higher than 90% effective training time'. Measured: 0.892 - about a point low, because the
    # default restart (10 min detect + 5 min reschedule + 2 min warm-up, reliability.py) loses
    # ~1,150 s per interruption while > 90% at 419 interruptions needs < 1,113 s. The bound
    # below would catch a model that loses twice that.
    per_gpu_hour = 419 / (16384 * 54 * 24)
    sc = optimizer.load_scenario("llama31-405b-pretrain").with_overrides({
        "system.storage_tier": "meta-tectonic-llama3", "system.failure_rate_per_gpu_hour": per_gpu_hour,
        "system.failure_rate_per_node_hour": 0.0})
    f = optimizer.evaluate(sc, LLAMA3).figures
    assert f["job_mtbi_s"] == pytest.approx(54 * 86400 / 419)
    assert 0.88 < f["goodput"] < 0.97
    lost = (1 - f["goodput"]) * f["wall_clock_days"] * 86400 / f["expected_interruptions"]
    assert lost == pytest.approx(1113, rel=0.1)
    # 5.68 TB at 2 TB/s sustained: 2.84 s per blocking checkpoint
    assert f["checkpoint_write_s"] == pytest.approx(f["checkpoint_bytes"] / 2e12)


def test_checkpoint_bytes_are_the_zero_paper_states_without_gradients():
    # ZeRO (Rajbhandari et al. 2020, Sec. 3.1): 2 bytes of bf16 weights + K = 12 bytes of fp32
    # master weights and Adam moments per parameter -> 14 bytes/param in a checkpoint.
    sc = optimizer.load_scenario("llama31-405b-pretrain")
    f = optimizer.evaluate(sc, LLAMA3).figures
    n = 405_853_388_800       # Llama 3.1 405B parameters (count_params, tests/test_params.py)
    assert f["checkpoint_bytes"] == pytest.approx(14 * n)


# --------------------------------------------------------------------------- in the search

def _small(overrides=None):
    sc = optimizer.load_scenario("llama3-8b-pretrain").with_overrides({
        "search.tp": [1, 2], "search.pp": [1], "search.micro_batch": [1], "search.zero": [1],
        "search.precision": ["bf16"], "search.recompute": ["none"], "constraints.gpus": ["H100-SXM5-80GB"],
        "system.storage_tier": "fsx-lustre-p2-125", **(overrides or {})})
    gpus, _ = gpu_options(sc, load_catalog())
    cols = enumerate_layouts(sc.spec(), sc, gpus, gpu_count_limits=False)
    cols.update(estimate_rows(sc.spec(), sc, gpus, cols))
    return sc, gpus, cols


SMALL = _small()


def _wall(sc, gpus, cols, overrides):
    return price_rows(sc.with_overrides(overrides), gpus, cols)


@settings(max_examples=25, deadline=None)
@given(st.floats(0.0, 20.0), st.floats(1.01, 10.0))
def test_more_failures_never_shorten_wall_clock(scale, k):
    sc, gpus, cols = SMALL
    a = _wall(sc, gpus, cols, {"system.failure_rate_scale": scale})
    b = _wall(sc, gpus, cols, {"system.failure_rate_scale": scale * k + 1e-3})
    assert np.all(b["wall_clock_days"] >= a["wall_clock_days"] * (1 - 1e-12))
    assert np.all(a["wall_clock_days"] >= a["train_days"] * (1 - 1e-12))


@settings(max_examples=25, deadline=None)
@given(st.floats(0.1, 500.0), st.floats(1.01, 50.0), st.sampled_from(["blocking", "async"]))
def test_faster_storage_never_lowers_goodput(gb_per_s, k, mode):
    sc, gpus, cols = SMALL
    a = _wall(sc, gpus, cols, {"system.storage_write_gb_per_s": gb_per_s, "system.checkpoint": mode})
    b = _wall(sc, gpus, cols, {"system.storage_write_gb_per_s": gb_per_s * k, "system.checkpoint": mode})
    assert np.all(b["goodput"] >= a["goodput"] - 1e-12)
    assert np.all((a["goodput"] > 0) & (a["goodput"] <= 1))


def test_larger_cluster_pays_for_its_failure_rate():
    sc, gpus, cols = SMALL
    out = _wall(sc, gpus, cols, {})
    order = np.argsort(cols["n_gpus"], kind="stable")
    mtbi = out["job_mtbi_s"][order]
    assert np.all(np.diff(mtbi) <= 0)                          # more GPUs, shorter MTBI
    big, small = order[-1], order[0]
    assert out["goodput"][big] < out["goodput"][small]


def test_solve_rows_carry_the_system_columns_and_breakdown():
    sc = optimizer.load_scenario("storage-bound-70b")
    res = optimizer.solve(sc, top_k=2)
    t = res.table
    for k in SYSTEM_COLUMNS:
        assert k in t.cols and np.all(np.isfinite(t.cols[k][res.table.feasible]))
    assert "host_memory" in LIMIT_FAMILIES
    best = res.configs.iloc[0]
    cfg = {k: (v.item() if hasattr(v, "item") else v) for k, v in best[list(optimizer.search.train.table.CONFIG_KEYS)].items()}
    ev = optimizer.evaluate(sc, cfg)
    f = ev.figures
    assert f["wall_clock_days"] == pytest.approx(f["train_days"] / f["goodput"])
    assert f["expected_interruptions"] == pytest.approx(f["wall_clock_days"] * 86400 / f["job_mtbi_s"])
    g = next(o for o in gpu_options(sc, load_catalog())[0] if o.name == cfg["gpu"])
    b = system_breakdown(sc.spec(), sc, g, f)
    json.dumps(b)                                               # JSON-ready
    assert set(b) >= {"storage", "hosts", "fabric", "tco"}
    assert b["storage"]["tier"] == "fsx-lustre-p2-125"
    assert b["storage"]["checkpoint_write_s"] == pytest.approx(f["checkpoint_write_s"])
    assert b["reliability"]["goodput"] == pytest.approx(f["goodput"])
    assert b["hosts"]["n_nodes"] == f["n_nodes"] and b["fabric"]["links_node_leaf"] == f["n_nodes"] * 8
    st_ = b["storage"]
    assert st_["capacity_bytes"] == pytest.approx(st_["dataset_bytes"] + 4 * st_["checkpoint_bytes"])
    tco = b["tco"]["capex_usd"]
    assert tco["total"] == pytest.approx(tco["gpus"] + tco["servers"] + tco["fabric"] + tco["storage"])


def test_failures_and_storage_change_the_best_plan():
    # scenarios/storage-bound-70b.yaml: blocking checkpoints to FSx Persistent-125, 22-day deadline.
    # Measured (refitted step-time model): best 512 B200 (TP2 PP8 DP32, 16.1 days wall clock, $1.09M,
    # goodput 0.91); failure-free it would be 320 B200 (TP2 PP10 DP16, 21.4 days, $0.91M), and that is
    # also the best with a fast tier (S3, 21.5 days); with failures and the slow tier (17-minute
    # blocking checkpoints) that plan takes 23.0 days and misses the deadline.
    keys = list(optimizer.search.train.table.CONFIG_KEYS)
    sc = optimizer.load_scenario("storage-bound-70b")
    best = optimizer.solve(sc, top_k=1).configs.iloc[0][keys].to_dict()
    free = optimizer.solve(sc.with_overrides({"system.failure_rate_scale": 0}), top_k=1).configs.iloc[0][keys].to_dict()
    fast = optimizer.solve(sc.with_overrides({"system.storage_tier": "s3-standard"}), top_k=1).configs.iloc[0][keys].to_dict()
    assert best != free and best != fast
    # the failure-free plan, priced with failures and the slow tier, breaks a limit or costs more
    ev_best, ev_free = optimizer.evaluate(sc, best), optimizer.evaluate(sc, free)
    assert ev_free.figures["goodput"] < 1.0 and ev_free.wall_clock_days > ev_free.train_days
    assert (not ev_free.feasible and any(v.startswith("deadline") for v in ev_free.violations)) \
        or ev_free.cost_usd > ev_best.cost_usd


def test_host_memory_infeasibility_is_explained():
    # ZeRO-Offload of Llama-3-8B with ZeRO-0 on 8 GPUs: each rank holds 14 B x 8.03e9 params =
    # 112 GB of host state, 900 GB per node; with 60% of the 2 TiB kept free the node has 880 GB.
    over = {"system.offload_optimizer": True, "system.host_memory_headroom": 0.6,
            "search.zero": [0], "search.tp": [1], "search.pp": [1], "search.n_gpus": [8],
            "constraints.gpus": ["H100-SXM5-80GB"]}
    sc = optimizer.load_scenario("llama3-8b-pretrain").with_overrides(over)
    cfg = dict(gpu="H100-SXM5-80GB", n_gpus=8, tp=1, pp=1, dp=8, cp=1, ep=1, zero=0, precision="bf16",
               micro_batch=1, recompute="full", sequence_parallel=False)
    ev = optimizer.evaluate(sc, cfg)
    lines = [v for v in ev.violations if v.startswith("host_memory:")]
    assert not ev.feasible and len(lines) == 1
    assert "dgx-h100" in lines[0] and "offload" in lines[0] and "ZeRO-Offload" in lines[0]
    assert ev.figures["host_memory_bytes"] > ev.figures["host_memory_capacity_bytes"]
    res = optimizer.solve(sc, top_k=1)
    assert res.status == "infeasible"
    assert any("host memory" in line for line in res.explanation["lines"])
    # without offload the same layout needs no host-RAM relief
    ok = optimizer.evaluate(sc.with_overrides({"system.offload_optimizer": False}), cfg)
    assert not [v for v in ok.violations if v.startswith("host_memory")]


def test_owned_rows_pay_for_the_whole_system():
    sc = optimizer.load_scenario("owned-cluster-tco")
    sc1 = sc.with_overrides({"search.n_gpus": [2048], "constraints.gpus": ["H100-SXM5-80GB"]})
    res = optimizer.solve(sc1, top_k=1)
    row = res.configs.iloc[0]
    g = next(o for o in gpu_options(sc1, load_catalog())[0] if o.name == "H100-SXM5-80GB")
    # the row's rate = the GPU-only owned rate + servers, fabric and storage
    assert row.usd_per_gpu_hour > g.usd_per_gpu_hour
    assert row.cost_usd == pytest.approx(row.n_gpus * row.usd_per_gpu_hour * row.wall_clock_days * 24, rel=1e-9)
