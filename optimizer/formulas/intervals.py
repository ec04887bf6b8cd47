"""Prediction intervals of training throughput: how far measured runs fall from the model.

The step-time model is checked leave-one-source-out on published runs (each source predicted
by constants fitted without it; benchmarks/calibrate_efficiency.py). Per run,
``log_ratio = ln(measured / predicted tokens/s)``. Per regime of ``regime_of`` an 80% interval
for a run of an unseen source (``intervals_from_residuals``: a random-effects normal over
sources; catalog/step_time_intervals.csv, written by
``calibrate_efficiency.py --write-intervals``) give an 80% interval of the throughput the
layout will really reach:

    tokens_per_s_p10 = tokens_per_s x exp(log_ratio_p10)    (a slower cluster than modelled)
    tokens_per_s_p90 = tokens_per_s x exp(log_ratio_p90)

and every figure inversely proportional to throughput gets the mirrored interval:
``train_days_p90 = train_days x exp(-log_ratio_p10)``, likewise wall-clock days and the
cost billed on wall-clock hours. A quantile q other than 0.1/0.9 (``constraints.confidence``)
is read from a normal distribution in log space matched to p10 and p90
(``log_ratio_quantile``).

A calibration profile from the user's own runs (``clusteropt calibrate``) replaces the regime's
interval by the spread of the user's residuals after the fit (``Interval`` of the profile).
Units: log ratios are dimensionless; tokens/s, days, USD as the figures they scale.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass

from optimizer.errors import ClusteroptError

REGIMES = ("cp", "moe", "zero3_fsdp", "fp8", "3d_gt100b", "small_lt10b", "other")
"""Regimes in order of precedence (the first that applies names the layout): context
parallelism, mixture of experts, ZeRO-3/FSDP, fp8, 3D-parallel (TP and PP) above 100B
parameters, below 10B parameters, everything else. The regimes of issue 14's step-time
validation."""

POOLED = "all"
"""The row of every regime's residuals together; a regime with fewer than
``MIN_RUNS_PER_REGIME`` runs or ``MIN_SOURCES_PER_REGIME`` sources uses it."""
MIN_RUNS_PER_REGIME = 5
MIN_SOURCES_PER_REGIME = 2
CSV_COLUMNS = ("regime", "n_runs", "n_sources", "log_ratio_p10", "log_ratio_p90", "method", "as_of")
Z90 = 1.2815515655446004
"""Standard normal 90th percentile: p10 and p90 lie Z90 standard deviations from the median."""

def regime_of(*, params_total: float, tp: int = 1, pp: int = 1, cp: int = 1, ep: int = 1, zero: int = 0,
              precision: str = "bf16", moe: bool = False) -> str:
    """The regime of a layout (precedence cp > moe > zero3_fsdp > fp8 > 3d_gt100b >
    small_lt10b > other). ``params_total``: the model's parameters; ``moe``: the model has
    routed experts (or ``ep`` > 1)."""
    if cp > 1:
        return "cp"
    if moe or ep > 1:
        return "moe"
    if zero >= 3:
        return "zero3_fsdp"
    if precision == "fp8":
        return "fp8"
    if params_total > 100e9 and tp > 1 and pp > 1:
        return "3d_gt100b"
    if params_total < 10e9:
        return "small_lt10b"
    return "other"


@dataclass(frozen=True)
class Interval:
    """An 80% interval of ln(measured / predicted throughput), and where it comes from."""

    regime: str
    log_ratio_p10: float
    log_ratio_p90: float
    n_runs: int = 0
    n_sources: int = 0
    method: str = ""
    as_of: str = ""

    def __post_init__(self):
        if not (math.isfinite(self.log_ratio_p10) and math.isfinite(self.log_ratio_p90)):
            raise ClusteroptError(f"intervals.{self.regime}", "log ratios must be finite numbers", "numbers")
        if self.log_ratio_p10 > self.log_ratio_p90:
            raise ClusteroptError(f"intervals.{self.regime}",
                                  f"log_ratio_p10 {self.log_ratio_p10} > log_ratio_p90 {self.log_ratio_p90}",
                                  "p10 <= p90")

    @property
    def width(self) -> float:
        return self.log_ratio_p90 - self.log_ratio_p10


def _source_components(rows) -> tuple[float, float, float]:
    """(mean of the source means, variance between source means, variance within sources) of
    (regime, source, log_ratio) rows. Each source counts once in the mean: a source with many
    runs (one paper's sweep) does not outweigh the others."""
    by_src: dict[str, list[float]] = {}
    for _, src, x in rows:
        by_src.setdefault(src, []).append(float(x))
    means = [sum(v) / len(v) for v in by_src.values()]
    mu = sum(means) / len(means)
    between = sum((m - mu) ** 2 for m in means) / (len(means) - 1) if len(means) > 1 else 0.0
    dev = [x - sum(v) / len(v) for v in by_src.values() for x in v]
    within = sum(d * d for d in dev) / len(dev)
    return mu, between, within


def intervals_from_residuals(rows, *, method: str, as_of: str) -> dict[str, Interval]:
    """Per regime (and ``POOLED``) an 80% interval for a run of a source the model has not
    seen, from ``rows`` (iterables of (regime, source, log_ratio)).

    Residuals cluster by source (one framework, one cluster, one way of measuring), so the
    interval is that of a new source: a random-effects normal in log space with median the
    mean of the source means and variance = between-source variance + within-source
    variance, where the between-source part is at least the one across all regimes (a
    regime seen in few sources must not look more certain than sources are in general);
    p10/p90 = median -/+ Z90 sd. A regime with fewer than ``MIN_RUNS_PER_REGIME`` runs or
    ``MIN_SOURCES_PER_REGIME`` sources gets the pooled interval (its ``method`` says so)."""
    rows = [(r[0], r[1], float(r[2])) for r in rows]
    if not rows:
        raise ValueError("no residuals")
    mu_p, between_p, within_p = _source_components(rows)
    sd_p = math.sqrt(between_p + within_p)
    n_src = len({r[1] for r in rows})
    out = {POOLED: Interval(POOLED, mu_p - Z90 * sd_p, mu_p + Z90 * sd_p, len(rows), n_src, method, as_of)}
    for reg in REGIMES:
        sub = [r for r in rows if r[0] == reg]
        srcs = {r[1] for r in sub}
        if len(sub) >= MIN_RUNS_PER_REGIME and len(srcs) >= MIN_SOURCES_PER_REGIME:
            mu, between, within = _source_components(sub)
            sd = math.sqrt(max(between, between_p) + within)
            out[reg] = Interval(reg, mu - Z90 * sd, mu + Z90 * sd, len(sub), len(srcs), method, as_of)
        else:
            out[reg] = Interval(reg, out[POOLED].log_ratio_p10, out[POOLED].log_ratio_p90, len(sub), len(srcs),
                                f"{method}; pooled over all regimes (fewer than {MIN_RUNS_PER_REGIME} runs "
                                f"or {MIN_SOURCES_PER_REGIME} sources)", as_of)
    return out


def read_residuals(path) -> list[tuple[str, str, float]]:
    """(regime, source, log_ratio) rows of a residuals CSV: columns regime, source, log_ratio
    (tests/data/step_time_loso_residuals.csv), or regime, source, loso_err_pct - the signed
    percentage error of the predicted throughput, 100 (predicted/measured - 1) - as issue 14's
    benchmark stores them (tests/data/loso_results.csv)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if rows and "log_ratio" in rows[0]:
        return [(r["regime"], r["source"], float(r["log_ratio"])) for r in rows]
    return [(r["regime"], r["source"], -math.log1p(float(r["loso_err_pct"]) / 100.0)) for r in rows]


def nested_coverage(rows) -> tuple[float, int]:
    """Coverage of the 80% intervals on runs held out of them: for each source, intervals from
    the residuals of the other sources only, and the share of that source's runs inside its
    regime's interval. Returns (fraction covered, runs scored)."""
    rows = list(rows)
    inside = total = 0
    for src in sorted({r[1] for r in rows}):
        rest = [r for r in rows if r[1] != src]
        if not rest:
            continue
        iv = intervals_from_residuals(rest, method="nested", as_of="")
        for reg, _, lr in (r for r in rows if r[1] == src):
            i = iv[reg]
            inside += i.log_ratio_p10 <= lr <= i.log_ratio_p90
            total += 1
    return (inside / total if total else float("nan")), total


def write_intervals(intervals: dict[str, Interval], path) -> None:
    """Write ``intervals`` in catalog/step_time_intervals.csv's format (CSV_COLUMNS) to ``path``
    (benchmarks/calibrate_efficiency.py --write-intervals; the catalog file is generated, not edited)."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(CSV_COLUMNS)
        for reg in (*REGIMES, POOLED):
            i = intervals[reg]
            w.writerow([reg, i.n_runs, i.n_sources, f"{i.log_ratio_p10:.4f}", f"{i.log_ratio_p90:.4f}", i.method,
                        i.as_of])


def parse_intervals(text: str, name: str) -> dict[str, Interval]:
    """The text of catalog/step_time_intervals.csv as {regime: Interval}, validated: every
    regime of ``REGIMES`` and ``POOLED`` present once, numbers finite, p10 <= p90. ``name``
    names the file in errors. (optimizer.catalog.load_step_time_intervals reads the file.)"""
    reader = csv.DictReader(text.splitlines())
    if tuple(reader.fieldnames or ()) != CSV_COLUMNS:
        raise ClusteroptError(name, f"columns {reader.fieldnames}", "columns " + ", ".join(CSV_COLUMNS))
    out = {}
    for k, r in enumerate(reader, start=1):
        reg = r["regime"]
        if reg not in (*REGIMES, POOLED) or reg in out:
            raise ClusteroptError(f"{name} row {k}: regime", f"{reg!r}", "each of " + ", ".join((*REGIMES, POOLED))
                                  + " once")
        try:
            out[reg] = Interval(reg, float(r["log_ratio_p10"]), float(r["log_ratio_p90"]), int(r["n_runs"]),
                                int(r["n_sources"]), r["method"], r["as_of"])
        except ValueError as e:
            raise ClusteroptError(f"{name} row {k}", str(e), "numbers in the number columns") from None
    missing = [reg for reg in (*REGIMES, POOLED) if reg not in out]
    if missing:
        raise ClusteroptError(name, f"missing regime(s) {', '.join(missing)}", "one row per regime")
    return out


def log_ratio_quantile(interval: Interval, q: float) -> float:
    """ln(measured/predicted) at quantile ``q`` (0 < q < 1): p10 and p90 exactly at 0.1 and
    0.9, otherwise a normal in log space with median (p10 + p90)/2 and sd (p90 - p10)/(2 Z90)."""
    if not 0.0 < q < 1.0:
        raise ClusteroptError("confidence", f"{q}", "a probability strictly between 0 and 1")
    if abs(q - 0.1) < 1e-12:
        return interval.log_ratio_p10
    if abs(q - 0.9) < 1e-12:
        return interval.log_ratio_p90
    mu = 0.5 * (interval.log_ratio_p10 + interval.log_ratio_p90)
    sd = interval.width / (2.0 * Z90)
    return mu + sd * _norm_ppf(q)


def _norm_ppf(q: float) -> float:
    """Inverse standard normal CDF (Acklam's rational approximation, |error| < 1.2e-9)."""
    a = (-3.969683028665376e+01, 2.209460984245205e+02, -2.759285104469687e+02, 1.383577518672690e+02,
         -3.066479806614716e+01, 2.506628277459239e+00)
    b = (-5.447609879822406e+01, 1.615858368580409e+02, -1.556989798598866e+02, 6.680131188771972e+01,
         -1.328068155288572e+01)
    c = (-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e+00, -2.549732539343734e+00,
         4.374664141464968e+00, 2.938163982698783e+00)
    d = (7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e+00, 3.754408661907416e+00)
    if q < 0.02425:
        t = math.sqrt(-2 * math.log(q))
        return (((((c[0] * t + c[1]) * t + c[2]) * t + c[3]) * t + c[4]) * t + c[5]) / \
            ((((d[0] * t + d[1]) * t + d[2]) * t + d[3]) * t + 1)
    if q > 1 - 0.02425:
        return -_norm_ppf(1 - q)
    t = q - 0.5
    r = t * t
    return (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * t / \
        (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1)


def slow_factor(interval: Interval, confidence: float) -> float:
    """Multiplier of a time (or of a cost billed on time) that holds with probability
    ``confidence``: exp(-log ratio at 1 - confidence). 0.9 -> exp(-log_ratio_p10)."""
    return math.exp(-log_ratio_quantile(interval, 1.0 - confidence))


def interval_keys(*, tokens_per_s: float, interval: Interval, train_days: float | None = None,
                  wall_clock_days: float | None = None, cost_usd: float | None = None) -> dict:
    """The ``<figure>_p10`` / ``<figure>_p90`` keys of CONTRACTS.md for one estimate (an 80%
    interval each; days and cost move opposite to throughput). Figures given as None get no
    keys."""
    lo, hi = math.exp(interval.log_ratio_p10), math.exp(interval.log_ratio_p90)
    out = {"tokens_per_s_p10": tokens_per_s * lo, "tokens_per_s_p90": tokens_per_s * hi}
    if train_days is not None:
        out.update(train_days_p10=train_days / hi, train_days_p90=train_days / lo)
    if wall_clock_days is not None:
        out.update(wall_clock_days_p10=wall_clock_days / hi, wall_clock_days_p90=wall_clock_days / lo)
    if cost_usd is not None:
        out.update(cost_usd_p10=cost_usd / hi, cost_usd_p90=cost_usd / lo)
    out["interval_regime"] = interval.regime
    return out


def regimes_of(*, params_total: float, tp, pp, cp, ep, zero, fp8, moe: bool):
    """``regime_of`` for arrays of layouts (numpy arrays of equal length; ``fp8`` boolean):
    an array of regime names."""
    import numpy as np

    tp, pp, cp, ep, zero = (np.asarray(x) for x in (tp, pp, cp, ep, zero))
    fp8 = np.asarray(fp8, dtype=bool)
    n = np.broadcast_shapes(tp.shape, pp.shape, cp.shape, ep.shape, zero.shape, fp8.shape)
    out = np.full(n, "other", dtype=object)
    conds = [(cp > 1, "cp"), ((ep > 1) | bool(moe), "moe"), (zero >= 3, "zero3_fsdp"), (fp8, "fp8"),
             ((params_total > 100e9) & (tp > 1) & (pp > 1), "3d_gt100b"),
             (np.full(n, params_total < 10e9), "small_lt10b")]
    done = np.zeros(n, dtype=bool)
    for cond, name in conds:
        hit = np.broadcast_to(cond, n) & ~done
        out[hit] = name
        done |= hit
    return out


def calibrated_interval(cal: Interval, regime: Interval, pooled: Interval, within_sd_log: float) -> Interval:
    """A calibration profile's interval for a layout of ``regime``: the profile's, no wider than
    what calibration leaves of the regime's.

    A regime's interval is its whole spread, between sources (each source's bias) plus within
    them. Calibrating on the user's own runs removes the user's bias, so what is left is the
    regime's within-source share; the per-regime split is not stored, so the pooled share is used
    (``within_sd_log``, the public within-source sd, over the pooled interval's sd). A profile
    fitted on a few runs carries that pooled within-source spread as its prior, which can exceed
    what is left of a narrow regime (fp8, 3D > 100B); there the bound applies, centred where the
    profile puts it. Units: natural-log ratios."""
    within_share = min(1.0, within_sd_log / (pooled.width / (2 * Z90))) if pooled.width > 0 else 1.0
    bound = regime.width * within_share
    if cal.width <= bound:
        return cal
    mid = (cal.log_ratio_p10 + cal.log_ratio_p90) / 2
    return Interval(cal.regime, mid - bound / 2, mid + bound / 2, cal.n_runs, cal.n_sources,
                    f"{cal.method}; width bounded by the {regime.regime} regime's within-source share", cal.as_of)


def interval_columns(cols: dict, regimes, intervals: dict, *, profile_interval: Interval | None = None,
                     within_sd_log: float | None = None, confidence: float | None = None) -> dict:
    """Per row (numpy arrays): the ``_p10``/``_p90`` columns of tokens_per_s, train_days,
    wall_clock_days and cost_usd, the regime name, and with ``confidence`` the wall-clock days
    and cost that hold at that quantile (``wall_clock_days_at_confidence``,
    ``cost_usd_at_confidence``; the search's deadline and budget compare these). A profile's
    interval replaces every regime's, bounded per regime by ``calibrated_interval`` (with
    ``within_sd_log``, the public within-source sd)."""
    import numpy as np

    regimes = np.asarray(regimes, dtype=object)
    names = sorted(set(regimes.tolist())) if regimes.size else []
    lo = np.zeros(regimes.shape)
    hi = np.zeros(regimes.shape)
    slow = np.ones(regimes.shape)
    for name in names:
        iv = intervals[name]
        if profile_interval is not None:
            iv = (profile_interval if within_sd_log is None else
                  calibrated_interval(profile_interval, iv, intervals[POOLED], within_sd_log))
        m = regimes == name
        lo[m], hi[m] = iv.log_ratio_p10, iv.log_ratio_p90
        if confidence is not None:
            slow[m] = slow_factor(iv, confidence)
    flo, fhi = np.exp(lo), np.exp(hi)
    out = {"interval_regime": np.where(regimes == regimes, "calibrated", regimes) if profile_interval else regimes,
           "tokens_per_s_p10": cols["tokens_per_s"] * flo, "tokens_per_s_p90": cols["tokens_per_s"] * fhi}
    for k in ("train_days", "wall_clock_days", "cost_usd"):
        if k in cols:
            out[f"{k}_p10"] = cols[k] / fhi
            out[f"{k}_p90"] = cols[k] / flo
    if confidence is not None:
        out["wall_clock_days_at_confidence"] = cols["wall_clock_days"] * slow
        out["cost_usd_at_confidence"] = cols["cost_usd"] * slow
    return out
