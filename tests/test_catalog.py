"""Catalog tests (issue 3): datasheet figures, unit conversion, lookup, user files, offers.

Reference rows live in tests/data/catalog_reference_specs.csv with their datasheet source and
why the expected value is the right one (dense, not the sparse figure printed beside it).
"""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from optimizer.catalog import Accelerator, Catalog, Offer, data_dir, load_catalog
from optimizer.errors import ClusteroptError
from optimizer.units import GB, GIB, GIGABIT, TB, TERA

DATA = Path(__file__).parent / "data"
REFERENCE = list(csv.DictReader(open(DATA / "catalog_reference_specs.csv", encoding="utf-8")))


@pytest.fixture(scope="module")
def cat() -> Catalog:
    return load_catalog()


def _packaged_rows(name: str) -> tuple[list[str], list[dict]]:
    with open(data_dir() / name, encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        return list(reader.fieldnames or []), list(reader)


# --- every row validates; coverage the issue requires ----------------------------------

ISSUE_3_AND_9_IDS = [
    "V100-SXM2-32GB", "A10G", "L4", "L40S", "A100-SXM4-40GB", "A100-SXM4-80GB", "A100-PCIe-80GB",
    "H100-SXM5-80GB", "H100-PCIe-80GB", "H100-NVL-94GB", "H200-SXM-141GB", "B200-SXM-180GB", "RTX-4090",
    "MI250X", "MI300X", "MI325X", "Gaudi3", "TPU-v5e", "TPU-v5p",
    "T4", "RTX-A6000", "RTX-6000-Ada", "Jetson-AGX-Orin-64GB",
    "A10", "GH200-96GB",                      # issue 19: SkyPilot/nvidia-smi names A10 and GH200
]


def test_every_packaged_row_validates(cat):
    _, acc_rows = _packaged_rows("accelerators.csv")
    _, off_rows = _packaged_rows("offers.csv")
    assert len(cat.accelerators) == len(acc_rows)
    assert len(cat.offers()) == len(off_rows)
    assert sorted(a.id for a in cat.accelerators) == sorted(ISSUE_3_AND_9_IDS)


# Issue 3: each GPU used for datacenter training needs at least one offer to rent.
TRAINING_GPUS = ["V100-SXM2-32GB", "A100-SXM4-40GB", "A100-SXM4-80GB", "H100-SXM5-80GB", "H200-SXM-141GB",
                 "B200-SXM-180GB", "L4", "L40S", "A10G", "MI300X"]


@pytest.mark.parametrize("gpu", TRAINING_GPUS)
def test_training_gpus_have_an_on_demand_offer(cat, gpu):
    assert cat.cheapest_offer(gpu, "on_demand") is not None


def test_offer_prices_are_ordered(cat):
    # Spot and 1-year reserved are discounts on on-demand; a row breaking that is a transcription error.
    for o in cat.offers():
        if o.on_demand_usd_per_hour is None:
            continue
        for cheaper in (o.spot_usd_per_hour, o.reserved_usd_per_hour):
            assert cheaper is None or cheaper < o.on_demand_usd_per_hour, (o.provider, o.instance_type)


def test_jetson_memory_is_flagged_as_shared_with_the_os(cat):
    # Issue 9: the Orin's 64 GB LPDDR5 is shared with the CPU and OS.
    assert cat.accelerator("Jetson-AGX-Orin-64GB").memory_shared_with_host is True
    assert [a.id for a in cat.accelerators if a.memory_shared_with_host] == ["Jetson-AGX-Orin-64GB"]


def test_every_row_cites_a_source_and_date():
    for name in ("accelerators.csv", "offers.csv"):
        _, rows = _packaged_rows(name)
        for i, row in enumerate(rows, start=2):
            assert row["source"].strip() and row["as_of"].strip(), f"{name}:row {i}"


# --- datasheet figures: dense, not sparse ------------------------------------------------

@pytest.mark.parametrize("ref", REFERENCE, ids=lambda r: f"{r['gpu']}.{r['field']}")
def test_reference_figures(cat, ref):
    assert getattr(cat.accelerator(ref["gpu"]), ref["field"]) == pytest.approx(float(ref["expected"]))


# NVIDIA tensor cores from Ampere on double the rate at each halving of operand width:
# TF32 = BF16/2 and (Hopper, Ada, Blackwell) FP8 = 2 x BF16. A row mixing a sparse and a dense
# figure breaks these ratios; datasheets print both, so this is the mix-up most likely to slip in.
NVIDIA_TENSOR = ["A100-SXM4-40GB", "A100-SXM4-80GB", "A100-PCIe-80GB", "H100-SXM5-80GB", "H100-PCIe-80GB",
                 "H100-NVL-94GB", "H200-SXM-141GB", "L4", "L40S", "RTX-6000-Ada", "RTX-A6000", "Jetson-AGX-Orin-64GB"]


@pytest.mark.parametrize("gpu", NVIDIA_TENSOR)
def test_nvidia_tensor_rate_ratios(cat, gpu):
    a = cat.accelerator(gpu)
    assert a.tf32_tflops == pytest.approx(a.bf16_tflops / 2, rel=0.02)
    if a.fp8_tflops is not None:
        assert a.fp8_tflops == pytest.approx(2 * a.bf16_tflops, rel=0.02)
    assert a.int8_tops == pytest.approx(2 * a.bf16_tflops, rel=0.02)


def test_tensor_rate_exceeds_vector_fp32(cat):
    for a in cat.accelerators:
        if a.fp32_tflops is not None:
            assert a.bf16_tflops > a.fp32_tflops, a.id


# --- unit conversion (once, at load) -----------------------------------------------------

def test_hardware_conversion_h100(cat):
    hw = cat.hardware("h100")
    # 80 GiB = 80 * 2**30 = 85,899,345,920 bytes (85.9 GB), not 80e9.
    assert hw.memory_bytes == 80 * GIB == 85_899_345_920
    assert hw.memory_bytes / GB == pytest.approx(85.9, abs=0.05)
    assert hw.hbm_bytes_per_s == pytest.approx(3.35 * TB)
    assert hw.bf16_flop_per_s == pytest.approx(989.4 * TERA)
    assert hw.peak_flop_per_s("fp8") == pytest.approx(1978.9 * TERA)
    assert hw.intra_node_bytes_per_s == pytest.approx(450 * GB)
    assert hw.inter_node_bytes_per_s == pytest.approx(400 * GIGABIT) == pytest.approx(50e9)
    assert (hw.intra_node_domain, hw.gpus_per_node, hw.tdp_w) == (8, 8, 700)


@pytest.mark.parametrize("gpu, gib", [("H200-SXM-141GB", 141), ("B200-SXM-180GB", 180), ("MI300X", 192),
                                      ("H100-NVL-94GB", 94), ("TPU-v5p", 95)])
def test_memory_bytes_are_binary(cat, gpu, gib):
    assert cat.hardware(gpu).memory_bytes == gib * GIB


def test_device_without_fp8_falls_back_to_bf16(cat):
    # A100 has no FP8 units: an fp8 layout runs its matmuls in bf16.
    hw = cat.hardware("A100-SXM4-80GB")
    assert hw.fp8_flop_per_s == 0
    assert hw.peak_flop_per_s("fp8") == hw.bf16_flop_per_s


# --- names: ids, aliases, did-you-mean ---------------------------------------------------

@pytest.mark.parametrize("name, expected", [
    ("h100", "H100-SXM5-80GB"), ("H100", "H100-SXM5-80GB"), ("h100 sxm5 80gb", "H100-SXM5-80GB"),
    ("a100", "A100-SXM4-40GB"), ("h200", "H200-SXM-141GB"), ("b200", "B200-SXM-180GB"),
    ("mi300x", "MI300X"), ("MI325X", "MI325X"), ("v5e", "TPU-v5e"), ("4090", "RTX-4090"),
    # gpu_type spellings used in shared/validation/training_runs_public.csv and serving_public.csv
    ("A100-SXM-80GB", "A100-SXM4-80GB"), ("A100-SXM-40GB", "A100-SXM4-40GB"),
    ("H100-SXM-80GB", "H100-SXM5-80GB"), ("h200-sxm-141gb", "H200-SXM-141GB"),
])
def test_aliases(cat, name, expected):
    assert cat.resolve_gpu_id(name) == expected
    assert cat.hardware(name).name == expected


# Issue 19: the names other tools print. SkyPilot accelerator names (sky show-gpus; 'A100' is
# the 40 GB card there, 'A100-80GB' the 80 GB one) with an optional ':COUNT', and nvidia-smi /
# rocm-smi product names ('nvidia-smi --query-gpu=name').
@pytest.mark.parametrize("name, expected", [
    ("H100:8", "H100-SXM5-80GB"), ("H100", "H100-SXM5-80GB"), ("A100", "A100-SXM4-40GB"),
    ("A100:8", "A100-SXM4-40GB"), ("A100-80GB", "A100-SXM4-80GB"), ("A100-80GB:4", "A100-SXM4-80GB"),
    ("H200:8", "H200-SXM-141GB"), ("L4:1", "L4"), ("A10G:4", "A10G"), ("A10", "A10"), ("A10:1", "A10"),
    ("GH200", "GH200-96GB"), ("T4", "T4"), ("V100-32GB", "V100-SXM2-32GB"), ("MI300X:8", "MI300X"),
    ("NVIDIA H100 80GB HBM3", "H100-SXM5-80GB"), ("NVIDIA H100 PCIe", "H100-PCIe-80GB"),
    ("NVIDIA H100 NVL", "H100-NVL-94GB"), ("NVIDIA A100-SXM4-80GB", "A100-SXM4-80GB"),
    ("NVIDIA A100-SXM4-40GB", "A100-SXM4-40GB"), ("NVIDIA A100 80GB PCIe", "A100-PCIe-80GB"),
    ("NVIDIA H200", "H200-SXM-141GB"), ("NVIDIA B200", "B200-SXM-180GB"), ("NVIDIA A10G", "A10G"),
    ("NVIDIA A10", "A10"), ("NVIDIA L4", "L4"), ("NVIDIA L40S", "L40S"), ("Tesla T4", "T4"),
    ("Tesla V100-SXM2-32GB", "V100-SXM2-32GB"), ("NVIDIA GeForce RTX 4090", "RTX-4090"),
    ("NVIDIA RTX A6000", "RTX-A6000"), ("NVIDIA RTX 6000 Ada Generation", "RTX-6000-Ada"),
    ("NVIDIA GH200 480GB", "GH200-96GB"), ("AMD Instinct MI300X", "MI300X"),
])
def test_skypilot_and_nvidia_smi_names(cat, name, expected):
    assert cat.resolve_gpu_id(name) == expected


def test_ambiguous_names_carry_a_note(cat):
    notes = cat.name_notes("A100")
    assert len(notes) == 1 and "40 GB" in notes[0] and "A100-80GB" in notes[0]
    assert cat.name_notes("A100-80GB") == [] and cat.name_notes("H100") == []
    assert any("count" in n for n in cat.name_notes("H100:8"))


@pytest.mark.parametrize("name", ["H100:0", "H100:x", "H100:"])
def test_bad_count_suffix_is_an_error(cat, name):
    with pytest.raises(ClusteroptError, match="count after ':'"):
        cat.resolve_gpu_id(name)


def test_unknown_vendor_prefixed_name_still_suggests(cat):
    with pytest.raises(ClusteroptError, match="did you mean"):
        cat.resolve_gpu_id("NVIDIA H300 80GB")


def test_unknown_gpu_suggests_the_closest(cat):
    with pytest.raises(ClusteroptError) as exc:
        cat.accelerator("H100-SXM6", field="constraints.gpus[1]")
    msg = str(exc.value)
    assert msg.startswith("constraints.gpus[1]: unknown GPU 'H100-SXM6'; did you mean 'H100-SXM5-80GB'")
    assert "\n" not in msg


def test_unknown_provider_and_mode(cat):
    with pytest.raises(ClusteroptError, match="did you mean 'Lambda'"):
        cat.offers("h100", provider="lamda")
    with pytest.raises(ClusteroptError, match="allowed: on_demand, spot, reserved"):
        cat.cheapest_offer("h100", "preemptible")


# --- user files: add and override, errors name file/row/field ---------------------------

def _write_csv(path: Path, header: list[str], rows: list[dict]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=header, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    return path


def test_user_file_overrides_a_row_and_adds_one(tmp_path, cat):
    header, rows = _packaged_rows("accelerators.csv")
    h100 = next(r for r in rows if r["id"] == "H100-SXM5-80GB")
    changed = dict(h100, memory_gib="96", purchase_usd="21000")
    added = dict(h100, id="H20-96GB", aliases="h20", bf16_tflops="148", fp8_tflops="296", tf32_tflops="74")
    user = _write_csv(tmp_path / "my_gpus.csv", header, [changed, added])
    mine = load_catalog([user])
    assert mine.accelerator("h100").memory_gib == 96
    assert mine.hardware("h100").memory_bytes == 96 * GIB
    assert mine.accelerator("h20").bf16_tflops == 148
    assert len(mine.accelerators) == len(cat.accelerators) + 1
    # the packaged catalog (cached) is untouched
    assert load_catalog().accelerator("h100").memory_gib == 80


def test_user_offer_file_overrides_by_provider_instance_region(tmp_path):
    header, rows = _packaged_rows("offers.csv")
    p5 = next(r for r in rows if r["instance_type"] == "p5.48xlarge")
    user = _write_csv(tmp_path / "quotes.csv", header, [dict(p5, on_demand_usd_per_hour="40.0", gpu="h100")])
    mine = load_catalog([user])
    p5s = [o for o in mine.offers("h100", provider="aws") if o.instance_type == "p5.48xlarge"]
    assert len(p5s) == 1 and p5s[0].on_demand_usd_per_hour == 40.0
    assert p5s[0].usd_per_gpu_hour("on_demand") == pytest.approx(5.0)


@pytest.mark.parametrize("field, value, problem", [
    ("memory_gib", "-80", "greater than 0"),
    ("bf16_tflops", "lots", "valid number"),
    ("deployment", "cloud", "'datacenter', 'workstation' or 'edge'"),
    ("sparse_2_4", "", "missing value"),
])
def test_bad_row_names_file_row_and_field(tmp_path, field, value, problem):
    header, rows = _packaged_rows("accelerators.csv")
    bad = [dict(rows[0], id="OK-1", aliases=""), dict(rows[1], id="BAD-2", aliases="", **{field: value})]
    path = _write_csv(tmp_path / "bad.csv", header, bad)
    with pytest.raises(ClusteroptError) as exc:
        load_catalog([path])
    msg = str(exc.value)
    # header is line 1, so the second data row is 'row 3'
    assert msg.startswith(f"bad.csv:row 3.{field}: "), msg
    assert problem in msg and "\n" not in msg


def test_unknown_column_and_unknown_offer_gpu(tmp_path):
    header, rows = _packaged_rows("accelerators.csv")
    path = _write_csv(tmp_path / "typo.csv", header + ["memory_gb"], [dict(rows[0], memory_gb="80")])
    with pytest.raises(ClusteroptError, match=r"^typo.csv:row 1.memory_gb: unknown column"):
        load_catalog([path])
    oheader, orows = _packaged_rows("offers.csv")
    path = _write_csv(tmp_path / "offers_typo.csv", oheader, [dict(orows[0], gpu="H100-SXM6")])
    with pytest.raises(ClusteroptError, match=r"^offers_typo.csv:row 2.gpu: unknown GPU 'H100-SXM6'; did you mean"):
        load_catalog([path])


def test_missing_user_file(tmp_path):
    with pytest.raises(ClusteroptError, match="file not found"):
        load_catalog([tmp_path / "nope.csv"])


# --- cheapest offer ----------------------------------------------------------------------

def test_cheapest_offer_compares_per_gpu_hour():
    # Synthetic offers (tests/data/catalog_test_offers.csv): the 8-GPU instance costs more per
    # hour (24.00) than the 1-GPU one (3.50) but less per GPU-hour (3.00 < 3.50).
    full = load_catalog([DATA / "catalog_test_offers.csv"])
    test_cloud = full.cheapest_offer("h100", "on_demand", provider="TestCloud")
    assert (test_cloud.instance_type, test_cloud.usd_per_gpu_hour("on_demand")) == ("big-8x", 3.0)
    spot = full.cheapest_offer("h100", "spot", provider="testcloud")
    assert (spot.instance_type, spot.usd_per_gpu_hour("spot")) == ("small-1x", 1.5)
    assert full.cheapest_offer("h100", "reserved", provider="OtherCloud") is None


def test_cheapest_offer_tie_break_is_deterministic():
    full = load_catalog([DATA / "catalog_test_offers.csv"])
    synthetic = [o for o in full.offers("h100") if o.source == "synthetic test row"]
    # OtherCloud mid-2x and TestCloud big-8x both cost 3.00 per GPU-hour on demand.
    for order in (synthetic, synthetic[::-1]):
        best = Catalog(full.accelerators, order).cheapest_offer("h100", "on_demand")
        assert (best.provider, best.instance_type) == ("OtherCloud", "mid-2x")


@pytest.mark.parametrize("mode", ["on_demand", "spot", "reserved"])
def test_cheapest_offer_is_the_minimum_over_packaged_offers(cat, mode):
    # Independent recomputation from the raw CSV: price / gpus_per_instance, minimum per GPU.
    _, rows = _packaged_rows("offers.csv")
    for acc in cat.accelerators:
        prices = [float(r[f"{mode}_usd_per_hour"]) / int(r["gpus_per_instance"]) for r in rows
                  if r[f"{mode}_usd_per_hour"] and cat.resolve_gpu_id(r["gpu"]) == acc.id]
        best = cat.cheapest_offer(acc.id, mode)
        if not prices:
            assert best is None
        else:
            assert best.usd_per_gpu_hour(mode) == pytest.approx(min(prices))


# --- records for the CLI, data folder --------------------------------------------------

def test_records_are_plain_data_with_unit_suffixed_keys(cat):
    import json
    recs = cat.to_records()
    json.dumps(recs)  # plain Python scalars only
    h100 = next(r for r in recs["accelerators"] if r["id"] == "H100-SXM5-80GB")
    assert h100["memory_bytes"] == 80 * GIB and h100["bf16_tflops"] == 989.4
    one = cat.accelerator_record("h100")
    assert one["id"] == "H100-SXM5-80GB" and all(o["gpu"] == "H100-SXM5-80GB" for o in one["offers"])
    assert {"on_demand_usd_per_gpu_hour", "spot_usd_per_gpu_hour", "reserved_usd_per_gpu_hour"} <= set(one["offers"][0])


def test_models_are_frozen(cat):
    with pytest.raises(Exception):
        cat.accelerator("h100").memory_gib = 1
    assert isinstance(cat.offers()[0], Offer) and isinstance(cat.accelerators[0], Accelerator)


def test_data_folder_found_from_another_working_directory(tmp_path):
    code = ("from optimizer.catalog import load_catalog; c = load_catalog(); "
            "print(len(c.accelerators), c.resolve_gpu_id('h100'))")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert out.stdout.split() == [str(len(ISSUE_3_AND_9_IDS)), "H100-SXM5-80GB"]


# --- issue 17: what each offer can run, dated and sourced ---------------------------------

def test_every_offer_is_dated_and_sourced():
    # Issue 17: every offer row has the date its price was read (an ISO date) and a source.
    from optimizer.catalog import AS_OF_DATE

    _, rows = _packaged_rows("offers.csv")
    for i, row in enumerate(rows, start=2):
        assert row["source"].strip(), f"offers.csv:row {i} has no source"
        assert AS_OF_DATE.fullmatch(row["as_of"].strip()), f"offers.csv:row {i} as_of {row['as_of']!r} is not a date"


def test_offers_state_what_they_can_run(cat):
    for o in cat.offers():
        assert o.interconnect in ("single_gpu", "node", "cluster")
        if o.interconnect == "cluster":
            assert o.fabric_gbit_per_s_per_gpu > 0 and o.fabric_rails >= 1 and o.fabric_rdma is not None
            # the time model sees the offer's fabric, not the accelerator's reference node
            assert cat.offer_hardware(o).inter_node_bytes_per_s == pytest.approx(o.fabric_gbit_per_s_per_gpu * 1e9 / 8)
        else:
            assert o.contiguous_max_gpus == o.gpus_per_instance
    # the hyperscalers' 8-GPU training instances are cluster offers; the retail pods are not
    p5 = [o for o in cat.offers("H100-SXM5-80GB", "AWS") if o.instance_type == "p5.48xlarge"][0]
    assert (p5.interconnect, p5.fabric_gbit_per_s_per_gpu, p5.max_gpus) == ("cluster", 400, 20000)
    assert all(o.interconnect == "single_gpu" for o in cat.offers(provider="RunPod") if o.gpus_per_instance == 1)
    # non-US regions are priced
    assert {"eu-north1", "eu-west1", "eu-north-1"} <= {o.region for o in cat.offers()}


def test_three_year_commitment_is_cheaper_than_one_year(cat):
    priced = [o for o in cat.offers() if o.reserved_3y_usd_per_hour is not None]
    assert priced, "no 3-year prices in the catalog"
    for o in priced:
        assert o.reserved_3y_usd_per_hour < o.reserved_usd_per_hour < o.on_demand_usd_per_hour, o.instance_type
    assert cat.cheapest_offer("A100-SXM4-80GB", "reserved_1y") == cat.cheapest_offer("A100-SXM4-80GB", "reserved")


@pytest.mark.parametrize("change, message", [
    ({"interconnect": "cluster"}, "states its fabric"),
    ({"interconnect": "single_gpu"}, "1 GPU per instance"),
    ({"interconnect": "nvlink"}, "interconnect"),
    ({"as_of": "skypilot snapshot (undated)"}, "not a date"),
    ({"fabric_gbit_per_s_per_gpu": "100"}, "no multi-node fabric"),
])
def test_offer_rows_are_checked(tmp_path, change, message):
    header, rows = _packaged_rows("offers.csv")
    node = next(r for r in rows if r["interconnect"] == "node")
    path = _write_csv(tmp_path / "offers_bad.csv", header, [dict(node, **change)])
    with pytest.raises(ClusteroptError, match=r"^offers_bad.csv:row 2"):
        load_catalog([path]).offers()
    try:
        load_catalog([path])
    except ClusteroptError as e:
        assert message in str(e)
