"""clusteropt calibrate (issue 15): a profile fitted on a user's runs lowers the error on
other runs of the same cluster and framework; bad rows and self-contradicting profiles get one
clean error line (exit 2)."""

from __future__ import annotations

import csv
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from optimizer.calibration import apply_to_estimate, load_profile, mape_pct
from optimizer.catalog import load_catalog
from optimizer.cli import main
from optimizer.errors import ClusteroptError
from optimizer.formulas.training import estimate_training
from optimizer.runs import run_from_row

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("validate_memory", ROOT / "benchmarks" / "validate_memory.py")
vm = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = vm
_spec.loader.exec_module(vm)


def run(capsys, *argv):
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return e.value.code, out, err


def _source_rows(prefix: str) -> list[dict]:
    # dense runs only: a profile fitted on dense runs is not claimed to carry over to MoE runs
    # (all-to-all and grouped GEMMs; the MoE rows of a source are the step-time model's open regime)
    rows, _ = vm.published_rows()
    return [r for _, r in rows if r["source"].startswith(prefix) and not r.get("model")]


def _write(path: Path, rows: list[dict]) -> Path:
    cols = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        w.writerows(rows)
    return path


@pytest.mark.parametrize("prefix", ["Megatron-Bridge", "NVIDIA NeMo"])
def test_three_runs_of_a_source_lower_the_error_on_its_other_runs(tmp_path, capsys, prefix):
    # the first three published runs of one source (its cluster, framework and container) are
    # the user's measurements; the source's other runs are what the user will run next
    rows = _source_rows(prefix)
    assert len(rows) >= 8
    csv_path = _write(tmp_path / "runs.csv", rows[:3])
    code, out, err = run(capsys, "calibrate", csv_path, "--out", tmp_path / "p.yaml", "--json")
    assert code == 0 and err == ""
    rep = json.loads(out)
    assert rep["error_after_pct"] < rep["error_before_pct"]
    profile = load_profile(tmp_path / "p.yaml")
    cat = load_catalog()
    rest = [run_from_row(r, i, cat) for i, r in enumerate(rows[3:], start=4)]
    ests = [estimate_training(r.spec, r.hw, r.layout, **r.options) for r in rest]
    meas = [r.tokens_per_s_per_gpu * r.layout.n_gpus for r in rest]
    before = mape_pct(meas, [e.tokens_per_s for e in ests])
    after = mape_pct(meas, [apply_to_estimate(e, profile) for e in ests])
    assert after < before
    # and the calibrated interval is narrower than the pooled interval of the uncalibrated model
    from optimizer.catalog import load_step_time_intervals as load_intervals
    from optimizer.formulas.intervals import POOLED

    assert profile.interval.width < load_intervals()[POOLED].width


def test_calibration_narrows_the_estimate_interval(tmp_path, capsys):
    rows = _source_rows("Megatron-Bridge")
    _write(tmp_path / "runs.csv", rows[:3])
    assert run(capsys, "calibrate", tmp_path / "runs.csv", "--out", tmp_path / "p.yaml")[0] == 0
    args = ["estimate", "llama-3-70b", "--gpu", "H100-SXM5-80GB", "--tp", "4", "--pp", "8", "--dp", "2",
            "--interleave", "5", "--precision", "fp8", "--sequence-parallel", "--global-batch", "128",
            "--seq-len", "8192", "--tokens", "1e11", "--json"]
    code, out, _ = run(capsys, *args)
    plain = json.loads(out)["train"]
    code2, out2, _ = run(capsys, *args, "--calibration", tmp_path / "p.yaml")
    cal = json.loads(out2)["train"]
    assert code == code2 == 0
    w = lambda t: np.log(t["train_days_p90"] / t["train_days_p10"])  # noqa: E731
    assert w(cal) < w(plain)
    assert cal["train_days_p10"] <= cal["train_days"] <= cal["train_days_p90"]


def test_held_out_rows_are_reported_with_enough_rows(tmp_path, capsys):
    rows = _source_rows("torchtitan benchmarks/llama3_h100_202412")[:9]
    _write(tmp_path / "runs.csv", rows)
    code, out, _ = run(capsys, "calibrate", tmp_path / "runs.csv", "--out", tmp_path / "p.yaml", "--json")
    rep = json.loads(out)
    assert code == 0
    assert rep["held_out_rows"] == [3, 6, 9]
    assert "held_out_error_after_pct" in rep
    # torchtitan publishes peak memory: a reserve is fitted and the memory error reported
    assert rep["profile"]["n_memory_runs"] == 9
    assert rep["memory_error_after_pct"] <= rep["memory_error_before_pct"] + 1e-9


@pytest.mark.parametrize("edit,field", [
    ({"tp": "3"}, "row 1: n_gpus"),                       # 3 x pp x dp != n_gpus
    ({"micro_batch": "abc"}, "row 1: micro_batch"),
    ({"gpu_type": "H101"}, "row 1: gpu_type"),
    ({"framework": "megatorn"}, "row 1: framework"),
    ({"global_batch": "7"}, "row 1: global_batch"),
])
def test_bad_csv_row_is_one_error_line(tmp_path, capsys, edit, field):
    row = dict(_source_rows("Megatron-Bridge")[0])
    row.update(edit)
    _write(tmp_path / "runs.csv", [row])
    code, out, err = run(capsys, "calibrate", tmp_path / "runs.csv", "--out", tmp_path / "p.yaml")
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("error: ") and field in err


def test_missing_column_and_no_throughput_are_errors(tmp_path, capsys):
    (tmp_path / "a.csv").write_text("model_name,seq_len\nx,8\n")
    code, _, err = run(capsys, "calibrate", tmp_path / "a.csv", "--out", tmp_path / "p.yaml")
    assert code == 2 and "missing column" in err and err.count("\n") == 1
    row = dict(_source_rows("Megatron-Bridge")[0])
    row["tokens_per_sec"] = ""
    row["achieved_tflops_per_gpu"] = ""
    _write(tmp_path / "b.csv", [row])
    code, _, err = run(capsys, "calibrate", tmp_path / "b.csv", "--out", tmp_path / "p.yaml")
    assert code == 2 and "measured throughput" in err


@pytest.mark.parametrize("edit,needle", [
    ({"log_ratio_p10": 0.2, "log_ratio_p90": -0.1}, "log_ratio_p10"),
    ({"compute_scale": -1.0}, "compute_scale"),
    ({"memory_reserve_bytes": 2e9, "n_memory_runs": 0}, "memory"),
    ({"kind": "something-else"}, "kind"),
    ({"extra_key": 1}, "extra_key"),
])
def test_self_contradicting_profile_is_one_error_line(tmp_path, capsys, edit, needle):
    rows = _source_rows("Megatron-Bridge")
    _write(tmp_path / "runs.csv", rows[:3])
    assert run(capsys, "calibrate", tmp_path / "runs.csv", "--out", tmp_path / "p.yaml")[0] == 0
    data = yaml.safe_load((tmp_path / "p.yaml").read_text())
    data.update(edit)
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(data))
    code, out, err = run(capsys, "estimate", "llama-3-8b", "--gpu", "H100-SXM5-80GB", "--calibration",
                         tmp_path / "bad.yaml")
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("error: --calibration") and needle in err
    with pytest.raises(ClusteroptError):
        load_profile(tmp_path / "bad.yaml")


def test_public_within_source_spread_matches_the_residuals():
    # the prior of a calibrated interval is the within-source spread of the shipped residuals
    from optimizer.calibration import PUBLIC_WITHIN_SOURCE_SD_LOG
    from optimizer.formulas.intervals import _source_components, read_residuals

    data = ROOT / "tests" / "data"
    path = data / "loso_results.csv" if (data / "loso_results.csv").exists() else data / "step_time_loso_residuals.csv"
    _, _, within = _source_components(read_residuals(path))
    assert PUBLIC_WITHIN_SOURCE_SD_LOG == pytest.approx(within ** 0.5, abs=0.02)


def test_scenario_calibration_reaches_the_search(tmp_path, capsys):
    # calibration: profile.yaml in a scenario rescales every configuration's throughput and
    # gives it the profile's interval
    from optimizer import load_scenario, solve

    rows = _source_rows("Megatron-Bridge")
    _write(tmp_path / "runs.csv", rows[:3])
    assert run(capsys, "calibrate", tmp_path / "runs.csv", "--out", tmp_path / "p.yaml")[0] == 0
    sc = load_scenario(ROOT / "scenarios" / "llama3-8b-pretrain.yaml").with_overrides({"top_k": 2})
    plain = solve(sc).configs.iloc[0]
    cal = solve(sc.with_overrides({"calibration": str(tmp_path / "p.yaml")})).configs
    assert (cal["interval_regime"] == "calibrated").all()
    same = cal[(cal["gpu"] == plain["gpu"]) & (cal["n_gpus"] == plain["n_gpus"]) & (cal["tp"] == plain["tp"])]
    assert len(cal) == 2
    assert abs(cal.iloc[0]["tokens_per_s"] / plain["tokens_per_s"] - 1.0) > 0.01 or len(same) == 0
    bad = sc.with_overrides({"calibration": str(tmp_path / "missing.yaml")})
    with pytest.raises(ClusteroptError, match="calibration"):
        solve(bad)


def test_layout_from_row_states_or_defaults_each_layout_column():
    # the layout reader shared with benchmarks/calibrate_efficiency.py: framework defaults when a
    # column is empty (Megatron: distributed optimizer = ZeRO-1, sequence parallelism with TP;
    # FSDP2: ZeRO-3 over DP), the row's value when stated
    from optimizer.runs import layout_from_row

    base = {"seq_len": "4096", "n_gpus": "16", "tp": "2", "pp": "1", "micro_batch": "1", "global_batch": "64"}
    lay, fw = layout_from_row({**base, "framework": "megatron"}, "r")
    assert (fw, lay.dp, lay.zero, lay.sequence_parallel, lay.flash_attention) == ("megatron", 8, 1, True, True)
    lay, fw = layout_from_row({**base, "tp": "1", "framework": "fsdp2"}, "r")
    assert (fw, lay.dp, lay.zero, lay.sequence_parallel) == ("fsdp2", 16, 3, False)
    lay, _ = layout_from_row({**base, "framework": "megatron", "zero": "0", "sequence_parallel": "no",
                              "flash_attention": "no", "interleave_chunks": "2"}, "r")
    assert (lay.zero, lay.sequence_parallel, lay.flash_attention, lay.interleave) == (0, False, False, 2)
    with pytest.raises(ClusteroptError, match="r: global_batch"):
        layout_from_row({**base, "global_batch": "60"}, "r")
