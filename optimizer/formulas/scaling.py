"""Scaling laws: predicted loss L(N, D), compute-optimal allocation, inference-aware sizing.

Conventions
-----------
* N = parameters, D = training tokens, C = training FLOPs = 6 N D (Kaplan et al. 2020,
  Sec. 2.1: 2 FLOPs per multiply-add, forward 2N per token, backward twice the forward).
* Loss is cross-entropy in nats per token on the law's own corpus (MassiveText for
  Hoffmann/Besiroglu, WebText2 for Kaplan): losses of different laws are not comparable.
* Hoffmann-form laws count all parameters (embeddings included); Kaplan counts
  non-embedding parameters and non-embedding compute.
* Every function accepts scalars or numpy arrays (broadcast); scalars give numpy floats.

Laws (``LAWS``)
---------------
``hoffmann2022``        Hoffmann et al. 2022, 'Training Compute-Optimal Large Language
                        Models' (arXiv:2203.15556), approach 3, constants as printed in
                        the paper (Sec. 3.3 / App. D.2): E=1.69, A=406.4, B=410.7,
                        alpha=0.34, beta=0.28.
``hoffmann2022_tex``    The same fit with the unrounded exponents of the paper's TeX
                        source (E=1.6934, alpha=0.3392, beta=0.2849), as quoted by
                        Besiroglu et al. 2024, Table 1. Besiroglu et al. show that the
                        printed rounding biases the optimum; these values reproduce the
                        paper's own approach-3 allocations (Table A3) to within 20% and
                        Sardana et al.'s Figure 1 example, where the printed ones do not
                        (tests/test_scaling.py).
``besiroglu2024``       Besiroglu et al. 2024, 'Chinchilla Scaling: A replication attempt'
                        (arXiv:2404.10102), Table 1 refit: E=1.8172, A=482.01, B=2085.43,
                        alpha=0.3478, beta=0.3658. THE DEFAULT (scenario ``train.scaling_law``
                        and ``clusteropt scaling --law``): the corrected refit of approach 3,
                        since the printed hoffmann2022 constants are biased (above). Checked
                        2026-12-07 against the paper (arXiv HTML v2: abstract and authors) and
                        independent restatements of its Table 1 with standard errors (E 1.8172
                        (0.03), A 482.01 (124.58), B 2085.43 (1293.23), alpha 0.3478 (0.02),
                        beta 0.3658 (0.02)); E = 1.82 when rounded.
``kaplan2020``          Kaplan et al. 2020, 'Scaling Laws for Neural Language Models'
                        (arXiv:2001.08361): L(N, D) of Eq. (1.5)/(4.1) with Table 2 fits
                        and the compute-efficient frontier N = 1.3e9 * C_min^0.73 (C_min in
                        PF-days, Fig. 14).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import numpy as np

from optimizer.formulas._checks import scalar_or_array as _out

from optimizer.errors import ClusteroptError, unknown_name
from optimizer.units import PETA, SECONDS_PER_DAY

FLOP_PER_PARAM_PER_TRAIN_TOKEN = 6.0   # Kaplan et al. 2020, Sec. 2.1 (C = 6 N D)
FLOP_PER_PARAM_PER_INFER_TOKEN = 2.0   # forward pass only (Kaplan et al. 2020, Eq. 2.2 leading term)
PF_DAY_FLOP = PETA * SECONDS_PER_DAY   # 8.64e19 FLOPs (Kaplan et al. 2020, Sec. 1.3)


@dataclass(frozen=True)
class FitRange:
    """The (N, D) region a law was fitted on; outside it the law is an extrapolation."""

    n_params_min: float
    n_params_max: float
    n_tokens_min: float
    n_tokens_max: float


@dataclass(frozen=True)
class ChinchillaLaw:
    """L(N, D) = E + A / N**alpha + B / D**beta (Hoffmann et al. 2022, Eq. 2)."""

    name: str
    E: float
    A: float
    B: float
    alpha: float
    beta: float
    fit: FitRange
    source: str


@dataclass(frozen=True)
class KaplanLaw:
    """L(N, D) = [(N_c/N)**(alpha_N/alpha_D) + D_c/D]**alpha_D (Kaplan et al. 2020, Eq. 4.1).

    Compute-efficient frontier (Fig. 14, left): N = n_opt_coeff * (C_min / PF-day)**n_opt_exponent,
    where C_min is the compute at the critical batch size's small-batch limit. A run trained at
    the critical batch size spends 2 * C_min (Sec. 5.1: 2 S_min steps, 2 E_min examples), so an
    actual budget C buys C_min = C / compute_over_min_compute.
    """

    name: str
    n_c: float
    d_c: float
    alpha_n: float
    alpha_d: float
    n_opt_coeff: float
    n_opt_exponent: float
    compute_over_min_compute: float
    fit: FitRange
    source: str


ScalingLaw = Union[ChinchillaLaw, KaplanLaw]

# Hoffmann et al. 2022, abstract / Sec. 3: 'over 400 language models ranging from 70 million
# to over 16 billion parameters on 5 to 500 billion tokens'. Besiroglu et al. refit points
# read off Hoffmann's Figure 4, so they share the range.
_HOFFMANN_FIT = FitRange(7e7, 1.6e10, 5e9, 5e11)

LAWS: dict[str, ScalingLaw] = {
    "hoffmann2022": ChinchillaLaw(
        name="hoffmann2022", E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28, fit=_HOFFMANN_FIT,
        source="Hoffmann et al. 2022, arXiv:2203.15556, Sec. 3.3 and App. D.2 (approach 3, printed constants)",
    ),
    "hoffmann2022_tex": ChinchillaLaw(
        name="hoffmann2022_tex", E=1.6934, A=406.4, B=410.7, alpha=0.3392, beta=0.2849, fit=_HOFFMANN_FIT,
        source="Hoffmann et al. 2022 approach 3, unrounded TeX-source values as quoted in "
               "Besiroglu et al. 2024, arXiv:2404.10102, Table 1",
    ),
    "besiroglu2024": ChinchillaLaw(
        name="besiroglu2024", E=1.8172, A=482.01, B=2085.43, alpha=0.3478, beta=0.3658, fit=_HOFFMANN_FIT,
        source="Besiroglu et al. 2024, arXiv:2404.10102, Table 1 (refit of approach 3)",
    ),
    "kaplan2020": KaplanLaw(
        name="kaplan2020", n_c=6.4e13, d_c=1.8e13, alpha_n=0.076, alpha_d=0.103,
        n_opt_coeff=1.3e9, n_opt_exponent=0.73, compute_over_min_compute=2.0,
        # Kaplan et al. 2020, Sec. 2/abstract: non-embedding sizes 768 to 1.5e9, data 22e6 to 23e9 tokens.
        fit=FitRange(768.0, 1.5e9, 2.2e7, 2.3e10),
        source="Kaplan et al. 2020, arXiv:2001.08361, Eq. 4.1 with Table 2; Fig. 14 frontier; Sec. 5.1",
    ),
}


def law_by_name(name: str, field: str = "scaling_law") -> ScalingLaw:
    """The law registered under ``name`` (case-insensitive); unknown names suggest close ones."""
    law = LAWS.get(str(name).lower())
    if law is None:
        raise unknown_name(field, "scaling law", str(name), LAWS)
    return law


def _positive(field: str, value) -> np.ndarray:
    arr = np.asarray(value, dtype=float)
    if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise ClusteroptError(field, f"must be a positive finite number (got {value!r})", "allowed: > 0")
    return arr




def training_flop(n_params, n_tokens):
    """Training compute C = 6 N D in FLOPs (Kaplan et al. 2020, Sec. 2.1; Hoffmann et al. 2022, Sec. 3.3)."""
    return _out(FLOP_PER_PARAM_PER_TRAIN_TOKEN * _positive("n_params", n_params) * _positive("n_tokens", n_tokens))


def predicted_loss(law: ScalingLaw, n_params, n_tokens):
    """Predicted final training loss (nats/token on the law's corpus) of N params trained on D tokens.

    Hoffmann form: E + A/N^alpha + B/D^beta (Hoffmann et al. 2022, Eq. 2).
    Kaplan form: [(N_c/N)^(alpha_N/alpha_D) + D_c/D]^alpha_D (Kaplan et al. 2020, Eq. 4.1, Table 2;
    N non-embedding, early-stopped loss).
    """
    n = _positive("n_params", n_params)
    d = _positive("n_tokens", n_tokens)
    if isinstance(law, ChinchillaLaw):
        return _out(law.E + law.A / n**law.alpha + law.B / d**law.beta)
    return _out(((law.n_c / n) ** (law.alpha_n / law.alpha_d) + law.d_c / d) ** law.alpha_d)


def _chinchilla_g(law: ChinchillaLaw) -> tuple[float, float]:
    """G and a of Hoffmann et al. 2022, Eq. 4: G = (alpha A / (beta B))^(1/(alpha+beta)), a = beta/(alpha+beta)."""
    g = (law.alpha * law.A / (law.beta * law.B)) ** (1.0 / (law.alpha + law.beta))
    return g, law.beta / (law.alpha + law.beta)


def compute_optimal(law: ScalingLaw, compute_flop):
    """Loss-minimising (n_params, n_tokens) for a training budget C = 6 N D, in closed form.

    Hoffmann form (Hoffmann et al. 2022, Eq. 4): N_opt = G (C/6)^a, D_opt = G^-1 (C/6)^b with
    G = (alpha A / (beta B))^(1/(alpha+beta)), a = beta/(alpha+beta), b = alpha/(alpha+beta).
    Kaplan form (Kaplan et al. 2020, Fig. 14 and Sec. 5.1): N_opt = 1.3e9 (C_min/PF-day)^0.73 with
    C_min = C/2 for training at the critical batch size; D = C / (6 N). With C = 1e21 this gives
    the 4.68e9 parameters that Hoffmann et al. (App. D.4) quote for Kaplan's allocation.
    Returns (n_params, n_tokens); arrays broadcast.
    """
    c = _positive("compute_flop", compute_flop)
    if isinstance(law, ChinchillaLaw):
        g, a = _chinchilla_g(law)
        n = g * (c / FLOP_PER_PARAM_PER_TRAIN_TOKEN) ** a
    else:
        c_min_pf_days = c / law.compute_over_min_compute / PF_DAY_FLOP
        n = law.n_opt_coeff * c_min_pf_days**law.n_opt_exponent
    return _out(n), _out(c / (FLOP_PER_PARAM_PER_TRAIN_TOKEN * n))


def compute_optimal_for_params(law: ScalingLaw, n_params):
    """(compute_flop, n_tokens) for which ``n_params`` is the compute-optimal size: the inverse
    of ``compute_optimal`` (the form of Hoffmann et al. 2022, Table 3 / Table A3)."""
    n = _positive("n_params", n_params)
    if isinstance(law, ChinchillaLaw):
        g, a = _chinchilla_g(law)
        c = FLOP_PER_PARAM_PER_TRAIN_TOKEN * (n / g) ** (1.0 / a)
    else:
        c_min_pf_days = (n / law.n_opt_coeff) ** (1.0 / law.n_opt_exponent)
        c = c_min_pf_days * PF_DAY_FLOP * law.compute_over_min_compute
    return _out(c), _out(c / (FLOP_PER_PARAM_PER_TRAIN_TOKEN * n))


def tokens_per_param(law: ScalingLaw, compute_flop):
    """D_opt / N_opt at a budget: constant-ish ~20 for approaches 1/2 and Besiroglu's refit,
    growing with C for the printed approach-3 constants (a != b)."""
    n, d = compute_optimal(law, compute_flop)
    return _out(np.asarray(d) / np.asarray(n))


def fitted_range(law: ScalingLaw) -> FitRange:
    """The (N, D) box the law was fitted on (see ``LAWS`` sources)."""
    return law.fit


def outside_fitted_range(law: ScalingLaw, n_params, n_tokens):
    """True where (N, D) lies outside the law's fitted box: a prediction there is an
    extrapolation and callers should carry a warning (issue 9)."""
    n = np.asarray(n_params, dtype=float)
    d = np.asarray(n_tokens, dtype=float)
    f = law.fit
    out = (n < f.n_params_min) | (n > f.n_params_max) | (d < f.n_tokens_min) | (d > f.n_tokens_max)
    return out[()] if out.ndim == 0 else out


@dataclass(frozen=True)
class InferenceAwarePlan:
    """Sardana et al. 2024 optimum; ``train_flop + inference_flop == total_flop``."""

    n_params: object
    n_tokens: object
    train_flop: object
    inference_flop: object
    total_flop: object


def tokens_for_loss(law: ChinchillaLaw, n_params, target_loss):
    """Training tokens at which N params reach ``target_loss`` under a Hoffmann-form law:
    D = (B / (L - E - A/N^alpha))^(1/beta); +inf where N alone cannot reach L."""
    n = _positive("n_params", n_params)
    slack = np.asarray(target_loss, dtype=float) - law.E - law.A / n**law.alpha
    with np.errstate(divide="ignore", invalid="ignore"):
        d = np.where(slack > 0, (law.B / np.where(slack > 0, slack, 1.0)) ** (1.0 / law.beta), np.inf)
    return _out(d)


def inference_aware_optimal(law: ScalingLaw, target_loss, inference_tokens, iterations: int = 200):
    """(N, D) that reach ``target_loss`` with the least lifetime FLOPs 6 N D + 2 N D_inf.

    Source: Sardana et al. 2024, 'Beyond Chinchilla-Optimal: Accounting for Inference in
    Language Model Scaling Laws' (arXiv:2401.00448), Sec. 2: minimise training FLOPs (6 N D_tr)
    plus inference FLOPs (2 N per token over D_inf lifetime tokens) subject to L(N, D_tr) = l,
    with L of Hoffmann form. (Sardana et al. solve it with Newton's method; we bisect.)

    Method: on the constraint, D(N) = tokens_for_loss(N), defined for N > N_min = (A/(l-E))^(1/alpha).
    Total F(N) = 6 N D(N) + 2 N D_inf. Its derivative has the sign of
    h(N) = 6 D (1 - alpha A N^-alpha / (beta r)) + 2 D_inf, r = l - E - A N^-alpha,
    which goes from -inf at N_min+ to 6 D + 2 D_inf > 0 as N -> inf and crosses zero once;
    we bisect log N on h for ``iterations`` steps (2^-200 of the bracket: exact to float precision).
    With D_inf = 0 the result is the compute-optimal point of that loss (tested against Eq. 4).
    Inputs broadcast; FLOPs as in Kaplan et al. 2020, Sec. 2.1.
    """
    if not isinstance(law, ChinchillaLaw):
        raise ClusteroptError("scaling_law", f"inference-aware sizing needs a Hoffmann-form law, not {law.name!r}",
                              "allowed: " + ", ".join(k for k, v in LAWS.items() if isinstance(v, ChinchillaLaw)))
    loss = np.asarray(target_loss, dtype=float)
    if not np.all(np.isfinite(loss)) or np.any(loss <= law.E):
        raise ClusteroptError("target_loss", f"must exceed the irreducible loss E={law.E} of {law.name} (got {target_loss!r})",
                              f"allowed: > {law.E}")
    d_inf = np.asarray(inference_tokens, dtype=float)
    if not np.all(np.isfinite(d_inf)) or np.any(d_inf < 0):
        raise ClusteroptError("inference_tokens", f"must be a finite number >= 0 (got {inference_tokens!r})", "allowed: >= 0")
    loss, d_inf = np.broadcast_arrays(loss, d_inf)

    log_n_min = np.log(law.A / (loss - law.E)) / law.alpha
    lo = log_n_min + 1e-9
    hi = log_n_min + 1.0
    # Expand the upper end until h > 0 there (a few steps suffice: h > 0 once r ~ beta/(alpha+beta)(l-E)).
    for _ in range(200):
        n_hi = np.exp(hi)
        r = loss - law.E - law.A * n_hi**-law.alpha
        d = (law.B / r) ** (1.0 / law.beta)
        h = 6.0 * d * (1.0 - law.alpha * law.A * n_hi**-law.alpha / (law.beta * r)) + 2.0 * d_inf
        if np.all(h > 0):
            break
        hi = np.where(h > 0, hi, hi + 1.0)
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        n_mid = np.exp(mid)
        r = loss - law.E - law.A * n_mid**-law.alpha
        d = (law.B / r) ** (1.0 / law.beta)
        h = 6.0 * d * (1.0 - law.alpha * law.A * n_mid**-law.alpha / (law.beta * r)) + 2.0 * d_inf
        lo = np.where(h < 0, mid, lo)
        hi = np.where(h < 0, hi, mid)
    n = np.exp(0.5 * (lo + hi))
    d = np.asarray(tokens_for_loss(law, n, loss), dtype=float)
    train = FLOP_PER_PARAM_PER_TRAIN_TOKEN * n * d
    infer = FLOP_PER_PARAM_PER_INFER_TOKEN * n * d_inf
    return InferenceAwarePlan(n_params=_out(n), n_tokens=_out(d), train_flop=_out(train),
                              inference_flop=_out(infer), total_flop=_out(train + infer))


def lifetime_flop(n_params, n_tokens, inference_tokens):
    """Training plus inference FLOPs: 6 N D + 2 N D_inf (Sardana et al. 2024, Sec. 2)."""
    n = _positive("n_params", n_params)
    d = _positive("n_tokens", n_tokens)
    d_inf = np.asarray(inference_tokens, dtype=float)
    if np.any(d_inf < 0):
        raise ClusteroptError("inference_tokens", f"must be >= 0 (got {inference_tokens!r})", "allowed: >= 0")
    return _out(FLOP_PER_PARAM_PER_TRAIN_TOKEN * n * d + FLOP_PER_PARAM_PER_INFER_TOKEN * n * d_inf)
