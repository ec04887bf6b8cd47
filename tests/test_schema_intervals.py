"""`clusteropt schema result` documents every interval key and the calibration a solve applied,
and `clusteropt schema calibration` every key of `clusteropt calibrate --json` (issue 15): the keys
are taken from real output, so a key added to the output without a description fails here."""

from __future__ import annotations

import csv
import importlib.util
import json
import sys
from pathlib import Path

import pytest
import yaml

from optimizer.cli import main
from optimizer.schema import json_schema, property_rows, validate

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("validate_memory", ROOT / "benchmarks" / "validate_memory.py")
vm = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = vm
_spec.loader.exec_module(vm)

INTERVAL_KEYS = ("tokens_per_s_p10", "tokens_per_s_p90", "train_days_p10", "train_days_p90",
                 "wall_clock_days_p10", "wall_clock_days_p90", "cost_usd_p10", "cost_usd_p90")


def run(capsys, *argv):
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return e.value.code, out, err


def key_paths(doc) -> set[str]:
    """Dotted paths of every key of a JSON document (list items as 'path[]')."""
    out: set[str] = set()

    def walk(x, p):
        if isinstance(x, dict):
            for k, v in x.items():
                q = f"{p}.{k}" if p else k
                out.add(q)
                walk(v, q)
        elif isinstance(x, list):
            for v in x:
                walk(v, p + "[]")

    walk(doc, "")
    return out


def documented(kind: str) -> dict[str, str]:
    return {p: d for p, _, d in property_rows(json_schema(kind))}


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    """A profile fitted on six torchtitan runs, its calibrate --json document, and a solve of a
    shipped scenario with that profile and constraints.confidence 0.9."""
    tmp = tmp_path_factory.mktemp("cal")
    rows = [r for _, r in vm.published_rows()[0] if r["source"].startswith("torchtitan") and r.get("tokens_per_sec")][:6]
    with open(tmp / "runs.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for r in rows for k in r)))
        w.writeheader()
        w.writerows(rows)
    with pytest.raises(SystemExit) as e:
        main(["calibrate", str(tmp / "runs.csv"), "--out", str(tmp / "p.yaml"), "--json"])
    assert e.value.code == 0
    return tmp


def test_calibrate_json_is_documented_key_by_key(calibrated, capsys):
    code, out, err = run(capsys, "calibrate", calibrated / "runs.csv", "--out", calibrated / "q.yaml", "--json")
    assert code == 0 and err == ""
    doc = json.loads(out)
    validate("calibration", doc)
    docs = documented("calibration")
    assert key_paths(doc) - set(docs) == set()
    assert all(docs[p].strip() for p in key_paths(doc))


def test_solve_with_calibration_and_confidence_documents_its_interval_and_calibration_keys(calibrated, capsys):
    sc = yaml.safe_load((ROOT / "scenarios" / "llama3-8b-pretrain.yaml").read_text())
    sc["calibration"] = str(calibrated / "p.yaml")
    sc.setdefault("constraints", {})["confidence"] = 0.9
    (calibrated / "s.yaml").write_text(yaml.safe_dump(sc))
    code, out, err = run(capsys, "solve", calibrated / "s.yaml", "--json")
    assert code == 0
    doc = json.loads(out)
    validate("result", doc)
    docs = documented("result")
    got = key_paths(doc)
    # every interval key, in the ranked rows and on the Pareto front, with its meaning
    for where in ("configs[]", "pareto[]"):
        for k in INTERVAL_KEYS:
            assert f"{where}.{k}" in got, f"{where}.{k} not emitted"
            assert "80% interval" in docs[f"{where}.{k}"], f"{where}.{k}: {docs.get(f'{where}.{k}')!r}"
        assert docs[f"{where}.interval_regime"]
    assert {r["interval_regime"] for r in doc["configs"]} == {"calibrated"}
    # the applied profile, every key documented
    profile = yaml.safe_load((calibrated / "p.yaml").read_text())
    assert doc["calibration"]["compute_scale"] == pytest.approx(profile["compute_scale"])
    assert doc["calibration"]["path"] == str(calibrated / "p.yaml")
    related = {p for p in got if p.startswith("calibration") or any(s in p.rsplit(".", 1)[-1]
                                                                    for s in ("_p10", "_p90", "interval_regime"))}
    assert related - set(docs) == set()


def test_solve_without_calibration_has_no_calibration_key(capsys):
    code, out, _ = run(capsys, "solve", ROOT / "scenarios" / "llama3-8b-pretrain.yaml", "--json")
    assert code == 0
    doc = json.loads(out)
    assert "calibration" not in doc
    assert {r["interval_regime"] for r in doc["configs"]} != {"calibrated"}
