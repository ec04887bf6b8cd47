"""GPU options of a scenario: the eligible GPU types with their hardware and price, resolved once
from the catalog the caller passed (every planner prices from these, never from a catalog it
loads itself)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from optimizer.catalog import Catalog
from optimizer.errors import ClusteroptError
from optimizer.formulas.cost import owned_usd_per_gpu_hour

@dataclass(frozen=True)
class GpuOption:
    """One eligible GPU type with what the space and the cost need from the catalog."""

    index: int
    name: str
    hardware: object                 # optimizer.formulas.hardware.Hardware
    usd_per_gpu_hour: float          # effective rate for this scenario's pricing mode
    gpus_per_instance: int           # billing granularity (1 for owned hardware)
    usd_per_instance_hour: float
    offer: str                       # provider/instance, or 'owned'
    available: int | None            # stock limit, None = unlimited
    #: The catalog row and every offer of this GPU type, from the catalog the caller passed
    #: (system figures, billing pools and TCO read these, never a catalog of their own).
    accelerator: Any = field(default=None, compare=False, repr=False)
    offers: tuple = field(default=(), compare=False, repr=False)

    def cheapest_offer(self, mode: str, provider: str | None = None):
        """The cheapest of this type's offers in ``mode`` (and from ``provider``), or None."""
        priced = [o for o in self.offers if o.usd_per_gpu_hour(mode) is not None
                  and (provider is None or o.provider.lower() == provider.lower())]
        return min(priced, key=lambda o: (o.usd_per_gpu_hour(mode), o.key)) if priced else None


# ----------------------------------------------------------------------------------------
# GPU options: catalog rows + prices for this scenario
# ----------------------------------------------------------------------------------------

def gpu_options(scenario, catalog: Catalog) -> tuple[list[GpuOption], list[str]]:
    """Eligible GPU types with their hardware figures and the scenario's price per GPU-hour.

    Returns the options and notes on GPUs left out (no offer in this pricing mode...). ``catalog``
    is the caller's (default rows plus the user's files); each option carries its catalog row
    and offers, so nothing below re-reads a catalog.
    """
    if catalog is None:      # a programming error, not bad input: the API always passes one
        raise TypeError("gpu_options needs the caller's catalog (optimizer.catalog.load_catalog(files))")
    cat = catalog
    c, pricing = scenario.constraints, scenario.pricing
    if c.gpus is not None:
        names = []
        for i, g in enumerate(c.gpus):
            try:
                names.append(cat.resolve_gpu_id(g))
            except ClusteroptError as e:
                raise ClusteroptError(f"constraints.gpus[{i}]", e.problem, e.allowed) from None
    else:
        names = [a.id for a in cat.accelerators if _deployable(a, c.deployment)]
    for k in c.available:
        try:
            cat.resolve_gpu_id(k)
        except ClusteroptError as e:
            raise ClusteroptError(f"constraints.available.{k}", e.problem, e.allowed) from None
    available = {cat.resolve_gpu_id(k): v for k, v in c.available.items()}
    explicit = {cat.resolve_gpu_id(k): v for k, v in pricing.usd_per_gpu_hour.items()}
    out, notes = [], []
    seen = set()
    for name in names:
        if name in seen:
            continue
        seen.add(name)
        hw = cat.hardware(name)
        if c.max_power_w_per_device is not None and not 0 < hw.tdp_w <= c.max_power_w_per_device:
            notes.append(f"{name}: " + (f"{hw.tdp_w:g} W exceeds" if hw.tdp_w else "no published power for")
                         + f" constraints.max_power_w_per_device {c.max_power_w_per_device:g} W; left out")
            continue
        if name in explicit:
            rate, gpi, offer = explicit[name], 1, "scenario price"
        elif pricing.mode == "owned":
            rate = owned_rate(cat.accelerator(name), pricing)
            if rate is None:
                notes.append(f"{name}: no purchase price in the catalog; left out of owned pricing")
                continue
            gpi, offer = 1, "owned"
        else:
            o = cat.cheapest_offer(name, pricing.mode, provider=pricing.provider)
            if o is None:
                who = f" from {pricing.provider}" if pricing.provider else ""
                notes.append(f"{name}: no {pricing.mode} offer{who} in the catalog; left out")
                continue
            gpi = o.gpus_per_instance
            rate = o.usd_per_gpu_hour(pricing.mode)
            offer = f"{o.provider} {o.instance_type}"
        out.append(GpuOption(index=len(out), name=name, hardware=hw, usd_per_gpu_hour=rate,
                             gpus_per_instance=gpi, usd_per_instance_hour=rate * gpi, offer=offer,
                             available=available.get(name), accelerator=cat.accelerator(name),
                             offers=tuple(cat.offers(gpu=name))))
    return out, notes


def _deployable(acc, deployment: str) -> bool:
    kind = getattr(acc, "deployment", "datacenter")
    if deployment == "edge":
        return kind == "edge"
    if deployment == "on_premise":
        return kind in ("datacenter", "workstation")
    return kind == "datacenter"


def owned_rate(acc, pricing) -> float | None:
    """Owned $/GPU-hour by total cost of ownership (formulas/cost.py)."""

    price = getattr(acc, "purchase_usd", None)
    if price is None or (isinstance(price, float) and math.isnan(price)):
        return None
    br = owned_usd_per_gpu_hour(purchase_usd_per_gpu=price, years=pricing.years, tdp_w=acc.tdp_w,
                                utilization=pricing.utilization, pue=pricing.pue,
                                usd_per_kwh=pricing.usd_per_kwh)
    return float(getattr(br, "total", br))


def resolve_gpu_name(gpus: list[GpuOption], name: str, catalog: Catalog | None = None) -> str:
    """The catalog id ``name`` (an id or alias) stands for: through ``catalog`` when given (its
    error suggests the closest known names), else among the options' own ids and aliases (a
    name none of them carries is returned unchanged, for the caller's 'not eligible' error)."""
    if catalog is not None:
        return catalog.resolve_gpu_id(str(name))
    low = str(name).lower()
    for g in gpus:
        aliases = getattr(g.accelerator, "aliases", None) or ()
        if low == g.name.lower() or low in (a.lower() for a in aliases):
            return g.name
    return str(name)
