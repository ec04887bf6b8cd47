"""The clusteropt command: README examples run as tests, JSON contracts, one-line errors (exit 2)."""

import json
import re
from pathlib import Path

import pytest

from optimizer.cli import main

ROOT = Path(__file__).resolve().parents[1]


def run(capsys, *argv):
    with pytest.raises(SystemExit) as e:
        main(list(argv))
    out, err = capsys.readouterr()
    return e.value.code, out, err


def test_solve_default_says_so_and_prints_a_ranked_table(capsys):
    code, out, err = run(capsys, "solve", "--top", "5")
    assert code == 0
    assert "built-in default 'llama3-8b-pretrain'" in err and "built-in default" not in out
    assert out.startswith("scenario llama3-8b-pretrain: optimal, objective cost, 5 configuration(s)")
    ranks = re.findall(r"^(\d+)\s+\S+-", out, flags=re.M)
    assert ranks[:5] == ["1", "2", "3", "4", "5"]


def test_readme_solve_example_matches_the_real_output(capsys):
    readme = (ROOT / "README.md").read_text()
    block = readme.split("$ clusteropt solve --top 5\n", 1)[1].split("```", 1)[0].strip()
    code, out, _ = run(capsys, "solve", "--top", "5")
    assert code == 0
    assert out.split("\n\nPareto")[0].strip() == block


def test_readme_infeasible_example_matches(capsys):
    readme = (ROOT / "README.md").read_text()
    block = readme.split("$ clusteropt solve tests/data/scenario_too_small_cluster.yaml\n", 1)[1].split("```", 1)[0]
    code, out, _ = run(capsys, "solve", str(ROOT / "tests/data/scenario_too_small_cluster.yaml"))
    assert code == 0
    assert out.strip() == block.strip()


def test_solve_json_has_the_contract_keys(capsys):
    code, out, _ = run(capsys, "solve", "llama3-8b-pretrain", "--top", "3", "--format", "json")
    d = json.loads(out)
    assert {"scenario", "status", "objective", "configs", "pareto", "explanation"} <= set(d)
    cfg = d["configs"][0]
    for k in ("rank", "gpu", "n_gpus", "n_nodes", "tp", "pp", "dp", "cp", "ep", "zero", "precision",
              "micro_batch", "grad_accum", "recompute", "sequence_parallel", "memory_per_gpu_bytes", "mfu",
              "step_time_s", "train_days", "cost_usd"):
        assert k in cfg
    assert [c["rank"] for c in d["configs"]] == [1, 2, 3]
    assert 0 < cfg["mfu"] < 1


def test_estimate_json_params_flops_and_train(capsys):
    code, out, _ = run(capsys, "estimate", "llama-3-70b", "--gpu", "h100", "--tp", "8", "--pp", "4", "--dp", "32",
                       "--zero", "1", "--global-batch", "1024", "--seq-len", "8192", "--sequence-parallel",
                       "--tokens", "15e12", "--json")
    assert code == 0
    d = json.loads(out)
    p = d["params"]
    assert p["total"] == 70_553_706_496          # Meta-Llama-3-70B, transformers on the meta device
    assert {"total", "active", "embedding", "attention", "ffn", "norm", "lm_head"} <= set(p)
    assert d["flops_per_token"]["train"] == pytest.approx(3 * d["flops_per_token"]["forward"])
    t = d["train"]
    m = t["memory_per_gpu_bytes"]
    assert sum(v for k, v in m.items() if k != "total") == pytest.approx(m["total"])
    for k in ("fits", "step_time_s", "compute_time_s", "exposed_comm_time_s", "bubble_time_s", "tokens_per_s",
              "mfu", "hfu", "model_tflops_per_gpu", "hardware_tflops_per_gpu", "train_days", "gpu_hours", "cost_usd"):
        assert k in t
    assert t["step_time_s"] == pytest.approx(t["compute_time_s"] + t["exposed_comm_time_s"] + t["bubble_time_s"])


def test_a_layout_that_does_not_fit_is_not_an_error(capsys):
    code, out, _ = run(capsys, "estimate", "llama-3-70b", "--gpu", "a100", "--seq-len", "4096", "--json")
    assert code == 0
    assert json.loads(out)["train"]["fits"] is False


@pytest.mark.parametrize("argv, field", [
    (["estimate", "llama-3-7b"], "error: model: unknown model 'llama-3-7b'; did you mean"),
    (["estimate", "llama-3-8b", "--gpu", "h100", "--tp", "3"], "error: --tp:"),
    (["estimate", "llama-3-8b", "--tp", "abc"], "error: --tp:"),
    (["estimate", "llama-3-8b", "--gpu", "H100-SXM6"], "error: gpu: unknown GPU 'H100-SXM6'; did you mean"),
    (["solve", "no-such-scenario"], "error: scenario: unknown scenario"),
    (["solve", "--objective", "speed"], "error: --objective:"),
])
def test_bad_input_is_one_line_and_exit_2(capsys, argv, field):
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    assert err.startswith(field) and err.count("\n") == 1
    assert "Traceback" not in err


def test_models_json_lists_presets(capsys):
    code, out, _ = run(capsys, "models", "--json")
    d = json.loads(out)
    names = {m["name"] for m in d}
    assert len(d) >= 30 and {"llama-3-8b", "llama-3-70b", "llama-3.1-405b", "mixtral-8x7b", "gpt-3-175b",
                             "deepseek-v3"} <= names
    assert all({"name", "family", "params_total", "source"} <= set(m) for m in d)


def test_catalog_one_gpu_json(capsys):
    code, out, _ = run(capsys, "catalog", "h100", "--json")
    d = json.loads(out)
    assert d["accelerator"]["id"] == "H100-SXM5-80GB" and d["offers"]


def test_scaling_compute_optimal(capsys):
    code, out, _ = run(capsys, "scaling", "--compute", "1e24", "--json")
    d = json.loads(out)
    assert d["compute_flop"] == pytest.approx(6 * d["params"] * d["tokens"], rel=1e-6)


def test_estimate_serve_json_contract(capsys):
    code, out, _ = run(capsys, "estimate", "llama-3-70b", "--serve", "--gpu", "h100", "--tp", "4", "--weights", "fp8",
                       "--kv", "fp8", "--batch", "32", "--prompt-len", "1500", "--output-len", "300", "--json")
    assert code == 0
    s = json.loads(out)["serve"]
    m = s["memory_per_gpu_bytes"]
    assert set(m) == {"weights", "kv_cache", "activations", "reserve", "total"}
    assert m["weights"] + m["kv_cache"] + m["activations"] + m["reserve"] == pytest.approx(m["total"])
    for k in ("kv_cache_capacity_bytes", "max_concurrent_seqs", "ttft_s", "itl_s", "output_tokens_per_s",
              "requests_per_s"):
        assert s[k] > 0
    # one replica's output rate is the batch over the per-token time; ITL bounds it from above
    assert s["output_tokens_per_s"] <= 32 / s["itl_s"] * 1.0001


def test_readme_serving_example_matches(capsys):
    readme = (ROOT / "README.md").read_text()
    block = readme.split("$ clusteropt solve llama3-8b-aws-mixed --top 3\n", 1)[1].split("```", 1)[0]
    code, out, _ = run(capsys, "solve", "llama3-8b-aws-mixed", "--top", "3")
    assert code == 0
    assert out.split("\n\nPareto")[0].strip() == block.strip()
