"""Hardware catalog: accelerators and cloud offers, validated on load.

Data: ``catalog/accelerators.csv`` and ``catalog/offers.csv`` at the repository root,
installed as the package ``optimizer._data.catalog``. Columns keep the datasheet's unit in
their names (``memory_gib``, ``hbm_tb_per_s``, ``bf16_tflops``, ``inter_node_gbit_per_s``);
:meth:`Catalog.hardware` converts once to bytes, bytes/s and FLOP/s
(:class:`optimizer.formulas.hardware.Hardware`).

Conventions of the data (the rows' ``notes`` say where a figure departs from them):

* FLOP/s are DENSE peaks. Datasheets print 2:4-sparse figures at twice these; ``sparse_2_4``
  says whether the device has that mode. ``bf16_tflops`` is the dense bf16/fp16 tensor rate
  with FP32 accumulate (for Volta/Turing, which lack bf16, the fp16 tensor rate).
* Memory: a datasheet's '80 GB' of HBM is 80 GiB; ``memory_gib`` stores what the vendor means.
* Bandwidths are per GPU and ONE direction: NVLink '900 GB/s' (both directions) is 450.
  ``nvlink_domain`` GPUs share the scale-up link; without NVLink it is PCIe and the domain is
  the node. ``inter_node_gbit_per_s`` is the GPU's share of the node's scale-out NICs.
* Offer prices are USD per hour for the whole instance; :meth:`Offer.usd_per_gpu_hour`
  divides by ``gpus_per_instance``.

User files (``load_catalog(extra_files)``) are CSVs with the same columns: a file with an
``instance_type`` column holds offers, otherwise accelerators. Their rows add to or replace
the packaged rows by ``id`` (accelerators) or by ``(provider, instance_type, region)`` (offers).
Errors name the file, the row (its line number in the file) and the field:
``accelerators.csv:row 7.memory_gib: ...``.
"""

from __future__ import annotations

import csv
import functools
import importlib.resources
import re
from pathlib import Path
from typing import Literal, Optional, Sequence

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from optimizer.errors import ClusteroptError, did_you_mean, from_pydantic
from optimizer.formulas.hardware import Hardware
from optimizer.formulas.intervals import parse_intervals
from optimizer.inputs import read_text
from optimizer.units import GB, GIB, GIGABIT, HOURS_PER_YEAR, TB, TERA

PriceMode = Literal["on_demand", "spot", "reserved", "reserved_3y"]
PRICE_MODES: tuple[str, ...] = ("on_demand", "spot", "reserved", "reserved_3y")
#: 'reserved' is the 1-year commitment; 'reserved_1y' names it too.
MODE_ALIASES = {"reserved_1y": "reserved"}
PRICE_COLUMN = {"on_demand": "on_demand_usd_per_hour", "spot": "spot_usd_per_hour",
                "reserved": "reserved_usd_per_hour", "reserved_3y": "reserved_3y_usd_per_hour"}
#: Minimum term of each pricing mode, hours (billed in full; 0 = none). 1 year = 8766 h.
TERM_HOURS = {"on_demand": 0.0, "spot": 0.0, "reserved": HOURS_PER_YEAR, "reserved_3y": 3 * HOURS_PER_YEAR}
Interconnect = Literal["single_gpu", "node", "cluster"]
AS_OF_DATE = re.compile(r"\d{4}-(0[1-9]|1[0-2])(-(0[1-9]|[12]\d|3[01]))?")
ACCELERATORS_FILE = "accelerators.csv"
OFFERS_FILE = "offers.csv"


def _norm(name: str) -> str:
    """Matching key for ids and aliases: case, spaces, '-' and '_' do not matter."""
    return re.sub(r"[\s_\-]+", "", name.strip().lower())


class Accelerator(BaseModel):
    """One catalog row, in the datasheet units of its column names (see module docstring)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    id: str = Field(min_length=1)
    vendor: str = Field(min_length=1)
    form_factor: str = ""
    deployment: Literal["datacenter", "workstation", "edge"]
    aliases: tuple[str, ...] = ()
    memory_gib: float = Field(gt=0)
    memory_shared_with_host: bool = False
    hbm_tb_per_s: float = Field(gt=0)
    fp32_tflops: Optional[float] = Field(default=None, gt=0)
    tf32_tflops: Optional[float] = Field(default=None, gt=0)
    bf16_tflops: float = Field(gt=0)
    fp8_tflops: Optional[float] = Field(default=None, gt=0)
    int8_tops: Optional[float] = Field(default=None, gt=0)
    sparse_2_4: bool
    intra_node_gb_per_s: Optional[float] = Field(default=None, gt=0)
    nvlink_domain: int = Field(ge=1)
    gpus_per_node: int = Field(ge=1)
    inter_node_gbit_per_s: float = Field(gt=0)
    pcie_gb_per_s: Optional[float] = Field(default=None, gt=0)
    tdp_w: Optional[float] = Field(default=None, gt=0)
    node_reference: str = ""
    host_cpu_cores: Optional[int] = Field(default=None, ge=1)
    host_ram_gib: Optional[float] = Field(default=None, gt=0)
    purchase_usd: Optional[float] = Field(default=None, gt=0)
    purchase_includes_server: Optional[bool] = None
    purchase_as_of: str = ""
    purchase_source: str = ""
    source: str = Field(min_length=1)
    as_of: str = Field(min_length=4)
    notes: str = ""

    @field_validator("aliases", mode="before")
    @classmethod
    def _split_aliases(cls, v):
        if isinstance(v, str):
            return tuple(a.strip() for a in v.split(";") if a.strip())
        return v

    @property
    def memory_bytes(self) -> int:
        return round(self.memory_gib * GIB)

    def to_hardware(self) -> Hardware:
        """Convert to SI units. Absent rates (no FP8, unpublished FP32) become 0, as
        ``Hardware`` documents; ``Hardware.peak_flop_per_s`` then falls back to bf16."""
        return Hardware(
            name=self.id,
            memory_bytes=self.memory_bytes,
            hbm_bytes_per_s=self.hbm_tb_per_s * TB,
            fp32_flop_per_s=(self.fp32_tflops or 0.0) * TERA,
            tf32_flop_per_s=(self.tf32_tflops or 0.0) * TERA,
            bf16_flop_per_s=self.bf16_tflops * TERA,
            fp8_flop_per_s=(self.fp8_tflops or 0.0) * TERA,
            int8_op_per_s=(self.int8_tops or 0.0) * TERA,
            intra_node_bytes_per_s=(self.intra_node_gb_per_s or 0.0) * GB,
            intra_node_domain=self.nvlink_domain,
            gpus_per_node=self.gpus_per_node,
            inter_node_bytes_per_s=self.inter_node_gbit_per_s * GIGABIT,
            tdp_w=self.tdp_w or 0.0,
            sparse_2_4=self.sparse_2_4,
            kernels=gpu_kernel_profiles().get(_norm(self.id)),
            pcie_bytes_per_s=(self.pcie_gb_per_s or 0.0) * GB,
        )

    def to_record(self) -> dict:
        """Plain data for ``clusteropt catalog``: the CSV columns plus ``memory_bytes``."""
        rec = self.model_dump()
        rec["aliases"] = list(self.aliases)
        rec["memory_bytes"] = self.memory_bytes
        return rec


#: Highest instance price accepted (USD per hour): 1,000 times the dearest published 8-GPU
#: instance (~$100/h); a larger figure is a typo (cents, or a monthly price).
MAX_INSTANCE_USD_PER_HOUR = 1e5


class Offer(BaseModel):
    """A cloud instance offer; prices are USD per hour for the whole instance.

    What the time model needs to know about it (issue 17): ``interconnect`` says what a job on
    it can span - ``single_gpu`` (a one-GPU pod), ``node`` (one instance whose GPUs share the
    accelerator's scale-up link, NVLink or PCIe; no multi-node fabric) or ``cluster`` (many
    instances on a fabric of ``fabric_gbit_per_s_per_gpu`` Gbit/s per GPU, one direction, over
    ``fabric_rails`` NICs per instance, with or without GPUDirect RDMA). ``max_gpus`` is the
    largest contiguous allocation a cluster offer gives (empty: the provider states no limit);
    a single_gpu or node offer gives one instance. ``reserved_usd_per_hour`` is the 1-year
    commitment, ``reserved_3y_usd_per_hour`` the 3-year one (each billed for its whole term);
    ``spot_preemptions_per_hour`` the published or stated preemption rate per spot instance-hour
    (empty: the default of optimizer.formulas.preemption). ``as_of`` is the date the price was
    read (YYYY-MM-DD or YYYY-MM); ``reserved_as_of`` the date the commitment prices were read
    when that differs (empty: ``as_of``).
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    provider: str = Field(min_length=1)
    instance_type: str = Field(min_length=1)
    gpu: str = Field(min_length=1)
    gpus_per_instance: int = Field(ge=1)
    interconnect: Interconnect
    fabric_gbit_per_s_per_gpu: Optional[float] = Field(default=None, gt=0)
    fabric_rails: Optional[int] = Field(default=None, ge=1)
    fabric_rdma: Optional[bool] = None
    max_gpus: Optional[int] = Field(default=None, ge=1)
    on_demand_usd_per_hour: Optional[float] = Field(default=None, gt=0, le=MAX_INSTANCE_USD_PER_HOUR)
    spot_usd_per_hour: Optional[float] = Field(default=None, gt=0, le=MAX_INSTANCE_USD_PER_HOUR)
    reserved_usd_per_hour: Optional[float] = Field(default=None, gt=0, le=MAX_INSTANCE_USD_PER_HOUR)
    reserved_3y_usd_per_hour: Optional[float] = Field(default=None, gt=0, le=MAX_INSTANCE_USD_PER_HOUR)
    spot_preemptions_per_hour: Optional[float] = Field(default=None, ge=0)
    region: str = ""
    as_of: str = Field(min_length=4)
    reserved_as_of: Optional[str] = None
    source: str = Field(min_length=1)
    notes: str = ""

    @field_validator("as_of", "reserved_as_of")
    @classmethod
    def _dated(cls, v: Optional[str]) -> Optional[str]:
        if v is None:
            return v
        if not AS_OF_DATE.fullmatch(v.strip()):
            raise ValueError(f"{v!r} is not a date; give the date the price was read as YYYY-MM-DD (or YYYY-MM)")
        return v.strip()

    @model_validator(mode="after")
    def _interconnect_rules(self):
        fabric = (self.fabric_gbit_per_s_per_gpu, self.fabric_rails, self.fabric_rdma)
        if self.interconnect == "cluster":
            if any(f is None for f in fabric):
                raise ValueError("a cluster offer states its fabric: fabric_gbit_per_s_per_gpu, fabric_rails and fabric_rdma")
            if self.max_gpus is not None and (self.max_gpus < self.gpus_per_instance or self.max_gpus % self.gpus_per_instance):
                raise ValueError(f"max_gpus {self.max_gpus} is not a whole number of {self.gpus_per_instance}-GPU instances")
        else:
            if any(f is not None for f in fabric):
                raise ValueError(f"a {self.interconnect} offer has no multi-node fabric; leave the fabric_* columns empty")
            if self.max_gpus is not None and self.max_gpus != self.gpus_per_instance:
                raise ValueError(f"a {self.interconnect} offer gives one instance: max_gpus must be empty or {self.gpus_per_instance}")
        if self.interconnect == "single_gpu" and self.gpus_per_instance != 1:
            raise ValueError(f"a single_gpu offer has 1 GPU per instance (got {self.gpus_per_instance}); use 'node'")
        if self.spot_preemptions_per_hour is not None and self.spot_usd_per_hour is None:
            raise ValueError("spot_preemptions_per_hour without a spot price")
        if self.reserved_as_of is not None and self.reserved_usd_per_hour is None and self.reserved_3y_usd_per_hour is None:
            raise ValueError("reserved_as_of without a reserved (1- or 3-year) price")
        return self

    def price_as_of(self, mode: str) -> str:
        """The date the price of ``mode`` was read: ``reserved_as_of`` for the commitments when
        given, else ``as_of``."""
        if TERM_HOURS[_check_mode(mode)] > 0 and self.reserved_as_of:
            return self.reserved_as_of
        return self.as_of

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.provider.lower(), self.instance_type.lower(), self.region.lower())

    @property
    def contiguous_max_gpus(self) -> Optional[int]:
        """Most GPUs one job can get from this offer: one instance unless it is a cluster
        offer, whose ``max_gpus`` may be None (no stated limit)."""
        return self.max_gpus if self.interconnect == "cluster" else self.gpus_per_instance

    def usd_per_hour(self, mode: str) -> Optional[float]:
        """Instance price for ``mode``; None when the offer publishes none for it."""
        return getattr(self, PRICE_COLUMN[_check_mode(mode)])

    def usd_per_gpu_hour(self, mode: str) -> Optional[float]:
        """Price per GPU-hour for ``mode`` (instance price / GPUs); None when unpublished."""
        price = self.usd_per_hour(mode)
        return None if price is None else price / self.gpus_per_instance

    def to_record(self) -> dict:
        rec = self.model_dump()
        for mode in PRICE_MODES:
            rec[f"{mode}_usd_per_gpu_hour"] = self.usd_per_gpu_hour(mode)
        rec["offer_max_gpus"] = self.contiguous_max_gpus
        return rec


def offer_id(o: "Offer") -> str:
    """An offer's id as ``--offer`` takes it: provider/instance_type/region."""
    return f"{o.provider}/{o.instance_type}/{o.region}"


def _check_mode(mode: str) -> str:
    mode = MODE_ALIASES.get(mode, mode)
    if mode not in PRICE_MODES:
        raise ClusteroptError("mode", f"unknown price mode {mode!r}", "allowed: " + ", ".join(PRICE_MODES))
    return mode


class Catalog:
    """Accelerators and offers, looked up by case-insensitive id or alias."""

    def __init__(self, accelerators: Sequence[Accelerator], offers: Sequence[Offer]):
        self._accelerators = list(accelerators)
        self._offers = list(offers)
        self._by_key: dict[str, Accelerator] = {}
        for acc in self._accelerators:
            for name in (acc.id, *acc.aliases):
                other = self._by_key.get(_norm(name))
                if other is not None and other.id != acc.id:
                    raise ClusteroptError(f"accelerators[{acc.id}].aliases", f"name {name!r} already used by {other.id!r}",
                                          "ids and aliases must be unique ignoring case, spaces, '-' and '_'")
                self._by_key[_norm(name)] = acc
        self._hardware = {acc.id: acc.to_hardware() for acc in self._accelerators}  # converted once

    # --- accelerators -------------------------------------------------------------------
    @property
    def accelerators(self) -> list[Accelerator]:
        return list(self._accelerators)

    def resolve_gpu_id(self, name: str, field: str = "gpu") -> str:
        return self.accelerator(name, field).id

    def accelerator(self, name: str, field: str = "gpu") -> Accelerator:
        """An accelerator by id or alias (case, spaces, '-', '_' ignored), also in SkyPilot's
        ``NAME:COUNT`` form (``H100:8``; the count is not part of the name) and as nvidia-smi /
        rocm-smi print it (``NVIDIA H100 80GB HBM3``: catalog aliases, or the name without its
        vendor word). Unknown names suggest the closest known ones."""
        acc = self._lookup(str(name), field)
        if acc is None:
            known = [a.id for a in self._accelerators]
            suggestion = did_you_mean(str(name), known + [al for a in self._accelerators for al in a.aliases])
            raise ClusteroptError(field, f"unknown GPU {name!r}", self._canonical_suggestion(suggestion))
        return acc

    def _lookup(self, name: str, field: str) -> Optional[Accelerator]:
        base, count = name.strip(), None
        m = re.fullmatch(r"(.+?)\s*:\s*(\S*)", base)
        if m:
            base, count = m.group(1), m.group(2)
            if not count.isdigit() or int(count) < 1:
                raise ClusteroptError(field, f"{name!r}: the count after ':' must be a positive integer",
                                      "NAME or NAME:COUNT as SkyPilot writes it, e.g. H100:8")
        acc = self._by_key.get(_norm(base))
        if acc is None:
            bare = re.sub(r"^(?:(?:nvidia|amd|intel|tesla|geforce|instinct)\s+)+", "", base.strip(), flags=re.I)
            acc = self._by_key.get(_norm(bare)) if bare != base.strip() else None
        return acc

    def name_notes(self, name: str) -> list[str]:
        """What a GPU name resolved to when the spelling is ambiguous between tools (one line
        each): SkyPilot's ``A100`` is the 40 GB card; a ``:COUNT`` suffix names a count, not a GPU."""
        out = []
        text = str(name).strip()
        base = text.split(":", 1)[0]
        if _norm(base) == "a100":
            out.append(f"gpu {text!r}: A100 means the 40 GB card (A100-SXM4-40GB), as in SkyPilot; "
                       "write A100-80GB for the 80 GB one")
        if ":" in text:
            out.append(f"gpu {text!r}: the count after ':' is ignored here; the layout sets the GPU count")
        return out

    def _canonical_suggestion(self, text: str) -> str:
        """Rewrite suggested aliases as their catalog ids ('h100-sxm' -> 'H100-SXM5-80GB')."""
        def repl(m: re.Match) -> str:
            acc = self._by_key.get(_norm(m.group(1)))
            return repr(acc.id) if acc else m.group(0)
        out = re.sub(r"'([^']+)'", repl, text)
        # drop repeats that aliases of one id produce
        seen, parts = set(), []
        for p in re.findall(r"'[^']+'", out):
            if p not in seen:
                seen.add(p)
                parts.append(p)
        return f"did you mean {', '.join(parts)}?" if out.startswith("did you mean") else out

    def hardware(self, name: str) -> Hardware:
        """The accelerator as ``Hardware`` (bytes, bytes/s, FLOP/s), converted at load."""
        return self._hardware[self.resolve_gpu_id(name)]

    def offer_hardware(self, offer: "Offer") -> Hardware:
        """The accelerator as that offer runs it: a cluster offer's scale-out bandwidth per GPU
        is its fabric's (``fabric_gbit_per_s_per_gpu``), not the accelerator's reference node."""
        hw = self.hardware(offer.gpu)
        if offer.interconnect == "cluster":
            return hw.with_inter_node_bytes_per_s(offer.fabric_gbit_per_s_per_gpu * GIGABIT)
        return hw

    # --- offers -------------------------------------------------------------------------
    @property
    def providers(self) -> list[str]:
        return sorted({o.provider for o in self._offers}, key=str.lower)

    def resolve_offer(self, ref: str, field: str = "offer") -> Offer:
        """The offer named 'provider/instance_type' or 'provider/instance_type/region'
        (case-insensitive; the region is needed only where the instance is listed in several).
        Unknown or ambiguous names are a ClusteroptError naming ``field``, with the closest ids."""
        parts = [x.strip() for x in str(ref).split("/", 2)]
        ids = [offer_id(o) for o in self._offers]
        if len(parts) >= 2:
            hits = [o for o in self._offers if o.provider.lower() == parts[0].lower()
                    and o.instance_type.lower() == parts[1].lower()
                    and (len(parts) == 2 or o.region.lower() == parts[2].lower())]
            if len(hits) == 1:
                return hits[0]
            if len(hits) > 1:
                raise ClusteroptError(field, f"{ref!r} is offered in several regions",
                                      "name one: " + ", ".join(offer_id(o) for o in hits))
        raise ClusteroptError(field, f"unknown offer {ref!r}", did_you_mean(str(ref), ids))

    def offers(self, gpu: Optional[str] = None, provider: Optional[str] = None) -> list[Offer]:
        gpu_id = self.resolve_gpu_id(gpu) if gpu is not None else None
        if provider is not None and provider.lower() not in {p.lower() for p in self.providers}:
            raise ClusteroptError("provider", f"unknown provider {provider!r}", did_you_mean(provider, self.providers))
        return [o for o in self._offers
                if (gpu_id is None or o.gpu == gpu_id)
                and (provider is None or o.provider.lower() == provider.lower())]

    def cheapest_offer(self, gpu: str, mode: str = "on_demand", provider: Optional[str] = None) -> Optional[Offer]:
        """Least USD per GPU-hour for ``mode`` among the GPU's offers (optionally one provider).

        None when no offer publishes a price for that mode. Ties are broken by provider,
        instance type and region (case-insensitive), so the choice is deterministic.
        """
        _check_mode(mode)
        priced = [o for o in self.offers(gpu, provider) if o.usd_per_gpu_hour(mode) is not None]
        if not priced:
            return None
        return min(priced, key=lambda o: (o.usd_per_gpu_hour(mode), o.key))

    # --- listing ------------------------------------------------------------------------
    def to_records(self) -> dict[str, list[dict]]:
        """``{'accelerators': [...], 'offers': [...]}`` of plain dicts with unit-suffixed keys."""
        return {"accelerators": [a.to_record() for a in self._accelerators],
                "offers": [o.to_record() for o in self._offers]}

    def accelerator_record(self, name: str) -> dict:
        """One accelerator with its offers, for ``clusteropt catalog ID --json``."""
        acc = self.accelerator(name)
        rec = acc.to_record()
        rec["offers"] = [o.to_record() for o in self.offers(acc.id)]
        return rec


# --- loading ----------------------------------------------------------------------------
def data_dir() -> Path:
    """The packaged catalog folder: repo-root ``catalog/`` in a source checkout, else the
    installed ``optimizer._data.catalog`` package data (independent of the working directory)."""
    checkout = Path(__file__).resolve().parent.parent / "catalog"
    if (checkout / ACCELERATORS_FILE).is_file():
        return checkout
    try:
        installed = importlib.resources.files("optimizer._data.catalog")
    except ModuleNotFoundError as exc:  # pragma: no cover - broken install
        raise ClusteroptError("catalog", "packaged catalog data not found",
                              "reinstall clusteropt (package optimizer._data.catalog)") from exc
    # A namespace package yields a MultiplexedPath: resolve through one of its files.
    return Path(str(installed.joinpath(ACCELERATORS_FILE))).parent


def read_rows(path: Path, model: type[BaseModel]) -> list[tuple[int, BaseModel]]:
    """Validate every row of a CSV file; errors name ``file:row N.field`` (N = file line)."""
    name = path.name
    text = read_text(path, "catalog", "CSV catalog file")
    reader = csv.DictReader(text.splitlines())
    fields = list(model.model_fields)
    header = reader.fieldnames or []
    unknown = [c for c in header if c not in fields]
    if unknown:
        raise ClusteroptError(f"{name}:row 1.{unknown[0]}", f"unknown column {unknown[0]!r}",
                              did_you_mean(unknown[0], fields))
    out = []
    try:
        rows = [(reader.line_num, row) for row in reader]
    except csv.Error as exc:
        raise ClusteroptError(f"{name}:row {reader.line_num}", f"not valid CSV ({exc})",
                              "comma-separated cells, one row per line") from None
    for line, row in rows:
        if None in row:  # more cells than header columns
            raise ClusteroptError(f"{name}:row {line}", f"{len(header) + len(row[None])} cells for {len(header)} columns",
                                  "one cell per header column (quote cells that contain commas)")
        data = {k: v.strip() for k, v in row.items() if v is not None and v.strip() != ""}
        try:
            out.append((line, model(**data)))
        except ValidationError as exc:
            err = exc.errors()[0]
            if err.get("type") == "missing":
                col = ".".join(str(p) for p in err["loc"])
                raise ClusteroptError(f"{name}:row {line}.{col}", "missing value", "this column is required") from None
            raise from_pydantic(exc, prefix=f"{name}:row {line}") from None
    return out


def _merge(base: dict, rows: list[tuple[int, BaseModel]], key, file: str, what: str) -> None:
    seen: set = set()
    for line, item in rows:
        k = key(item)
        if k in seen:
            raise ClusteroptError(f"{file}:row {line}", f"duplicate {what} {k!r} in the same file", "one row per key")
        seen.add(k)
        base[k] = item  # a later file replaces an earlier row with the same key


def _build(files: Sequence[Path]) -> Catalog:
    accs: dict[str, Accelerator] = {}
    offers: dict[tuple, Offer] = {}
    offer_files: list[tuple[Path, list]] = []
    for path in files:
        header = next(csv.reader(read_text(path, "catalog", "CSV catalog file").splitlines()[:1]), [])
        if "instance_type" in header:
            offer_files.append((path, read_rows(path, Offer)))
        else:
            rows = read_rows(path, Accelerator)
            _merge(accs, rows, lambda a: _norm(a.id), path.name, "accelerator id")
    catalog_accs = Catalog(list(accs.values()), [])
    for path, rows in offer_files:
        checked = []
        for line, off in rows:
            gpu_id = catalog_accs.resolve_gpu_id(off.gpu, field=f"{path.name}:row {line}.gpu")
            checked.append((line, off.model_copy(update={"gpu": gpu_id})))
        _merge(offers, checked, lambda o: o.key, path.name, "offer (provider, instance_type, region)")
    return Catalog(list(accs.values()), list(offers.values()))


GPU_KERNELS_FILE = "gpu_kernels.csv"


class GpuKernelRow(BaseModel):
    """A row of catalog/gpu_kernels.csv: SMs and GEMM tile of an accelerator
    (``formulas.hardware.KernelProfile``), with its source."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(min_length=1)
    arch: Literal["volta", "turing", "ampere", "ada", "hopper", "blackwell", "cdna2", "cdna3", "other"]
    sm_count: int = Field(ge=1)
    tile_m: int = Field(ge=16)
    tile_n: int = Field(ge=16)
    source: str = Field(min_length=1)
    as_of: str = Field(min_length=4)
    notes: str = ""


@functools.lru_cache(maxsize=1)
def gpu_kernel_profiles() -> dict:
    """{normalised accelerator id: KernelProfile} from catalog/gpu_kernels.csv (validated)."""
    from optimizer.formulas.hardware import KernelProfile

    rows = read_rows(data_dir() / GPU_KERNELS_FILE, GpuKernelRow)
    return {_norm(r.id): KernelProfile(arch=r.arch, sm_count=r.sm_count, tile_m=r.tile_m, tile_n=r.tile_n)
            for _, r in rows}


@functools.lru_cache(maxsize=1)
def _default_catalog() -> Catalog:
    d = data_dir()
    return _build([d / ACCELERATORS_FILE, d / OFFERS_FILE])


def load_catalog(extra_files: Sequence[Path | str] = ()) -> Catalog:
    """The packaged catalog (cached), plus user CSV files that add or replace rows."""
    if not extra_files:
        return _default_catalog()
    d = data_dir()
    paths = [Path(p) for p in extra_files]
    for p in paths:
        if not p.exists():
            raise ClusteroptError("catalog", f"file not found: {str(p)!r}", "pass a CSV file of accelerators or offers")
    return _build([d / ACCELERATORS_FILE, d / OFFERS_FILE, *paths])


# --- system catalog (issue 10): hosts, storage tiers, switches, optics, TCO parameters, failure rates ----
#
# One CSV per kind in ``catalog/``, each row with ``source`` and ``as_of``, validated like the
# accelerators (errors name ``file:row N.field``). Units are in the column names.

HOSTS_FILE = "hosts.csv"
STORAGE_TIERS_FILE = "storage_tiers.csv"
SWITCHES_FILE = "switches.csv"
OPTICS_FILE = "optics.csv"
TCO_PARAMETERS_FILE = "tco_parameters.csv"
FAILURE_RATES_FILE = "failure_rates.csv"


class _Row(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    source: str = Field(min_length=1)
    as_of: str = Field(min_length=4)
    notes: str = ""


class HostType(_Row):
    """A GPU server (node): CPU cores, host RAM, PCIe and NICs, in datasheet units."""

    id: str = Field(min_length=1)
    gpu: str = Field(min_length=1)
    gpus_per_node: int = Field(ge=1)
    cpu: str = ""
    cpu_cores: int = Field(ge=1)                     # physical cores per node
    host_ram_gib: float = Field(gt=0)
    pcie_gen: int = Field(ge=1)
    pcie_gb_per_s_per_gpu: float = Field(gt=0)       # one direction, GB/s (Gen5 x16 = 64)
    compute_nics: int = Field(ge=1)
    compute_nic_gbit_per_s: float = Field(gt=0)
    storage_network_gbit_per_s: float = Field(gt=0)  # node's bandwidth to the storage tier
    local_nvme_tb: Optional[float] = Field(default=None, gt=0)
    local_nvme_read_gb_per_s: Optional[float] = Field(default=None, gt=0)
    local_nvme_write_gb_per_s: Optional[float] = Field(default=None, gt=0)
    max_power_kw: Optional[float] = Field(default=None, gt=0)
    server_usd_excl_gpus: Optional[float] = Field(default=None, ge=0)
    default_for_gpu: bool = False


class StorageTier(_Row):
    """A storage tier. Aggregate bandwidth is fixed (``aggregate_*``), scales with provisioned
    capacity (``*_mb_per_s_per_tib``), or is unlimited (both empty); local NVMe scales with nodes."""

    id: str = Field(min_length=1)
    kind: Literal["local_nvme", "parallel_fs", "object"]
    name: str = ""
    deployment: Literal["cloud", "on_premise", "any"]
    durable: bool
    per_client_read_gb_per_s: Optional[float] = Field(default=None, gt=0)
    per_client_write_gb_per_s: Optional[float] = Field(default=None, gt=0)
    aggregate_read_gb_per_s: Optional[float] = Field(default=None, gt=0)
    aggregate_write_gb_per_s: Optional[float] = Field(default=None, gt=0)
    read_mb_per_s_per_tib: Optional[float] = Field(default=None, gt=0)
    write_mb_per_s_per_tib: Optional[float] = Field(default=None, gt=0)
    usd_per_tb_month: Optional[float] = Field(default=None, ge=0)
    capex_usd_per_tb: Optional[float] = Field(default=None, ge=0)
    egress_usd_per_gb: Optional[float] = Field(default=None, ge=0)


class Switch(_Row):
    id: str = Field(min_length=1)
    vendor: str = Field(min_length=1)
    model: str = Field(min_length=1)
    fabric: Literal["infiniband", "ethernet"]
    ports: int = Field(ge=2)
    port_gbit_per_s: float = Field(gt=0)
    price_usd: float = Field(ge=0)
    power_w: float = Field(ge=0)


class Optic(_Row):
    id: str = Field(min_length=1)
    kind: Literal["transceiver", "cable"]
    gbit_per_s: float = Field(gt=0)
    ports: int = Field(ge=1)                          # switch/NIC ports one module serves
    reach_m: float = Field(gt=0)
    price_usd: float = Field(ge=0)
    power_w: float = Field(ge=0)


class TcoParameter(_Row):
    name: str = Field(min_length=1)
    value: float
    unit: str = Field(min_length=1)


class FailureRateRow(_Row):
    """One published run or cluster study (catalog/failure_rates.csv; see its notes)."""

    id: str = Field(min_length=1)
    run: str = Field(min_length=1)
    gpu_type: str = ""
    n_gpus: Optional[int] = Field(default=None, ge=1)
    gpus_per_node: int = Field(ge=1)
    window_hours: Optional[float] = Field(default=None, gt=0)
    interruptions: Optional[float] = Field(default=None, gt=0)
    counted: str = ""
    interruptions_per_gpu_hour: float = Field(gt=0)
    interruptions_per_node_hour: float = Field(ge=0)
    gpu_share: float = Field(ge=0, le=1)
    gpu_share_source: str = ""
    gpu_failures_per_gpu_hour: float = Field(ge=0)
    node_failures_per_node_hour: float = Field(ge=0)
    evidence: Literal["primary", "derived", "secondary", "calibrated"]
    use: Literal["held_out", "calibration", "reference", "default"]
    note: str = ""


class SystemCatalog:
    """Hosts, storage tiers, switches, optics, TCO parameters and failure rates, by id."""

    def __init__(self, hosts, tiers, switches, optics, tco, failures):
        self.hosts: dict[str, HostType] = {h.id: h for h in hosts}
        self.storage_tiers: dict[str, StorageTier] = {t.id: t for t in tiers}
        self.switches: dict[str, Switch] = {s.id: s for s in switches}
        self.optics: dict[str, Optic] = {o.id: o for o in optics}
        self.tco: dict[str, TcoParameter] = {p.name: p for p in tco}
        self.failure_rates: dict[str, FailureRateRow] = {f.id: f for f in failures}

    def _get(self, table: dict, kind: str, name: str, field: str):
        if name in table:
            return table[name]
        raise ClusteroptError(field, f"unknown {kind} {name!r}", did_you_mean(name, list(table)))

    def host(self, name: str, field: str = "system.host") -> HostType:
        return self._get(self.hosts, "host type", name, field)

    def default_host(self, gpu_id: str) -> Optional[HostType]:
        """The node type marked ``default_for_gpu`` for this accelerator id (None if none)."""
        for h in self.hosts.values():
            if h.gpu == gpu_id and h.default_for_gpu:
                return h
        return None

    def storage_tier(self, name: str, field: str = "system.storage_tier") -> StorageTier:
        return self._get(self.storage_tiers, "storage tier", name, field)

    def switch(self, name: str, field: str = "system.switch") -> Switch:
        return self._get(self.switches, "switch", name, field)

    def optic(self, name: str, field: str = "system.optic") -> Optic:
        return self._get(self.optics, "optic", name, field)

    def tco_value(self, name: str) -> float:
        return float(self._get(self.tco, "TCO parameter", name, f"tco_parameters.{name}").value)

    def default_failure_rate(self) -> FailureRateRow:
        """The calibrated default row (use = 'default'), fitted without the held-out run."""
        rows = [f for f in self.failure_rates.values() if f.use == "default"]
        if len(rows) != 1:
            raise ClusteroptError(FAILURE_RATES_FILE, f"{len(rows)} rows with use=default", "exactly one")
        return rows[0]


@functools.lru_cache(maxsize=1)
def load_system_catalog() -> SystemCatalog:
    """The packaged system catalog (cached)."""
    d = data_dir()

    def rows(name, model):
        return [item for _, item in read_rows(d / name, model)]

    return SystemCatalog(rows(HOSTS_FILE, HostType), rows(STORAGE_TIERS_FILE, StorageTier),
                         rows(SWITCHES_FILE, Switch), rows(OPTICS_FILE, Optic),
                         rows(TCO_PARAMETERS_FILE, TcoParameter), rows(FAILURE_RATES_FILE, FailureRateRow))


# --- compression options (issue 9) ------------------------------------------------------
COMPRESSION_FILE = "compression.csv"
CompressionOptionName = Literal["weights_fp8", "weights_int8_w8a8", "weights_int4_awq", "weights_int4_gptq",
                                "kv_fp8", "kv_int8", "sparse_2_4", "sparse_2_4_oneshot", "prune_distill",
                                "distill"]


class CompressionRow(BaseModel):
    """One published quality measurement of a compression option (``catalog/compression.csv``).

    ``baseline_value`` and ``compressed_value`` are in the unit of ``metric`` (perplexity,
    accuracy, or a recovery percentage against a baseline of 100); ``higher_is_better`` says
    which way is a loss. ``one_off`` names the unit of ``one_off_value``:
    ``calibration_gpu_hours_per_b_params`` (post-training quantisation), ``recovery_tokens_per_param``
    (training tokens per teacher parameter for distillation or sparse recovery), or ``none``.
    ``student_params_b`` is the compressed model's size for pruning/distillation rows.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    option: CompressionOptionName
    method: str = Field(min_length=1)
    model_family: str = Field(min_length=1)
    model: str = Field(min_length=1)
    model_params_b: float = Field(gt=0)
    weights: Literal["bf16", "fp16", "fp8", "int8", "int4"]
    kv: Literal["bf16", "fp16", "fp8", "int8"]
    sparse_2_4: bool
    group_size: Optional[int] = Field(default=None, gt=0)
    student_params_b: Optional[float] = Field(default=None, gt=0)
    metric: str = Field(min_length=1)
    higher_is_better: bool
    baseline_value: float = Field(gt=0)
    compressed_value: float = Field(gt=0)
    one_off: Literal["none", "calibration_gpu_hours_per_b_params", "recovery_tokens_per_param"]
    one_off_value: float = Field(ge=0)
    source: str = Field(min_length=1)
    as_of: str = Field(min_length=4)
    notes: str = ""


@functools.lru_cache(maxsize=4)
def _load_compression_cached(path: str) -> tuple[CompressionRow, ...]:
    return tuple(row for _, row in read_rows(Path(path), CompressionRow))


def load_compression(path: Path | str | None = None) -> list[CompressionRow]:
    """The compression quality table (``catalog/compression.csv`` unless ``path`` is given),
    validated row by row; errors name ``compression.csv:row N.field``."""
    p = Path(path) if path is not None else data_dir() / COMPRESSION_FILE
    if not p.is_file():
        raise ClusteroptError("catalog", f"file not found: {str(p)!r}", "a compression CSV with the columns of CompressionRow")
    return list(_load_compression_cached(str(p.resolve())))


# --- step-time prediction intervals (issue 15) --------------------------------------------
STEP_TIME_INTERVALS_FILE = "step_time_intervals.csv"


@functools.lru_cache(maxsize=8)
def load_step_time_intervals(path: str | None = None) -> dict:
    """catalog/step_time_intervals.csv (or ``path``) as {regime: Interval}, validated by
    ``formulas.intervals.parse_intervals``; found through ``data_dir()`` like every catalog
    file, so an installed package reads its packaged copy."""
    p = Path(path) if path else data_dir() / STEP_TIME_INTERVALS_FILE
    return parse_intervals(read_text(p, p.name, "a step-time intervals CSV"), p.name)
