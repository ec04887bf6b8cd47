"""Total cost of ownership of an owned cluster: GPUs, servers, fabric and storage (issue 10).

Conventions: USD, watts, hours; arrays broadcast (one cluster per row). The per-GPU-hour
arithmetic is ``formulas/cost.py``'s owned model (capex amortised over N years, IT power x
PUE x $/kWh while busy, hosting $/kW-month on provisioned IT power, maintenance % of capex a
year), fed with the whole system instead of the GPU alone:

    capex            = GPUs + servers (non-GPU part) + fabric (switches, optics, cables) + storage
    IT power         = nodes x node power + fabric power + storage power
    $/GPU-hour at u  = cost.owned_usd_per_gpu_hour(GPU price, other capex per GPU, IT W per GPU, u)
    break-even u     = cost.break_even_utilization(cheapest rental, same inputs)

Sources: Barroso, Hoelzle & Ranganathan, 'The Datacenter as a Computer' (3rd ed. 2018), Ch. 6
(TCO = amortised capex + opex, with the same split into server, network and facility parts);
defaults and their sources in cost.py and catalog/tco_parameters.csv.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from optimizer.formulas._checks import as_array as _arr, scalar_or_array as _out
from optimizer.formulas import cost as C




@dataclass(frozen=True)
class ClusterCapex:
    """Purchase cost of the whole cluster, USD; the parts sum to ``total``."""

    gpus: object
    servers: object
    fabric: object
    storage: object
    total: object


@dataclass(frozen=True)
class Tco:
    """Owned cluster: capex, IT power (W), $/utilised GPU-hour by part, break-even utilisation."""

    capex: ClusterCapex
    it_power_w: object
    usd_per_gpu_hour: C.OwnedCostBreakdown
    break_even_utilization: object      # vs ``rental_usd_per_gpu_hour``; inf where owning never wins


def cluster_capex(n_gpus, gpus_per_node, gpu_usd, server_usd_per_node, fabric_capex_usd, storage_capex_usd) -> ClusterCapex:
    """GPUs x price + nodes x non-GPU server price + fabric + storage (USD); nodes = ceil(GPUs / per node)."""
    n = _arr("n_gpus", n_gpus, lo_open=True)
    g = _arr("gpus_per_node", gpus_per_node, lo_open=True)
    nodes = np.ceil(n / g - 1e-12)
    parts = {"gpus": n * _arr("gpu_usd", gpu_usd), "servers": nodes * _arr("server_usd_per_node", server_usd_per_node),
             "fabric": _arr("fabric_capex_usd", fabric_capex_usd) + 0 * n,
             "storage": _arr("storage_capex_usd", storage_capex_usd) + 0 * n}
    return ClusterCapex(**{k: _out(v) for k, v in parts.items()}, total=_out(sum(parts.values())))


def cluster_it_power_w(n_gpus, gpus_per_node, node_power_w, fabric_power_w=0.0, storage_power_w=0.0):
    """IT power a cluster provisions, W: nodes x node power + fabric + storage."""
    n = _arr("n_gpus", n_gpus, lo_open=True)
    nodes = np.ceil(n / _arr("gpus_per_node", gpus_per_node, lo_open=True) - 1e-12)
    return _out(nodes * _arr("node_power_w", node_power_w, lo_open=True) + _arr("fabric_power_w", fabric_power_w)
                + _arr("storage_power_w", storage_power_w))


def owned_tco(n_gpus, gpus_per_node, gpu_usd, *, server_usd_per_node, node_power_w, fabric_capex_usd=0.0,
              fabric_power_w=0.0, storage_capex_usd=0.0, storage_power_w=0.0, utilization=0.8,
              years=C.TYPICAL_YEARS, pue=C.TYPICAL_PUE, usd_per_kwh=C.TYPICAL_USD_PER_KWH,
              hosting_usd_per_kw_month=C.TYPICAL_HOSTING_USD_PER_KW_MONTH,
              maintenance_pct_per_year=C.TYPICAL_MAINTENANCE_PCT_PER_YEAR, interest_pct_per_year=0.0,
              rental_usd_per_gpu_hour=None) -> Tco:
    """Effective $/utilised GPU-hour of an owned cluster of ``n_gpus`` and the utilisation above
    which it beats ``rental_usd_per_gpu_hour`` (see the module docstring)."""
    capex = cluster_capex(n_gpus, gpus_per_node, gpu_usd, server_usd_per_node, fabric_capex_usd, storage_capex_usd)
    n = _arr("n_gpus", n_gpus, lo_open=True)
    it_w = np.asarray(cluster_it_power_w(n_gpus, gpus_per_node, node_power_w, fabric_power_w, storage_power_w))
    other = (np.asarray(capex.total) - np.asarray(capex.gpus)) / n
    kw = dict(years=years, pue=pue, usd_per_kwh=usd_per_kwh, hosting_usd_per_kw_month=hosting_usd_per_kw_month,
              maintenance_pct_per_year=maintenance_pct_per_year, other_capex_usd_per_gpu=other,
              it_power_w_per_gpu=it_w / n, interest_pct_per_year=interest_pct_per_year)
    rate = C.owned_usd_per_gpu_hour(gpu_usd, 1.0, utilization, **kw)
    if rental_usd_per_gpu_hour is None:
        be = np.full(np.shape(n), np.nan)
    else:
        be = C.break_even_utilization(rental_usd_per_gpu_hour, gpu_usd, 1.0, **kw)
    return Tco(capex=capex, it_power_w=_out(it_w), usd_per_gpu_hour=rate, break_even_utilization=_out(be))
