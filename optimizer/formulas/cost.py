"""Cost of GPU time: rented (billed by whole instances) and owned (amortised TCO).

Conventions: USD, hours for billing periods (rates are per hour), watts, kWh. Every
function accepts scalars or numpy arrays (broadcast). Inputs are checked and bad values
raise ClusteroptError naming the field.

Owned-cost model (issue 3 'Cost', issue 10 'Total cost of ownership'). Per GPU:
  capex       = purchase_usd_per_gpu + other_capex_usd_per_gpu, straight-line over ``years``
                (or an annuity when ``interest_pct_per_year`` > 0)
  IT power    = it_power_w_per_gpu (default: tdp_w * (1 + server_power_overhead))
  power       = IT power x PUE x usd_per_kwh, drawn while the GPU is busy (fraction u of
                wall-clock; idle draw is not modelled)
  hosting     = IT power (kW, provisioned) x hosting_usd_per_kw_month x 12 per year
  maintenance = maintenance_pct_per_year / 100 x capex per year
The fixed parts (capex, hosting, maintenance) are paid every wall-clock hour; spread over
the busy hours they give the effective cost per *utilised* GPU-hour, which is what a rental
at $/GPU-hour is compared against.

Typical values, with sources (module constants, used as documented defaults):
  TYPICAL_PUE = 1.56             Uptime Institute Global Data Center Survey 2024: average annual
                                 PUE of respondents' largest data centre (1.58 in 2023).
  TYPICAL_USD_PER_KWH = 0.0806   US EIA, average retail price to industrial customers, 2023
                                 (8.06 cents/kWh; Electric Power Annual / Monthly).
  TYPICAL_HOSTING_USD_PER_KW_MONTH = 184.06
                                 CBRE North America Data Center Trends H2 2024: average monthly
                                 asking rate for a 250-500 kW colocation requirement, primary markets.
  SERVER_POWER_OVERHEAD = 0.82   NVIDIA DGX H100 datasheet: 10.2 kW maximum system power for
                                 8 x 700 W GPUs -> 1275 W per GPU = 1.82 x TDP (CPUs, NICs,
                                 NVSwitches, fans, PSU losses).
  TYPICAL_YEARS = 5.0            amortisation life; hyperscalers report 4-6 year server lives
                                 in their annual filings.
  TYPICAL_MAINTENANCE_PCT_PER_YEAR = 5.0
                                 ASSUMPTION (no authoritative public figure found): hardware
                                 support/repair contracts priced at a few percent of capex a year.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from optimizer.formulas._checks import as_array as _arr, scalar_or_array as _out
from optimizer.units import HOURS_PER_YEAR

TYPICAL_PUE = 1.56
TYPICAL_USD_PER_KWH = 0.0806
TYPICAL_HOSTING_USD_PER_KW_MONTH = 184.06
SERVER_POWER_OVERHEAD = 10200.0 / (8 * 700.0) - 1.0   # 0.821..., DGX H100 datasheet
TYPICAL_YEARS = 5.0
TYPICAL_MAINTENANCE_PCT_PER_YEAR = 5.0

MONTHS_PER_YEAR = 12.0
W_PER_KW = 1000.0
TOKENS_PER_MILLION = 1e6




# --------------------------------------------------------------------------- rented

def instances_needed(n_gpus, gpus_per_instance):
    """Whole instances billed for n GPUs: ceil(n_gpus / gpus_per_instance)."""
    n = _arr("n_gpus", n_gpus, lo=0.0, lo_open=True)
    g = _arr("gpus_per_instance", gpus_per_instance, lo=0.0, lo_open=True)
    return _out(np.ceil(n / g - 1e-12))


def usd_per_gpu_hour(usd_per_instance_hour, gpus_per_instance):
    """Per-GPU rate of a fully used instance: instance $/hour / GPUs per instance."""
    p = _arr("usd_per_instance_hour", usd_per_instance_hour)
    g = _arr("gpus_per_instance", gpus_per_instance, lo=0.0, lo_open=True)
    return _out(p / g)


def rented_cost_usd(n_gpus, hours, usd_per_instance_hour, gpus_per_instance):
    """Cost of renting n GPUs for ``hours`` wall-clock hours, billed by whole instances.

    cost = ceil(n_gpus / gpus_per_instance) x usd_per_instance_hour x hours. Billing is
    continuous in time (per-second billing); on-demand, spot or reserved differ only in the
    rate passed in.
    """
    h = _arr("hours", hours)
    p = _arr("usd_per_instance_hour", usd_per_instance_hour)
    return _out(np.asarray(instances_needed(n_gpus, gpus_per_instance)) * p * h)


def usd_per_million_tokens(cost_usd, n_tokens):
    """Cost per million tokens (trained or served): cost_usd / (n_tokens / 1e6)."""
    c = _arr("cost_usd", cost_usd)
    t = _arr("n_tokens", n_tokens, lo=0.0, lo_open=True)
    return _out(c / (t / TOKENS_PER_MILLION))


# --------------------------------------------------------------------------- owned

@dataclass(frozen=True)
class OwnedCostBreakdown:
    """USD per utilised GPU-hour; capex + power + hosting + maintenance == total."""

    capex: object
    power: object
    hosting: object
    maintenance: object
    total: object


def _owned_parts(purchase_usd_per_gpu, tdp_w, utilization, years, pue, usd_per_kwh,
                 hosting_usd_per_kw_month, maintenance_pct_per_year, other_capex_usd_per_gpu,
                 server_power_overhead, it_power_w_per_gpu, interest_pct_per_year):
    """(fixed USD per wall-clock hour, power USD per busy hour), per GPU."""
    price = _arr("purchase_usd_per_gpu", purchase_usd_per_gpu)
    other = _arr("other_capex_usd_per_gpu", other_capex_usd_per_gpu)
    yrs = _arr("years", years, lo=0.0, lo_open=True)
    pue_ = _arr("pue", pue, lo=1.0)
    kwh = _arr("usd_per_kwh", usd_per_kwh)
    host = _arr("hosting_usd_per_kw_month", hosting_usd_per_kw_month)
    maint = _arr("maintenance_pct_per_year", maintenance_pct_per_year)
    rate = _arr("interest_pct_per_year", interest_pct_per_year) / 100.0
    if it_power_w_per_gpu is None:
        it_w = _arr("tdp_w", tdp_w, lo=0.0, lo_open=True) * (1.0 + _arr("server_power_overhead", server_power_overhead))
    else:
        it_w = _arr("it_power_w_per_gpu", it_power_w_per_gpu, lo=0.0, lo_open=True)
    capex = price + other
    # Annuity factor r / (1 - (1 + r)^-n); straight line 1/n when r = 0.
    with np.errstate(divide="ignore", invalid="ignore"):
        annuity = np.where(rate > 0, rate / (1.0 - (1.0 + rate) ** -yrs), 1.0 / yrs)
    it_kw = it_w / W_PER_KW
    capex_per_year = capex * annuity
    hosting_per_year = it_kw * host * MONTHS_PER_YEAR
    maint_per_year = capex * maint / 100.0
    power_per_busy_hour = it_kw * pue_ * kwh
    per_wall_hour = {
        "capex": capex_per_year / HOURS_PER_YEAR,
        "hosting": hosting_per_year / HOURS_PER_YEAR,
        "maintenance": maint_per_year / HOURS_PER_YEAR,
    }
    return per_wall_hour, power_per_busy_hour


def owned_usd_per_gpu_hour(purchase_usd_per_gpu, tdp_w, utilization, *,
                           years=TYPICAL_YEARS, pue=TYPICAL_PUE, usd_per_kwh=TYPICAL_USD_PER_KWH,
                           hosting_usd_per_kw_month=TYPICAL_HOSTING_USD_PER_KW_MONTH,
                           maintenance_pct_per_year=TYPICAL_MAINTENANCE_PCT_PER_YEAR,
                           other_capex_usd_per_gpu=0.0, server_power_overhead=SERVER_POWER_OVERHEAD,
                           it_power_w_per_gpu=None, interest_pct_per_year=0.0) -> OwnedCostBreakdown:
    """Effective USD per utilised GPU-hour of an owned GPU at utilisation u (0 < u <= 1).

    fixed parts per utilised hour = (capex/yr + hosting/yr + maintenance/yr) / (8766 h x u);
    power per utilised hour = IT kW x PUE x $/kWh. See the module docstring for the model and
    the sources of the defaults. ``other_capex_usd_per_gpu`` carries each GPU's share of
    servers, fabric and storage (issue 10's TCO computes it); left at 0 the capex is the GPU
    price alone and understates the owned cost. Sources: issue 3 'Cost' (purchase amortised
    over N years + TDP x utilisation x PUE x $/kWh + hosting); Barroso, Hoelzle & Ranganathan,
    'The Datacenter as a Computer' (3rd ed. 2018), Ch. 6 (TCO = amortised capex + opex).
    """
    u = _arr("utilization", utilization, lo=0.0, lo_open=True, hi=1.0)
    fixed, power = _owned_parts(purchase_usd_per_gpu, tdp_w, u, years, pue, usd_per_kwh,
                                hosting_usd_per_kw_month, maintenance_pct_per_year, other_capex_usd_per_gpu,
                                server_power_overhead, it_power_w_per_gpu, interest_pct_per_year)
    capex = fixed["capex"] / u
    hosting = fixed["hosting"] / u
    maintenance = fixed["maintenance"] / u
    power = power * np.ones_like(u)
    total = capex + power + hosting + maintenance
    return OwnedCostBreakdown(capex=_out(capex), power=_out(power), hosting=_out(hosting),
                              maintenance=_out(maintenance), total=_out(total))


def owned_cost_usd(n_gpus, busy_hours, rate: OwnedCostBreakdown):
    """Cost of a run on owned GPUs: n_gpus x busy hours x effective $/utilised GPU-hour.

    The run carries its share of idle time through the utilisation inside ``rate``.
    """
    n = _arr("n_gpus", n_gpus, lo=0.0, lo_open=True)
    h = _arr("busy_hours", busy_hours)
    return _out(n * h * np.asarray(rate.total, dtype=float))


def break_even_utilization(rental_usd_per_gpu_hour, purchase_usd_per_gpu, tdp_w, *,
                           years=TYPICAL_YEARS, pue=TYPICAL_PUE, usd_per_kwh=TYPICAL_USD_PER_KWH,
                           hosting_usd_per_kw_month=TYPICAL_HOSTING_USD_PER_KW_MONTH,
                           maintenance_pct_per_year=TYPICAL_MAINTENANCE_PCT_PER_YEAR,
                           other_capex_usd_per_gpu=0.0, server_power_overhead=SERVER_POWER_OVERHEAD,
                           it_power_w_per_gpu=None, interest_pct_per_year=0.0):
    """Utilisation above which owning is cheaper than renting at ``rental_usd_per_gpu_hour``.

    Solves fixed_per_wall_hour / u + power_per_busy_hour = rent for u:
    u* = fixed_per_wall_hour / (rent - power_per_busy_hour). Returns +inf where the rental
    rate does not even cover the power (owning never wins); a value above 1 also means owning
    cannot win at any achievable utilisation. Same cost model and defaults as
    ``owned_usd_per_gpu_hour``.
    """
    rent = _arr("rental_usd_per_gpu_hour", rental_usd_per_gpu_hour, lo=0.0, lo_open=True)
    fixed, power = _owned_parts(purchase_usd_per_gpu, tdp_w, 1.0, years, pue, usd_per_kwh,
                                hosting_usd_per_kw_month, maintenance_pct_per_year, other_capex_usd_per_gpu,
                                server_power_overhead, it_power_w_per_gpu, interest_pct_per_year)
    fixed_total = fixed["capex"] + fixed["hosting"] + fixed["maintenance"]
    margin = rent - power
    with np.errstate(divide="ignore"):
        u = np.where(margin > 0, fixed_total / np.where(margin > 0, margin, 1.0), np.inf)
    return _out(u)
