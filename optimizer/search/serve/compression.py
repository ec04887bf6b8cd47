"""Compression as a serving-planner choice (issue 9): the models and formats a replica may serve,
each with its quality loss and the one-off work it needs, priced.

compression_plan(spec, scenario, gpus) -> CompressionPlan   models, variants, one-off items

A *variant* is what one replica serves: a model (the scenario's, or a smaller member of its family
made by pruning + distillation, ``prune_distill`` / ``distill``) in a weight format, a KV format and
dense or 2:4-sparse linear layers. Its quality loss is the sum over its options of the published
relative degradation for the model family (formulas/compression.option_quality, nearest model
size; additive: an assumption, no published joint figures). A replica option whose variant loses
more than ``serve.quality.max_loss_pct`` breaks the rule 'quality' (serve/table.py).

One-off work is counted per *item*: an option applied to one model (GPTQ calibration of the 70B,
2:4 recovery training of the 70B, distillation of a 35B student). A fleet pays each item it uses
once, however many replica options share it (the fleet model's fixed charges, serve/fleet.py).
Items are priced by ``compression.one_off_cost_usd``: calibration GPU-hours at $/GPU-hour, and
recovery / distillation FLOPs (tokens x (6 N_student + 2 N_teacher)) at the achieved training
FLOP/s per GPU that the training estimator (formulas/training.estimate_training) gives for the
trained model on one node of that GPU (TP over the node's scale-up domain, ZeRO-1, selective
recompute, 4,096-token sequences, bf16). Each item is priced on the scenario's eligible GPU type
where it is cheapest. Amortised over ``serve.horizon_days`` (default 365) it adds
``usd / (24 x horizon_days)`` to the fleet's $/hour.

Without ``search.compression`` the plan is the issue-6 space: the scenario's model in every
(weights, KV) pair of ``search.weights`` x ``search.kv`` (defaults bf16/fp8), label 'none' (no
compression option, so no one-off work). Each lossy format still carries the published quality
loss of its DEFAULT option, looked up exactly as the compression options are (option_quality:
the model family's row of the nearest size), so ``quality_loss_pct`` is reported for every fleet
and ``serve.quality.max_loss_pct`` applies with or without ``search.compression``:

- weights fp8 -> ``weights_fp8``; int8 -> ``weights_int8_w8a8``;
- weights int4 -> the most conservative int4 method: of ``weights_int4_gptq`` and
  ``weights_int4_awq``, the larger loss among those with a figure for the model's family (only
  when neither has one, the larger of their nearest-sized rows of other families). A user who
  serves a particular method's checkpoint names it in ``search.compression`` instead;
- KV fp8 -> ``kv_fp8``; KV int8 -> ``kv_int8``, and while catalog/compression.csv has no
  ``kv_int8`` row, ``kv_fp8``'s figure (KV_INT8_PROXY; also 8 bits per value with per-tensor
  scales; the catalog's kv_fp8 figure is the worst end of the published 94-99% recovery range);
- bf16 loses nothing. The losses of the weight and KV formats add, as compression_choices adds them.

The formats of search.weights / search.kv are taken as ready-made checkpoints (the quality
figures are measured on published quantised checkpoints), so they carry no calibration cost;
listing the option in ``search.compression`` prices it.
"""

from __future__ import annotations


from dataclasses import dataclass, field
from functools import lru_cache

from optimizer.catalog import load_compression
from optimizer.errors import ClusteroptError
from optimizer.formulas import compression as cx
from optimizer.formulas.layout import TrainLayout
from optimizer.formulas.params import count_params
from optimizer.formulas.training import estimate_training
from optimizer.formulas.sizing import generate
from optimizer.model.families import get_family
from optimizer.model.spec import ModelSpec

DEFAULT_WEIGHTS = ("bf16", "fp8")
DEFAULT_KV = ("bf16", "fp8")

#: The option whose published figure a format of search.weights / search.kv carries without
#: search.compression (module docstring). Several options: the most conservative of them.
FORMAT_OPTIONS = {"weights": {"fp8": ("weights_fp8",), "int8": ("weights_int8_w8a8",),
                              "int4": ("weights_int4_gptq", "weights_int4_awq")},
                  "kv": {"fp8": ("kv_fp8",), "int8": ("kv_int8",)}}
#: The option whose figure KV int8 carries while the catalog has no kv_int8 row (module docstring).
KV_INT8_PROXY = "kv_fp8"
#: Options that make a smaller model rather than change the formats of the same one.
STUDENT_OPTIONS = ("prune_distill", "distill")
#: Layout the training estimator prices recovery / distillation FLOPs at (module docstring).
RECOVERY_SEQ_LEN = 4096
RECOVERY_GLOBAL_BATCH = 256
HOURS_PER_DAY = 24.0


@dataclass(frozen=True)
class OneOff:
    """One piece of one-off work (an option applied to one model), priced. Units in the names."""

    label: str
    calibration_gpu_hours: float
    recovery_tokens: float
    recovery_flop: float
    usd: float
    priced_on: str                    # GPU type it is cheapest on ('' when free)


@dataclass(frozen=True)
class Variant:
    """What one replica serves: model (index into the plan's models), formats, quality, one-off items."""

    label: str
    model: int
    weights: str
    kv: str
    sparse_2_4: bool
    quality_loss_pct: float
    items: tuple[int, ...] = ()
    sources: tuple[str, ...] = ()


@dataclass
class CompressionPlan:
    models: list                      # ModelSpec; models[0] is the scenario's model
    variants: list[Variant]
    one_offs: list[OneOff]
    horizon_hours: float
    quality_limit_pct: float | None
    compression: bool                 # search.compression was given
    notes: list[str] = field(default_factory=list)
    #: without search.compression: (slot, format) -> the QualityEstimate a lossy format carries
    format_quality: dict = field(default_factory=dict)

    def find(self, label: str, model: str, weights: str, kv: str) -> Variant | None:
        for v in self.variants:
            if v.label == label and self.models[v.model].name == model and v.weights == weights and v.kv == kv:
                return v
        return None

    def format_variant(self, weights: str, kv: str) -> Variant:
        """The plain variant (label 'none', the scenario's model) of a (weights, KV) pair, with the
        quality loss its formats carry (module docstring); for pairs outside the search lists too."""
        v = self.find("none", self.models[0].name, weights, kv)
        if v is not None:
            return v

        spec = self.models[0]
        return _format_variant(load_compression(), cx.quality_family(spec), float(_n_params(spec)), weights, kv,
                               dict(self.format_quality))

    def one_off_usd(self, items) -> float:
        return float(sum(self.one_offs[i].usd for i in set(items)))


def _entries(search) -> list[tuple[str, float | None]]:
    out = []
    for e in search.compression or ():
        out.append((e, None) if isinstance(e, str) else (e.option, e.params))
    return out


@lru_cache(maxsize=256)
def _achieved_train_flop_per_s(spec_json: str, hw) -> float | None:
    """Model FLOP/s per GPU the training estimator gives for one node of ``hw`` (module docstring)."""

    spec = ModelSpec.model_validate_json(spec_json)
    domain = max(1, min(hw.intra_node_domain, hw.gpus_per_node))
    tp = 1
    while tp * 2 <= domain and spec.num_heads % (tp * 2) == 0:
        tp *= 2
    layout = TrainLayout(seq_len=RECOVERY_SEQ_LEN, global_batch=RECOVERY_GLOBAL_BATCH, tp=tp, pp=1, dp=1, zero=1,
                         micro_batch=1, recompute="selective", sequence_parallel=tp > 1, precision="bf16")
    try:
        est = estimate_training(spec, hw, layout)
    except (ClusteroptError, ValueError, ZeroDivisionError):
        return None
    rate = est.model_tflops_per_gpu * 1e12
    return rate if rate > 0 else None


def _price(label: str, hours: float, tokens: float, flop: float, trained_spec, gpus) -> OneOff:
    """The item's cost on the eligible GPU type where it is cheapest (module docstring)."""
    if hours <= 0 and flop <= 0:
        return OneOff(label, 0.0, 0.0, 0.0, 0.0, "")
    if not gpus:                               # no eligible GPU: no replica option either
        return OneOff(label, hours, tokens, flop, 0.0, "")
    choice = cx.CompressionChoice(options=(), weights="bf16", kv="bf16", sparse_2_4=False, quality_loss_pct=0.0,
                                  calibration_gpu_hours=hours, recovery_tokens=tokens, recovery_flop=flop,
                                  sources=())
    best = None
    for g in gpus:
        if flop > 0:
            rate = _achieved_train_flop_per_s(trained_spec.model_dump_json(), g.hardware)
            if rate is None:
                continue
        else:
            rate = 1.0                         # unused: no FLOPs to price
        usd = cx.one_off_cost_usd(choice, g.usd_per_gpu_hour, rate)
        if best is None or usd < best[0]:
            best = (usd, g.name)
    if best is None:
        raise ClusteroptError("search.compression", f"no eligible GPU can price the one-off work of {label}",
                              "a GPU type with a price and a training estimate")
    return OneOff(label, hours, tokens, flop, float(best[0]), best[1])


def _option_work(rows, option: str, family: str, n_params: float) -> tuple[float, float]:
    """(calibration GPU-hours, recovery tokens) of one option on a model of ``n_params``, from the
    catalog row the quality figure comes from (as compression.compression_choices takes it)."""
    q = cx.option_quality(rows, option, family, n_params)
    row = next(r for r in rows if r.option == option and r.model == q.model)
    if row.one_off == "calibration_gpu_hours_per_b_params":
        return cx.calibration_gpu_hours(row.one_off_value, n_params), 0.0
    if row.one_off == "recovery_tokens_per_param":
        return 0.0, cx.recovery_tokens(row.one_off_value, n_params)
    return 0.0, 0.0


def _n_params(spec) -> int:
    return count_params(spec).total


def format_quality(rows, slot: str, fmt: str, family: str, n_params: float) -> cx.QualityEstimate | None:
    """The published quality loss a ``slot`` ('weights' or 'kv') format carries without
    search.compression (module docstring): its default option's figure for the family and size,
    the largest over several methods (int4), kv_fp8's while the catalog has no kv_int8 row.
    None for bf16 (no loss)."""
    if fmt == "bf16":
        return None
    try:
        options = FORMAT_OPTIONS[slot][fmt]
    except KeyError:
        raise ClusteroptError(f"search.{slot}", f"no quality figure is mapped for {fmt!r}",
                              "allowed: bf16, " + ", ".join(FORMAT_OPTIONS.get(slot, {}))) from None
    present = {r.option for r in rows}
    have = [o for o in options if o in present]
    if not have and slot == "kv" and fmt == "int8" and KV_INT8_PROXY in present:
        have = [KV_INT8_PROXY]
    if not have:
        raise ClusteroptError(f"search.{slot}", f"catalog/compression.csv has no quality figure for {fmt} "
                              f"({', '.join(options)})", "a row for the option, or drop the format")
    ests = [cx.option_quality(rows, o, family, n_params) for o in have]
    pool = [q for q in ests if q.exact_family] or ests
    return max(pool, key=lambda q: (q.quality_loss_pct, q.option))


def _format_variant(rows, family: str, n_params: float, weights: str, kv: str, cache: dict) -> Variant:
    """A plain (label 'none') variant of the scenario's model with its formats' quality loss."""
    qs = []
    for slot, f in (("weights", weights), ("kv", kv)):
        if (slot, f) not in cache:
            cache[(slot, f)] = format_quality(rows, slot, f, family, n_params)
        if cache[(slot, f)] is not None:
            qs.append(cache[(slot, f)])
    return Variant("none", 0, weights, kv, False, float(sum(q.quality_loss_pct for q in qs)), (),
                   tuple(q.source for q in qs))


def _format_notes(fq: dict, family: str) -> list[str]:
    """One line per lossy format: the option and published row its quality loss comes from."""
    out = []
    for (slot, f), q in fq.items():
        if q is None:
            continue
        proxy = " (no kv_int8 row: kv_fp8's figure)" if slot == "kv" and f == "int8" and q.option != "kv_int8" else ""
        fam = "" if q.exact_family else f"; no {family} figure, nearest-sized row of another family"
        out.append(f"{slot} {f} carries {q.option}'s published quality loss, {q.quality_loss_pct:.2f}% "
                   f"({q.model}, {q.metric}{fam}){proxy}")
    return out


def compression_plan(spec, scenario, gpus, rows=None) -> CompressionPlan:
    """Models, variants and priced one-off items of a serving scenario (module docstring)."""

    serve, search = scenario.serve, scenario.search
    limit = serve.quality.max_loss_pct if serve.quality is not None else None
    hours = serve.horizon_days * HOURS_PER_DAY
    entries = _entries(search)

    rows = rows if rows is not None else load_compression()
    if not entries:
        family, fq = cx.quality_family(spec), {}
        n = float(_n_params(spec))
        variants = [_format_variant(rows, family, n, w, k, fq) for w in (search.weights or DEFAULT_WEIGHTS)
                    for k in (search.kv or DEFAULT_KV)]
        notes = _format_notes(fq, family) if limit is not None else []
        return CompressionPlan([spec], variants, [], hours, limit, False, notes, format_quality=fq)

    family = cx.quality_family(spec)
    n_teacher = float(count_params(spec).total)
    formats = [o for o, _ in entries if o not in STUDENT_OPTIONS]
    students = [(i, o, p) for i, (o, p) in enumerate(entries) if o in STUDENT_OPTIONS]
    for o in formats:
        if o not in cx.OPTION_FORMATS:
            raise ClusteroptError("search.compression", f"{o!r} has no serving format", "allowed: "
                                  + ", ".join(list(cx.OPTION_FORMATS) + list(STUDENT_OPTIONS)))
    models, variants, one_offs = [spec], [], []
    item_of: dict[tuple[str, str], int] = {}
    notes: list[str] = []

    def item(model_spec, option, n, teacher_n) -> int:
        key = (model_spec.name, option)
        if key not in item_of:
            h, tokens = _option_work(rows, option, family, n)
            flop = cx.distillation_flop(tokens, n, teacher_n) if tokens else 0.0
            item_of[key] = len(one_offs)
            one_offs.append(_price(f"{option} on {model_spec.name}", h, tokens, flop, model_spec, gpus))
        return item_of[key]

    def add_model(m: int, model_spec, n: float, base_label: str, base_loss: float, base_items, base_src):
        for ch in cx.compression_choices(rows, formats, family, n):
            if search.weights is not None and ch.weights not in search.weights:
                continue
            if search.kv is not None and ch.kv not in search.kv:
                continue
            label = "+".join(([base_label] if base_label else []) + list(ch.options)) or "none"
            items = tuple(base_items) + tuple(item(model_spec, o, n, n) for o in ch.options)
            variants.append(Variant(label, m, ch.weights, ch.kv, ch.sparse_2_4, base_loss + ch.quality_loss_pct,
                                    items, tuple(base_src) + ch.sources))

    add_model(0, spec, n_teacher, "", 0.0, (), ())
    for i, option, params in students:
        try:
            fam = get_family(family, field=f"search.compression[{i}]")
        except ClusteroptError as e:
            raise ClusteroptError(f"search.compression[{i}]", f"{option} needs a model family to generate the "
                                  f"smaller member; {spec.name} is {family!r}", e.allowed) from None
        q = cx.option_quality(rows, option, family, n_teacher)
        if params is None:
            row = next(r for r in rows if r.option == option and r.model == q.model)
            params = n_teacher * (row.student_params_b or row.model_params_b) / row.model_params_b
        if params >= n_teacher:
            raise ClusteroptError(f"search.compression[{i}].params", f"{params:g} is not smaller than the model "
                                  f"({n_teacher:g} parameters)", "a smaller member of the family")
        student = generate(fam, params)
        n_student = float(count_params(student).total)
        row = next(r for r in rows if r.option == option and r.model == q.model)
        tokens = cx.recovery_tokens(row.one_off_value, n_teacher) if row.one_off == "recovery_tokens_per_param" else 0.0
        key = (student.name, option)
        item_of[key] = len(one_offs)
        one_offs.append(_price(f"{option} {spec.name} -> {student.name}", 0.0, tokens,
                               cx.distillation_flop(tokens, n_student, n_teacher), student, gpus))
        models.append(student)
        add_model(len(models) - 1, student, n_student, f"{option}:{student.name}", q.quality_loss_pct,
                  (item_of[key],), (q.source,))
        if not q.exact_family:
            notes.append(f"{option}: no published figure for {family}; the nearest-sized row ({q.model}) is used")
    for o in formats:
        q = cx.option_quality(rows, o, family, n_teacher)
        if not q.exact_family:
            notes.append(f"{o}: no published quality figure for {family}; {q.model}'s ({q.metric}) is used")
    if not variants:
        raise ClusteroptError("search.compression", "no variant is left once search.weights / search.kv are applied",
                              "formats the options produce (none = bf16 weights, bf16 KV)")
    return CompressionPlan(models, variants, one_offs, hours, limit, True, notes)


def amortised_usd_per_hour(usd: float, horizon_hours: float) -> float:
    """A one-off cost spread evenly over the serving horizon. Units: USD/hour."""
    return usd / horizon_hours
