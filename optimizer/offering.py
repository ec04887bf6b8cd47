"""Which offers (and pricing modes) a GPU type can be bought through in a scenario (issue 17).

``offer_choices(catalog, gpu_id, pricing, stock)`` lists, for one GPU type, every (offer, mode)
the scenario's ``pricing`` allows, with what the search needs to price and time a layout on it:

    usd_per_gpu_hour, usd_per_instance_hour, gpus_per_instance   the mode's rate and billing unit
    hardware            the accelerator as the offer runs it (a cluster's fabric per GPU)
    max_gpus            most GPUs one job gets: one instance for single_gpu / node offers; for a
                        cluster its max_gpus; capped by pricing.capacity (provider, provider/region)
                        and the scenario's stock of the GPU (constraints.available); None = no limit
    term_hours          the commitment billed in full (0 on demand and spot)
    preemptions_per_instance_hour   spot only: pricing.spot_preemptions_per_hour, else the
                        offer's, else formulas.preemption's default
    provider, instance_type, region, interconnect, as_of          named in every result row

Dominated choices are dropped: B goes when some A of the same GPU and instance size is no
dearer per GPU-hour, commits no longer, is preempted no more often, reaches at least as many
GPUs and has at least B's fabric (so every layout B can run, A runs at least as fast for no
more money). What is left is exact: the best offer of any layout is among them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from optimizer.catalog import TERM_HOURS, Catalog, Offer
from optimizer.formulas import preemption as P
from optimizer.formulas.offers import INTERCONNECT_CODES


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


def capacity_cap(pricing, offer: Offer) -> Optional[int]:
    """GPUs ``pricing.capacity`` allows from this offer's provider and provider/region (None = no cap).
    Keys match case-insensitively: 'AWS' or 'AWS/us-east-1'."""
    caps = {k.lower(): v for k, v in (getattr(pricing, "capacity", None) or {}).items()}
    return _cap(caps.get(offer.provider.lower()), caps.get(f"{offer.provider}/{offer.region}".lower()))


def offer_choices(cat: Catalog, gpu_id: str, pricing, stock: Optional[int] = None) -> tuple[list[OfferChoice], list[str]]:
    """The undominated (offer, mode) choices of one GPU type (module docstring) and notes on
    what left offers out (no price in the modes, region, capacity 0)."""
    modes = pricing.modes if hasattr(pricing, "modes") else (pricing.mode,)
    regions = {r.lower() for r in (getattr(pricing, "regions", None) or ())}
    offers = cat.offers(gpu_id, getattr(pricing, "provider", None))
    if regions:
        offers = [o for o in offers if o.region.lower() in regions]
    out: list[OfferChoice] = []
    for o in offers:
        cap = _cap(o.contiguous_max_gpus, capacity_cap(pricing, o), stock)
        if cap is not None and cap < 1:
            continue
        hw = cat.offer_hardware(o)
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
    kept = [c for i, c in enumerate(out)
            if not any(d.dominates(c) and (not c.dominates(d) or j < i) for j, d in enumerate(out) if j != i)]
    notes = []
    if not kept:
        who = f" from {pricing.provider}" if getattr(pricing, "provider", None) else ""
        where = f" in {', '.join(sorted(regions))}" if regions else ""
        notes.append(f"{gpu_id}: no {' or '.join(modes)} offer{who}{where} in the catalog; left out")
    return kept, notes


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
