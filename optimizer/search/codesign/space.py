"""Co-design data: the family's rungs, the token grid and the serving cost per token."""

from __future__ import annotations

import math
from dataclasses import dataclass
import numpy as np

from optimizer.errors import ClusteroptError
from optimizer.formulas.serving import estimate_serving
from optimizer.formulas.sizing import generate, ladder
from optimizer.model.families import get_family
from optimizer.units import SECONDS_PER_HOUR

LOSS_UNITS_PER_NAT = 1_000_000
FLOP_UNIT = 1e15
#: tokens: auto -> tokens per parameter from AUTO_TPP_MIN to AUTO_TPP_MAX, ``step`` apart.
#: 1 to 5,000 spans under-trained runs up to Llama-3-8B's 15T tokens (1,875 per parameter).
AUTO_TPP_MIN = 1.0
AUTO_TPP_MAX = 5000.0
#: Spacing of the training-token grid (ratio of neighbours): 0.2%, so the tokens are a fine
#: decision and a budget or deadline binds to within 0.2% (issue 18: a 1.25x grid, the model
#: ladder's step, stopped $5M runs at $4.15M). ``solve_codesign(token_step=...)`` overrides it.
TOKEN_STEP = 1.002
#: Serving defaults when train.inference.serve leaves them out: the issue's example workload.
DEFAULT_PROMPT_TOKENS = 1500
DEFAULT_OUTPUT_TOKENS = 300
DEFAULT_TTFT_S = 1.0
DEFAULT_ITL_S = 0.05
SERVE_BATCHES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
SERVE_TPS = (1, 2, 4, 8)
SERVE_PPS = (1, 2, 4)

OBJECTIVES = ("loss", "cost", "time", "lifetime_flop")

#: Extra columns of a co-design configuration (after api.LAYOUT_COLUMNS).
EXTRA_COLUMNS = ("model", "model_params", "train_tokens", "tokens_per_param", "predicted_loss",
                 "train_flop", "inference_cost_usd", "lifetime_cost_usd", "lifetime_flop",
                 "serving_gpu", "serving_tp", "serving_pp", "serving_batch")


# ----------------------------------------------------------------------------------------
# data: rungs, token grids, serving cost
# ----------------------------------------------------------------------------------------

def rungs_of(train) -> list:
    """The ladder of ``train.model`` (one rung when ``params`` is a number)."""
    choice = train.model
    fam = get_family(choice.family)
    if not isinstance(choice.params, str):
        return [generate(fam, float(choice.params))]
    return ladder(fam, choice.min_params, choice.max_params, choice.step)


def token_grid(train, n_params: float, step: float = TOKEN_STEP, extra=()) -> np.ndarray:
    """Training-token values tried for a rung of ``n_params``: the number given; ``{min, max}``
    geometric ``step`` apart (both ends included; default TOKEN_STEP); ``auto``:
    AUTO_TPP_MIN..AUTO_TPP_MAX tokens per parameter. ``extra`` values inside the range are added (the exact tokens reaching target_loss).
    Units: tokens."""
    t = train.tokens
    if isinstance(t, (int, float)):
        return np.array([float(t)])
    lo, hi = (t.min, t.max) if not isinstance(t, str) else (AUTO_TPP_MIN * n_params, AUTO_TPP_MAX * n_params)
    k = int(math.floor(math.log(hi / lo) / math.log(step) + 1e-9))
    vals = list(lo * step ** np.arange(k + 1))
    if vals[-1] < hi * (1 - 1e-9):
        vals.append(hi)
    vals += [float(e) for e in extra if lo <= e <= hi and math.isfinite(e)]
    return np.unique(np.array(vals, dtype=float))


@dataclass(frozen=True)
class ServingChoice:
    """The cheapest replica per token for one rung (``serving_usd_per_token``)."""

    usd_per_token: float          # inf when no option fits and meets the SLOs
    gpu: str = ""
    tp: int = 0
    pp: int = 0
    batch: int = 0


def serve_params(train) -> tuple[int, int, float, float]:
    s = train.inference.serve if train.inference is not None else None
    prompt = s.prompt_tokens.mean if s is not None and s.prompt_tokens is not None else DEFAULT_PROMPT_TOKENS
    output = s.output_tokens.mean if s is not None and s.output_tokens is not None else DEFAULT_OUTPUT_TOKENS
    slo = s.slo if s is not None else None
    ttft = slo.ttft_p99_s if slo is not None and slo.ttft_p99_s is not None else DEFAULT_TTFT_S
    itl = slo.itl_p99_s if slo is not None and slo.itl_p99_s is not None else DEFAULT_ITL_S
    return int(round(prompt)), int(round(output)), float(ttft), float(itl)


def serving_usd_per_token(spec, gpus, prompt_len: int, output_len: int, ttft_s: float, itl_s: float) -> ServingChoice:
    """Least cost per served token (prompt + output) of one replica of ``spec`` over GPU types,
    TP in SERVE_TPS (within the NVLink domain), PP in SERVE_PPS and batch in SERVE_BATCHES, bf16
    weights and KV, that fits in memory with ``ttft_s`` >= TTFT and ``itl_s`` >= ITL
    (formulas/serving.estimate_serving at the mean lengths). Cost = GPUs x $/GPU-hour / 3600 /
    (requests/s x (prompt + output)). Units: USD per token.
    """

    best = ServingChoice(math.inf)
    batches = np.array(SERVE_BATCHES)
    for g in gpus:
        hw = g.hardware
        for pp in SERVE_PPS:
            found = False
            for tp in SERVE_TPS:
                if tp > max(hw.intra_node_domain, 1) or spec.num_heads % tp or tp * pp > max(hw.gpus_per_node, 1):
                    continue
                try:
                    est = estimate_serving(spec, hw, tp=tp, pp=pp, batch=batches, prompt_len=prompt_len,
                                           output_len=output_len)
                except ClusteroptError:
                    continue
                ok = (np.asarray(est.fits) & (np.asarray(est.ttft_s) <= ttft_s)
                      & (np.asarray(est.itl_s) <= itl_s))
                if not ok.any():
                    continue
                found = True
                tok_s = np.asarray(est.requests_per_s) * (prompt_len + output_len)
                usd = g.usd_per_gpu_hour * tp * pp / SECONDS_PER_HOUR / np.where(ok, tok_s, np.nan)
                i = int(np.nanargmin(usd))
                if usd[i] < best.usd_per_token:
                    best = ServingChoice(float(usd[i]), g.name, tp, pp, int(batches[i]))
            if found:
                break                     # deeper pipelines only when no shallower one fits
    return best
