"""Buy versus rent as a finance team reads it: NPV, payback, ROI, residual value (issue 17).

Conventions: USD, years; cash flows at year ends (year 0 = purchase). Every function takes
plain floats or numpy arrays where noted.

The comparison is the owned cluster against the rented alternative of the same plan: the same
GPUs for the same busy hours at the cheapest rental rate that can run the plan.

    capex C                  paid at year 0 (GPUs, servers, fabric, storage; formulas/tco.py)
    saving per year S        rent of the busy GPU-hours - owned running cost (power while busy,
                             hosting, maintenance, staff and operations)
    residual R               residual_pct / 100 x C, recovered at the end of year N
    NPV(r)  = -C + sum_{t=1..N} S / (1 + r)^t + R / (1 + r)^N
    payback = C / S years (undiscounted, residual not counted); None when S <= 0 or C / S > N
    ROI     = (N S + R - C) / C x 100 per cent over the N years (undiscounted)
    IRR     = the r where NPV(r) = 0: the discount rate above which buying stops beating renting

Sources: Brealey, Myers & Allen, 'Principles of Corporate Finance' (13th ed., 2020), Ch. 2
(present value, NPV = C0 + sum C_t / (1 + r)^t), Ch. 5 (payback, IRR, their pitfalls); the
seed's cost-benefit chapter asks for ROI, NPV, payback and their sensitivity.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from optimizer.errors import ClusteroptError


def annuity_factor(rate: float, years: float) -> float:
    """Present value of 1 USD a year for ``years`` years at ``rate``: (1 - (1 + r)^-N) / r,
    N at r = 0. Non-integer N counts a final partial year pro rata at its end."""
    if rate <= -1:
        raise ClusteroptError("discount_rate", f"must be > -1 (got {rate!r})", "allowed: a fraction, e.g. 0.08")
    if years < 0:
        raise ClusteroptError("years", f"must be >= 0 (got {years!r})", "allowed: >= 0")
    whole = int(np.floor(years + 1e-12))
    # the geometric sum of (1 + r)^-t, t = 1..N, in closed form (the same number: a bisection
    # for IRR and the flip points evaluates it thousands of times per plan)
    pv = float(whole) if abs(rate) < 1e-12 else (1.0 - (1.0 + rate) ** -whole) / rate
    frac = years - whole
    if frac > 1e-12:
        pv += frac * (1.0 + rate) ** -years
    return pv


def npv_usd(capex_usd: float, saving_usd_per_year: float, years: float, discount_rate: float,
            residual_usd: float = 0.0) -> float:
    """NPV of buying instead of renting (module docstring), USD."""
    return (-capex_usd + saving_usd_per_year * annuity_factor(discount_rate, years)
            + residual_usd * (1.0 + discount_rate) ** -years)


def payback_years(capex_usd: float, saving_usd_per_year: float, years: float) -> Optional[float]:
    """Undiscounted payback period C / S, years; None when it never pays back within ``years``."""
    if saving_usd_per_year <= 0:
        return None
    p = capex_usd / saving_usd_per_year
    return p if p <= years + 1e-12 else None


def roi_pct(capex_usd: float, saving_usd_per_year: float, years: float, residual_usd: float = 0.0) -> float:
    """Return on the investment over ``years``, per cent: (N S + R - C) / C x 100."""
    if capex_usd <= 0:
        raise ClusteroptError("capex_usd", f"must be > 0 (got {capex_usd!r})", "allowed: > 0")
    return (years * saving_usd_per_year + residual_usd - capex_usd) / capex_usd * 100.0


def find_flip(fn: Callable[[float], float], lo: float, hi: float, *, tol: float = 1e-9,
              max_iter: int = 200) -> Optional[float]:
    """The x in [lo, hi] where a monotonic ``fn`` changes sign (bisection); None when it has the
    same sign at both ends. Used for every buy-versus-rent flip point (IRR, utilisation, price)."""
    f_lo, f_hi = fn(lo), fn(hi)
    if f_lo == 0:
        return lo
    if f_hi == 0:
        return hi
    if (f_lo > 0) == (f_hi > 0):
        return None
    a, b = lo, hi
    for _ in range(max_iter):
        m = 0.5 * (a + b)
        f_m = fn(m)
        if (f_m > 0) == (f_lo > 0):
            a, f_lo = m, f_m
        else:
            b = m
        if b - a <= tol * max(1.0, abs(m)):
            break
    return 0.5 * (a + b)


def irr(capex_usd: float, saving_usd_per_year: float, years: float, residual_usd: float = 0.0,
        *, lo: float = -0.99, hi: float = 10.0) -> Optional[float]:
    """Internal rate of return: the discount rate where NPV = 0 (None when NPV keeps one sign
    over [lo, hi]). NPV falls as the rate rises when the savings are positive, so above the IRR
    renting wins."""
    return find_flip(lambda r: npv_usd(capex_usd, saving_usd_per_year, years, r, residual_usd), lo, hi)


@dataclass(frozen=True)
class BuyVsRent:
    """One owned plan against its rented alternative (USD, years, per cent)."""

    capex_usd: float
    rent_usd_per_year: float          # the rented alternative of the same busy GPU-hours
    owned_opex_usd_per_year: float    # power while busy + hosting + maintenance + staff
    staff_usd_per_year: float
    saving_usd_per_year: float        # rent - owned opex
    residual_usd: float
    discount_rate: float
    years: float
    npv_usd: float
    payback_years: Optional[float]
    roi_pct: float
    irr: Optional[float]              # discount rate at which buying stops beating renting


def buy_vs_rent(capex_usd: float, rent_usd_per_year: float, owned_opex_usd_per_year: float, *, years: float,
                discount_rate: float, residual_pct: float = 0.0, staff_usd_per_year: float = 0.0) -> BuyVsRent:
    """All investment figures of an owned plan (module docstring). ``owned_opex_usd_per_year``
    excludes staff; ``staff_usd_per_year`` is added to it."""
    for name, v in (("capex_usd", capex_usd), ("rent_usd_per_year", rent_usd_per_year),
                    ("owned_opex_usd_per_year", owned_opex_usd_per_year), ("staff_usd_per_year", staff_usd_per_year)):
        if not np.isfinite(v) or v < 0:
            raise ClusteroptError(name, f"must be a finite number >= 0 (got {v!r})", "allowed: >= 0 USD")
    if not 0 <= residual_pct <= 100:
        raise ClusteroptError("pricing.residual_pct", f"must be 0-100 (got {residual_pct!r})", "allowed: 0 to 100 per cent")
    opex = owned_opex_usd_per_year + staff_usd_per_year
    s = rent_usd_per_year - opex
    res = residual_pct / 100.0 * capex_usd
    return BuyVsRent(capex_usd=capex_usd, rent_usd_per_year=rent_usd_per_year, owned_opex_usd_per_year=opex,
                     staff_usd_per_year=staff_usd_per_year, saving_usd_per_year=s, residual_usd=res,
                     discount_rate=discount_rate, years=years,
                     npv_usd=npv_usd(capex_usd, s, years, discount_rate, res),
                     payback_years=payback_years(capex_usd, s, years), roi_pct=roi_pct(capex_usd, s, years, res),
                     irr=irr(capex_usd, s, years, res))


def usd_per_1k_requests(usd_per_hour: float, requests_per_s: float) -> float:
    """Serving cost per 1,000 requests: $/hour / (requests/s x 3600) x 1000."""
    if requests_per_s <= 0:
        raise ClusteroptError("requests_per_s", f"must be > 0 (got {requests_per_s!r})", "allowed: > 0")
    return usd_per_hour / (requests_per_s * 3600.0) * 1000.0


HOURS_PER_MONTH = 30 * 24.0   # CONTRACTS.md: usd_per_month is 30 days


def usd_per_month(usd_per_hour: float) -> float:
    """Cost of 30 days at ``usd_per_hour`` (CONTRACTS.md 'Offers and money')."""
    return usd_per_hour * HOURS_PER_MONTH


@dataclass(frozen=True)
class OwnedPlanMoney:
    """What buying a plan's GPUs costs and saves a year, split so that the buy-versus-rent flip
    points can be found (USD, USD a year, years, fractions).

    ``rent_usd_per_year`` and ``power_usd_per_year`` scale with the busy hours (utilisation);
    hosting, maintenance (``maintenance_pct_per_year`` of capex) and staff do not. The GPU part
    of the capex is what a GPU price change moves (and with it maintenance and residual value).
    """

    capex_gpus_usd: float
    capex_other_usd: float            # servers, fabric, storage
    rent_usd_per_year: float          # the rented alternative of the same busy GPU-hours
    power_usd_per_year: float
    hosting_usd_per_year: float
    maintenance_pct_per_year: float
    staff_usd_per_year: float
    years: float
    discount_rate: float
    residual_pct: float = 0.0

    def capex(self, gpu_price_scale: float = 1.0) -> float:
        return self.capex_gpus_usd * gpu_price_scale + self.capex_other_usd

    def npv(self, *, utilization_scale: float = 1.0, gpu_price_scale: float = 1.0) -> float:
        """``figures(...).npv_usd`` without the other figures (the flip searches need only it)."""
        c = self.capex(gpu_price_scale)
        opex = (self.power_usd_per_year * utilization_scale + self.hosting_usd_per_year
                + self.maintenance_pct_per_year / 100.0 * c + self.staff_usd_per_year)
        return npv_usd(c, self.rent_usd_per_year * utilization_scale - opex, self.years, self.discount_rate,
                       self.residual_pct / 100.0 * c)

    def figures(self, *, discount_rate: Optional[float] = None, utilization_scale: float = 1.0,
                gpu_price_scale: float = 1.0) -> BuyVsRent:
        c = self.capex(gpu_price_scale)
        opex = (self.power_usd_per_year * utilization_scale + self.hosting_usd_per_year
                + self.maintenance_pct_per_year / 100.0 * c)
        return buy_vs_rent(c, self.rent_usd_per_year * utilization_scale, opex, years=self.years,
                           discount_rate=self.discount_rate if discount_rate is None else discount_rate,
                           residual_pct=self.residual_pct, staff_usd_per_year=self.staff_usd_per_year)

    def flips(self, *, range_factor: float = 10.0) -> dict:
        """Where buying stops (or starts) beating renting, each with the current value:
        ``discount_rate`` (the IRR), ``utilization_scale`` (busy hours as a multiple of the
        plan's) and ``gpu_price_scale`` (GPU purchase price as a multiple of the catalog's);
        None where NPV keeps its sign over the searched range (rates -99 % to 1000 %, scales
        1/range_factor to range_factor)."""
        return {
            "discount_rate": {"current": self.discount_rate, "flip": self.figures().irr},
            "utilization_scale": {"current": 1.0, "flip": find_flip(
                lambda k: self.npv(utilization_scale=k), 1.0 / range_factor, range_factor)},
            "gpu_price_scale": {"current": 1.0, "flip": find_flip(
                lambda k: self.npv(gpu_price_scale=k), 1.0 / range_factor, range_factor)},
        }
