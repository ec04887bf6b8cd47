"""The portfolio: a fleet to buy (and rent) for several training and serving jobs (issue 7).

A portfolio is a YAML file (``scenarios/portfolios/*.yaml``) validated by pydantic. It reuses
the scenario's blocks (``TrainSpec``, ``ServeSpec``, ``SearchSpace``) so that every job
converts to an ordinary :class:`optimizer.scenario.Scenario` (:func:`job_scenario`): the
training search and the serving planner are reused, not forked.

Units: money in USD, time in days (``deadline_days``, ``from_day``, ``horizon_days``), power in
kW, electricity in USD per kWh. Bad input raises ``ClusteroptError`` with a dotted field path
that indexes lists (``jobs[1].start_after: unknown job 'x'; jobs: a, b``).

Conventions of the blocks (the planner, ``optimizer.search.portfolio``, implements them):

* ``fleet.buy``: owned GPUs are bought in whole nodes at the start of the horizon and are
  paid from ``budget_usd`` (capex: catalog ``purchase_usd`` per GPU plus ``server_usd_per_node``
  where the catalog price excludes the server). ``max_power_kw`` caps the owned fleet's IT
  power (provisioned, TDP x (1 + server overhead), before PUE); ``max_nodes`` caps the nodes.
* ``fleet.rent``: rented GPUs come from the catalog's cheapest offer in ``mode``, billed by
  the hour for a job's run; a job runs wholly on owned or wholly on rented GPUs.
  ``max_gpus`` caps the rented GPUs in use at any time (all types together).
* ``jobs[i].max_gpus`` caps one job's GPUs (default DEFAULT_MAX_GPUS_PER_JOB).
* ``fleet.available``: how many GPUs of a type can be bought (stock).
* jobs: ``start_after`` names jobs that must finish first; ``from_day`` is the earliest start
  of a training job and the first day of a serving job, which then runs to the horizon's end;
  ``deadline_days`` counts from day 0 of the horizon.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import Field, ValidationError, field_validator, model_validator

from optimizer.errors import ClusteroptError, did_you_mean, from_pydantic, unknown_name
from optimizer.formulas.cost import (TYPICAL_HOSTING_USD_PER_KW_MONTH, TYPICAL_MAINTENANCE_PCT_PER_YEAR,
                                     TYPICAL_PUE, TYPICAL_USD_PER_KWH)
from optimizer.scenario import (NO_LIMIT_DAYS, Constraints, LimitCount, LimitCount0, LimitKW, LimitUSD,
                                LimitDays, SearchSpace, ServeSpec, StrictModel, TrainSpec, Scenario, load_scenario,
                                non_negative_values)
from optimizer.scenario import scenario_dir
from optimizer.scenario import read_document

PortfolioObjective = Literal["total_cost", "makespan", "gpus"]
RentMode = Literal["on_demand", "spot", "reserved"]

#: Horizon when no job has a deadline and none is given (days).
DEFAULT_HORIZON_DAYS = 365.0
#: Most GPUs one job may use unless ``jobs[i].max_gpus`` says otherwise: the largest published
#: single training job, Llama 3 405B on 16,384 H100s (Llama Team 2024, 'The Llama 3 Herd of
#: Models', Sec. 3.3). Without a cap, rented capacity is unbounded and the layout tables explode.
DEFAULT_MAX_GPUS_PER_JOB = 16384
#: Longest planning horizon (days): 100 years, beyond any hardware's life (pricing.years <= 100).
MAX_HORIZON_DAYS = 36500.0
#: Grid steps the automatic rule picks from (days): 1 h, 2 h, 6 h, 12 h, 1, 2, 7, 14, 30 days.
GRID_STEPS_DAYS = (1 / 24, 2 / 24, 6 / 24, 12 / 24, 1.0, 2.0, 7.0, 14.0, 30.0)
#: The automatic grid is the finest step giving at most this many slots over the horizon.
MAX_SLOTS = 200
#: Most slots a given ``time_step_days`` may make (the schedule model has variables per slot).
MAX_GIVEN_SLOTS = 2000


def choose_step_days(horizon_days: float, given: Optional[float] = None) -> float:
    """The schedule grid: ``time_step_days`` if given, else the finest of GRID_STEPS_DAYS
    with at most MAX_SLOTS slots over the horizon (60 days -> 6 h, 180 days -> 1 day, 365 days -> 2 days)."""
    if given is not None:
        return float(given)
    for step in GRID_STEPS_DAYS:
        if horizon_days / step <= MAX_SLOTS + 1e-9:
            return step
    return horizon_days / MAX_SLOTS


_Strict = StrictModel


class BuySpec(_Strict):
    """Owned hardware: capital budget, amortisation and running costs, site limits."""

    allowed: bool = True
    budget_usd: LimitUSD = None                                       # capex cap (purchase)
    years: float = Field(default=4.0, ge=0.1, le=100)                          # straight-line amortisation life
    usd_per_kwh: float = Field(default=TYPICAL_USD_PER_KWH, ge=0, le=100)
    pue: float = Field(default=TYPICAL_PUE, ge=1, le=10)
    hosting_usd_per_kw_month: float = Field(default=TYPICAL_HOSTING_USD_PER_KW_MONTH, ge=0, le=1e6)
    maintenance_pct_per_year: float = Field(default=TYPICAL_MAINTENANCE_PCT_PER_YEAR, ge=0, le=100)
    server_usd_per_node: dict[str, Annotated[float, Field(le=1e9)]] = Field(default_factory=dict)   # extra capex per node by GPU id
    max_power_kw: LimitKW = None                                      # IT power of the owned fleet
    max_nodes: LimitCount0 = None
    # investment figures of the owned part (formulas/investment.py; defaults as scenario Pricing)
    discount_rate: float = Field(default=0.08, gt=-1, lt=10)
    residual_pct: float = Field(default=0.0, ge=0, le=100)
    staff_usd_per_year: float = Field(default=0.0, ge=0)

    @field_validator("server_usd_per_node")
    @classmethod
    def _non_negative(cls, v):
        return non_negative_values("server_usd_per_node", v)


class RentSpec(_Strict):
    """Rented capacity: the cheapest catalog offer per GPU type in ``mode``."""

    allowed: bool = True
    mode: RentMode = "on_demand"
    provider: Optional[str] = None
    max_gpus: LimitCount = None   # rented GPUs in use at once, all types


class FleetSpec(_Strict):
    buy: BuySpec = BuySpec()
    rent: RentSpec = RentSpec()
    gpus: Optional[list[str]] = None                 # default: every datacenter GPU with a price
    available: dict[str, Annotated[int, Field(le=10**8)]] = Field(default_factory=dict)   # purchasable stock per GPU type

    @field_validator("available")
    @classmethod
    def _stock(cls, v):
        return non_negative_values("available", v, "stock must be >= 0")


class JobSpec(_Strict):
    """One job: a training run (``train``) or a serving workload (``serve``)."""

    name: str = Field(min_length=1)
    model: Union[str, dict[str, Any]]
    train: Optional[TrainSpec] = None
    serve: Optional[ServeSpec] = None
    deadline_days: LimitDays = None
    start_after: list[str] = Field(default_factory=list)
    from_day: float = Field(default=0.0, ge=0, le=NO_LIMIT_DAYS)
    search: SearchSpace = SearchSpace()
    memory_headroom: float = Field(default=0.10, ge=0, lt=1)
    max_gpus: LimitCount = None

    @model_validator(mode="before")
    @classmethod
    def _lift_model(cls, data):
        """Accept ``train: {model: ..., tokens: ...}`` (the issue's spelling) as well as a job-level model."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for block in ("train", "serve"):
            b = data.get(block)
            if isinstance(b, dict) and "model" in b:
                b = dict(b)
                m = b.pop("model")
                if m is not None and not isinstance(m, str):
                    raise ValueError(f"{block}.model: a model family (co-design) is not planned in portfolios; "
                                     "name a preset or config file")
                if m is not None:
                    if data.get("model") is not None and data["model"] != m:
                        raise ValueError(f"{block}.model {m!r} differs from the job's model {data['model']!r}")
                    data["model"] = m
                data[block] = b
        if isinstance(data.get("start_after"), str):
            data["start_after"] = [data["start_after"]]
        return data

    @model_validator(mode="after")
    def _one_workload(self):
        if (self.train is None) == (self.serve is None):
            raise ValueError("a job needs exactly one of 'train' or 'serve'")
        if self.serve is not None and self.deadline_days is not None:
            raise ValueError("a serving job has no deadline: it runs from from_day to the horizon's end")
        if self.serve is not None and self.start_after:
            raise ValueError("a serving job starts on from_day; start_after is for training jobs")
        return self

    @property
    def kind(self) -> str:
        return "train" if self.train is not None else "serve"


class Portfolio(_Strict):
    name: str
    description: str = ""
    fleet: FleetSpec = FleetSpec()
    jobs: list[JobSpec] = Field(min_length=1)
    horizon_days: Optional[float] = Field(default=None, gt=0, le=MAX_HORIZON_DAYS)
    time_step_days: Optional[float] = Field(default=None, gt=0, le=MAX_HORIZON_DAYS)      # schedule grid; default: auto
    objective: PortfolioObjective = "total_cost"
    top_k: int = Field(default=3, ge=1, le=100)
    base_dir: Optional[str] = Field(default=None, exclude=True)

    @model_validator(mode="after")
    def _jobs(self):
        names = [j.name for j in self.jobs]
        for i, j in enumerate(self.jobs):
            if j.name in names[:i]:
                raise ClusteroptError(f"jobs[{i}].name", f"duplicate job name {j.name!r}", "job names must be unique")
        for i, j in enumerate(self.jobs):
            for k, pred in enumerate(j.start_after):
                where = f"jobs[{i}].start_after" + (f"[{k}]" if len(j.start_after) > 1 else "")
                if pred not in names:
                    hint = did_you_mean(pred, names)
                    if hint.startswith("known:"):
                        hint = "jobs: " + ", ".join(names)
                    raise ClusteroptError(where, f"unknown job {pred!r}", hint)
                if pred == j.name:
                    raise ClusteroptError(where, f"job {pred!r} cannot start after itself", "name another job")
                if self.jobs[names.index(pred)].serve is not None:
                    raise ClusteroptError(where, f"{pred!r} is a serving job and never finishes",
                                          "start_after names training jobs")
        cycle = _find_cycle({j.name: j.start_after for j in self.jobs})
        if cycle:
            i = names.index(cycle[0])
            raise ClusteroptError(f"jobs[{i}].start_after", "precedence cycle " + " -> ".join(cycle + [cycle[0]]),
                                  "start_after must not form a loop")
        h = self.horizon()
        for i, j in enumerate(self.jobs):
            if self.horizon_days is None and j.deadline_days is not None and j.deadline_days > MAX_HORIZON_DAYS:
                raise ClusteroptError(f"jobs[{i}].deadline_days", f"{j.deadline_days:g} days sets a horizon past "
                                      f"{MAX_HORIZON_DAYS:g} days", f"a deadline <= {MAX_HORIZON_DAYS:g} days, or none "
                                      f"(.inf means no deadline)")
        for i, j in enumerate(self.jobs):
            if j.from_day >= h:
                raise ClusteroptError(f"jobs[{i}].from_day", f"{j.from_day:g} is not before the horizon's end ({h:g} days)",
                                      "set horizon_days or an earlier from_day")
            if j.deadline_days is not None and j.deadline_days > h:
                raise ClusteroptError(f"jobs[{i}].deadline_days", f"{j.deadline_days:g} is after the horizon ({h:g} days)",
                                      "raise horizon_days or move the deadline")
            if j.deadline_days is not None and j.deadline_days <= j.from_day:
                raise ClusteroptError(f"jobs[{i}].deadline_days", f"{j.deadline_days:g} is not after from_day {j.from_day:g}",
                                      "a job needs time to run")
        step = choose_step_days(h, self.time_step_days)
        if h / step > MAX_GIVEN_SLOTS:
            raise ClusteroptError("time_step_days", f"{step:g}-day slots over {h:g} days are {h / step:,.0f} slots",
                                  f"at most {MAX_GIVEN_SLOTS:,} slots: a longer time_step_days or a shorter horizon")
        for i, j in enumerate(self.jobs):
            # a window shorter than one slot can never hold the job (deadlines round down to the
            # grid): a 45-day deadline in a 100-year horizon's 182.5-day slots turned a feasible
            # plan infeasible (issue 20)
            if j.deadline_days is not None and j.deadline_days - j.from_day < step:
                given = "time_step_days" if self.time_step_days is not None else "the automatic grid"
                raise ClusteroptError(f"jobs[{i}].deadline_days",
                                      f"a {j.deadline_days - j.from_day:g}-day window is shorter than one "
                                      f"{step:g}-day slot of {given} over {h:g} days",
                                      "a shorter horizon_days or a time_step_days within the window")
        return self

    def horizon(self) -> float:
        """The planning horizon in days: ``horizon_days``, else the latest deadline, else 365."""
        if self.horizon_days is not None:
            return float(self.horizon_days)
        dls = [j.deadline_days for j in self.jobs if j.deadline_days is not None]
        return float(max(dls)) if dls else DEFAULT_HORIZON_DAYS

    def job(self, name: str) -> JobSpec:
        for j in self.jobs:
            if j.name == name:
                return j
        raise unknown_name("job", "job", name, [j.name for j in self.jobs])

    def with_overrides(self, overrides: dict[str, Any]) -> "Portfolio":
        """A new validated portfolio with dotted-path fields replaced (``fleet.buy.usd_per_kwh``;
        list items by index: ``jobs.1.train.tokens``). For sensitivity and sweeps."""
        data = self.model_dump(mode="python", exclude_none=False)
        data["base_dir"] = self.base_dir
        for path, value in overrides.items():
            cur = data
            keys = path.split(".")
            for k in keys[:-1]:
                cur = cur[int(k)] if isinstance(cur, list) else cur.setdefault(k, {})
                if cur is None:
                    raise ClusteroptError(path, "parent is not set", "a path to a field of a block that exists")
            last = keys[-1]
            if isinstance(cur, list):
                cur[int(last)] = value
            else:
                cur[last] = value
        return _validate(data)


def _find_cycle(graph: dict[str, list[str]]) -> list[str]:
    """One precedence cycle as a list of job names, or [] (depth-first search)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str]:
        state[n] = 1
        stack.append(n)
        for m in graph.get(n, []):
            if state.get(m) == 1:
                return stack[stack.index(m):]
            if state.get(m) is None:
                c = visit(m)
                if c:
                    return c
        stack.pop()
        state[n] = 2
        return []

    for n in graph:
        if state.get(n) is None:
            c = visit(n)
            if c:
                return c
    return []


# ----------------------------------------------------------------------------------------
# loading
# ----------------------------------------------------------------------------------------

def _validate(data: dict, catalog=None) -> Portfolio:
    try:
        p = Portfolio.model_validate(data)
    except ClusteroptError:
        raise
    except ValidationError as exc:
        raise from_pydantic(exc, model=Portfolio, root="portfolio") from None
    if catalog is not None:
        _check_gpus(p, catalog)
    return p


def _check_gpus(p: Portfolio, cat) -> None:
    """Every GPU and provider the fleet names exists in the caller's catalog ``cat``."""
    for i, g in enumerate(p.fleet.gpus or []):
        try:
            cat.resolve_gpu_id(g)
        except ClusteroptError as e:
            raise ClusteroptError(f"fleet.gpus[{i}]", e.problem, e.allowed) from None
    for where, d in (("fleet.available", p.fleet.available), ("fleet.buy.server_usd_per_node", p.fleet.buy.server_usd_per_node)):
        for g in d:
            try:
                cat.resolve_gpu_id(g)
            except ClusteroptError as e:
                raise ClusteroptError(f"{where}.{g}", e.problem, e.allowed) from None
    if p.fleet.rent.provider is not None:
        provs = cat.providers
        if p.fleet.rent.provider.lower() not in {x.lower() for x in provs}:
            raise unknown_name("fleet.rent.provider", "provider", p.fleet.rent.provider, provs)


def portfolio_dir() -> Path:
    """Built-in portfolios: ``scenarios/portfolios/`` beside the built-in scenarios."""
    return scenario_dir() / "portfolios"


def list_portfolios() -> list[str]:
    return sorted(p.stem for p in portfolio_dir().glob("*.yaml"))


def load_portfolio(source: Union[str, Path, dict, Portfolio], catalog=None) -> Portfolio:
    """Load and validate a portfolio from a YAML path, a built-in portfolio name, or a dict.

    With ``catalog`` (the caller's: default rows plus the user's files) the GPU types and the
    provider the fleet names are checked against it; the planner always passes its catalog."""
    if isinstance(source, Portfolio):
        if catalog is not None:
            _check_gpus(source, catalog)
        return source
    return _validate(read_document(source, "portfolio", portfolio_dir(), list_portfolios()), catalog)


# ----------------------------------------------------------------------------------------
# jobs as ordinary scenarios
# ----------------------------------------------------------------------------------------

def job_scenario(portfolio: Portfolio, index: int, *, pricing_mode: str = "owned",
                 max_gpus: Optional[int] = None) -> Scenario:
    """Job ``index`` as an ordinary Scenario, so the training search / serving planner apply.

    The scenario carries the fleet's GPU list, the job's search pins, memory headroom and GPU
    cap (``jobs[i].max_gpus``, else ``max_gpus``, else DEFAULT_MAX_GPUS_PER_JOB), and the pricing the planner needs (``owned`` with the fleet's running-cost inputs, or
    the rent mode). Its deadline is the job's window (deadline - from_day) when it has one.
    Model paths resolve against the portfolio's folder.
    """
    p = portfolio
    j = p.jobs[index]
    buy = p.fleet.buy
    cons: dict[str, Any] = {"memory_headroom": j.memory_headroom}
    if p.fleet.gpus is not None:
        cons["gpus"] = list(p.fleet.gpus)
    cap = j.max_gpus if j.max_gpus is not None else (max_gpus if max_gpus is not None else DEFAULT_MAX_GPUS_PER_JOB)
    cons["max_gpus"] = int(cap)
    if j.deadline_days is not None:
        cons["deadline_days"] = j.deadline_days - j.from_day
    if pricing_mode == "owned":
        pricing = {"mode": "owned", "years": buy.years, "usd_per_kwh": buy.usd_per_kwh, "pue": buy.pue}
    else:
        pricing = {"mode": pricing_mode, "provider": p.fleet.rent.provider}
    data: dict[str, Any] = {
        "name": f"{p.name}/{j.name}",
        "model": j.model,
        "constraints": cons,
        "pricing": pricing,
        "search": j.search.model_dump(exclude_defaults=True),
        "base_dir": p.base_dir,
    }
    if j.train is not None:
        data["train"] = j.train.model_dump(exclude_none=True)
    else:
        data["serve"] = j.serve.model_dump(exclude_none=True)
    try:
        return load_scenario(data)
    except ClusteroptError as e:
        raise ClusteroptError(f"jobs[{index}].{e.field}" if e.field else f"jobs[{index}]", e.problem, e.allowed) from None


__all__ = ["Portfolio", "FleetSpec", "BuySpec", "RentSpec", "JobSpec", "load_portfolio", "list_portfolios",
           "portfolio_dir", "job_scenario", "DEFAULT_HORIZON_DAYS", "Constraints"]
