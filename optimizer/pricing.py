"""GPU options of a scenario: the eligible GPU types with their hardware and price, resolved once
from the catalog the caller passed (every planner prices from these, never from a catalog it
loads itself)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional

from optimizer.catalog import TERM_HOURS, Catalog, Offer
from optimizer.errors import ClusteroptError
from optimizer.formulas import preemption as P
from optimizer.formulas.cost import owned_usd_per_gpu_hour
from optimizer.formulas.offers import INTERCONNECT_CODES, offer_runs_layout
from optimizer.scenario import Pricing
from optimizer.units import GIGABIT

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
    #: The (offer, mode) a rented option is priced on (issue 17; OfferChoice below), None when owned
    #: or priced by the scenario: its fabric is in ``hardware``, its reach in ``available``.
    choice: Any = field(default=None, compare=False, repr=False)

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
        elif pricing.modes == ("owned",):
            rate = owned_rate(cat.accelerator(name), pricing)
            if rate is None:
                notes.append(f"{name}: no purchase price in the catalog; left out of owned pricing")
                continue
            gpi, offer = 1, "owned"
        else:
            # issue 17: one option per undominated (offer, mode), each with the offer's fabric and
            # reach; the search prices a layout only on options that can run it
            choices, why = offer_choices(cat, name, pricing, available.get(name))
            notes += why
            for ch in choices:
                out.append(GpuOption(index=len(out), name=name, hardware=ch.hardware,
                                     usd_per_gpu_hour=ch.usd_per_gpu_hour, gpus_per_instance=ch.gpus_per_instance,
                                     usd_per_instance_hour=ch.usd_per_instance_hour, offer=ch.label,
                                     available=ch.max_gpus, accelerator=cat.accelerator(name),
                                     offers=tuple(cat.offers(gpu=name)), choice=ch))
            continue
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


# ----------------------------------------------------------------------------------------
# offers and pricing modes (issue 17)
# ----------------------------------------------------------------------------------------

# Which offers (and pricing modes) a GPU type can be bought through in a scenario (issue 17).
#
# ``offer_choices(catalog, gpu_id, pricing, stock)`` lists, for one GPU type, every (offer, mode)
# the scenario's ``pricing`` allows, with what the search needs to price and time a layout on it:
#
#    usd_per_gpu_hour, usd_per_instance_hour, gpus_per_instance   the mode's rate and billing unit
#    hardware            the accelerator as the offer runs it (a cluster's fabric per GPU)
#    max_gpus            most GPUs one job gets: one instance for single_gpu / node offers; for a
#                        cluster its max_gpus; capped by pricing.capacity (provider, provider/region)
#                        and the scenario's stock of the GPU (constraints.available); None = no limit
#    term_hours          the commitment billed in full (0 on demand and spot)
#    preemptions_per_instance_hour   spot only: pricing.spot_preemptions_per_hour, else the
#                        offer's, else formulas.preemption's default
#    provider, instance_type, region, interconnect, as_of          named in every result row
#
# Dominated choices are dropped: B goes when some A of the same GPU and instance size is no
# dearer per GPU-hour, commits no longer, is preempted no more often, reaches at least as many
# GPUs and has at least B's fabric (so every layout B can run, A runs at least as fast for no
# more money). What is left is exact: the best offer of any layout is among them.


@dataclass(frozen=True)
class OfferChoice:
    offer: Offer
    mode: str
    usd_per_gpu_hour: float
    usd_per_instance_hour: float
    gpus_per_instance: int
    hardware: object
    max_gpus: Optional[int]
    term_hours: float
    preemptions_per_instance_hour: float
    preemption_source: str

    @property
    def label(self) -> str:
        """'<provider> <instance> (<region>, <mode>)' as tables show it."""
        where = f"{self.offer.region}, " if self.offer.region and not self.offer.region.startswith("(") else ""
        return f"{self.offer.provider} {self.offer.instance_type} ({where}{self.mode})"

    @property
    def fabric_bytes_per_s(self) -> float:
        return self.hardware.inter_node_bytes_per_s if self.offer.interconnect == "cluster" else 0.0

    def dominates(self, other: "OfferChoice") -> bool:
        inf = float("inf")
        reach = lambda c: inf if c.max_gpus is None else c.max_gpus   # noqa: E731
        return (self.gpus_per_instance == other.gpus_per_instance
                and self.usd_per_gpu_hour <= other.usd_per_gpu_hour
                and self.term_hours <= other.term_hours
                and self.preemptions_per_instance_hour <= other.preemptions_per_instance_hour
                and reach(self) >= reach(other)
                and INTERCONNECT_CODES[self.offer.interconnect] >= INTERCONNECT_CODES[other.offer.interconnect]
                and self.fabric_bytes_per_s >= other.fabric_bytes_per_s)


def _cap(*caps: Optional[int]) -> Optional[int]:
    given = [c for c in caps if c is not None]
    return min(given) if given else None


def capacity_keys(pricing, offer: Offer) -> tuple[str, ...]:
    """The keys of ``pricing.capacity`` that cap this offer (its provider and/or provider/region,
    as the scenario spells them), sorted. Offers with the same keys draw on the same caps."""
    caps = getattr(pricing, "capacity", None) or {}
    mine = {offer.provider.lower(), f"{offer.provider}/{offer.region}".lower()}
    return tuple(sorted(k for k in caps if k.lower() in mine))


def capacity_groups(pricing, pools) -> list[tuple[str, int, tuple[int, ...]]]:
    """A fleet's shared capacity caps (issue 17): for each key of ``pricing.capacity`` (a provider
    or provider/region), (key, GPUs, indices of the ``pools`` it caps). ``pools`` are GpuOptions
    or OfferChoices; pools without an offer (owned, scenario price) are capped by none. Keys that
    cap no pool are left out. Replicas of a serving fleet are separate jobs, so a cap bounds the
    sum of the GPUs rented in its pools, not each replica."""
    caps = getattr(pricing, "capacity", None) or {}
    out = []
    for key, limit in caps.items():
        idx = []
        for i, p in enumerate(pools):
            ch = getattr(p, "choice", p)
            if isinstance(ch, OfferChoice) and key in capacity_keys(pricing, ch.offer):
                idx.append(i)
        if idx:
            out.append((key, int(limit), tuple(idx)))
    return out


def capacity_cap(pricing, offer: Offer) -> Optional[int]:
    """GPUs ``pricing.capacity`` allows from this offer's provider and provider/region (None = no cap).
    Keys match case-insensitively: 'AWS' or 'AWS/us-east-1'."""
    caps = {k.lower(): v for k, v in (getattr(pricing, "capacity", None) or {}).items()}
    return _cap(caps.get(offer.provider.lower()), caps.get(f"{offer.provider}/{offer.region}".lower()))


def offer_choices(cat: Optional[Catalog], gpu_id: str, pricing, stock: Optional[int] = None, *,
                  option: Optional[GpuOption] = None, fleet: bool = False,
                  only: Optional[Offer] = None) -> tuple[list[OfferChoice], list[str]]:
    """The undominated (offer, mode) choices of one GPU type (see above) and notes on what left
    offers out (no price in the modes, region, capacity 0). ``option``: take the offers and the
    catalog row from a GpuOption instead of ``cat`` (planners below pricing hold no catalog).
    ``fleet``: the choices feed a fleet of many jobs (serving replicas) that shares
    ``pricing.capacity``: A then dominates B only when every cap on A also caps B (a fleet
    can move B's GPUs to A without passing a cap A's reach does not show); for one job the
    caps are already in each choice's reach. ``only``: that one offer (a user's pick), in each
    of the modes it prices."""
    modes = pricing.modes if hasattr(pricing, "modes") else (pricing.mode,)
    regions = {r.lower() for r in (getattr(pricing, "regions", None) or ())}
    provider = getattr(pricing, "provider", None)
    if option is not None:
        offers = [o for o in option.offers if provider is None or o.provider.lower() == provider.lower()]
        base = option.accelerator.to_hardware()
        hardware_of = (lambda o: base.with_inter_node_bytes_per_s(o.fabric_gbit_per_s_per_gpu * GIGABIT)  # noqa: E731
                       if o.interconnect == "cluster" else base)
    else:
        offers = cat.offers(gpu_id, provider)
        hardware_of = cat.offer_hardware
    if only is not None:
        offers = [only]
    elif regions:
        offers = [o for o in offers if o.region.lower() in regions]
    out: list[OfferChoice] = []
    capped: list[Offer] = []            # priced offers a cap of 0 GPUs leaves out
    for o in offers:
        cap = _cap(o.contiguous_max_gpus, capacity_cap(pricing, o), stock)
        if cap is not None and cap < 1:
            capped += [o] if any(o.usd_per_hour(m) is not None for m in modes) else []
            continue
        hw = hardware_of(o)
        for mode in modes:
            price = o.usd_per_hour(mode)
            if price is None:
                continue
            rate, src = 0.0, ""
            if mode == "spot":
                if getattr(pricing, "spot_preemptions_per_hour", None) is not None:
                    rate, src = pricing.spot_preemptions_per_hour, "pricing.spot_preemptions_per_hour"
                elif o.spot_preemptions_per_hour is not None:
                    rate, src = o.spot_preemptions_per_hour, f"offers.csv ({o.source})"
                else:
                    rate, src = P.DEFAULT_SPOT_PREEMPTIONS_PER_HOUR, P.DEFAULT_SPOT_PREEMPTION_SOURCE
            out.append(OfferChoice(offer=o, mode=mode, usd_per_gpu_hour=price / o.gpus_per_instance,
                                   usd_per_instance_hour=price, gpus_per_instance=o.gpus_per_instance, hardware=hw,
                                   max_gpus=cap, term_hours=TERM_HOURS[mode], preemptions_per_instance_hour=rate,
                                   preemption_source=src))
    out.sort(key=lambda c: (c.usd_per_gpu_hour, c.offer.key, c.mode))
    keys = {id(c): set(capacity_keys(pricing, c.offer)) for c in out} if fleet else {}

    def beats(d: OfferChoice, c: OfferChoice) -> bool:
        return d.dominates(c) and (not fleet or keys[id(d)] <= keys[id(c)])

    kept = [c for i, c in enumerate(out)
            if not any(beats(d, c) and (not beats(c, d) or j < i) for j, d in enumerate(out) if j != i)]
    notes = []
    if not kept and capped:
        keys = sorted({k for o in capped for k in capacity_keys(pricing, o)})
        why = (f"pricing.capacity ({', '.join(f'{k}: {pricing.capacity[k]}' for k in keys)})" if keys
               else "constraints.available")
        notes.append(f"{gpu_id}: every {' or '.join(modes)} offer is capped at 0 GPUs by {why}; left out")
    elif not kept:
        who = f" from {pricing.provider}" if getattr(pricing, "provider", None) else ""
        where = f" in {', '.join(sorted(regions))}" if regions else ""
        notes.append(f"{gpu_id}: no {' or '.join(modes)} offer{who}{where} in the catalog; left out")
    return kept, notes


def runnable_choice(cat: Catalog, gpu_id: str, mode: str, n_gpus: int, tp: int, *, provider: Optional[str] = None,
                    offer: Optional[Offer] = None) -> Optional[OfferChoice]:
    """The (offer, ``mode``) one job of ``n_gpus`` GPUs at tensor-parallel degree ``tp`` is timed
    and billed on (issue 17): ``offer`` when given (None when it cannot run the job or has no
    price in ``mode``), else the cheapest offer (of ``provider``) that can run it, by whole
    instances x $/instance-hour, ties by offer key. Runs: formulas.offers.offer_runs_layout."""
    pricing = Pricing(mode=mode, provider=provider)
    runs = [ch for ch in offer_choices(cat, gpu_id, pricing, only=offer)[0]
            if offer_runs_layout(n_gpus, tp, INTERCONNECT_CODES[ch.offer.interconnect], ch.gpus_per_instance,
                                 ch.max_gpus)]
    return min(runs, key=lambda c: (-(-n_gpus // c.gpus_per_instance) * c.usd_per_instance_hour, c.offer.key),
               default=None)


def best_per_config(config_cols, keys, rows):
    """Of ``rows``, the one lexicographically best by ``keys`` (objective, then tie-breaks) for
    each distinct configuration (equal ``config_cols``): a configuration is priced on its best
    offer, so the ranking never lists the same 12-key configuration twice (CONTRACTS.md)."""
    import numpy as np

    rows = np.asarray(rows, dtype=np.int64)
    if len(rows) == 0:
        return rows
    cfg = [np.asarray(c)[rows] for c in config_cols]
    ks = [np.asarray(k)[rows] for k in keys]
    order = np.lexsort(ks[::-1] + cfg[::-1])
    srt = [c[order] for c in cfg]
    first = np.ones(len(rows), dtype=bool)
    same = np.ones(len(rows) - 1, dtype=bool)
    for c in srt:
        same &= c[1:] == c[:-1]
    first[1:] = ~same
    return np.sort(rows[order][first])


def commitment_notes(options) -> list[str]:
    """For each committed (offer, mode) among ``options`` (GpuOptions or OfferChoices): the run
    length from which the commitment costs less than the same offer on demand (whole term
    billed; formulas.offers.commitment_break_even_hours), so a plan says when committing wins."""
    from optimizer.formulas.offers import commitment_break_even_hours

    out, seen = [], set()
    for g in options:
        ch = getattr(g, "choice", g)
        if not isinstance(ch, OfferChoice) or ch.term_hours <= 0:
            continue
        od = ch.offer.usd_per_gpu_hour("on_demand")
        key = (ch.offer.key, ch.mode)
        if od is None or key in seen:
            continue
        seen.add(key)
        h = float(commitment_break_even_hours(ch.term_hours, ch.usd_per_gpu_hour, od))
        years = ch.term_hours / 8766.0
        out.append(f"{ch.offer.provider} {ch.offer.instance_type} ({ch.offer.region}): a {years:g}-year commitment "
                   f"at ${ch.usd_per_gpu_hour:.2f}/GPU-hour (billed for the whole {ch.term_hours / 24:,.0f} days) "
                   f"beats ${od:.2f} on demand once the GPUs are needed for more than {h / 24:,.0f} days "
                   f"({h / ch.term_hours:.0%} of the term)")
    return out


def gpu_types(options: list[GpuOption], scenario, catalog: Catalog) -> list[GpuOption]:
    """One option per GPU type (the first, i.e. cheapest, of its offers), re-indexed, with the
    scenario's stock as its limit: for planners that bill each type through pools of their own
    (the serving fleet's billing pools)."""
    from dataclasses import replace

    stock = {}
    if scenario is not None:
        stock = {catalog.resolve_gpu_id(k): v for k, v in scenario.constraints.available.items()}
    out, seen = [], set()
    for g in options:
        if g.name in seen:
            continue
        seen.add(g.name)
        out.append(replace(g, index=len(out), available=stock.get(g.name) if g.choice is not None else g.available))
    return out


def scenario_mode(scenario) -> str:
    """The scenario's pricing mode as one string ('on_demand', or 'on_demand+spot' for a list)."""
    modes = getattr(getattr(scenario, "pricing", None), "modes", ("on_demand",))
    return modes[0] if len(modes) == 1 else "+".join(modes)


def offer_keys(g: GpuOption, mode: str = "on_demand") -> dict:
    """The flat keys naming a configuration's offer (CONTRACTS.md 'Offers and money'): provider,
    instance_type, region, interconnect (single_gpu | node | cluster; 'owned' for owned hardware),
    offer_max_gpus (None: no stated limit), offer_as_of, and the pricing mode it is billed in."""
    ch = getattr(g, "choice", None)
    if ch is not None:
        o = ch.offer
        return {"provider": o.provider, "instance_type": o.instance_type, "region": o.region,
                "interconnect": o.interconnect, "offer_max_gpus": o.contiguous_max_gpus,
                "offer_as_of": o.price_as_of(ch.mode), "pricing_mode": ch.mode}
    owned = g.offer == "owned"
    return {"provider": None, "instance_type": None, "region": None, "interconnect": "owned" if owned else None,
            "offer_max_gpus": None, "offer_as_of": None, "pricing_mode": "owned" if owned else mode}
