"""Model families: an exact architecture (ModelSpec) for any target size, by the family's shape rules.

A family is described by its RELEASED sizes (anchors: width, depth, FFN size as published)
and the rules its authors state for the shapes in between. ``generate(family, n_params)``
returns the ModelSpec of that family closest to ``n_params`` total parameters;
``ladder(family, min_params, max_params, step)`` returns sizes about ``step`` apart. Every
count is the exact one of ``optimizer.formulas.params.count_params`` (the same function the
estimators use; imported lazily, since formulas/ sits below model/ in the layer order and
params.py itself only reads model/spec.py).

Generation (both kinds)
-----------------------
1. Widths ``d`` are multiples of ``width_step``: head_dim x kv_heads, so that the head count
   ``d / head_dim`` is a whole multiple of the GQA groups (Ainslie et al. 2023).
2. Depth against width: the family's released (d, L) pairs joined piecewise-linearly in
   (log d, log L), continued beyond the ends with the end segments' slopes. This is the
   'depth rule' ``depth_rule(d)``; it passes through every anchor.
3. For each width the depth that brings the exact count nearest the target is
   L = round((N - N_fixed(d)) / N_layer(d)), where N_fixed (embedding, LM head, final norm)
   and N_layer (one decoder layer) come from count_params. The width whose L departs least
   from depth_rule(d) (in log) wins; ties go to the smaller count error.
   At a released size this returns the released (d, L): the anchor has zero departure.

Families (``FAMILIES``)
-----------------------
``llama-3``  dense, GQA with 8 KV heads, head_dim 128, SwiGLU, RMSNorm, RoPE, untied
             128,256-token vocabulary. Anchors: Llama 3 paper (Dubey et al. 2024,
             arXiv:2407.21783) Table 3: 8B (d 4096, 32 layers, FFN 14,336, 32 heads),
             70B (8192, 80, 28,672, 64), 405B (16384, 126, 53,248, 128), 8 KV heads each.
             FFN rule of the reference code (meta-llama/llama3 model.py, FeedForward):
             ffn = multiple_of * ceil(ffn_dim_multiplier * int(8 d / 3) / multiple_of), with
             (ffn_dim_multiplier, multiple_of) = (1.3, 1024) for 8B, (1.3, 4096) for 70B,
             (1.2, 4096) for 405B (each model's params.json); between them the nearer
             released model's values (multiple_of 4096 from d = 8192, multiplier 1.2 from
             d = 16384).
``mixtral``  sparse MoE, 8 experts, top-2 (Jiang et al. 2024, 'Mixtral of Experts',
             arXiv:2401.04088, Table 1: d 4096, 32 layers, head_dim 128, 32 heads, 8 KV heads,
             expert FFN 14,336, 32,000 vocabulary); 8x22B (Mistral AI config.json: d 6144,
             56 layers, 48 heads, 8 KV heads, expert FFN 16,384). No published FFN rule: the
             ratio ffn/d (3.5 at 4096, 2.667 at 6144) is interpolated in log d between the
             anchors, held constant beyond them, and rounded to a multiple of 512. Vocabulary
             32,000 (the 8x7B tokenizer; 8x22B's 32,768 differs by 0.007% of its count).

Units: parameters (counts).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Optional

from optimizer.errors import ClusteroptError, unknown_name
from optimizer.model.spec import ModelSpec, MoESpec

DEFAULT_LADDER_STEP = 1.25


@dataclass(frozen=True)
class Anchor:
    """A released size: (width, depth, FFN size) as published."""

    name: str
    hidden_size: int
    num_layers: int
    ffn_size: int


@dataclass(frozen=True)
class Family:
    """Shape rules of one model family (see the module docstring for each)."""

    name: str
    kind: str                                  # dense | moe
    anchors: tuple[Anchor, ...]
    vocab_size: int
    head_dim: int
    kv_heads: int
    ffn_rule: Callable[[int], int]             # width -> (expert) FFN intermediate size
    max_position_embeddings: int
    source: str
    num_experts: int = 0
    experts_per_token: int = 0
    min_width: int = 1024
    max_width: int = 65536
    aliases: tuple[str, ...] = field(default=())

    @property
    def width_step(self) -> int:
        return self.head_dim * self.kv_heads


def llama_ffn_size(hidden_size: int, ffn_dim_multiplier: Optional[float], multiple_of: int) -> int:
    """Llama FFN width: int(2 * 4d / 3), times ffn_dim_multiplier, rounded UP to multiple_of.

    Source: meta-llama/llama3 model.py, FeedForward.__init__ (hidden_dim = int(2 * hidden_dim / 3);
    int(ffn_dim_multiplier * hidden_dim); multiple_of * ((hidden_dim + multiple_of - 1) // multiple_of))
    with hidden_dim = 4 d. Gives 14,336 / 28,672 / 53,248 for Llama 3 8B / 70B / 405B (Table 3).
    """
    h = int(2 * (4 * hidden_size) / 3)
    if ffn_dim_multiplier is not None:
        h = int(ffn_dim_multiplier * h)
    return multiple_of * ((h + multiple_of - 1) // multiple_of)


def _llama3_ffn(d: int) -> int:
    """(ffn_dim_multiplier, multiple_of) of the nearest released Llama 3 model's params.json."""
    mult = 1.2 if d >= 16384 else 1.3
    multiple_of = 4096 if d >= 8192 else 1024
    return llama_ffn_size(d, mult, multiple_of)


def _interp_log(x: float, xs: list[float], ys: list[float], extrapolate: bool) -> float:
    """Piecewise-linear interpolation of log y against log x; beyond the ends the end slopes
    (``extrapolate``) or the end values."""
    lx = math.log(x)
    lxs = [math.log(v) for v in xs]
    lys = [math.log(v) for v in ys]
    if len(xs) == 1:
        return ys[0]
    if lx <= lxs[0]:
        i = 0
        if not extrapolate:
            return ys[0]
    elif lx >= lxs[-1]:
        i = len(xs) - 2
        if not extrapolate:
            return ys[-1]
    else:
        i = max(j for j in range(len(xs) - 1) if lxs[j] <= lx)
    slope = (lys[i + 1] - lys[i]) / (lxs[i + 1] - lxs[i])
    return math.exp(lys[i] + slope * (lx - lxs[i]))


_MIXTRAL_ANCHORS = (Anchor("mixtral-8x7b", 4096, 32, 14336), Anchor("mixtral-8x22b", 6144, 56, 16384))


def _mixtral_ffn(d: int) -> int:
    xs = [a.hidden_size for a in _MIXTRAL_ANCHORS]
    ratios = [a.ffn_size / a.hidden_size for a in _MIXTRAL_ANCHORS]
    ratio = _interp_log(d, xs, ratios, extrapolate=False)
    return max(512, 512 * round(ratio * d / 512))


FAMILIES: dict[str, Family] = {
    "llama-3": Family(
        name="llama-3", kind="dense",
        anchors=(Anchor("llama-3-8b", 4096, 32, 14336), Anchor("llama-3-70b", 8192, 80, 28672),
                 Anchor("llama-3.1-405b", 16384, 126, 53248)),
        vocab_size=128256, head_dim=128, kv_heads=8, ffn_rule=_llama3_ffn,
        max_position_embeddings=8192, aliases=("llama3", "llama-3.1", "llama"),
        source="Dubey et al. 2024 (The Llama 3 Herd of Models, arXiv:2407.21783) Table 3; "
               "meta-llama/llama3 model.py FeedForward and params.json",
    ),
    "mixtral": Family(
        name="mixtral", kind="moe", anchors=_MIXTRAL_ANCHORS,
        vocab_size=32000, head_dim=128, kv_heads=8, ffn_rule=_mixtral_ffn,
        max_position_embeddings=32768, num_experts=8, experts_per_token=2,
        aliases=("mixtral-moe", "mistral-moe"),
        source="Jiang et al. 2024 (Mixtral of Experts, arXiv:2401.04088) Table 1; "
               "mistralai/Mixtral-8x22B-v0.1 config.json",
    ),
}


def family_names() -> list[str]:
    return sorted(FAMILIES)


def get_family(name: str, field: str = "train.model.family") -> Family:
    """The family registered under ``name`` or an alias (case-insensitive)."""
    key = str(name).strip().lower()
    for fam in FAMILIES.values():
        if key == fam.name or key in fam.aliases:
            return fam
    raise unknown_name(field, "model family", str(name), family_names())


def depth_rule(family: Family, hidden_size: int) -> float:
    """The family's depth at width d: released (d, L) joined in log-log (module docstring, step 2)."""
    xs = [a.hidden_size for a in family.anchors]
    ys = [a.num_layers for a in family.anchors]
    return _interp_log(hidden_size, xs, ys, extrapolate=True)


def make_spec(family: Family, hidden_size: int, num_layers: int, name: str = "") -> ModelSpec:
    """The family's ModelSpec at width ``hidden_size`` and depth ``num_layers``."""
    fam = get_family(family) if isinstance(family, str) else family
    if hidden_size % fam.width_step:
        raise ClusteroptError("hidden_size", f"{hidden_size} is not a multiple of {fam.width_step}",
                              f"{fam.name}: head_dim {fam.head_dim} x {fam.kv_heads} KV heads")
    ffn = fam.ffn_rule(hidden_size)
    moe = None
    if fam.kind == "moe":
        moe = MoESpec(num_experts=fam.num_experts, experts_per_token=fam.experts_per_token, expert_ffn_size=ffn)
    return ModelSpec(
        name=name or f"{fam.name}-d{hidden_size}-l{num_layers}", family=fam.name, source=fam.source,
        vocab_size=fam.vocab_size, hidden_size=hidden_size, num_layers=num_layers,
        num_heads=hidden_size // fam.head_dim, num_kv_heads=fam.kv_heads, ffn_kind="gated", ffn_size=ffn,
        activation="silu", norm_kind="rmsnorm", position="rope",
        max_position_embeddings=fam.max_position_embeddings, tie_word_embeddings=False, moe=moe)


def widths(fam: Family) -> range:
    """Hidden sizes the family's shape rules allow, ascending."""
    return range(max(fam.min_width, fam.width_step), fam.max_width + 1, fam.width_step)
