"""How the reference counts in tests/data/presets_reference_counts.json and
params_variants_reference.json were made (not run by the test suite; it needs torch and
transformers, which clusteropt does not depend on).

    python3 -m venv /tmp/refvenv
    /tmp/refvenv/bin/pip install "torch==2.13.0+cpu" transformers==5.24.0   # CPU wheel from PyPI
    # any CONFIGS.json mapping a name to a Hugging Face config dict:
    /tmp/refvenv/bin/python tests/data/params_refcount.py CONFIGS.json OUT.json
    # or regenerate the stored files' counts directly from their configs (prints differences):
    /tmp/refvenv/bin/python tests/data/params_refcount.py --check-presets
    /tmp/refvenv/bin/python tests/data/params_refcount.py --check-variants

Each config is built with AutoConfig.for_model, the class named in architectures[0] is
instantiated on the meta device (no weights, no network) and its parameters are counted.
Nested image-text configs (Gemma 3, Llama 4: text_config + vision_config) count the whole
ForConditionalGeneration class, vision tower included; expert counts for 'active' are read
from the text config. Issue 19 (2026-12) added the presets and variant cases of Qwen3,
Qwen3-MoE, Gemma 3, OLMo 2, OLMoE, Phi-3.5-MoE, gpt-oss, Llama 4, Cohere, Granite and Jamba
with the same versions.
"""
import json, sys, warnings, logging
warnings.filterwarnings("ignore")
import torch, transformers
from transformers import AutoConfig
transformers.logging.set_verbosity_error()

def ref_count(cfg: dict):
    cfg = dict(cfg)
    mt = cfg.pop("model_type")
    arch = (cfg.get("architectures") or [None])[0]
    conf = AutoConfig.for_model(mt, **cfg)
    cls = getattr(transformers, arch)
    with torch.device("meta"):
        model = cls(conf)
    total = sum(p.numel() for p in model.parameters())
    routed = sum(p.numel() for n, p in model.named_parameters() if ".experts." in n and "shared" not in n)
    tc = conf.get_text_config() if hasattr(conf, "get_text_config") else conf   # nested text_config (Gemma 3, Llama 4)
    E = getattr(tc, "num_local_experts", None) or getattr(tc, "n_routed_experts", None) or getattr(tc, "num_experts", None)
    k = getattr(tc, "num_experts_per_tok", None)
    active = None
    if routed:
        assert routed % E == 0
        active = total - routed // E * (E - k)
    emb = model.get_input_embeddings().weight.numel()
    out = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    tied = out is not None and out.weight is model.get_input_embeddings().weight
    lm = sum(p.numel() for p in out.parameters()) if out is not None else 0
    return dict(total=total, active=active, embedding=emb, lm_head=lm, tied=tied, hf_class=arch)

def _check(pairs):
    """Recount (name, config, stored reference) triples; print and count the differences."""
    bad = 0
    for name, cfg, ref in pairs:
        got = ref_count(cfg)
        same = all(got[k] == ref.get(k) for k in ("total", "active", "embedding"))
        bad += not same
        print("same" if same else "DIFFERENT", name, got if not same else got["total"], flush=True)
    return bad


if __name__ == "__main__":
    import pathlib
    here = pathlib.Path(__file__).resolve().parent
    if sys.argv[1:] == ["--check-presets"]:
        counts = json.load(open(here / "presets_reference_counts.json"))["counts"]
        presets = {}
        for path in sorted((here.parents[1] / "optimizer" / "model" / "presets").glob("*.json")):
            d = json.load(open(path))
            presets[d["name"]] = d["config"]
        sys.exit(_check((n, c, counts[n]) for n, c in presets.items()))
    if sys.argv[1:] == ["--check-variants"]:
        cases = json.load(open(here / "params_variants_reference.json"))["cases"]
        sys.exit(_check((n, c["config"], c["reference"]) for n, c in cases.items()))
    items = json.load(open(sys.argv[1]))
    res = {}
    for name, cfg in items.items():
        try:
            res[name] = ref_count(cfg)
        except Exception as e:
            res[name] = {"error": repr(e)[:300]}
        print(name, res[name], flush=True)
    json.dump(res, open(sys.argv[2], "w"), indent=1)
