"""Refresh cloud offers from a local copy of SkyPilot's catalog (issue 17), without network access.

SkyPilot keeps one ``vms.csv`` per cloud (skypilot-org/skypilot-catalog, ``catalogs/v7/<cloud>/vms.csv``)
with the columns ``InstanceType, AcceleratorName, AcceleratorCount, vCPUs, MemoryGiB, GpuInfo,
Price, SpotPrice, Region, AvailabilityZone`` (its README, 'Schema V5'; column order differs by
cloud). Prices are USD per instance-hour; spot prices are per availability zone.

``refresh_offers(folder)`` reads ``folder/<cloud>/vms.csv`` for every cloud folder present and
returns the packaged offers with:

* one offer per (cloud, instance type, region) that has an accelerator this catalog knows
  (``catalog/skypilot_gpu_names.csv`` maps SkyPilot's accelerator names, per cloud where they
  differ: RunPod's 'H100' is the PCIe card, AWS's the SXM one);
* on-demand = ``Price``; spot = the least ``SpotPrice`` over the region's zones;
* GCP lists a machine type's host and its GPUs as separate rows: a row without ``InstanceType``
  prices ``AcceleratorCount`` GPUs of ``AcceleratorName`` in a region, and is added to the host
  row of the same accelerator, count and region;
* what a row cannot say (interconnect, fabric, largest allocation, 1- and 3-year prices,
  preemption rate) is kept from the packaged offer of the same provider and instance type when
  there is one; otherwise a one-GPU instance is ``single_gpu`` and a larger one ``node``
  (never ``cluster``: a fabric must be stated, not guessed);
* ``as_of`` = the date given (the date the snapshot was taken), ``source`` = the file read.

A refreshed row replaces the packaged row with the same (provider, instance type, region);
the others are kept. The result is written as an offers CSV that ``--catalog FILE`` reads.
"""

from __future__ import annotations

import csv
from datetime import date
from pathlib import Path
from typing import Optional, Sequence

from optimizer.catalog import AS_OF_DATE, Catalog, Offer, data_dir
from optimizer.errors import ClusteroptError

GPU_NAMES_FILE = "skypilot_gpu_names.csv"
PROVIDER_NAMES = {"aws": "AWS", "gcp": "GCP", "azure": "Azure", "lambda": "Lambda", "runpod": "RunPod",
                  "nebius": "Nebius", "oci": "OCI", "cudo": "Cudo", "vast": "Vast", "fluidstack": "FluidStack",
                  "paperspace": "Paperspace", "do": "DigitalOcean", "hyperbolic": "Hyperbolic",
                  "primeintellect": "PrimeIntellect", "shadeform": "Shadeform", "seeweb": "Seeweb"}
REQUIRED_COLUMNS = ("InstanceType", "AcceleratorName", "AcceleratorCount", "Price", "Region")
#: The columns of offers.csv, in order (the CSV that refresh writes).
OFFER_COLUMNS = tuple(Offer.model_fields)


def _gpu_names() -> dict[tuple[str, str], str]:
    with open(data_dir() / GPU_NAMES_FILE, encoding="utf-8") as fh:
        return {(r["cloud"].strip().lower(), r["skypilot_name"].strip().lower()): r["gpu"].strip()
                for r in csv.DictReader(fh)}


def _num(value: Optional[str]) -> Optional[float]:
    try:
        x = float(value) if value not in (None, "") else None
    except ValueError:
        return None
    return x if x is not None and x > 0 else None


def _read_cloud(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ClusteroptError(str(path), f"not a SkyPilot vms.csv: no column {missing[0]!r}",
                                  "columns " + ", ".join(REQUIRED_COLUMNS) + " (skypilot-catalog schema v5+)")
        return list(reader)


def skypilot_offers(folder: Path | str, *, as_of: str, catalog: Catalog,
                    regions: Sequence[str] = ()) -> tuple[list[Offer], dict]:
    """Offers read from ``folder/<cloud>/vms.csv`` (module docstring) and a report of what was
    read and skipped: {'files', 'offers', 'skipped_accelerators'}."""
    root = Path(folder)
    if not root.is_dir():
        raise ClusteroptError("--skypilot", f"folder not found: {str(root)!r}",
                              "a local copy of skypilot-catalog's catalogs/v7 folder (one sub-folder per cloud)")
    if not AS_OF_DATE.fullmatch(as_of):
        raise ClusteroptError("--as-of", f"{as_of!r} is not a date", "YYYY-MM-DD, the date of the snapshot")
    cat = catalog
    names = _gpu_names()
    known = {(o.provider.lower(), o.instance_type.lower()): o for o in cat.offers()}
    wanted = {r.lower() for r in regions}
    files = sorted(root.glob("*/vms.csv"))
    if not files:
        raise ClusteroptError("--skypilot", f"no <cloud>/vms.csv under {str(root)!r}",
                              "the catalogs/v7 folder of skypilot-catalog (aws/vms.csv, gcp/vms.csv, ...)")
    out: dict[tuple, Offer] = {}
    skipped: dict[str, int] = {}
    for path in files:
        cloud = path.parent.name.lower()
        provider = PROVIDER_NAMES.get(cloud, cloud.capitalize())
        rows = _read_cloud(path)
        gpu_rows = {}      # GCP: accelerator-only rows (no InstanceType) per (name, count, region)
        for r in rows:
            if not r["InstanceType"].strip() and r["AcceleratorName"].strip():
                k = (r["AcceleratorName"].strip().lower(), _num(r["AcceleratorCount"]), r["Region"].strip())
                price, spot = _num(r["Price"]), _num(r.get("SpotPrice"))
                cur = gpu_rows.get(k, (price, spot))
                gpu_rows[k] = (price, min([s for s in (spot, cur[1]) if s is not None], default=None))
        grouped: dict[tuple, dict] = {}
        for r in rows:
            it, acc, region = r["InstanceType"].strip(), r["AcceleratorName"].strip(), r["Region"].strip()
            count = _num(r["AcceleratorCount"])
            if not it or not acc or not count or (wanted and region.lower() not in wanted):
                continue
            gpu = names.get((cloud, acc.lower())) or names.get(("*", acc.lower()))
            if gpu is None:
                skipped[acc] = skipped.get(acc, 0) + 1
                continue
            price, spot = _num(r["Price"]), _num(r.get("SpotPrice"))
            if cloud == "gcp" and (acc.lower(), count, region) in gpu_rows:
                g_price, g_spot = gpu_rows[(acc.lower(), count, region)]
                price = price + g_price if price and g_price else None
                spot = spot + g_spot if spot and g_spot else None
            g = grouped.setdefault((it, region), {"gpu": gpu, "count": int(count), "price": price, "spot": []})
            if g["price"] is None:
                g["price"] = price
            if spot is not None:
                g["spot"].append(spot)
        for (it, region), g in grouped.items():
            if g["price"] is None:
                continue
            base = known.get((provider.lower(), it.lower()))
            spot = min(g["spot"]) if g["spot"] else None
            if spot is not None and spot >= g["price"]:
                spot = None            # SkyPilot repeats the on-demand price where no spot market exists
            keep = {}
            if base is not None and base.gpus_per_instance == g["count"]:
                keep = {k: getattr(base, k) for k in ("interconnect", "fabric_gbit_per_s_per_gpu", "fabric_rails",
                                                       "fabric_rdma", "max_gpus", "reserved_usd_per_hour",
                                                       "reserved_3y_usd_per_hour")}
                if keep["reserved_usd_per_hour"] is not None or keep["reserved_3y_usd_per_hour"] is not None:
                    # the snapshot has no commitments: they keep the date they were read on
                    keep["reserved_as_of"] = base.reserved_as_of or base.as_of
                if spot is not None:
                    keep["spot_preemptions_per_hour"] = base.spot_preemptions_per_hour
            else:
                keep = {"interconnect": "single_gpu" if g["count"] == 1 else "node"}
            try:
                gpu_id = cat.resolve_gpu_id(g["gpu"])
            except ClusteroptError:
                skipped[g["gpu"]] = skipped.get(g["gpu"], 0) + 1
                continue
            offer = Offer(provider=provider, instance_type=it, gpu=gpu_id, gpus_per_instance=g["count"],
                          on_demand_usd_per_hour=g["price"], spot_usd_per_hour=spot, region=region, as_of=as_of,
                          source=f"skypilot-catalog {cloud}/vms.csv (local copy, snapshot of {as_of})",
                          notes="refreshed by clusteropt refresh-offers; spot = least over the region's zones"
                                + ("; interconnect, fabric and commitments kept from the packaged row" if base else ""),
                          **keep)
            out[offer.key] = offer
    return list(out.values()), {"files": [str(p) for p in files], "offers": len(out),
                                "skipped_accelerators": dict(sorted(skipped.items()))}


def refresh_offers(folder: Path | str, *, catalog: Catalog, as_of: Optional[str] = None,
                   regions: Sequence[str] = ()) -> tuple[list[Offer], dict]:
    """The caller's catalog offers with rows from a SkyPilot snapshot added or replaced (module
    docstring); ``as_of`` defaults to today (the date the local copy is read)."""
    cat = catalog
    new, rep = skypilot_offers(folder, as_of=as_of or date.today().isoformat(), catalog=cat, regions=regions)
    merged = {o.key: o for o in cat.offers()}
    replaced = sum(1 for o in new if o.key in merged)
    merged.update({o.key: o for o in new})
    rep.update({"replaced": replaced, "added": len(new) - replaced, "total": len(merged)})
    return list(merged.values()), rep


def offers_csv(offers: Sequence[Offer]) -> str:
    """Offers as the text of an offers.csv (same columns and units)."""
    import io

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(OFFER_COLUMNS), lineterminator="\n")
    w.writeheader()
    for o in offers:
        rec = o.model_dump()
        rec["fabric_rdma"] = "" if rec["fabric_rdma"] is None else ("yes" if rec["fabric_rdma"] else "no")
        w.writerow({k: "" if rec[k] is None else rec[k] for k in OFFER_COLUMNS})
    return buf.getvalue()


def summary(rep: dict) -> str:
    """One line for stderr: what a refresh read, replaced, added and skipped."""
    skipped = ", ".join(f"{k} ({v})" for k, v in rep["skipped_accelerators"].items()) or "none"
    return (f"{rep['offers']} offers read from {len(rep['files'])} files: {rep['replaced']} replaced, "
            f"{rep['added']} added, {rep['total']} in all; accelerators not in the catalog: {skipped}")
