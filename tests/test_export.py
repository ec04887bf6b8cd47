"""clusteropt export: each launch format checked by its target's own parser, schema or option list.

SkyPilot's task/resources/service JSON schemas come from skypilot itself (tests/data/export_refs/
skypilot_schemas.json, dumped from skypilot 0.14.1); Megatron-LM flags, torchtitan job-config keys
and NeMo config keys are extracted from those projects' source at pinned tags by
tests/data/export_refs/extract.py; vLLM, SGLang, DeepSpeed and Slurm option names are copied from
their documentation with the source named (engine_refs.json). Shell scripts pass ``bash -n``.
"""

import argparse
import copy
import json
import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path

import jsonschema
import pytest
import yaml

import optimizer
from optimizer import export as ex
from optimizer import report
from optimizer.cli import main
from optimizer.errors import ClusteroptError
from optimizer.search.api import solve

REFS = Path(__file__).resolve().parent / "data" / "export_refs"
MEGATRON = json.loads((REFS / "megatron_args.json").read_text())["flags"]
TORCHTITAN = json.loads((REFS / "torchtitan_job_config.json").read_text())["keys"]
NEMO = json.loads((REFS / "nemo_megatron_gpt_config_keys.json").read_text())
ENGINES = json.loads((REFS / "engine_refs.json").read_text())
SKY = json.loads((REFS / "skypilot_schemas.json").read_text())

TRAIN_SCENARIOS = ("llama3-8b-pretrain", "llama3-70b-pretrain", "mixtral-8x7b-pretrain")
SERVE_SCENARIOS = ("llama3-8b-aws-mixed", "llama3-70b-chat-compressed")


@pytest.fixture(scope="module")
def docs():
    out = {}
    for name in TRAIN_SCENARIOS + SERVE_SCENARIOS:
        sc = optimizer.load_scenario(name)
        out[name] = json.loads(report.dumps(report.solve_json(solve(sc, top_k=3), sc)))
    return out


def _variants(doc):
    """Every ranked row, plus rows re-laid out to reach the branches the shipped answers do not
    (pipeline stages, each ZeRO stage and recomputation mode, context parallelism)."""
    rows = list(doc["configs"])
    base = rows[0]
    for pp, zero, rec, cp in ((4, 0, "selective", 1), (2, 1, "full", 2), (1, 2, "none", 1), (8, 3, "selective", 1)):
        r = copy.deepcopy(base)
        dp = max(1, r["dp"] // (pp * cp))
        r.update(pp=pp, zero=zero, recompute=rec, cp=cp, dp=dp, n_gpus=r["tp"] * pp * cp * dp,
                 grad_accum=max(1, r["global_batch"] // (r["micro_batch"] * dp)))
        r["global_batch"] = r["micro_batch"] * dp * r["grad_accum"]
        rows.append(r)
    return rows


def _doc_with(doc, row):
    d = copy.deepcopy(doc)
    row = dict(row, rank=1)
    d["configs"] = [row]
    return d


def _bash_ok(text):
    if shutil.which("bash") is None:
        pytest.skip("bash not available")
    r = subprocess.run(["bash", "-n"], input=text, text=True, capture_output=True)
    assert r.returncode == 0, r.stderr


# ----------------------------------------------------------------------------------------
# Megatron-LM: the flags parse with Megatron's own definitions
# ----------------------------------------------------------------------------------------

def megatron_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    types = {"int": int, "float": float, "str": str}
    for flag, spec in MEGATRON.items():
        kw = {}
        if spec["action"]:
            kw["action"] = spec["action"]
        else:
            kw["type"] = types.get(spec["type"], str)
            if spec["choices"]:
                kw["choices"] = spec["choices"]
            if spec["nargs"]:
                kw["nargs"] = spec["nargs"]
        p.add_argument(flag, **kw)
    return p


def _tokens(script):
    """The words of a shell script, continuation lines joined and comments dropped."""
    return shlex.split(script.replace("\\\n", " "), comments=True)


def _after(tokens, word):
    return tokens[tokens.index(word) + 1:]


@pytest.mark.parametrize("scenario", TRAIN_SCENARIOS)
def test_megatron_flags_parse_with_megatrons_own_definitions(docs, scenario):
    parser = megatron_parser()
    for row in _variants(docs[scenario]):
        text = ex.export(_doc_with(docs[scenario], row), 1, "megatron").text
        _bash_ok(text)
        tokens = _tokens(text.split("set -euo pipefail\n", 1)[1])
        args = parser.parse_args(_after(tokens, "pretrain_gpt.py"))     # unknown flag or bad choice: SystemExit
        nnodes = int(tokens[tokens.index("--nnodes") + 1])
        per_node = int(tokens[tokens.index("--nproc-per-node") + 1])
        world = args.tensor_model_parallel_size * args.pipeline_model_parallel_size * args.context_parallel_size
        assert nnodes * per_node == world * row["dp"] == row["n_gpus"]
        assert args.global_batch_size == args.micro_batch_size * row["dp"] * row["grad_accum"]
        assert (args.recompute_granularity or "none") == row["recompute"]
        assert bool(args.use_distributed_optimizer) == (row["zero"] == 1)
        assert bool(args.use_megatron_fsdp) == (row["zero"] >= 2)
        assert args.fp8_format == ("hybrid" if row["precision"] == "fp8" else None)
        assert args.seq_length == docs[scenario]["launch"]["seq_len"]
        m = docs[scenario]["launch"]["model"]
        assert (args.num_layers, args.hidden_size, args.num_attention_heads) == (
            m["num_layers"], m["hidden_size"], m["num_heads"])


def test_megatron_moe_flags(docs):
    text = ex.export(docs["mixtral-8x7b-pretrain"], 1, "megatron").text
    args = megatron_parser().parse_args(_after(_tokens(text.split("set -euo pipefail\n", 1)[1]), "pretrain_gpt.py"))
    assert (args.num_experts, args.moe_router_topk) == (8, 2)              # Mixtral-8x7B config.json
    assert args.expert_model_parallel_size == docs["mixtral-8x7b-pretrain"]["configs"][0]["ep"]


# ----------------------------------------------------------------------------------------
# NeMo, torchtitan, DeepSpeed
# ----------------------------------------------------------------------------------------

def _leaves(d, prefix=()):
    for k, v in d.items():
        if isinstance(v, dict):
            yield from _leaves(v, prefix + (k,))
        else:
            yield ".".join(prefix + (k,)), v


@pytest.mark.parametrize("scenario", TRAIN_SCENARIOS)
def test_nemo_keys_exist_in_nemos_gpt_config(docs, scenario):
    known = set(NEMO["keys"]) | set(NEMO["code_keys"])
    for row in _variants(docs[scenario]):
        e = ex.export(_doc_with(docs[scenario], row), 1, "nemo")
        cfg = yaml.safe_load(e.text)
        unknown = [k for k, _ in _leaves(cfg) if k not in known]
        assert not unknown
        m = cfg["model"]
        assert (m["tensor_model_parallel_size"], m["pipeline_model_parallel_size"]) == (row["tp"], row["pp"])
        assert cfg["trainer"]["devices"] * cfg["trainer"]["num_nodes"] == row["n_gpus"]
        assert m["global_batch_size"] == row["global_batch"] and m["micro_batch_size"] == row["micro_batch"]
        extra = [k for k, _ in _leaves(cfg) if k in NEMO["code_keys"]]
        assert all(any(k in n for n in e.notes) for k in extra)        # each '+' key is named in a note


@pytest.mark.parametrize("scenario", TRAIN_SCENARIOS)
def test_torchtitan_toml_uses_torchtitans_job_config(docs, scenario):
    for row in _variants(docs[scenario]):
        cfg = tomllib.loads(ex.export(_doc_with(docs[scenario], row), 1, "torchtitan").text)
        for key, value in _leaves(cfg):
            assert key in TORCHTITAN, key
            choices = TORCHTITAN[key]["choices"]
            if choices:
                assert value in choices, (key, value)
            ann = TORCHTITAN[key]["annotation"]
            if ann == "int":
                assert isinstance(value, int) and not isinstance(value, bool)
            if ann == "bool":
                assert isinstance(value, bool)
        p = cfg["parallelism"]
        degrees = (p["data_parallel_replicate_degree"] * p["data_parallel_shard_degree"] * p["tensor_parallel_degree"]
                   * p["pipeline_parallel_degree"] * p["context_parallel_degree"])
        assert degrees == row["n_gpus"]
        assert (p["data_parallel_shard_degree"] == 1) == (row["zero"] == 0)
        assert cfg["activation_checkpoint"]["mode"] == row["recompute"]
        assert cfg["training"]["global_batch_size"] == row["global_batch"]
    assert cfg["model"]["converters" if row["precision"] == "fp8" else "name"]


def test_torchtitan_flavor_of_a_shipped_llama():
    cfg = tomllib.loads(ex.export(json.loads(report.dumps(report.solve_json(
        solve(optimizer.load_scenario("llama3-8b-pretrain"), top_k=1), optimizer.load_scenario("llama3-8b-pretrain")))),
        1, "torchtitan").text)
    assert cfg["model"] == {"name": "llama3", "flavor": "8B", "converters": ["quantize.linear.float8"]}


@pytest.mark.parametrize("scenario", TRAIN_SCENARIOS)
def test_deepspeed_config_keys_and_batch_rule(docs, scenario):
    ref = ENGINES["deepspeed"]
    for row in _variants(docs[scenario]):
        e = ex.export(_doc_with(docs[scenario], row), 1, "deepspeed")
        cfg = json.loads(e.text)
        keys = [k for k, _ in _leaves(cfg)]
        assert set(keys) <= set(ref["keys"])
        # DeepSpeed's rule: train_batch_size = micro-batch x accumulation x data-parallel ranks
        assert cfg["train_batch_size"] == cfg["train_micro_batch_size_per_gpu"] * cfg["gradient_accumulation_steps"] * row["dp"]
        assert cfg["zero_optimization"]["stage"] in ref["choices"]["zero_optimization.stage"]
        if max(row["tp"], row["pp"], row["cp"], row["ep"]) > 1:
            assert any("--tensor-model-parallel-size" in n for n in e.notes)


# ----------------------------------------------------------------------------------------
# serving engines
# ----------------------------------------------------------------------------------------

def _commands(text, program):
    """Each command of a script (continuation lines joined) that starts with ``program``."""
    joined = text.replace("\\\n", " ")
    return [shlex.split(line) for line in joined.splitlines() if line.startswith(program)]


@pytest.mark.parametrize("scenario", SERVE_SCENARIOS)
@pytest.mark.parametrize("engine, program", [("vllm", "vllm serve"), ("sglang", "python -m sglang.launch_server")])
def test_engine_commands_use_the_engines_flags(docs, scenario, engine, program):
    ref = ENGINES[engine]
    doc = docs[scenario]
    for row in doc["configs"]:
        text = ex.export(_doc_with(doc, row), 1, engine).text
        _bash_ok(text)
        cmds = _commands(text, program)
        assert len(cmds) == len(row["replicas"])
        for cmd, rep in zip(cmds, row["replicas"]):
            flags = [t for t in cmd if t.startswith("--")]
            assert set(flags) <= set(ref["flags"]), set(flags) - set(ref["flags"])
            val = {f: cmd[cmd.index(f) + 1] for f in flags}
            for f, allowed in ref["choices"].items():
                if f in val:
                    assert val[f] in allowed, (f, val[f])
            tp = "--tensor-parallel-size" if engine == "vllm" else "--tp-size"
            cap = "--max-num-seqs" if engine == "vllm" else "--max-running-requests"
            assert int(val[tp]) == rep["tp"] and int(val[cap]) == rep["batch"]
            kv = val["--kv-cache-dtype"]
            assert (kv == "auto") == (rep["kv"] == "bf16")


def test_int4_gptq_replicas_name_their_method(docs):
    text = ex.export(docs["llama3-70b-chat-compressed"], 1, "vllm").text
    assert "--quantization gptq" in text


# ----------------------------------------------------------------------------------------
# SkyPilot (its own JSON schemas) and Slurm
# ----------------------------------------------------------------------------------------

def _sky_valid(task):
    jsonschema.validate(task, SKY["task"])
    jsonschema.validate(task["resources"], SKY["resources"])
    if "service" in task:
        jsonschema.validate(task["service"], SKY["service"])


@pytest.mark.parametrize("scenario", TRAIN_SCENARIOS + SERVE_SCENARIOS)
def test_skypilot_tasks_validate_against_skypilots_schema(docs, scenario):
    doc = docs[scenario]
    for row in doc["configs"]:
        tasks = list(yaml.safe_load_all(ex.export(_doc_with(doc, row), 1, "skypilot").text))
        for t in tasks:
            _sky_valid(t)
            _bash_ok(t["run"])
        if "replicas" in row:
            for t, r in zip(tasks, row["replicas"]):
                per_machine = int(t["resources"]["accelerators"].split(":")[1])
                copies = per_machine // (r["tp"] * r.get("pp", 1))      # engine copies per machine (DP)
                assert per_machine % (r["tp"] * r.get("pp", 1)) == 0
                assert copies * t["service"]["replicas"] >= r["count"] > copies * (t["service"]["replicas"] - 1)
                assert ("--data-parallel-size" in t["run"]) == (copies > 1)
        else:
            (t,) = tasks
            n = int(t["resources"]["accelerators"].split(":")[1])
            assert n * t["num_nodes"] == row["n_gpus"]


def test_skypilot_serves_whole_instances_as_the_fleet_was_priced(docs):
    """8 tp1 replicas on AWS p5.48xlarge (8 GPUs) and on p4de.24xlarge: one machine each, running
    8 engine copies (vLLM data parallel), with SkyPilot's accelerator names and the instance type."""
    doc = docs["llama3-8b-aws-mixed"]
    tasks = list(yaml.safe_load_all(ex.export(doc, 1, "skypilot").text))
    assert [t["resources"]["accelerators"] for t in tasks] == ["H100:8", "A100-80GB:8"]   # SkyPilot's names
    assert [t["resources"].get("instance_type") for t in tasks] == ["p5.48xlarge", "p4de.24xlarge"]
    assert [t["service"]["replicas"] for t in tasks] == [1, 1]
    assert all(t["resources"]["cloud"] == "aws" and "--data-parallel-size 8" in t["run"] for t in tasks)


def test_skypilot_rejects_what_its_schema_rejects():
    with pytest.raises(jsonschema.ValidationError):
        _sky_valid({"name": "x", "num_nodes": "two", "resources": {"accelerators": "H100:8"}})


@pytest.mark.parametrize("scenario", TRAIN_SCENARIOS + SERVE_SCENARIOS)
def test_slurm_scripts_use_sbatch_options(docs, scenario):
    doc = docs[scenario]
    opts = set(ENGINES["slurm"]["options"])
    for row in doc["configs"]:
        text = ex.export(_doc_with(doc, row), 1, "slurm").text
        _bash_ok(text)
        directives = re.findall(r"^#SBATCH (\S+)", text, flags=re.M)
        assert {d.split("=")[0] for d in directives if d != "hetjob"} <= opts
        if "replicas" in row:
            assert directives.count("hetjob") == len(row["replicas"]) - 1
            ntasks = [int(d.split("=")[1]) for d in directives if d.startswith("--ntasks=")]
            assert ntasks == [r["count"] for r in row["replicas"]]
        else:
            nodes = int(re.search(r"--nodes=(\d+)", text).group(1))
            per = int(re.search(r"--gpus-per-node=(\d+)", text).group(1))
            assert nodes * per == row["n_gpus"]
            d, hms = re.search(r"--time=(\d+)-(\d\d:\d\d:\d\d)", text).groups()
            hours = int(d) * 24 + int(hms[:2])
            assert row["wall_clock_days"] * 24 <= hours < row["wall_clock_days"] * 24 + 1


# ----------------------------------------------------------------------------------------
# the command line
# ----------------------------------------------------------------------------------------

def run(capsys, *argv):
    with pytest.raises(SystemExit) as e:
        main(list(argv))
    out, err = capsys.readouterr()
    return e.value.code, out, err


def test_export_command_and_solve_export_agree(capsys, tmp_path):
    result = tmp_path / "result.json"
    code, _, _ = run(capsys, "solve", "llama3-8b-pretrain", "--top", "2", "--format", "json", "--out", str(result))
    assert code == 0
    code, out, err = run(capsys, "export", str(result), "--to", "torchtitan", "--rank", "2")
    assert code == 0 and "wrote" not in out
    code, out2, _ = run(capsys, "solve", "llama3-8b-pretrain", "--top", "2", "--export", "torchtitan", "--rank", "2")
    assert code == 0 and out2 == out
    assert tomllib.loads(out)["training"]["global_batch_size"] == json.loads(result.read_text())["configs"][1]["global_batch"]


@pytest.mark.parametrize("argv, start", [
    (["--to", "vllm"], "error: --to: vllm runs serving jobs"),
    (["--to", "megatron", "--rank", "9"], "error: --rank: no configuration ranked 9; allowed: 1..2"),
])
def test_export_errors_are_one_line(capsys, tmp_path, argv, start):
    result = tmp_path / "result.json"
    run(capsys, "solve", "llama3-8b-pretrain", "--top", "2", "--format", "json", "--out", str(result))
    code, out, err = run(capsys, "export", str(result), *argv)
    assert code == 2 and out == "" and err.startswith(start) and err.count("\n") == 1


def test_export_of_a_codesign_plan_says_what_to_do():
    with pytest.raises(ClusteroptError, match="co-design"):
        ex.export({"workload": "codesign", "configs": [{"rank": 1, "predicted_loss": 2.0}]}, 1, "megatron")


def test_readme_export_example_matches_the_real_output(capsys):
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = readme.split("$ clusteropt solve llama3-8b-aws-mixed --export vllm\n", 1)[1].split("```", 1)[0]
    code, out, _ = run(capsys, "solve", "llama3-8b-aws-mixed", "--export", "vllm")
    assert code == 0 and out.strip() == block.strip()


def test_skypilot_names_are_catalog_accelerators():
    from optimizer.catalog import load_catalog

    known = {a.id for a in load_catalog().accelerators}
    assert set(ex.skypilot_names()) <= known and ex.skypilot_names()["A100-SXM4-40GB"] == "A100"
