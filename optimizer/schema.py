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

SCHEMA_VERSION = "1.0"

Status = Literal["optimal", "feasible", "infeasible"]


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class Configuration(_Open):
    """The 12 keys that identify a training configuration (CONTRACTS.md 'Search')."""

    gpu: str
    n_gpus: int = Field(ge=1)
    tp: int = Field(ge=1)
    pp: int = Field(ge=1)
    dp: int = Field(ge=1)
    cp: int = Field(ge=1)
    ep: int = Field(ge=1)
    zero: int = Field(ge=0, le=3)
    precision: str
    micro_batch: int = Field(ge=1)
    recompute: Literal["none", "selective", "full"]
    sequence_parallel: bool


class TrainingRow(Configuration):
    """One ranked training configuration with its figures."""

    rank: Optional[int] = Field(default=None, ge=1, description="1 = best; absent on Pareto rows")
    objective: float = Field(description="the value of the scenario's objective column")
    n_nodes: int
    grad_accum: int
    global_batch: int = Field(description="sequences per optimizer step")
    memory_per_gpu_bytes: float
    memory_capacity_bytes: int
    memory_headroom: float = Field(description="fraction of device memory left unused")
    mfu: float
    hfu: float
    step_time_s: float
    tokens_per_s: float = Field(description="whole job")
    train_days: float = Field(description="failure-free compute time")
    wall_clock_days: float = Field(description="including failures, checkpoints and restarts where modelled")
    gpu_hours: float
    usd_per_gpu_hour: float
    cost_usd: float
    cost_per_mtoken_usd: float
    offer: str


class ReplicaGroup(_Open):
    """Replicas of one serving option inside a fleet."""

    gpu: str
    tp: int
    pp: int = 1
    weights: str
    kv: str
    batch: int
    count: int = Field(ge=1)


class FleetRow(_Open):
    """One ranked serving fleet (issue 6)."""

    rank: Optional[int] = Field(default=None, ge=1)
    objective: float
    usd_per_hour: float
    n_gpus: int
    replicas: list[ReplicaGroup]


class Explanation(_Open):
    reason: Optional[str] = None
    lines: list[str] = Field(default_factory=list, description="one-line sentences for people")
    binding: Optional[list[Union[str, dict[str, Any]]]] = Field(
        default=None, description="limit families that bind (co-design: objects with the limit and its use)")
    slack: Optional[dict[str, Any]] = None
    conflicts: Optional[list[list[str]]] = Field(
        default=None, description="minimal sets of limits that cannot all be met, every other limit dropped")
    relaxations: Optional[dict[str, Any]] = None
    notes: list[str] = Field(default_factory=list)


class TornadoEnd(_Open):
    factor: float
    objective: Optional[float] = Field(default=None, description="training: the chosen configuration's objective at this end")
    best: Optional[Union[dict[str, Any], list[dict[str, Any]]]] = Field(
        description="the re-optimised best: a 12-key configuration, a serving fleet (replica groups), or null")
    best_objective: Optional[float]
    changes: bool


class TornadoEntry(_Open):
    input: str
    low: Optional[float] = Field(description="objective at -X% (training: the chosen configuration; serving: the "
                                             "re-planned fleet); null when nothing is feasible there")
    high: Optional[float]
    swing: Optional[float] = Field(description="|high - low|; null when an end is infeasible")
    base: float
    reoptimised: dict[Literal["down", "up"], TornadoEnd]
    note: Optional[str] = None


class Threshold(_Open):
    input: str = Field(description="dotted scenario path or named input (price.<GPU>, efficiency, inter_node_bandwidth)")
    direction: Literal["up", "down"]
    change_pct: Optional[float] = Field(description="signed; null when nothing switches within range_pct")
    range_pct: float
    new_best: Optional[Union[dict[str, Any], list[dict[str, Any]]]] = Field(
        description="the 12-key configuration (serving: the fleet) that becomes best, or null")
    unchanged_pct: Optional[float] = Field(default=None, description="a change at which the best is still unchanged, within tolerance_pct of change_pct")
    tolerance_pct: float
    grid_step_pct: float
    note: Optional[str] = None


class Sensitivity(_Open):
    objective: str
    swing_pct: float
    range_pct: float
    tornado: list[TornadoEntry]
    thresholds: list[Threshold]
    slack: dict[str, Any]


class ResultDocument(_Open):
    """``clusteropt solve --format json``."""

    schema_version: str = SCHEMA_VERSION
    kind: Literal["solve"] = "solve"
    scenario: str
    workload: Literal["train", "serve", "codesign"] = "train"
    status: Status
    objective: str
    configs: list[Union[TrainingRow, FleetRow, dict[str, Any]]]
    pareto: list[dict[str, Any]]
    explanation: Explanation
    stats: dict[str, Any] = Field(default_factory=dict)
    sensitivity: Optional[Sensitivity] = None
    scaling_law: Optional[str] = None


class SweepPoint(_Open):
    status: Status
    explanation: str = ""
    gpu: Optional[str] = None
    n_gpus: Optional[float] = None
    cost_usd: Optional[float] = None
    wall_clock_days: Optional[float] = None
    days_saved_per_extra_musd: Optional[float] = None


class SweepDocument(_Open):
    """``clusteropt sweep --out results.json``: the varied paths and one object per point."""

    schema_version: str = SCHEMA_VERSION
    kind: Literal["sweep"] = "sweep"
    scenario: str
    objective: Optional[str] = None
    vary: dict[str, list[Any]]
    points: list[SweepPoint]


def json_schema(kind: str) -> dict:
    """The JSON Schema of one document kind: result, sweep, scenario (input), plan (portfolios)."""
    if kind == "result":
        model = ResultDocument
    elif kind == "sweep":
        model = SweepDocument
    elif kind == "scenario":
        model = Scenario
    elif kind == "plan":
        model = PlanDocument
    else:
        raise ClusteroptError("schema", f"unknown kind {kind!r}", "allowed: result, sweep, scenario, plan")
    schema = model.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = f"https://clusteropt.dev/schema/{kind}-{SCHEMA_VERSION}.json"
    schema.setdefault("description", (model.__doc__ or "").strip())
    schema["x-schema-version"] = SCHEMA_VERSION
    return schema


def validate(kind: str, doc: dict) -> BaseModel:
    """Validate an emitted document against its model (tests; planners may use it too)."""
    model = {"result": ResultDocument, "sweep": SweepDocument}[kind]
    return model.model_validate(doc)


# ----------------------------------------------------------------------------------------
# portfolio plans (`clusteropt plan --format json`)
# ----------------------------------------------------------------------------------------

class FleetEntry(_Open):
    gpu: str
    nodes: int = Field(ge=0)
    gpus: int = Field(ge=0)
    purchase_usd: float = Field(description="capex of these nodes (what fleet.buy.budget_usd caps)")
    capex_share_usd: float = Field(description="the horizon's straight-line share of the capex")
    hosting_usd: float
    maintenance_usd: float
    it_power_kw: float = Field(description="provisioned IT power (TDP x server overhead), before PUE")
    utilization: float = Field(description="fraction of the owned GPU-days over the horizon that run jobs")


class RentEntry(_Open):
    job: str
    gpu: str
    n_gpus: int = Field(ge=1)
    start_day: float
    end_day: float
    hours: float
    usd: float
    offer: Optional[str] = None
    usd_per_gpu_hour: float


class ScheduleEntry(_Open):
    job: str
    kind: Literal["train", "serve"]
    gpu: str
    source: Literal["owned", "rented"]
    n_gpus: int = Field(ge=1)
    n_nodes: int = Field(ge=1)
    start_day: float
    end_day: float = Field(description="start + the exact duration (the grid reserves up to grid_end_day)")
    duration_days: float
    deadline_days: Optional[float] = None
    cost_usd: float = Field(description="power (owned) or rent (rented) of this job's run")
    config: Optional[dict[str, Any]] = Field(default=None, description="training: the 12-key configuration")
    layout: Optional[str] = Field(default=None, description="serving: the replica fleet")


class CostSplit(_Open):
    capex_usd: float = Field(description="capex share over the horizon")
    opex_usd: float = Field(description="power + hosting + maintenance")
    rent_usd: float
    total_usd: float = Field(description="capex_usd + opex_usd + rent_usd")
    purchase_usd: float
    power_usd: float
    hosting_usd: float
    maintenance_usd: float


class PlanBody(_Open):
    rank: int = Field(ge=1)
    fleet: list[FleetEntry]
    rent: list[RentEntry]
    schedule: list[ScheduleEntry]
    cost: CostSplit
    owned_gpus: int
    owned_power_kw: float
    utilization: dict[str, Optional[float]]
    makespan_days: float
    binding: list[str]
    objective_units: list[int] = Field(description="the objective in the model's integer units (cents; slots)")
    npv_usd: Optional[float] = Field(default=None, description="NPV of buying the owned fleet instead of renting "
                                     "its jobs, at fleet.buy.discount_rate over fleet.buy.years (USD)")
    payback_years: Optional[float] = Field(default=None, description="undiscounted payback; null when it never "
                                           "pays back within fleet.buy.years")
    roi_pct: Optional[float] = Field(default=None, description="return on the purchase over fleet.buy.years, %")
    investment: Optional[dict[str, Any]] = None


class PlanDocument(_Open):
    """``clusteropt plan --format json``: the best fleet and schedule, ranked alternatives, explanation."""

    schema_version: str = SCHEMA_VERSION
    kind: Literal["plan"] = "plan"
    portfolio: str
    status: Literal["optimal", "feasible", "infeasible"]
    objective: Literal["total_cost", "makespan", "gpus"]
    plan: Optional[PlanBody]
    alternatives: list[PlanBody]
    explanation: dict[str, Any]
    stats: dict[str, Any] = Field(default_factory=dict)
    sensitivity: Optional[Union[dict[str, Any], list[dict[str, Any]]]] = Field(
        default=None, description="tornado (total cost re-planned at -X%/+X% of each input) and thresholds")
