"""Issue 17: refresh offers from a local copy of SkyPilot's vms.csv files, without the network."""

from pathlib import Path

import pytest

from optimizer.catalog import load_catalog
from optimizer.catalog_refresh import offers_csv, refresh_offers, skypilot_offers
from optimizer.errors import ClusteroptError

SNAP = Path(__file__).parent / "data" / "skypilot_catalog"


def _by_key(offers):
    return {(o.provider, o.instance_type, o.region): o for o in offers}


def test_snapshot_rows_become_offers():
    offers, rep = skypilot_offers(SNAP, as_of="2026-12-01", catalog=load_catalog())
    got = _by_key(offers)
    p5 = got[("AWS", "p5.48xlarge", "us-east-1")]
    # spot = least over the region's zones (21.50 and 20.9934); on-demand as listed
    assert (p5.on_demand_usd_per_hour, p5.spot_usd_per_hour) == (55.04, 20.9934)
    # what SkyPilot cannot say is kept from the packaged p5 row: a cluster with a 400 Gbit/s fabric
    assert (p5.interconnect, p5.fabric_gbit_per_s_per_gpu, p5.max_gpus) == ("cluster", 400, 20000)
    assert p5.as_of == "2026-12-01" and "aws/vms.csv" in p5.source
    assert got[("AWS", "p5.48xlarge", "eu-north-1")].on_demand_usd_per_hour == 63.10     # a new region
    # GCP: host row + accelerator-only row of the same GPU, count and region (by hand: 5.91582 + 23.47126)
    a2 = got[("GCP", "a2-highgpu-8g", "us-central1")]
    assert a2.on_demand_usd_per_hour == pytest.approx(29.38708) and a2.spot_usd_per_hour == pytest.approx(11.54364)
    assert a2.gpu == "A100-SXM4-40GB"              # SkyPilot's 'A100' is the 40 GB card
    assert got[("AWS", "g6.xlarge", "us-east-1")].interconnect == "single_gpu"
    assert rep["skipped_accelerators"] == {"XYZ-9000": 1}
    assert ("AWS", "m5.large", "us-east-1") not in got            # no accelerator


def test_refresh_merges_and_round_trips(tmp_path):
    offers, rep = refresh_offers(SNAP, as_of="2026-12-01", catalog=load_catalog())
    assert rep["replaced"] >= 3 and rep["added"] >= 1
    assert rep["total"] == len(load_catalog().offers()) + rep["added"]
    path = tmp_path / "offers_refreshed.csv"
    path.write_text(offers_csv(offers))
    cat = load_catalog([path])                                   # the written file is a valid offers file
    neb = [o for o in cat.offers("H200", "Nebius") if o.region == "eu-north1"][0]
    assert neb.on_demand_usd_per_hour == 27.00 and neb.interconnect == "cluster" and neb.as_of == "2026-12-01"


def test_refresh_errors():
    with pytest.raises(ClusteroptError, match="folder not found"):
        skypilot_offers(SNAP / "nope", as_of="2026-12-01", catalog=load_catalog())
    with pytest.raises(ClusteroptError, match="not a date"):
        skypilot_offers(SNAP, as_of="yesterday", catalog=load_catalog())


def test_refresh_command(tmp_path):
    from typer.testing import CliRunner

    from optimizer.cli import app

    out = tmp_path / "o.csv"
    res = CliRunner().invoke(app, ["refresh-offers", "--skypilot", str(SNAP), "--out", str(out), "--as-of", "2026-12-01"])
    assert res.exit_code == 0, res.output
    assert "p5.48xlarge" in out.read_text()
