"""The catalog the caller passes is the catalog every layer uses (issue 18).

A GPU that exists only in a user's ``--catalog`` file (an accelerator row plus an offer row, in
the packaged files' columns, README 'Catalog') must be planned like any packaged GPU: before the
fix, ``clusteropt catalog --catalog extra.csv`` listed it and ``clusteropt solve --catalog
extra.csv`` rejected it as unknown, because seven calls below the API loaded the default catalog.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

import optimizer
from optimizer.catalog import data_dir, load_catalog
from optimizer.cli import main

NEW_GPU = "ACME-X1-96GB"


def _rows(name: str) -> tuple[list[str], list[dict]]:
    with open(Path(data_dir()) / name, encoding="utf-8") as fh:
        r = csv.DictReader(fh)
        return list(r.fieldnames), list(r)


def _write(path: Path, header: list[str], rows: list[dict]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=header)
        w.writeheader()
        w.writerows(rows)
    return path


@pytest.fixture(scope="module")
def extra(tmp_path_factory) -> tuple[Path, Path]:
    """An H100-like accelerator under a new id (more memory, a different price) and its offer."""
    d = tmp_path_factory.mktemp("catalog")
    header, accs = _rows("accelerators.csv")
    base = next(a for a in accs if a["id"] == "H100-SXM5-80GB")
    acc = dict(base, id=NEW_GPU, aliases="acme-x1", memory_gib="96", purchase_usd="",
               source="test row (issue 18): an accelerator only a user's catalog has", as_of="2026-12-07")
    oheader, offers = _rows("offers.csv")
    off = dict(next(o for o in offers if o["gpu"] == "H100-SXM5-80GB" and o["gpus_per_instance"] == "8"),
               provider="ACME Cloud", instance_type="acme.x1.8", gpu=NEW_GPU, on_demand_usd_per_hour="16.0",
               spot_usd_per_hour="", reserved_usd_per_hour="", region="test-1",
               source="test row (issue 18)", as_of="2026-12-07")
    return _write(d / "extra.csv", header, [acc]), _write(d / "extra_offers.csv", oheader, [off])


@pytest.fixture(scope="module")
def scenario_file(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("scenario")
    doc = {"name": "user-gpu", "model": "llama-3-8b",
           "train": {"tokens": 2e11, "seq_len": 4096, "global_batch": 256},
           "constraints": {"gpus": [NEW_GPU], "max_gpus": 64},
           "search": {"tp": [1, 2], "pp": [1], "micro_batch": [1, 2], "zero": [1], "recompute": ["selective"]},
           "top_k": 2}
    path = d / "user-gpu.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_the_default_catalog_does_not_know_the_gpu():
    with pytest.raises(optimizer.ClusteroptError):
        load_catalog().resolve_gpu_id(NEW_GPU)


def test_solve_plans_on_a_gpu_only_the_user_catalog_has(extra, scenario_file, capsys):
    code = None
    try:
        main(["solve", str(scenario_file), "--format", "json", "--time-limit", "20",
              "--catalog", str(extra[0]), "--catalog", str(extra[1])])
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    assert code == 0, err
    doc = json.loads(out)
    assert doc["status"] == "optimal"
    assert {c["gpu"] for c in doc["configs"]} == {NEW_GPU}
    best = doc["configs"][0]
    assert best["offer"].startswith("ACME Cloud acme.x1.8")          # label adds '(region, mode)' (issue 17)
    assert (best["provider"], best["instance_type"], best["region"]) == ("ACME Cloud", "acme.x1.8", "test-1")
    assert best["usd_per_gpu_hour"] == pytest.approx(16.0 / 8)
    assert best["memory_capacity_bytes"] == 96 * 2**30          # the user's row, not the H100's 80 GiB


def test_api_evaluate_and_sensitivity_use_the_callers_catalog(extra, scenario_file):
    cat = load_catalog([str(p) for p in extra])
    res = optimizer.solve(scenario_file, catalog=cat, time_limit_s=20)
    cfg = {k: res.configs.iloc[0][k] for k in ("gpu", "n_gpus", "tp", "pp", "dp", "cp", "ep", "zero", "precision",
                                               "micro_batch", "recompute", "sequence_parallel")}
    ev = optimizer.evaluate(scenario_file, cfg, catalog=cat)
    assert ev.feasible and ev.cost_usd == pytest.approx(float(res.configs.iloc[0]["cost_usd"]), rel=1e-9)
    sens = optimizer.sensitivity(res, scenario_file, swing_pct=10, range_pct=20)
    assert any(t["input"] == f"price.{NEW_GPU}" for t in sens["thresholds"])
    with pytest.raises(optimizer.ClusteroptError, match=NEW_GPU):
        optimizer.evaluate(scenario_file, cfg)                   # the default catalog has no such GPU
