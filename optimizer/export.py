"""Launch configurations: one ranked configuration of a result document -> the file a team runs.

``export(doc, rank, fmt)`` turns a ``solve --format json`` document (``report.solve_json``)
into the launch configuration of its rank-``rank`` configuration for one tool:

    training  megatron    torchrun + Megatron-LM ``pretrain_gpt.py`` flags (core_v0.15.0 names)
              nemo        NeMo's Hydra config ``megatron_gpt_config.yaml``: the keys to set
              torchtitan  a torchtitan job TOML (v0.2.x ``--job.config_file``)
              deepspeed   a DeepSpeed config JSON (``ds_config.json``)
    serving   vllm        one ``vllm serve`` command per replica group
              sglang      one ``python -m sglang.launch_server`` command per replica group
    both      skypilot    a SkyPilot task (training) or SkyServe services (serving) YAML
              slurm       an ``sbatch`` script

Every exporter is a pure function of the result row and the document's ``launch`` block
(model architecture, sequence length, tokens, request lengths: report.launch_context) and
returns an :class:`Export`: the text and notes for people (what a target cannot express, such
as an fp8 recipe DeepSpeed leaves to the model code). Nothing here computes a figure: sizes,
batches and counts are the solver's; the mapping to each tool's names is documented per
function with the tool's own source (tests/data/export_refs/ holds the flag/key lists the
tests check against).
"""

from __future__ import annotations

import functools
import json
import math
import re
import shlex
from dataclasses import dataclass, field

import yaml

from optimizer.errors import ClusteroptError

TRAIN_FORMATS = ("megatron", "nemo", "torchtitan", "deepspeed", "skypilot", "slurm")
SERVE_FORMATS = ("vllm", "sglang", "skypilot", "slurm")
FORMATS = ("megatron", "nemo", "torchtitan", "deepspeed", "vllm", "sglang", "skypilot", "slurm")

#: File name suffix of each format (the CLI suggests ``--out`` names with it).
SUFFIX = {"megatron": ".sh", "nemo": ".yaml", "torchtitan": ".toml", "deepspeed": ".json", "vllm": ".sh",
          "sglang": ".sh", "skypilot": ".yaml", "slurm": ".sbatch"}

#: SkyPilot's ``resources.cloud`` for a catalog provider (SkyPilot's cloud names, sky/clouds/).
SKYPILOT_CLOUDS = {"aws": "aws", "gcp": "gcp", "google": "gcp", "azure": "azure", "lambda": "lambda",
                   "runpod": "runpod", "oci": "oci", "ibm": "ibm", "paperspace": "paperspace",
                   "fluidstack": "fluidstack", "cudo": "cudo", "vast": "vast", "nebius": "nebius",
                   "do": "do", "digitalocean": "do", "hyperbolic": "hyperbolic"}

TORCHRUN_PORT = 29500
SERVE_PORT = 8000


class _Dumper(yaml.SafeDumper):
    """YAML with multi-line strings (scripts) as literal blocks, as people write them."""


_Dumper.add_representer(str, lambda d, s: d.represent_scalar("tag:yaml.org,2002:str", s,
                                                             style="|" if "\n" in s else None))


def _yaml(doc: dict) -> str:
    return yaml.dump(doc, Dumper=_Dumper, sort_keys=False, width=1000)


@dataclass(frozen=True)
class Export:
    """A launch configuration: ``text`` to write, ``notes`` for people (stderr)."""

    fmt: str
    text: str
    notes: tuple[str, ...] = field(default_factory=tuple)


# ----------------------------------------------------------------------------------------
# picking the configuration
# ----------------------------------------------------------------------------------------

def row_of(doc: dict, rank: int) -> dict:
    """The configuration ranked ``rank`` (from 1) of a result document."""
    configs = doc.get("configs") or []
    ranks = [c.get("rank") for c in configs]
    if rank not in ranks:
        allowed = f"1..{len(configs)}" if configs else "none: the result has no feasible configuration"
        raise ClusteroptError("--rank", f"no configuration ranked {rank}", f"allowed: {allowed}")
    return configs[ranks.index(rank)]


def _workload(doc: dict, row: dict) -> str:
    if "replicas" in row:
        return "serve"
    if "predicted_loss" in row or doc.get("workload") == "codesign":
        return "codesign"
    return "train"


def export(doc: dict, rank: int, fmt: str) -> Export:
    """The launch configuration of the rank-``rank`` configuration of ``doc`` in ``fmt``."""
    if fmt not in FORMATS:
        from optimizer.errors import unknown_name

        raise unknown_name("--to", "export format", fmt, list(FORMATS))
    row = row_of(doc, rank)
    kind = _workload(doc, row)
    launch = doc.get("launch")
    if kind == "codesign":
        raise ClusteroptError("--to", "co-design plans choose a model, not a launch layout",
                              "export the training scenario of the chosen model (clusteropt solve it, then export)")
    if not launch:
        raise ClusteroptError("RESULT.json", "has no 'launch' block (written by an older clusteropt)",
                              "a document from 'clusteropt solve --format json' of this version")
    allowed = TRAIN_FORMATS if kind == "train" else SERVE_FORMATS
    if fmt not in allowed:
        raise ClusteroptError("--to", f"{fmt} runs {'serving' if kind == 'train' else 'training'} jobs; "
                              f"rank {rank} is a {'training configuration' if kind == 'train' else 'serving fleet'}",
                              "allowed: " + ", ".join(allowed))
    name = f"{doc.get('scenario', 'clusteropt')}-rank{rank}"
    if kind == "train":
        return _TRAIN[fmt](row, launch, name)
    return _SERVE[fmt](row, launch, name)


# ----------------------------------------------------------------------------------------
# shared facts of a training row
# ----------------------------------------------------------------------------------------

def _offer(row: dict) -> tuple[str | None, str | None]:
    """(provider, instance type) of the offer a configuration is priced on."""
    if row.get("provider") or row.get("instance_type"):
        return row.get("provider"), row.get("instance_type")
    offer = str(row.get("offer") or "")
    if offer in ("", "owned", "explicit") or " " not in offer:
        return None, None
    provider, instance = offer.split(" ", 1)
    return provider, instance


def _per_node(row: dict) -> int:
    """GPUs per node of a training layout (the solver's n_gpus over its n_nodes)."""
    return max(1, math.ceil(int(row["n_gpus"]) / max(1, int(row.get("n_nodes") or 1))))


def _train_samples(row: dict, launch: dict) -> int | None:
    tokens = launch.get("tokens")
    return None if not tokens else math.ceil(float(tokens) / int(launch["seq_len"]))


def _train_steps(row: dict, launch: dict) -> int | None:
    samples = _train_samples(row, launch)
    return None if samples is None else math.ceil(samples / int(row["global_batch"]))


def _hf_id(model: dict) -> str | None:
    m = re.search(r"repo ([\w.-]+/[\w.-]+)", model.get("source") or "")
    return m.group(1) if m else None


def _summary(row: dict) -> str:
    return (f"{row['n_gpus']}x {row['gpu']} on {row.get('n_nodes', 1)} node(s): tp {row['tp']}, pp {row['pp']}, "
            f"dp {row['dp']}, cp {row['cp']}, ep {row['ep']}, ZeRO {row['zero']}, {row['precision']}, "
            f"micro-batch {row['micro_batch']} x {row['grad_accum']} accumulation = global batch "
            f"{row['global_batch']} sequences, "
            + ("no recomputation" if row["recompute"] == "none" else f"{row['recompute']} recomputation")
            + (", sequence parallel" if row.get("sequence_parallel") else ""))


# ----------------------------------------------------------------------------------------
# Megatron-LM
# ----------------------------------------------------------------------------------------

def megatron_args(row: dict, launch: dict) -> tuple[list[str], list[str]]:
    """Megatron-LM ``pretrain_gpt.py`` flags of a training configuration, and notes.

    Flag names and choices: NVIDIA/Megatron-LM megatron/training/arguments.py, tag core_v0.15.0
    (tests/data/export_refs/megatron_args.json). ZeRO: 1 -> ``--use-distributed-optimizer``
    (optimizer state sharded over DP); 2 and 3 -> Megatron-FSDP, whose sharding strategies are
    named after the ZeRO stages (``optim_grads``: state and gradients; ``optim_grads_params``:
    parameters too). Recomputation:
    selective -> ``--recompute-granularity selective`` (Korthikanti et al. 2022), full ->
    ``full`` with one layer per checkpoint (``uniform``, 1). fp8 -> Transformer Engine's
    ``hybrid`` format (E4M3 forward, E5M2 gradients).
    """
    m, notes = launch["model"], []
    a = ["--num-layers", m["num_layers"], "--hidden-size", m["hidden_size"],
         "--ffn-hidden-size", m["ffn_size"], "--num-attention-heads", m["num_heads"]]
    if m["num_kv_heads"] != m["num_heads"]:
        a += ["--group-query-attention", "--num-query-groups", m["num_kv_heads"]]
    if m["head_dim"] * m["num_heads"] != m["hidden_size"]:
        a += ["--kv-channels", m["head_dim"]]
    a += ["--seq-length", launch["seq_len"], "--max-position-embeddings", max(m["max_position_embeddings"],
                                                                              launch["seq_len"])]
    a += ["--normalization", "RMSNorm" if m["norm_kind"] == "rmsnorm" else "LayerNorm"]
    if m["ffn_kind"] == "gated" and m["activation"] in ("silu", "swish"):
        a.append("--swiglu")
    if m["position"] == "rope":
        a += ["--position-embedding-type", "rope"]
        if m.get("rope_theta"):
            a += ["--rotary-base", int(m["rope_theta"])]
        else:
            notes.append("megatron: the model's RoPE base is unknown here: set --rotary-base to its rope_theta")
    if not m["tie_word_embeddings"]:
        a.append("--untie-embeddings-and-output-weights")
    if not (m["qkv_bias"] or m["ffn_bias"]):
        a.append("--disable-bias-linear")
    if m.get("moe"):
        moe = m["moe"]
        a += ["--num-experts", moe["num_experts"], "--moe-router-topk", moe["experts_per_token"],
              "--moe-ffn-hidden-size", moe["expert_ffn_size"]]
        if moe.get("shared_ffn_size"):
            a += ["--moe-shared-expert-intermediate-size", moe["shared_ffn_size"]]
    hf = _hf_id(m)
    if hf:
        a += ["--tokenizer-type", "HuggingFaceTokenizer", "--tokenizer-model", hf]
    else:
        notes.append(f"megatron: no Hugging Face id for {m['name']}: set --tokenizer-type/--tokenizer-model")
    a += ["--tensor-model-parallel-size", row["tp"], "--pipeline-model-parallel-size", row["pp"],
          "--context-parallel-size", row["cp"], "--expert-model-parallel-size", row["ep"]]
    if row.get("sequence_parallel"):
        a.append("--sequence-parallel")
    a += ["--micro-batch-size", row["micro_batch"], "--global-batch-size", row["global_batch"]]
    samples = _train_samples(row, launch)
    if samples:
        a += ["--train-samples", samples]
    a.append("--bf16")
    if row["precision"] == "fp8":
        a += ["--fp8-format", "hybrid"]
    if row["recompute"] == "selective":
        a += ["--recompute-granularity", "selective"]
    elif row["recompute"] == "full":
        a += ["--recompute-granularity", "full", "--recompute-method", "uniform", "--recompute-num-layers", 1]
    z = int(row["zero"])
    if z == 1:
        a.append("--use-distributed-optimizer")
    elif z in (2, 3):
        a += ["--use-megatron-fsdp", "--data-parallel-sharding-strategy",
              "optim_grads" if z == 2 else "optim_grads_params", "--ckpt-format", "fsdp_dtensor"]
    return [str(x) for x in a], notes


def _torchrun(nnodes, per_node, endpoint: str) -> list[str]:
    return ["torchrun", "--nnodes", str(nnodes), "--nproc-per-node", str(per_node),
            "--rdzv-backend", "c10d", "--rdzv-endpoint", endpoint, "--rdzv-id", "clusteropt"]


def _q(tok: str) -> str:
    """Shell-quote a token, except a shell expansion the script means (``$VAR``, ``"$VAR":1``)."""
    return tok if re.fullmatch(r'"?\$[\w{}:()+ -]+"?(:\d+)?', tok) else shlex.quote(tok)


def _lines(cmd: list[str], indent: str = "    ") -> str:
    """A long command as one shell line per flag (and its value)."""
    i = next((j for j, t in enumerate(cmd) if t.startswith("--")), len(cmd))
    parts = [" ".join(_q(t) for t in cmd[:i])] if i else []
    while i < len(cmd):
        tok = cmd[i]
        if tok.startswith("--") and i + 1 < len(cmd) and not cmd[i + 1].startswith("--"):
            parts.append(f"{_q(tok)} {_q(cmd[i + 1])}")
            i += 2
        else:
            parts.append(_q(tok))
            i += 1
    return (" \\\n" + indent).join(parts)


def _megatron(row: dict, launch: dict, name: str) -> Export:
    args, notes = megatron_args(row, launch)
    n_nodes, per_node = int(row.get("n_nodes") or 1), _per_node(row)
    cmd = _torchrun(n_nodes, per_node, '"${MASTER_ADDR:-localhost}":%d' % TORCHRUN_PORT)
    head = [
        "#!/bin/bash",
        f"# clusteropt export {name}: Megatron-LM pretrain_gpt.py (flags as in Megatron-LM core_v0.15.0)",
        f"# {_summary(row)}",
        f"# Run this on each of the {n_nodes} node(s) with MASTER_ADDR set to the first node; add --data-path.",
        "set -euo pipefail",
    ]
    text = "\n".join(head) + "\n" + _lines(cmd) + " \\\n    pretrain_gpt.py \\\n    " + _lines(args) + "\n"
    return Export("megatron", text, tuple(notes))


# ----------------------------------------------------------------------------------------
# NeMo
# ----------------------------------------------------------------------------------------

def nemo_config(row: dict, launch: dict) -> tuple[dict, list[str]]:
    """The keys of NeMo's ``megatron_gpt_config.yaml`` (examples/nlp/language_modeling/conf,
    tests/data/export_refs/nemo_megatron_gpt_config_keys.json) that this configuration sets.

    ZeRO >= 1 -> ``model.optim.name: distributed_fused_adam`` (NeMo's ZeRO-style distributed
    optimizer); ZeRO-3 additionally ``model.fsdp: true`` with sharded parameters and gradients.
    """
    m, notes = launch["model"], []
    model = {
        "micro_batch_size": row["micro_batch"], "global_batch_size": row["global_batch"],
        "tensor_model_parallel_size": row["tp"], "pipeline_model_parallel_size": row["pp"],
        "expert_model_parallel_size": row["ep"],
        "sequence_parallel": bool(row.get("sequence_parallel")),
        "encoder_seq_length": launch["seq_len"],
        "max_position_embeddings": max(m["max_position_embeddings"], launch["seq_len"]),
        "num_layers": m["num_layers"], "hidden_size": m["hidden_size"], "ffn_hidden_size": m["ffn_size"],
        "num_attention_heads": m["num_heads"],
        "num_query_groups": m["num_kv_heads"] if m["num_kv_heads"] != m["num_heads"] else None,
        "normalization": "rmsnorm" if m["norm_kind"] == "rmsnorm" else "layernorm",
        "activation": "fast-swiglu" if m["ffn_kind"] == "gated" and m["activation"] in ("silu", "swish") else "gelu",
        "position_embedding_type": "rope" if m["position"] == "rope" else "learned_absolute",
        "share_embeddings_and_output_weights": bool(m["tie_word_embeddings"]),
        "bias": bool(m["qkv_bias"] or m["ffn_bias"]),
        "megatron_amp_O2": True,
        "fp8": row["precision"] == "fp8", "fp8_hybrid": row["precision"] == "fp8",
        "activations_checkpoint_granularity": None if row["recompute"] == "none" else row["recompute"],
        "activations_checkpoint_method": "uniform" if row["recompute"] == "full" else None,
        "activations_checkpoint_num_layers": 1 if row["recompute"] == "full" else None,
    }
    if m.get("rope_theta") and m["position"] == "rope":      # NeMo's code reads it (default 10000)
        model["rotary_base"] = int(m["rope_theta"])
        notes.append("nemo: model.rotary_base is not in the shipped YAML: pass it as a '+' override")
    if int(row["cp"]) > 1:             # read by NeMo's code, absent from the shipped YAML
        model["context_parallel_size"] = row["cp"]
        notes.append("nemo: model.context_parallel_size is not in the shipped YAML: pass it as a '+' override")
    if m.get("moe"):
        model["num_moe_experts"] = m["moe"]["num_experts"]
        model["moe_router_topk"] = m["moe"]["experts_per_token"]
        notes.append("nemo: model.num_moe_experts and model.moe_router_topk are not in the shipped YAML: "
                     "pass them as '+' overrides")
    z = int(row["zero"])
    model["optim"] = {"name": "distributed_fused_adam" if z >= 1 else "fused_adam"}
    if z == 3:
        model["fsdp"] = True
        model["fsdp_sharding_strategy"] = "full"
    steps = _train_steps(row, launch)
    trainer = {"devices": _per_node(row), "num_nodes": int(row.get("n_nodes") or 1), "precision": "bf16"}
    if steps:
        trainer["max_steps"] = steps
    return {"trainer": trainer, "model": model}, notes


def _nemo(row: dict, launch: dict, name: str) -> Export:
    cfg, notes = nemo_config(row, launch)
    head = (f"# clusteropt export {name}: NeMo megatron_gpt_config.yaml keys for megatron_gpt_pretraining.py\n"
            f"# {_summary(row)}\n"
            "# Merge over examples/nlp/language_modeling/conf/megatron_gpt_config.yaml (or pass each key as a\n"
            "# Hydra override, e.g. model.tensor_model_parallel_size=...); set model.data and model.tokenizer.\n")
    return Export("nemo", head + yaml.safe_dump(cfg, sort_keys=False), tuple(notes))


# ----------------------------------------------------------------------------------------
# torchtitan
# ----------------------------------------------------------------------------------------

#: torchtitan v0.2.2 model flavors (torchtitan/models/<name>/__init__.py) by clusteropt preset.
TORCHTITAN_FLAVORS = {"llama-3-8b": ("llama3", "8B"), "llama-3.1-8b": ("llama3", "8B"),
                      "llama-3-70b": ("llama3", "70B"), "llama-3.1-70b": ("llama3", "70B"),
                      "llama-3.1-405b": ("llama3", "405B"), "deepseek-v3": ("deepseek_v3", "671B")}


def torchtitan_config(row: dict, launch: dict) -> tuple[dict, list[str]]:
    """torchtitan v0.2.x job config (torchtitan/config/job_config.py at v0.2.2,
    tests/data/export_refs/torchtitan_job_config.json).

    Batch: without PP one micro-batch per DP rank (``local_batch_size``; torchtitan accumulates
    up to ``global_batch_size``); with PP the rank's whole batch, split into
    ``pipeline_parallel_microbatch_size`` pieces. ZeRO via FSDP2: 0 -> replicate (DDP);
    1 and 2 -> sharded, parameters kept gathered after forward (``never``: ZeRO-2's memory);
    3 -> sharded and re-sharded after forward (``always``).
    """
    m, notes = launch["model"], []
    name, flavor = TORCHTITAN_FLAVORS.get(m["name"], (m.get("family") or m["name"], None))
    model = {"name": name, "flavor": flavor or m["name"]}
    if flavor is None:
        notes.append(f"torchtitan: no shipped flavor for {m['name']}; register a '{m['name']}' flavor of "
                     f"'{name}' with these sizes: {m['num_layers']} layers, hidden {m['hidden_size']}, "
                     f"{m['num_heads']} heads ({m['num_kv_heads']} KV), FFN {m['ffn_size']}")
    if row["precision"] == "fp8":
        model["converters"] = ["quantize.linear.float8"]
    pp, dp, z = int(row["pp"]), int(row["dp"]), int(row["zero"])
    training = {"seq_len": launch["seq_len"], "global_batch_size": row["global_batch"],
                "local_batch_size": row["micro_batch"] * (row["grad_accum"] if pp > 1 else 1),
                "mixed_precision_param": "bfloat16"}
    steps = _train_steps(row, launch)
    if steps:
        training["steps"] = steps
    par = {"data_parallel_replicate_degree": dp if z == 0 else 1,
           "data_parallel_shard_degree": 1 if z == 0 else dp,
           "fsdp_reshard_after_forward": "always" if z == 3 else ("never" if z in (1, 2) else "default"),
           "tensor_parallel_degree": row["tp"], "pipeline_parallel_degree": pp,
           "context_parallel_degree": row["cp"], "expert_parallel_degree": row["ep"]}
    if pp > 1:
        par["pipeline_parallel_microbatch_size"] = row["micro_batch"]
    if int(row["tp"]) > 1 and not row.get("sequence_parallel"):
        notes.append("torchtitan: its tensor parallelism always shards activations along the sequence "
                     "(sequence parallel); this configuration was estimated without it")
    ac = {"mode": row["recompute"]}
    if row["recompute"] == "selective":
        ac["selective_ac_option"] = "op"
    return {"job": {"description": f"clusteropt: {_summary(row)}"}, "model": model, "training": training,
            "parallelism": par, "activation_checkpoint": ac}, notes


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return json.dumps(str(v))          # a TOML basic string is a JSON string


def _torchtitan(row: dict, launch: dict, name: str) -> Export:
    cfg, notes = torchtitan_config(row, launch)
    out = [f"# clusteropt export {name}: torchtitan job config (v0.2.x), run with",
           f"#   torchrun --nnodes {row.get('n_nodes', 1)} --nproc-per-node {_per_node(row)} -m torchtitan.train "
           "--job.config_file THIS.toml", ""]
    for section, keys in cfg.items():
        out.append(f"[{section}]")
        out += [f"{k} = {_toml_value(v)}" for k, v in keys.items()]
        out.append("")
    return Export("torchtitan", "\n".join(out), tuple(notes))


# ----------------------------------------------------------------------------------------
# DeepSpeed
# ----------------------------------------------------------------------------------------

def deepspeed_config(row: dict, launch: dict) -> tuple[dict, list[str]]:
    """A DeepSpeed config (docs/_pages/config-json.md): batch sizes (``train_batch_size`` =
    micro-batch x accumulation x DP, DeepSpeed's own rule), ZeRO stage, bf16, activation
    checkpointing. DeepSpeed's config holds no TP/PP/CP sizes or fp8 recipe: those go to the
    model code (Megatron-DeepSpeed flags, Transformer Engine); the notes say so."""
    notes = []
    cfg = {"train_batch_size": row["global_batch"], "train_micro_batch_size_per_gpu": row["micro_batch"],
           "gradient_accumulation_steps": row["grad_accum"], "bf16": {"enabled": True},
           "zero_optimization": {"stage": int(row["zero"])}, "gradient_clipping": 1.0, "steps_per_print": 100}
    if int(row["zero"]) == 3:
        cfg["zero_optimization"].update(overlap_comm=True, contiguous_gradients=True)
    if row["recompute"] != "none":
        cfg["activation_checkpointing"] = {"partition_activations": int(row["tp"]) > 1,
                                           "contiguous_memory_optimization": False, "cpu_checkpointing": False}
        if row["recompute"] == "selective":
            notes.append("deepspeed: selective recomputation (attention only) is chosen in the model code; "
                         "the config only turns activation checkpointing on")
    if any(int(row[k]) > 1 for k in ("tp", "pp", "cp", "ep")):
        args, _ = megatron_args(row, launch)
        par = [x for k in ("--tensor-model-parallel-size", "--pipeline-model-parallel-size",
                           "--context-parallel-size", "--expert-model-parallel-size")
               for x in (k, args[args.index(k) + 1])]
        notes.append("deepspeed: TP/PP/CP/EP are set in the model code, e.g. Megatron-DeepSpeed " + " ".join(par)
                     + (" --sequence-parallel" if row.get("sequence_parallel") else ""))
    if row["precision"] == "fp8":
        notes.append("deepspeed: fp8 matmuls come from Transformer Engine layers in the model; the config runs bf16")
    return cfg, notes


def _deepspeed(row: dict, launch: dict, name: str) -> Export:
    cfg, notes = deepspeed_config(row, launch)
    return Export("deepspeed", json.dumps(cfg, indent=2) + "\n",
                  (f"deepspeed: launch with deepspeed --num_nodes {row.get('n_nodes', 1)} --num_gpus "
                   f"{_per_node(row)} ... --deepspeed_config ds_config.json",) + tuple(notes))


# ----------------------------------------------------------------------------------------
# serving engines
# ----------------------------------------------------------------------------------------

def _serve_model(rep: dict, launch: dict) -> str:
    m = launch["model"]
    name = rep.get("model") or m["name"]
    return (_hf_id(m) if name == m["name"] else None) or name


def _max_len(launch: dict) -> int:
    return int(launch["max_prompt_tokens"] + launch["max_output_tokens"])


def _quantization(rep: dict, engine: str) -> tuple[str | None, str | None]:
    """(quantization method flag value, note) for a replica's weight format.

    fp8 weights: online fp8 quantization, ``--quantization fp8`` in both engines. int4/int8:
    the engines read the method from a pre-quantized checkpoint (GPTQ, AWQ, W8A8 in
    compressed-tensors); a named method is passed explicitly."""
    w, comp = rep["weights"], str(rep.get("compression") or "none")
    if w in ("bf16", "fp16"):
        return None, None
    if w == "fp8":
        return "fp8", None
    for method in ("gptq", "awq"):
        if method in comp:
            return method, None
    return None, (f"{engine}: {w} weights need a pre-quantized checkpoint ({comp if comp != 'none' else 'e.g. GPTQ, AWQ or '}"
                  f"{'' if comp != 'none' else 'W8A8 compressed-tensors'}); the engine reads the method from it")


#: KV-cache dtypes: vLLM vllm/config/cache.py CacheDType; SGLang server_args.py --kv-cache-dtype.
VLLM_KV = {"bf16": "auto", "fp16": "auto", "fp8": "fp8", "int8": "int8"}
SGLANG_KV = {"bf16": "auto", "fp16": "auto", "fp8": "fp8_e4m3"}


def vllm_args(rep: dict, launch: dict) -> tuple[list[str], list[str]]:
    """``vllm serve`` arguments of one replica (vllm/engine/arg_utils.py EngineArgs names):
    TP/PP, the batch cap (``--max-num-seqs``: the replica's sequences in flight), the longest
    request (p99 prompt + p99 output), weight and KV formats, the memory-utilisation cap."""
    notes = []
    a = [_serve_model(rep, launch), "--tensor-parallel-size", rep["tp"], "--pipeline-parallel-size",
         rep.get("pp", 1), "--max-num-seqs", rep["batch"], "--max-model-len", _max_len(launch),
         "--gpu-memory-utilization", launch.get("gpu_memory_utilization", 0.9), "--dtype", "bfloat16",
         "--kv-cache-dtype", VLLM_KV[rep["kv"]], "--port", SERVE_PORT]
    return _with_quantization(a, notes, rep, "vllm")


def _with_quantization(a: list, notes: list[str], rep: dict, engine: str) -> tuple[list[str], list[str]]:
    """An engine's arguments ``a`` with its ``--quantization`` flag for the replica's weight
    format (when it needs one) and the format's note, as strings (vLLM and SGLang alike)."""
    q, note = _quantization(rep, engine)
    if q:
        a = [*a, "--quantization", q]
    if note:
        notes = [*notes, note]
    return [str(x) for x in a], notes


def sglang_args(rep: dict, launch: dict) -> tuple[list[str], list[str]]:
    """``python -m sglang.launch_server`` arguments (python/sglang/srt/server_args.py):
    ``--tp-size``/``--pp-size``, ``--max-running-requests`` (batch cap), ``--context-length``,
    ``--kv-cache-dtype``, ``--quantization``, ``--mem-fraction-static``."""
    notes = []
    if rep["kv"] not in SGLANG_KV:
        notes.append(f"sglang: no {rep['kv']} KV cache; the nearest is fp8_e4m3")
    a = ["--model-path", _serve_model(rep, launch), "--tp-size", rep["tp"], "--pp-size", rep.get("pp", 1),
         "--max-running-requests", rep["batch"], "--context-length", _max_len(launch),
         "--mem-fraction-static", launch.get("gpu_memory_utilization", 0.9), "--dtype", "bfloat16",
         "--kv-cache-dtype", SGLANG_KV.get(rep["kv"], "fp8_e4m3"), "--port", SERVE_PORT]
    return _with_quantization(a, notes, rep, "sglang")


def _group_comment(i: int, rep: dict) -> str:
    return (f"# group {i + 1}: {rep['count']} replica(s) of {rep['gpu']} x{rep['tp'] * rep.get('pp', 1)} "
            f"(tp {rep['tp']}, pp {rep.get('pp', 1)}), {rep['weights']} weights, {rep['kv']} KV cache, "
            f"batch {rep['batch']}" + (f"; offer {rep['offer']}" if rep.get("offer") else ""))


def _engine_cmd(engine: str, rep: dict, launch: dict) -> tuple[list[str], list[str]]:
    if engine == "vllm":
        args, notes = vllm_args(rep, launch)
        return ["vllm", "serve"] + args, notes
    args, notes = sglang_args(rep, launch)
    return ["python", "-m", "sglang.launch_server"] + args, notes


def _serve_script(engine: str):
    def build(row: dict, launch: dict, name: str) -> Export:
        out = ["#!/bin/bash",
               f"# clusteropt export {name}: {len(row['replicas'])} replica group(s), {row['n_gpus']} GPUs; "
               f"one command per replica, on its own GPUs behind a load balancer", ""]
        notes: list[str] = []
        for i, rep in enumerate(row["replicas"]):
            cmd, n = _engine_cmd(engine, rep, launch)
            notes += [x for x in n if x not in notes]
            out += [_group_comment(i, rep), _lines(cmd), ""]
        return Export(engine, "\n".join(out), tuple(notes))
    return build


# ----------------------------------------------------------------------------------------
# SkyPilot
# ----------------------------------------------------------------------------------------

@functools.cache
def skypilot_names() -> dict[str, str]:
    """catalog/skypilot_accelerators.csv: SkyPilot's accelerator name of each catalog GPU id."""
    import csv

    from optimizer.catalog import data_dir

    out = {}
    with open(data_dir() / "skypilot_accelerators.csv", newline="") as f:
        for i, r in enumerate(csv.DictReader(f), start=2):
            if not r.get("gpu") or not r.get("skypilot_accelerator") or not r.get("source"):
                raise ClusteroptError(f"skypilot_accelerators.csv:row {i}", f"gpu {r.get('gpu')!r}",
                                      "an accelerator id with a SkyPilot name and a source")
            out[r["gpu"]] = r["skypilot_accelerator"]
    return out


def _skypilot_resources(gpu: str, per_node: int, row_or_rep: dict, launch: dict) -> tuple[dict, list[str]]:
    acc = skypilot_names().get(gpu)
    notes = []
    if acc is None:
        acc = gpu
        notes.append(f"skypilot: no SkyPilot accelerator name known for {gpu}; check `sky show-gpus`")
    res: dict = {"accelerators": f"{acc}:{per_node}"}
    provider, instance = _offer(row_or_rep)
    cloud = SKYPILOT_CLOUDS.get((provider or "").lower())
    if cloud:
        res["cloud"] = cloud
        per_instance = (launch.get("gpus_per_instance") or {}).get(f"{provider} {instance}")
        if instance and per_instance == per_node:
            res["instance_type"] = instance
    if (row_or_rep.get("pricing_mode") or launch.get("pricing_mode")) == "spot":   # the row's own mode (issue 17)
        res["use_spot"] = True
    return res, notes


def _skypilot_train(row: dict, launch: dict, name: str) -> Export:
    args, notes = megatron_args(row, launch)
    per_node, n_nodes = _per_node(row), int(row.get("n_nodes") or 1)
    res, n2 = _skypilot_resources(row["gpu"], per_node, row, launch)
    run = ("MASTER_ADDR=$(echo \"$SKYPILOT_NODE_IPS\" | head -n1)\n"
           + _lines(["torchrun", "--nnodes", "$SKYPILOT_NUM_NODES", "--nproc-per-node", "$SKYPILOT_NUM_GPUS_PER_NODE",
                     "--node-rank", "$SKYPILOT_NODE_RANK", "--master-addr", "$MASTER_ADDR", "--master-port",
                     str(TORCHRUN_PORT), "pretrain_gpt.py"] + args) + "\n")
    task = {"name": name, "num_nodes": n_nodes, "resources": res,
            "setup": "# install Megatron-LM (e.g. the NGC PyTorch container) and stage the data here\n",
            "run": run}
    head = f"# clusteropt export {name}: SkyPilot task, `sky launch` it\n# {_summary(row)}\n"
    return Export("skypilot", head + _yaml(task), tuple(notes + n2))


def _instance_gpus(row: dict, rep: dict) -> int | None:
    """GPUs per instance of the offer a replica group is priced on (the fleet's 'instances')."""
    for inst in row.get("instances") or []:
        if inst.get("gpu") == rep["gpu"] and inst.get("offer") == rep.get("offer"):
            return int(inst["gpus_per_instance"])
    return None


def _skypilot_serve(row: dict, launch: dict, name: str) -> Export:
    """SkyServe services, one per replica group. A SkyServe replica is one machine; where the
    group is priced on whole multi-GPU instances (8-GPU p5), one replica is one instance running
    instance-GPUs / replica-GPUs engine copies (vLLM ``--data-parallel-size``, which balances
    requests over them), as the fleet was priced."""
    docs, notes = [], []
    for i, rep in enumerate(row["replicas"]):
        per_replica = int(rep["tp"]) * int(rep.get("pp", 1))
        gpi = _instance_gpus(row, rep)
        copies = gpi // per_replica if gpi and gpi > per_replica and gpi % per_replica == 0 else 1
        machines = math.ceil(int(rep["count"]) / copies)
        res, n = _skypilot_resources(rep["gpu"], per_replica * copies, rep, launch)
        res["ports"] = SERVE_PORT
        cmd, n2 = _engine_cmd("vllm", rep, launch)
        if copies > 1:
            cmd += ["--data-parallel-size", str(copies)]
            if machines * copies != int(rep["count"]):
                notes.append(f"skypilot: group {i + 1}'s {rep['count']} replicas fill {machines} whole instances "
                             f"of {gpi} GPUs: {machines * copies} engine copies run (the GPUs are paid either way)")
        notes += [x for x in n + n2 if x not in notes]
        docs.append({"name": f"{name}-group{i + 1}",
                     "service": {"readiness_probe": "/v1/models", "replicas": machines},
                     "resources": res, "run": _lines(cmd) + "\n"})
    head = (f"# clusteropt export {name}: SkyServe, one service per replica group ({len(docs)}); save each\n"
            "# document to its own file and `sky serve up` it (a multi-document file is a pipeline to SkyPilot)\n")
    text = head + "---\n".join(_yaml(d) for d in docs)
    return Export("skypilot", text, tuple(notes))


# ----------------------------------------------------------------------------------------
# Slurm
# ----------------------------------------------------------------------------------------

def _slurm_time(days: float) -> str:
    """Slurm's ``--time`` (days-hours:minutes:seconds), rounded up to the hour."""
    hours = max(1, math.ceil(days * 24))
    return f"{hours // 24}-{hours % 24:02d}:00:00"


def _slurm_train(row: dict, launch: dict, name: str) -> Export:
    args, notes = megatron_args(row, launch)
    n_nodes, per_node = int(row.get("n_nodes") or 1), _per_node(row)
    out = ["#!/bin/bash", f"#SBATCH --job-name={name}", f"#SBATCH --nodes={n_nodes}", "#SBATCH --ntasks-per-node=1",
           f"#SBATCH --gpus-per-node={per_node}", "#SBATCH --exclusive",
           f"#SBATCH --time={_slurm_time(float(row['wall_clock_days']))}",
           f"# clusteropt export {name}: {_summary(row)} ({row['gpu']}; add your site's --partition/--constraint)",
           f"# --time is the predicted wall-clock {float(row['wall_clock_days']):.1f} days rounded up to the hour",
           "set -euo pipefail",
           'MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',
           "srun " + _lines(["torchrun", "--nnodes", str(n_nodes), "--nproc-per-node", str(per_node), "--rdzv-backend",
                             "c10d", "--rdzv-endpoint", '"$MASTER_ADDR":%d' % TORCHRUN_PORT, "--rdzv-id",
                             "clusteropt", "pretrain_gpt.py"] + args), ""]
    return Export("slurm", "\n".join(out), tuple(notes))


def _slurm_serve(row: dict, launch: dict, name: str) -> Export:
    """A heterogeneous job: one component per replica group, one task per replica."""
    head = ["#!/bin/bash", f"#SBATCH --job-name={name}"]
    body, notes = [], []
    for i, rep in enumerate(row["replicas"]):
        if i:
            head.append("#SBATCH hetjob")
        gpus = int(rep["tp"]) * int(rep.get("pp", 1))
        head += [f"#SBATCH --ntasks={int(rep['count'])}", f"#SBATCH --gpus-per-task={gpus}"]
        cmd, n = _engine_cmd("vllm", rep, launch)
        notes += [x for x in n if x not in notes]
        cmd = [c for c in cmd]
        port_at = cmd.index("--port") + 1
        cmd[port_at] = "PORT"
        inner = " ".join(shlex.quote(c) for c in cmd).replace("PORT", "$((%d + SLURM_LOCALID))" % SERVE_PORT)
        body += [_group_comment(i, rep) + " (add your site's --constraint for this GPU)",
                 f"srun --het-group={i} bash -c {shlex.quote(inner)} &"]
    text = "\n".join(head + [f"# clusteropt export {name}: {row['n_gpus']} GPUs serving; each task is one replica",
                             "set -euo pipefail"] + body + ["wait", ""])
    return Export("slurm", text, tuple(notes))


_TRAIN = {"megatron": _megatron, "nemo": _nemo, "torchtitan": _torchtitan, "deepspeed": _deepspeed,
          "skypilot": _skypilot_train, "slurm": _slurm_train}
_SERVE = {"vllm": _serve_script("vllm"), "sglang": _serve_script("sglang"), "skypilot": _skypilot_serve,
          "slurm": _slurm_serve}
