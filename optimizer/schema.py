"""The versioned JSON output formats, as pydantic models; ``clusteropt schema`` prints their JSON Schema.

Planners read clusteropt's JSON without parsing tables. Each document carries
``schema_version`` (major.minor: a minor bump only adds keys; a major bump may rename or
remove them) and ``kind``. Units follow CONTRACTS.md: bytes, seconds, USD, FLOP/s; ``_pct``
keys are percentages (0-100); ``mfu``, ``goodput``, ``memory_headroom``, ``utilization`` are
fractions. Models allow extra keys where later issues add figures (``system``, co-design and
serving columns), so a reader written for 1.0 keeps working.

The report layer builds plain dicts; tests validate every emitted document against these
models, so the schema and the output cannot drift apart.
"""

from __future__ import annotations

from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field

from optimizer.errors import ClusteroptError
from optimizer.scenario import Scenario

SCHEMA_VERSION = "1.3"
"""1.1 adds 'launch' (clusteropt export) and descriptions; 1.2 the 80% intervals; 1.3 the applied
calibration profile ('calibration') and the 'calibration' document (clusteropt calibrate --json)."""

Status = Literal["optimal", "feasible", "infeasible"]


def _d(text: str, **kw):
    """A required field with a description."""
    return Field(description=text, **kw)


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class Configuration(_Open):
    """The 12 keys that identify a training configuration (CONTRACTS.md 'Search')."""

    gpu: str = _d("accelerator id (catalog/accelerators.csv)")
    n_gpus: int = _d("GPUs of the job: tp x pp x dp x cp", ge=1)
    tp: int = _d("tensor-parallel size", ge=1)
    pp: int = _d("pipeline-parallel size (stages)", ge=1)
    dp: int = _d("data-parallel size", ge=1)
    cp: int = _d("context-parallel size", ge=1)
    ep: int = _d("expert-parallel size (MoE; 1 for dense models)", ge=1)
    zero: int = _d("ZeRO stage: 0 none, 1 optimizer state, 2 + gradients, 3 + parameters sharded over DP",
                   ge=0, le=3)
    precision: str = _d("matmul precision: bf16 or fp8")
    micro_batch: int = _d("sequences per GPU per forward/backward pass", ge=1)
    recompute: Literal["none", "selective", "full"] = _d(
        "activation recomputation: none, selective (attention scores) or full (every layer's input kept only)")
    sequence_parallel: bool = _d("whether TP also splits norms/dropout activations along the sequence")


class TrainingRow(Configuration):
    """One ranked training configuration with its figures."""

    rank: Optional[int] = Field(default=None, ge=1, description="1 = best; absent on Pareto rows")
    objective: float = Field(description="the value of the scenario's objective column")
    n_nodes: int = _d("nodes the job occupies")
    grad_accum: int = _d("micro-batches accumulated per optimizer step")
    global_batch: int = Field(description="sequences per optimizer step")
    memory_per_gpu_bytes: float = _d("peak memory per GPU, bytes")
    memory_capacity_bytes: int = _d("device memory per GPU, bytes")
    memory_headroom: float = Field(description="fraction of device memory left unused")
    mfu: float = _d("model FLOPs utilisation, fraction in [0, 1]")
    hfu: float = _d("hardware FLOPs utilisation (recomputation counted), fraction in [0, 1]")
    step_time_s: float = _d("time of one optimizer step, seconds")
    tokens_per_s: float = Field(description="whole job")
    train_days: float = Field(description="failure-free compute time")
    wall_clock_days: float = Field(description="including failures, checkpoints and restarts where modelled")
    gpu_hours: float = _d("GPU-hours billed (wall-clock hours x GPUs)")
    usd_per_gpu_hour: float = _d("price per GPU-hour of the offer, USD")
    cost_usd: float = _d("cost of the run on wall-clock hours, USD")
    cost_per_mtoken_usd: float = _d("cost per million training tokens, USD")
    offer: str = _d("the offer it is priced on: 'provider instance_type', 'owned' or 'explicit'")
    tokens_per_s_p10: Optional[float] = Field(
        default=None, description="80% interval of tokens_per_s, low end: the model's figure x exp(log_ratio_p10) of "
                                  "the layout's regime (catalog/step_time_intervals.csv) or of the calibration profile")
    tokens_per_s_p90: Optional[float] = Field(default=None, description="80% interval of tokens_per_s, high end")
    train_days_p10: Optional[float] = Field(default=None, description="80% interval of train_days (fast end)")
    train_days_p90: Optional[float] = Field(default=None, description="80% interval of train_days (slow end: "
                                                                      "as slow as tokens_per_s_p10)")
    wall_clock_days_p10: Optional[float] = Field(default=None, description="80% interval of wall_clock_days")
    wall_clock_days_p90: Optional[float] = Field(default=None, description="80% interval of wall_clock_days; what "
                                                                           "constraints.confidence 0.9 holds to the deadline")
    cost_usd_p10: Optional[float] = Field(default=None, description="80% interval of cost_usd (billed on wall-clock hours)")
    cost_usd_p90: Optional[float] = Field(default=None, description="80% interval of cost_usd, high end")
    interval_regime: Optional[str] = Field(
        default=None, description="cp | moe | zero3_fsdp | fp8 | 3d_gt100b | small_lt10b | other: whose residuals "
                                  "give the interval; 'calibrated' with a calibration profile")
    framework: Optional[str] = Field(default=None, description="megatron | fsdp2 | deepspeed: the framework whose "
                                                               "schedule and allocations the figures assume")


class ReplicaGroup(_Open):
    """Replicas of one serving option inside a fleet."""

    gpu: str = _d("accelerator id")
    tp: int = _d("tensor-parallel size of one replica")
    pp: int = Field(default=1, description="pipeline-parallel size of one replica")
    weights: str = _d("weight format: bf16, fp8, int8 or int4")
    kv: str = _d("KV-cache format: bf16, fp8 or int8")
    batch: int = _d("batch cap: sequences in flight per replica")
    count: int = Field(ge=1, description="replicas of this option")


class FleetRow(_Open):
    """One ranked serving fleet (issue 6)."""

    rank: Optional[int] = Field(default=None, ge=1, description="1 = best; absent on Pareto rows")
    objective: float = _d("the value of the scenario's objective column")
    usd_per_hour: float = _d("fleet cost per hour, USD (instances billed whole)")
    n_gpus: int = _d("GPUs of the fleet")
    replicas: list[ReplicaGroup] = _d("the replica groups of the fleet")


class Explanation(_Open):
    """Why the answer is what it is, for people (lines) and tools (the other keys)."""

    reason: Optional[str] = Field(default=None, description="'feasible', or the conflicting limits when infeasible")
    lines: list[str] = Field(default_factory=list, description="one-line sentences for people")
    binding: Optional[list[Union[str, dict[str, Any]]]] = Field(
        default=None, description="limit families that bind (co-design: objects with the limit and its use)")
    slack: Optional[dict[str, Any]] = Field(
        default=None, description="what is left of each limit at the optimum, in the limit's unit (key suffix)")
    conflicts: Optional[list[list[str]]] = Field(
        default=None, description="minimal sets of limits that cannot all be met, every other limit dropped")
    relaxations: Optional[dict[str, Any]] = Field(
        default=None, description="the least change of each limit that makes the scenario feasible, all else kept")
    notes: list[str] = Field(default_factory=list, description="further remarks for people")


class TornadoEnd(_Open):
    """One end (-X% or +X%) of a tornado bar."""

    factor: float = _d("the input's multiplier at this end (1 - X/100 or 1 + X/100)")
    objective: Optional[float] = Field(default=None, description="training: the base configuration's own objective "
                                                                 "at this end (what keeping it would give)")
    best: Optional[Union[dict[str, Any], list[dict[str, Any]]]] = Field(
        description="the re-optimised best: a 12-key configuration, a serving fleet (replica groups), or null")
    best_objective: Optional[float] = _d("the re-optimised best's objective at this end; null when infeasible")
    changes: bool = _d("whether the re-optimised best differs from the base configuration")
    kept_feasible: Optional[bool] = Field(default=None, description="training: whether the base configuration still "
                                                                    "meets every limit at this end (deadline, "
                                                                    "budget); when not, the best may cost more")


class TornadoEntry(_Open):
    """One input of the tornado."""

    input: str = _d("dotted scenario path or named input (price.<GPU>, efficiency, inter_node_bandwidth)")
    low: Optional[float] = Field(description="the re-optimised best objective at -X% (training: re-solved; serving: "
                                             "the re-planned fleet); null when nothing is feasible there")
    high: Optional[float] = _d("objective at +X%, as for low")
    swing: Optional[float] = Field(description="|high - low|; null when an end is infeasible")
    base: float = _d("the objective at the base scenario")
    reoptimised: dict[Literal["down", "up"], TornadoEnd] = _d("each end re-solved: the best there and its objective")
    note: Optional[str] = Field(default=None, description="why the input cannot move the answer (then no bar)")


class Threshold(_Open):
    """The smallest change of one input, in one direction, at which the best answer switches."""

    input: str = Field(description="dotted scenario path or named input (price.<GPU>, efficiency, inter_node_bandwidth)")
    direction: Literal["up", "down"] = _d("which way the input moves")
    change_pct: Optional[float] = Field(description="signed; null when nothing switches within range_pct")
    range_pct: float = _d("how far the search for a switch went, per cent")
    new_best: Optional[Union[dict[str, Any], list[dict[str, Any]]]] = Field(
        description="the 12-key configuration (serving: the fleet) that becomes best, or null")
    unchanged_pct: Optional[float] = Field(default=None, description="a change at which the best is still unchanged, within tolerance_pct of change_pct")
    tolerance_pct: float = _d("width of the bracket around the switch, percentage points")
    grid_step_pct: float = _d("step of the grid that found the bracket, percentage points (a switch and "
                              "switch-back inside one step would be missed)")
    note: Optional[str] = Field(default=None, description="why the input is not analysed (e.g. no budget set)")


class Sensitivity(_Open):
    """``solve --sensitivity``: tornado, switching thresholds and slack."""

    objective: str = _d("the objective analysed")
    swing_pct: float = _d("the tornado's move of each input, per cent")
    range_pct: float = _d("how far the thresholds search, per cent")
    tornado: list[TornadoEntry] = _d("one entry per input, largest swing first")
    thresholds: list[Threshold] = _d("per input and direction, the smallest change that switches the best")
    slack: dict[str, Any] = _d("slack and binding limits at the optimum (as explanation)")


class CalibrationProfile(_Open):
    """A calibration profile of ``clusteropt calibrate`` (the YAML it writes, optimizer/calibration.py):
    factors on the shipped model fitted to the user's measured runs."""

    kind: str = Field(default="clusteropt-calibration", description="always 'clusteropt-calibration'")
    version: int = _d("profile format version (1)")
    source: str = Field(default="", description="the runs CSV the profile was fitted on")
    n_runs: int = _d("runs with measured throughput it was fitted on", ge=1)
    compute_scale: float = _d("factor on the modelled compute throughput (1 = as shipped)")
    compute_scale_sd_log: float = _d("uncertainty of compute_scale: sd of its natural log")
    network_scale: float = _d("factor on the modelled network bandwidth (1 = as shipped)")
    network_scale_sd_log: float = _d("uncertainty of network_scale: sd of its natural log")
    overlap_scale: float = _d("factor on the modelled communication/compute overlap (1 = as shipped)")
    overlap_scale_sd_log: float = _d("uncertainty of overlap_scale: sd of its natural log")
    memory_reserve_bytes: float = Field(default=0.0, description="bytes added to every GPU's predicted memory "
                                                                  "(fitted on rows with a measured peak)")
    memory_reserve_sd_bytes: float = Field(default=0.0, description="uncertainty of memory_reserve_bytes, bytes (sd)")
    n_memory_runs: int = Field(default=0, description="runs with a measured peak memory it was fitted on")
    log_ratio_p10: float = _d("80% interval of ln(measured / calibrated tokens/s), low end; gives tokens_per_s_p10")
    log_ratio_p90: float = _d("80% interval of ln(measured / calibrated tokens/s), high end; gives tokens_per_s_p90")
    error_before_pct: Optional[float] = Field(default=None, description="mean absolute throughput error on the "
                                                                         "runs before calibration, %")
    error_after_pct: Optional[float] = Field(default=None, description="the same after calibration, %")


class AppliedCalibration(CalibrationProfile):
    """The calibration profile a training solve applied (the scenario's ``calibration``)."""

    path: str = _d("the profile file, as the scenario names it")


class ResultDocument(_Open):
    """``clusteropt solve --format json``."""

    schema_version: str = Field(default=SCHEMA_VERSION, description="major.minor; a minor bump only adds keys")
    kind: Literal["solve"] = Field(default="solve", description="the document kind")
    scenario: str = _d("the scenario's name")
    workload: Literal["train", "serve", "codesign"] = Field(default="train", description="which planner solved it")
    status: Status = _d("optimal (proven), feasible (a limit stopped the search) or infeasible")
    objective: str = _d("what was minimised")
    configs: list[Union[TrainingRow, FleetRow, dict[str, Any]]] = _d(
        "the ranked configurations (training layouts, serving fleets or co-design plans), best first")
    pareto: list[Union[TrainingRow, FleetRow, dict[str, Any]]] = _d(
        "the Pareto front (training: cost vs wall-clock days, rows with the keys of configs; serving: $/hour "
        "vs p99 TTFT; co-design: loss vs cost)")
    explanation: Explanation = _d("why: binding limits and slack, or the conflicts when infeasible")
    stats: dict[str, Any] = Field(default_factory=dict, description="search statistics (rows, solves, seconds)")
    sensitivity: Optional[Sensitivity] = Field(default=None, description="with --sensitivity")
    scaling_law: Optional[str] = Field(default=None, description="co-design: the scaling law used")
    launch: Optional[dict[str, Any]] = Field(
        default=None, description="what 'clusteropt export' needs beside a row: model architecture, seq_len and "
                                  "tokens (training), longest request (serving), pricing mode, GPUs per instance")
    calibration: Optional[AppliedCalibration] = Field(
        default=None, description="training with the scenario's calibration profile: the profile applied (its "
                                  "factors rescale the figures; its log_ratio_p10/p90 give the rows' intervals, "
                                  "interval_regime 'calibrated')")


class CalibrationRun(_Open):
    """One measured run of the CSV given to ``clusteropt calibrate``."""

    row: int = _d("1-based data row of the CSV")
    name: str = _d("the row's model_name")
    measured_tokens_per_s: float = _d("measured throughput of the whole job, tokens/s")
    before_tokens_per_s: float = _d("the shipped model's prediction, tokens/s")
    after_tokens_per_s: float = _d("the prediction with the fitted profile, tokens/s")


class CalibrationDocument(_Open):
    """``clusteropt calibrate RUNS.csv --out profile.yaml --json``."""

    n_runs: int = _d("runs with measured throughput")
    error_before_pct: float = _d("mean absolute throughput error on the runs before calibration, %")
    error_after_pct: float = _d("the same after calibration, %")
    rows: list[CalibrationRun] = _d("every run: measured, before and after")
    held_out_rows: list[int] = Field(default_factory=list, description="rows left out of a second fit to measure "
                                                                        "the error on runs it has not seen (enough runs)")
    held_out_error_before_pct: Optional[float] = Field(default=None, description="error on the held-out rows "
                                                                                  "before calibration, %")
    held_out_error_after_pct: Optional[float] = Field(default=None, description="error on the held-out rows with "
                                                                                 "the profile fitted without them, %")
    memory_error_before_pct: Optional[float] = Field(default=None, description="mean absolute peak-memory error on "
                                                                                "rows with a measured peak, before, %")
    memory_error_after_pct: Optional[float] = Field(default=None, description="the same with memory_reserve_bytes, %")
    profile: CalibrationProfile = _d("the profile written to 'out'")
    out: str = _d("the profile file written")


class SweepPoint(_Open):
    """One point of a sweep: the varied values (keys before 'status') and the best plan there."""

    status: Status = _d("the point's solve status")
    explanation: str = Field(default="", description="the explanation's lines joined; the conflicts when infeasible")
    gpu: Optional[str] = Field(default=None, description="the best configuration's accelerator")
    n_gpus: Optional[float] = Field(default=None, description="its GPUs")
    cost_usd: Optional[float] = Field(default=None, description="its cost, USD")
    wall_clock_days: Optional[float] = Field(default=None, description="its wall-clock days")
    days_saved_per_extra_musd: Optional[float] = Field(
        default=None, description="days saved per extra $1M against the previous point along the first varied input")


class SweepDocument(_Open):
    """``clusteropt sweep --out results.json``: the varied paths and one object per point."""

    schema_version: str = Field(default=SCHEMA_VERSION, description="major.minor; a minor bump only adds keys")
    kind: Literal["sweep"] = Field(default="sweep", description="the document kind")
    scenario: str = _d("the scenario's name")
    objective: Optional[str] = Field(default=None, description="the objective at every point")
    vary: dict[str, list[Any]] = _d("each varied dotted path with its values")
    points: list[SweepPoint] = _d("one object per combination of the varied values")


def json_schema(kind: str) -> dict:
    """The JSON Schema of one document kind: result, sweep, scenario (input), plan (portfolios),
    calibration (``clusteropt calibrate --json``)."""
    if kind == "result":
        model = ResultDocument
    elif kind == "sweep":
        model = SweepDocument
    elif kind == "scenario":
        model = Scenario
    elif kind == "plan":
        model = PlanDocument
    elif kind == "calibration":
        model = CalibrationDocument
    else:
        raise ClusteroptError("schema", f"unknown kind {kind!r}", "allowed: result, sweep, scenario, plan, calibration")
    schema = model.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = f"https://clusteropt.dev/schema/{kind}-{SCHEMA_VERSION}.json"
    schema.setdefault("description", (model.__doc__ or "").strip())
    schema["x-schema-version"] = SCHEMA_VERSION
    return schema


def validate(kind: str, doc: dict) -> BaseModel:
    """Validate an emitted document against its model (tests; planners may use it too)."""
    model = {"result": ResultDocument, "sweep": SweepDocument, "calibration": CalibrationDocument}[kind]
    return model.model_validate(doc)


def property_rows(schema: dict) -> list[list[str]]:
    """Every property of a JSON Schema as [dotted path, type, description], ``$ref``s followed
    (list items as ``path[]``, a mapping's values as ``path.*``; each definition expanded once
    per path, recursion cut)."""
    defs = schema.get("$defs", {})

    def resolve(node: dict) -> dict:
        while "$ref" in node:
            node = defs[node["$ref"].split("/")[-1]]
        return node

    def type_of(node: dict) -> str:
        node = resolve(node)
        if "anyOf" in node:
            return " | ".join(dict.fromkeys(type_of(n) for n in node["anyOf"]))
        if "enum" in node:
            return " | ".join(map(str, node["enum"]))
        if "const" in node:
            return repr(node["const"])
        t = node.get("type", "object" if "properties" in node else "any")
        if t == "array":
            return f"list of {type_of(node.get('items', {}))}"
        return t

    rows: list[list[str]] = []

    def walk(node: dict, path: str, seen: tuple) -> None:
        ref = node.get("$ref")
        if ref:
            if ref in seen:
                return
            seen, node = seen + (ref,), resolve(node)
        for alt in node.get("anyOf", []):
            walk(alt, path, seen)
        if node.get("type") == "array":
            walk(node.get("items", {}), path + "[]", seen)
        for name, sub in node.get("properties", {}).items():
            p = f"{path}.{name}" if path else name
            desc = sub.get("description") or resolve(sub).get("description", "")
            rows.append([p, type_of(sub), " ".join(str(desc).split())])
            walk(sub, p, seen)
        if isinstance(node.get("additionalProperties"), dict):
            walk(node["additionalProperties"], path + ".*", seen)

    walk(schema, "", ())
    seen_rows: set = set()
    return [r for r in rows if not (tuple(r) in seen_rows or seen_rows.add(tuple(r)))]

# ----------------------------------------------------------------------------------------
# portfolio plans (`clusteropt plan --format json`)
# ----------------------------------------------------------------------------------------

class FleetEntry(_Open):
    """Owned nodes of one GPU type in the fleet to buy."""

    gpu: str = _d("accelerator id")
    nodes: int = _d("nodes to buy", ge=0)
    gpus: int = _d("GPUs in them", ge=0)
    purchase_usd: float = Field(description="capex of these nodes (what fleet.buy.budget_usd caps)")
    capex_share_usd: float = Field(description="the horizon's straight-line share of the capex")
    hosting_usd: float = _d("hosting over the horizon, USD")
    maintenance_usd: float = _d("maintenance over the horizon, USD")
    it_power_kw: float = Field(description="provisioned IT power (TDP x server overhead), before PUE")
    utilization: float = Field(description="fraction of the owned GPU-days over the horizon that run jobs")


class RentEntry(_Open):
    """Rented GPUs for one job."""

    job: str = _d("the job they run")
    gpu: str = _d("accelerator id")
    n_gpus: int = _d("GPUs rented", ge=1)
    start_day: float = _d("first day of the rental (day 0 = the horizon's start)")
    end_day: float = _d("last day of the rental")
    hours: float = _d("hours billed")
    usd: float = _d("rent paid, USD")
    offer: Optional[str] = Field(default=None, description="the offer rented: 'provider instance_type'")
    usd_per_gpu_hour: float = _d("price per GPU-hour, USD")


class ScheduleEntry(_Open):
    """When and where one job runs."""

    job: str = _d("the job's name in the portfolio")
    kind: Literal["train", "serve"] = _d("training run or serving deployment")
    gpu: str = _d("accelerator id")
    source: Literal["owned", "rented"] = _d("on owned or rented GPUs")
    n_gpus: int = _d("GPUs it uses", ge=1)
    n_nodes: int = _d("nodes it uses", ge=1)
    start_day: float = _d("day it starts (day 0 = the horizon's start)")
    end_day: float = Field(description="start + the exact duration (the grid reserves up to grid_end_day)")
    duration_days: float = _d("how long it runs, days (wall-clock for training)")
    deadline_days: Optional[float] = Field(default=None, description="training: the job's deadline, days")
    cost_usd: float = Field(description="power (owned) or rent (rented) of this job's run")
    config: Optional[dict[str, Any]] = Field(default=None, description="training: the 12-key configuration")
    layout: Optional[str] = Field(default=None, description="serving: the replica fleet")


class CostSplit(_Open):
    """The plan's cost over the horizon, by kind."""

    capex_usd: float = Field(description="capex share over the horizon")
    opex_usd: float = Field(description="power + hosting + maintenance")
    rent_usd: float = _d("rent paid, USD")
    total_usd: float = Field(description="capex_usd + opex_usd + rent_usd")
    purchase_usd: float = _d("purchase price of the fleet to buy, USD (capex before the horizon's share)")
    power_usd: float = _d("electricity of owned GPUs over the horizon, USD")
    hosting_usd: float = _d("hosting of owned nodes over the horizon, USD")
    maintenance_usd: float = _d("maintenance of owned nodes over the horizon, USD")


class PlanBody(_Open):
    """One plan: the fleet to buy, what to rent, each job's schedule and the cost."""

    rank: int = _d("1 = best", ge=1)
    fleet: list[FleetEntry] = _d("owned nodes to buy, per GPU type")
    rent: list[RentEntry] = _d("rentals, per job")
    schedule: list[ScheduleEntry] = _d("each job's start, duration and GPUs")
    cost: CostSplit = _d("the cost split over the horizon")
    owned_gpus: int = _d("GPUs bought")
    owned_power_kw: float = _d("provisioned IT power of the owned fleet, kW")
    utilization: dict[str, Optional[float]] = _d("per GPU type, the fraction of owned GPU-days that run jobs")
    makespan_days: float = _d("day the last job ends")
    binding: list[str] = _d("limits that bind (without them the optimum would improve)")
    objective_units: list[int] = Field(description="the objective in the model's integer units (cents; slots)")
    npv_usd: Optional[float] = Field(default=None, description="NPV of buying the owned fleet instead of renting "
                                     "its jobs, at fleet.buy.discount_rate over fleet.buy.years (USD)")
    payback_years: Optional[float] = Field(default=None, description="undiscounted payback; null when it never "
                                           "pays back within fleet.buy.years")
    roi_pct: Optional[float] = Field(default=None, description="return on the purchase over fleet.buy.years, %")
    investment: Optional[dict[str, Any]] = Field(
        default=None, description="the owned fleet against renting its jobs: capex_usd, rent_usd_per_year, "
        "owned_opex_usd_per_year (staff included), saving_usd_per_year, residual_usd, discount_rate, years, irr, and "
        "flips (discount_rate, utilization_scale, gpu_price_scale: where buying stops beating renting)")


class PlanDocument(_Open):
    """``clusteropt plan --format json``: the best fleet and schedule, ranked alternatives, explanation."""

    schema_version: str = Field(default=SCHEMA_VERSION, description="major.minor; a minor bump only adds keys")
    kind: Literal["plan"] = Field(default="plan", description="the document kind")
    portfolio: str = _d("the portfolio's name")
    status: Literal["optimal", "feasible", "infeasible"] = _d("optimal (proven), feasible (a limit stopped the "
                                                              "search) or infeasible")
    objective: Literal["total_cost", "makespan", "gpus"] = _d("what was minimised")
    plan: Optional[PlanBody] = _d("the best plan; null when infeasible")
    alternatives: list[PlanBody] = _d("the next-best distinct fleets, ranked")
    explanation: dict[str, Any] = _d("why: binding limits and slack, or the conflicts when infeasible")
    stats: dict[str, Any] = Field(default_factory=dict, description="search statistics (variables, seconds)")
    sensitivity: Optional[Union[dict[str, Any], list[dict[str, Any]]]] = Field(
        default=None, description="tornado (total cost re-planned at -X%/+X% of each input) and thresholds")
