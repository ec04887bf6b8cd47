"""Output for planners: solve --sensitivity/--plot/--report, sweep, schema (issue 5).

Every JSON document is validated against the pydantic models behind ``clusteropt schema``,
so the published schema and the real output cannot drift apart.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import re
import struct

import pytest
import yaml

from optimizer.cli import main
from optimizer.schema import SCHEMA_VERSION, validate
from optimizer.search.train.table import CONFIG_KEYS

SMALL = {
    "name": "cli-8b",
    "model": "llama-3-8b",
    "train": {"tokens": 1e12, "seq_len": 8192, "global_batch_tokens": 4e6},
    "constraints": {"gpus": ["H100-SXM5-80GB", "A100-SXM4-80GB"], "deadline_days": 20},
    "search": {"micro_batch": [1, 2], "zero": [1, 3]},
}


def run(capsys, *argv):
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return e.value.code, out, err


@pytest.fixture(scope="module")
def scenario_file(tmp_path_factory):
    p = tmp_path_factory.mktemp("sc") / "cli-8b.yaml"
    p.write_text(yaml.safe_dump(SMALL))
    return p


def png_size(path) -> tuple[int, int]:
    data = path.read_bytes() if hasattr(path, "read_bytes") else path
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_solve_sensitivity_json_follows_the_contract(capsys, scenario_file):
    code, out, err = run(capsys, "solve", scenario_file, "--top", "2", "--sensitivity", "--format", "json")
    assert code == 0, err
    doc = json.loads(out)                        # stdout is one JSON document, nothing else
    validate("result", doc)
    assert doc["schema_version"] == SCHEMA_VERSION and doc["kind"] == "solve"
    sens = doc["sensitivity"]
    assert set(sens) >= {"tornado", "thresholds", "slack"}
    names = {t["input"] for t in sens["thresholds"]}
    assert names >= {"price.H100-SXM5-80GB", "price.A100-SXM4-80GB", "efficiency", "inter_node_bandwidth",
                     "train.tokens", "constraints.budget_usd", "constraints.deadline_days", "pricing.usd_per_kwh"}
    for t in sens["thresholds"]:
        assert t["direction"] in ("up", "down")
        assert t["change_pct"] is None or (t["change_pct"] < 0) == (t["direction"] == "down")
        assert t["new_best"] is None or set(t["new_best"]) == set(CONFIG_KEYS)
    assert len(sens["thresholds"]) == 2 * len(names)
    assert "re-solving" in err                   # progress on stderr


def test_solve_plot_draws_the_tornado_with_sensitivity_and_the_front_without(capsys, scenario_file, tmp_path):
    t, p = tmp_path / "tornado.png", tmp_path / "pareto.png"
    assert run(capsys, "solve", scenario_file, "--sensitivity", "--plot", t)[0] == 0
    assert run(capsys, "solve", scenario_file, "--plot", p)[0] == 0
    wt, ht = png_size(t)
    wp, hp = png_size(p)
    assert wt > 500 and ht > 300 and wp > 500 and hp > 300
    assert t.read_bytes() != p.read_bytes()


def test_solve_report_is_self_contained_markdown(capsys, scenario_file, tmp_path):
    r = tmp_path / "report.md"
    code, out, err = run(capsys, "solve", scenario_file, "--top", "3", "--report", r)
    assert code == 0, err
    text = r.read_text()
    for heading in ("## Inputs", "## Ranked configurations", "## Memory per GPU of the top choice",
                    "## Cost against time", "## Sensitivity", "Switching thresholds"):
        assert heading in text, heading
    images = re.findall(r"!\[[^\]]*\]\(data:image/png;base64,([A-Za-z0-9+/=]+)\)", text)
    assert len(images) == 2                       # Pareto and tornado, embedded
    for b64 in images:
        png_size(base64.b64decode(b64))
    assert "deadline_days: 20" in text            # the inputs are in the report
    # the memory table's parts add up to its total (GB rounded to 0.1)
    rows = re.findall(r"^\| (\w+) +\| ([\d.]+) GB +\|", text, flags=re.M)     # cells padded to the column
    parts = {k: float(v) for k, v in rows}
    assert abs(sum(v for k, v in parts.items() if k not in ("total", "capacity")) - parts["total"]) < 0.05 * 8


@pytest.mark.parametrize("suffix", [".csv", ".json", ".md"])
def test_sweep_writes_every_point(capsys, scenario_file, tmp_path, suffix):
    out_file = tmp_path / f"results{suffix}"
    code, out, err = run(capsys, "sweep", scenario_file, "--vary", "budget_usd=2e4:2e5:3:log",
                         "--vary", "pricing.mode=on_demand,spot", "--objective", "time", "--out", out_file,
                         "--workers", "1")
    assert code == 0, err
    assert out.count("\n") >= 2 + 6                # header, rule and 6 points on stdout
    text = out_file.read_text()
    if suffix == ".csv":
        rows = list(csv.DictReader(io.StringIO(text)))
        assert len(rows) == 6 and {"constraints.budget_usd", "pricing.mode", "status"} <= set(rows[0])
    elif suffix == ".json":
        doc = json.loads(text)
        validate("sweep", doc)
        assert doc["vary"]["pricing.mode"] == ["on_demand", "spot"] and len(doc["points"]) == 6
        bad = [p for p in doc["points"] if p["status"] == "infeasible"]
        assert bad and all(p["explanation"] for p in bad)   # infeasible points explained, not gaps
    else:
        assert text.startswith("# Sweep of cli-8b") and text.count("\n|") >= 7


def test_sweep_plot_and_json_stdout(capsys, scenario_file, tmp_path):
    f = tmp_path / "frontier.png"
    code, out, err = run(capsys, "sweep", scenario_file, "--vary", "constraints.budget_usd=3e4,1e5,3e5",
                         "--objective", "time", "--plot", f, "--format", "json", "--workers", "1")
    assert code == 0, err
    validate("sweep", json.loads(out))
    w, h = png_size(f)
    assert w > 500 and h > 300


@pytest.mark.parametrize("argv,field", [
    (["--vary", "budget_usd"], "--vary"),
    (["--vary", "nonsense_field=1,2"], "--vary"),
    (["--vary", "budget_usd=1:2"], "--vary"),
    (["--vary", "budget_usd=1e5,2e5", "--out", "x.txt"], "--out"),
    (["--vary", "budget_usd=1e5,2e5", "--plot", "x.jpg"], "--plot"),
])
def test_sweep_bad_input_is_one_line_exit_2(capsys, scenario_file, argv, field):
    code, out, err = run(capsys, "sweep", scenario_file, *argv)
    assert code == 2 and out == ""
    assert err.startswith(f"error: {field}") and err.count("\n") == 1


@pytest.mark.parametrize("kind", ["result", "scenario", "sweep"])
def test_schema_commands_print_json_schema(capsys, kind):
    code, out, _ = run(capsys, "schema", kind)
    assert code == 0
    s = json.loads(out)
    assert s["x-schema-version"] == SCHEMA_VERSION and s["type"] == "object"
    if kind == "result":
        assert {"schema_version", "status", "configs", "pareto", "explanation", "sensitivity"} <= set(s["properties"])
    if kind == "scenario":
        assert {"model", "train", "serve", "constraints", "pricing", "search"} <= set(s["properties"])
    if kind == "sweep":
        assert {"vary", "points"} <= set(s["properties"])


def test_serving_solve_json_validates_against_the_result_schema(capsys):
    code, out, err = run(capsys, "solve", "llama3-70b-chat", "--top", "2", "--format", "json")
    assert code == 0, err
    doc = json.loads(out)
    validate("result", doc)
    assert doc["workload"] == "serve" and doc["configs"][0]["replicas"]


def test_plot_and_report_names_are_checked(capsys, scenario_file):
    code, _, err = run(capsys, "solve", scenario_file, "--plot", "x.svg")
    assert code == 2 and err.startswith("error: --plot")
    code, _, err = run(capsys, "solve", scenario_file, "--report", "x.html")
    assert code == 2 and err.startswith("error: --report")


def test_serving_sensitivity_and_report(capsys, tmp_path):
    r = tmp_path / "serve.md"
    code, out, err = run(capsys, "solve", "mixtral-stock-limited", "--top", "2", "--sensitivity",
                         "--format", "json", "--report", r)
    assert code == 0, err
    doc = json.loads(out)
    validate("result", doc)
    sens = doc["sensitivity"]
    inputs = {t["input"] for t in sens["thresholds"]}
    assert {"serve.requests_per_s", "efficiency"} <= inputs and any(i.startswith("price.") for i in inputs)
    for t in sens["thresholds"]:
        assert t["new_best"] is None or all({"gpu", "tp", "count"} <= set(g) for g in t["new_best"])
    text = r.read_text()
    assert "## Cost against p99 time to first token" in text and "## Sensitivity" in text
    assert len(re.findall(r"data:image/png;base64,", text)) == 2


def test_plan_sensitivity_json_has_tornado_and_thresholds(capsys):
    from optimizer.schema import PlanDocument
    from optimizer.search.api import plan

    code, out, err = run(capsys, "plan", "shared-fleet", "--sensitivity", "--format", "json")
    assert code == 0, err
    doc = json.loads(out)
    PlanDocument.model_validate(doc)
    sens = doc["sensitivity"]
    assert {"tornado", "thresholds"} <= set(sens)
    swings = [e["swing"] for e in sens["tornado"]]
    assert swings == sorted(swings, reverse=True)
    price = next(e for e in sens["tornado"] if e["input"] == "price.H100-SXM5-80GB")
    assert price["base"] == pytest.approx(doc["plan"]["cost"]["total_usd"])
    low = plan("shared-fleet", prices={"price.H100-SXM5-80GB": 0.8}, top_k=1, binding=False)
    assert price["low"] == pytest.approx(low.plan["cost"]["total_usd"])
    assert price["low"] < price["base"] < price["high"]
    for t in sens["thresholds"]:
        assert t["direction"] in ("up", "down") and "change_pct" in t and "new_best" in t


def test_time_limit_never_reports_a_false_infeasible():
    """A CP-SAT time limit stops the proof, not the answer: status 'feasible' (CONTRACTS.md),
    training rows completed from the candidate table in objective order."""
    from optimizer.search.api import solve

    quick = solve("llama3-70b-pretrain", top_k=3, time_limit_s=1e-6)
    full = solve("llama3-70b-pretrain", top_k=3)
    assert full.status == "optimal" and quick.status in ("feasible", "optimal")
    assert list(quick.configs["cost_usd"]) == list(full.configs["cost_usd"])
    serve = solve("llama3-8b-api", top_k=2, time_limit_s=1e-6)
    assert serve.status in ("optimal", "feasible", "infeasible")
    if serve.status == "feasible" and not len(serve.configs):
        assert "time limit" in serve.explanation["lines"][0]


@pytest.mark.parametrize("argv,field", [
    (["solve", "{tmp}"], "error: scenario: {tmp} is a folder"),       # the input named, the path in the text
    (["solve", "llama3-8b-pretrain", "--format", "json", "--out", "{tmp}/no/x.json"], "error: {tmp}/no/x.json: "),
    (["solve", "llama3-8b-pretrain", "--sensitivity", "--format", "csv"], "error: --format: "),
])
def test_paths_and_format_errors_are_one_line(capsys, tmp_path, argv, field):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    assert err.startswith(field.replace("{tmp}", str(tmp_path))) and err.count("\n") == 1 and "; " in err


def test_codesign_cost_objective_needs_a_target_loss(capsys, tmp_path):
    f = tmp_path / "cd.yaml"
    f.write_text(yaml.safe_dump({
        "name": "cd", "objective": "cost",
        "train": {"model": {"family": "llama-3", "params": "auto", "min_params": 1e9, "max_params": 3e9},
                  "tokens": "auto", "seq_len": 4096, "global_batch_tokens": 1e6},
        "constraints": {"budget_usd": 1e6, "deadline_days": 30, "gpus": ["H100-SXM5-80GB"]}}))
    code, out, err = run(capsys, "solve", f)
    assert code == 2 and err.startswith("error: train.target_loss:")


def test_sweep_json_keeps_integers(capsys, scenario_file):
    code, out, _ = run(capsys, "sweep", scenario_file, "--vary", "budget_usd=2e4,2e5", "--format", "json",
                       "--workers", "1")
    pts = json.loads(out)["points"]
    ok = [p for p in pts if p["status"] != "infeasible"]
    assert ok and all(isinstance(p[k], int) for p in ok for k in ("n_gpus", "tp", "pp", "dp", "zero"))
