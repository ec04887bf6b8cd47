"""Fleet procurement: one purchase (plus rentals) for several training and serving jobs (issue 7).

``plan(portfolio)`` chooses, with CP-SAT, how many nodes of each GPU type to buy, which jobs
run on the owned fleet and which on rented GPUs, each job's GPU type, count and layout, and
when each job runs, so that deadlines, precedence, the capital budget, power, node and stock
limits hold and the objective (total cost over the horizon, makespan, or GPUs) is least.

Notation (OR-Tools sample order: data, model, variables, constraints, objective, solve, decode)

    t = 0..H          time slots of ``dt`` days (the grid; see ``choose_step_days``)
    g in G            GPU types; gpn[g] GPUs per node
    j in J            jobs; o in O[j] the job's options (GPU type g(o), owned or rented,
                      n[o] GPUs, d[o] slots = ceil(duration / dt), c[o] USD of power or rent)
    x[o] in {0,1}     option o is chosen;  sum_{o in O[j]} x[o] = 1
    s[j] (int)        start slot of job j; e[j] = s[j] + sum_o d[o] x[o]
    N[g] (int)        owned nodes of type g
    a[f] in {0,1}     enforcement literal of limit f (budget, power, max_nodes, stock[g],
                      deadline[j], after[i->j], horizon), so that infeasibility can be explained

    cumulative per g:  sum over owned options o of type g running at t of n[o] <= gpn[g] N[g]
    cumulative rent:   sum over rented options running at t of n[o] <= R_all
    serving jobs:      an option's interval is [floor(from_day / dt), H): the whole horizon
    a[deadline j]  =>  e[j] <= floor(deadline_j / dt)
    a[after i->j]  =>  s[j] >= e[i]
    a[horizon]     =>  e[j] <= floor(horizon / dt)
    a[budget]      =>  sum_g N[g] capex_node[g] <= budget_usd
    a[power]       =>  sum_g N[g] gpn[g] it_w[g] <= max_power_kw x 1000
    a[max_nodes]   =>  sum_g N[g] <= max_nodes
    a[max_rented_gpus] => the rented cumulative's capacity <= fleet.rent.max_gpus
    a[stock g]     =>  gpn[g] N[g] <= available[g]
    total_cost     =   sum_g N[g] fixed_node[g] + sum_o c[o] x[o]    (integer cents)
    makespan       =   max_j e[j] over training jobs, then total_cost (lexicographic)
    gpus           =   sum_g gpn[g] N[g] + sum_g R[g], R[g] the peak of rented GPUs of type g
                       (a cumulative over rented intervals), then total_cost

Redundant cuts (implied by the cumulative; they strengthen the LP relaxation, which CP-SAT
uses fully at linearization level 2): each owned job alone fits, n[o] x[o] <= gpn[g] N[g];
and the owned GPU-slots of the jobs that must end by D fit, sum n[o] d[o] x[o] <= gpn[g] N[g] D,
for D = every deadline and the horizon (behind the literals that put those jobs inside D).

Serving jobs: per GPU type, the fewest-GPU fleet that ``search.serving.solve_serving`` proves
meets the request rate, SLOs and redundancy (single-type fleets; see ``serving_fleets``).

Cost conventions (state and test them):

* Amortisation: straight line over ``fleet.buy.years``; the horizon carries the share
  horizon_days / (years x 365.25) of the capex (``capex_share``), as ``formulas/cost.py``'s
  capex per wall-clock hour times the horizon's hours. Hosting (per provisioned IT kW per
  month) and maintenance (percent of capex per year) are paid for the whole horizon too.
  Power is paid for the hours an owned GPU runs a job: n x hours x IT kW x PUE x $/kWh (idle
  draw is not modelled, as in cost.py). ``purchase_usd`` (the full capex) is what
  ``budget_usd`` caps.
* Rent: the catalog's cheapest offer of the type in ``fleet.rent.mode``, whole instances x
  $/instance-hour x the job's hours (per-second billing; ``cost.rented_cost_usd``). A job
  runs wholly on owned or wholly on rented GPUs (one job does not span two sites).
* Owned nodes are bought at day 0 and held over the whole horizon.

Rounding (schedules stay feasible): durations are rounded UP to whole slots, deadlines and
the horizon DOWN, training release days (``from_day``) UP, serving start days DOWN. Costs
use the exact durations, rounded up to whole cents per term.

Options are reduced exactly before the model is built: per (job, GPU type, GPU count) the
fastest layout of the training table (every other layout with that count takes longer on
the same GPUs, so costs at least as much and fits no schedule that the fastest does not);
then within (job, GPU type, owned/rented) an option is dropped when another is no worse in
GPUs, slots and cost; options that cannot meet the job's deadline window or the horizon, and
owned options larger than the stock, node or power limits allow, are dropped.

Entry points: ``plan`` (-> PlanResult: status, plan, alternatives, explanation, stats),
``plan_json`` / ``plan_text`` / ``plan_csv`` (renderers; ``PlanDocument`` is the JSON's schema),
``plan_separately`` (each job on its own fleet, for comparison), ``plan_sensitivity``,
``plan_tornado`` and ``perturbed_plan`` (re-planning with one input scaled: GPU prices,
electricity, each training job's tokens and each serving job's request rate, at most
MAX_JOB_INPUTS jobs by cost share; see ``sensitivity_inputs``), ``plan_slack`` (slack and
binding state of each limit at the best plan),
``build_instance`` / ``solve_instance`` (the plain-number model, used by the tests).

Top-K: a fleet is the owned node count per type plus the set of types rented. After the k-th
optimum is decoded, a no-good cut forbids that fleet and every fleet containing it (some
type must own fewer nodes, or some rented type must not be rented), and the model is solved
again: the K best distinct minimal fleets (a fleet plus idle nodes is no alternative), each
with its own optimal schedule.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping, Optional, Union

import numpy as np
from ortools.sat.python import cp_model
from pydantic import BaseModel, ConfigDict, Field

from optimizer.errors import ClusteroptError
from optimizer.units import SECONDS_PER_DAY, SECONDS_PER_HOUR

#: Integer money unit of the model: cents.
MONEY_UNITS_PER_USD = 100
HOURS_PER_DAY = SECONDS_PER_DAY / SECONDS_PER_HOUR
#: Grid steps the automatic rule picks from (days): 1 h, 2 h, 6 h, 12 h, 1, 2, 7, 14, 30 days.
GRID_STEPS_DAYS = (1 / 24, 2 / 24, 6 / 24, 12 / 24, 1.0, 2.0, 7.0, 14.0, 30.0)
#: The automatic grid is the finest step giving at most this many slots over the horizon.
MAX_SLOTS = 200
INT64_SAFE = 2**62
OBJECTIVES = ("total_cost", "makespan", "gpus")
#: Most seconds the binding-limit analysis may take after the plan is proven (limits left
#: unanswered are reported as undecided).
BINDING_TIME_S = 10.0
SCHEMA_VERSION = "1.0"
#: Limit families; their enforcement literals are named 'budget', 'power', 'max_nodes', 'stock:<gpu>',
#: 'deadline:<job>', 'after:<job>-><job>', 'horizon'.
LIMIT_FAMILIES = ("budget", "power", "max_nodes", "stock", "deadline", "after", "horizon")


from optimizer.formatting import plain, usd  # noqa: E402  (JSON values, money strings)
from optimizer.search.api import _Mapping  # noqa: E402  (results readable as attributes and as a mapping)


# ----------------------------------------------------------------------------------------
# data: the instance CP-SAT sees (plain numbers; tests build these directly)
# ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class GpuType:
    """One GPU type of the fleet: how it is bought (per node) and rented."""

    name: str
    gpus_per_node: int
    can_buy: bool = True
    purchase_usd_per_node: float = 0.0       # capex of one node (GPUs + server share)
    fixed_usd_per_node: float = 0.0          # capex share + hosting + maintenance over the horizon
    capex_share_usd_per_node: float = 0.0
    hosting_usd_per_node: float = 0.0
    maintenance_usd_per_node: float = 0.0
    it_w_per_gpu: int = 0                    # provisioned IT power per GPU, W (rounded up)
    power_usd_per_gpu_hour: float = 0.0      # energy of a busy owned GPU (IT W x PUE x $/kWh)
    available: Optional[int] = None          # purchasable GPUs
    rent_offer: Optional[str] = None         # None: cannot be rented
    rent_usd_per_gpu_hour: float = 0.0
    rent_gpus_per_instance: int = 1
    #: Every undominated rental offer of the type (issue 17): (USD per GPU-hour, GPUs per instance,
    #: most GPUs one job gets (None: no stated limit), label). A job rents the cheapest that runs it.
    rent_choices: tuple = ()
    gpu_purchase_usd_per_node: float = 0.0   # the GPUs' part of purchase_usd_per_node


@dataclass(frozen=True)
class Option:
    """One way to run a job: GPU type (index), owned or rented, GPUs, slots, cost in USD."""

    gpu: int
    owned: bool
    n_gpus: int
    slots: int
    cost_usd: float                          # power (owned) or rent (rented) of this run
    duration_days: float = 0.0
    detail: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def cost_units(self) -> int:
        return int(math.ceil(self.cost_usd * MONEY_UNITS_PER_USD - 1e-6))


@dataclass(frozen=True)
class Job:
    name: str
    kind: str                                # train | serve
    options: tuple[Option, ...]
    release: int = 0                         # earliest start slot (serving: its start slot)
    deadline: Optional[int] = None           # latest end slot
    after: tuple[int, ...] = ()              # indices of jobs that must end first
    deadline_days: Optional[float] = None
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Instance:
    name: str
    gpus: tuple[GpuType, ...]
    jobs: tuple[Job, ...]
    horizon_slots: int                       # H: serving runs to H, training ends by H
    step_days: float
    horizon_days: float
    budget_usd: Optional[float] = None
    max_power_w: Optional[int] = None
    max_nodes: Optional[int] = None
    max_rented_gpus: Optional[int] = None    # rented GPUs in use at once, all types
    notes: tuple[str, ...] = ()
    # the job scenarios and GPU options the options came from (for evaluate() checks)
    sources: Any = field(default=None, compare=False, repr=False)
    buy: Any = field(default=None, compare=False, repr=False)     # fleet.buy (investment inputs)

    def node_fixed_units(self, g: int) -> int:
        return int(math.ceil(self.gpus[g].fixed_usd_per_node * MONEY_UNITS_PER_USD - 1e-6))

    def node_capex_units(self, g: int) -> int:
        return int(math.ceil(self.gpus[g].purchase_usd_per_node * MONEY_UNITS_PER_USD - 1e-6))

    def budget_units(self) -> Optional[int]:
        return None if self.budget_usd is None else int(math.floor(self.budget_usd * MONEY_UNITS_PER_USD + 1e-6))


def interval_of(inst: Instance, j: int, o: Option, start: int) -> tuple[int, int]:
    """[start, end) slots that option o of job j occupies when started at ``start``."""
    if inst.jobs[j].kind == "serve":
        return inst.jobs[j].release, inst.horizon_slots
    return start, start + o.slots


# ----------------------------------------------------------------------------------------
# data: from a portfolio to an instance
# ----------------------------------------------------------------------------------------

def choose_step_days(horizon_days: float, given: Optional[float] = None) -> float:
    """The schedule grid: ``time_step_days`` if given, else the finest of GRID_STEPS_DAYS
    with at most MAX_SLOTS slots over the horizon (60 days -> 6 h, 180 days -> 1 day, 365 days -> 2 days)."""
    if given is not None:
        return float(given)
    for step in GRID_STEPS_DAYS:
        if horizon_days / step <= MAX_SLOTS + 1e-9:
            return step
    return horizon_days / MAX_SLOTS


def slots_up(days: float, step: float) -> int:
    return max(1, int(math.ceil(days / step - 1e-9)))


def slots_down(days: float, step: float) -> int:
    return int(math.floor(days / step + 1e-9))


def fleet_gpu_types(portfolio, catalog=None) -> tuple[list, list[GpuType], list[str]]:
    """The fleet's GPU types: catalog GpuOptions (for the searches) and their economics.

    A type can be bought when the catalog has a purchase price and ``fleet.buy.allowed``;
    rented when ``fleet.rent.allowed`` and an offer prices it in ``fleet.rent.mode``. Types
    that can be neither are left out with a note.
    """
    from optimizer.catalog import load_catalog
    from optimizer.formulas.cost import owned_usd_per_gpu_hour, SERVER_POWER_OVERHEAD
    from optimizer.portfolio_schema import job_scenario
    from optimizer.search.api import gpu_options
    from optimizer.search.space import GpuOption

    from optimizer.catalog import load_system_catalog

    cat = catalog or load_catalog()
    syscat = load_system_catalog()
    p = portfolio
    buy, rent = p.fleet.buy, p.fleet.rent
    sc_owned = job_scenario(p, 0, pricing_mode="owned")
    owned_opts, owned_notes = gpu_options(sc_owned, cat)
    rent_opts, rent_notes = ([], [])
    if rent.allowed:
        rent_opts, rent_notes = gpu_options(job_scenario(p, 0, pricing_mode=rent.mode), cat)
    owned_by = {g.name: g for g in owned_opts} if buy.allowed else {}
    rent_by: dict = {}
    rent_all: dict = {}
    for g in rent_opts:                       # the first of a type is its cheapest offer
        rent_by.setdefault(g.name, g)
        rent_all.setdefault(g.name, []).append((g.usd_per_gpu_hour, g.gpus_per_instance, g.available, g.offer))
    names = [g.name for g in owned_opts] + [g.name for g in rent_opts if g.name not in {o.name for o in owned_opts}]
    available = {cat.resolve_gpu_id(k): v for k, v in p.fleet.available.items()}
    server = {cat.resolve_gpu_id(k): v for k, v in buy.server_usd_per_node.items()}
    hours = p.horizon() * HOURS_PER_DAY
    options, types, notes = [], [], []
    assumed, server_note = [], ""
    for name in names:
        if name not in owned_by and name not in rent_by:
            continue
        acc = cat.accelerator(name)
        hw = cat.hardware(name)
        gpn = max(1, hw.gpus_per_node)
        kw = {}
        if name in owned_by:
            extra, why = _server_usd_per_node(name, acc, server, syscat)
            if why:
                assumed.append(name)
                server_note = why
            parts = owned_usd_per_gpu_hour(acc.purchase_usd, acc.tdp_w or 0.0, 1.0, years=buy.years, pue=buy.pue,
                                           usd_per_kwh=buy.usd_per_kwh, hosting_usd_per_kw_month=buy.hosting_usd_per_kw_month,
                                           maintenance_pct_per_year=buy.maintenance_pct_per_year,
                                           other_capex_usd_per_gpu=extra / gpn)
            it_w = (acc.tdp_w or 0.0) * (1.0 + SERVER_POWER_OVERHEAD)
            kw = dict(
                can_buy=True,
                purchase_usd_per_node=gpn * acc.purchase_usd + extra,
                capex_share_usd_per_node=gpn * float(parts.capex) * hours,
                hosting_usd_per_node=gpn * float(parts.hosting) * hours,
                maintenance_usd_per_node=gpn * float(parts.maintenance) * hours,
                it_w_per_gpu=int(math.ceil(it_w - 1e-9)),
                power_usd_per_gpu_hour=float(parts.power),
                available=available.get(name),
            )
            kw["fixed_usd_per_node"] = (kw["capex_share_usd_per_node"] + kw["hosting_usd_per_node"]
                                        + kw["maintenance_usd_per_node"])
            kw["gpu_purchase_usd_per_node"] = gpn * acc.purchase_usd
        else:
            kw = dict(can_buy=False)
        if name in rent_by:
            r = rent_by[name]
            kw.update(rent_offer=r.offer, rent_usd_per_gpu_hour=r.usd_per_gpu_hour,
                      rent_gpus_per_instance=r.gpus_per_instance, rent_choices=tuple(rent_all[name]))
        types.append(GpuType(name=name, gpus_per_node=gpn, **kw))
        src = owned_by.get(name) or rent_by[name]
        options.append(GpuOption(index=len(options), name=name, hardware=hw, usd_per_gpu_hour=src.usd_per_gpu_hour,
                                 gpus_per_instance=src.gpus_per_instance, usd_per_instance_hour=src.usd_per_instance_hour,
                                 offer=src.offer, available=None))
    if assumed:
        notes.append(", ".join(assumed) + ": " + server_note)
    notes += [n.replace("left out of owned pricing", "cannot be bought") for n in owned_notes if buy.allowed]
    notes += [n.replace("; left out", "; cannot be rented") for n in rent_notes]
    notes = list(dict.fromkeys(notes))
    return options, types, notes


def _server_usd_per_node(name: str, acc, given: Mapping[str, float], syscat) -> tuple[float, str]:
    """Capex of a node beyond its GPUs, and a note on where it came from.

    ``fleet.buy.server_usd_per_node`` when given; 0 when the catalog purchase price includes
    the server; else the host row's ``server_usd_excl_gpus`` (catalog/hosts.csv), else the
    TCO parameter ``server_usd_excl_gpus_per_node`` (catalog/tco_parameters.csv, an assumption
    there), as the owned-cluster TCO of search/system.py does.
    """
    if name in given:
        return float(given[name]), ""
    if acc.purchase_includes_server:
        return 0.0, ""
    host = syscat.default_host(acc.id)
    if host is not None and host.server_usd_excl_gpus is not None:
        return float(host.server_usd_excl_gpus), ""
    v = syscat.tco_value("server_usd_excl_gpus_per_node")
    return v, (f"server capex ${v:,.0f} per node beyond the GPUs from catalog/tco_parameters.csv "
               f"(an assumption there); set fleet.buy.server_usd_per_node to override")


_TRAIN_CACHE: dict[str, dict] = {}
_TRAIN_CACHE_MAX = 64


def training_layouts(scenario, gpus) -> dict:
    """Per (GPU type, GPU count): the fastest feasible layout of the training table.

    Returns columns gpu (index), n_gpus, wall_clock_days, row config and figures. Cached by
    the scenario's content and the GPU list (re-planning with other prices reuses it).
    """
    from optimizer.search.tables import build_table

    key = scenario.model_dump_json() + "|" + ",".join(g.name for g in gpus)
    hit = _TRAIN_CACHE.get(key)
    if hit is not None:
        return hit
    table = build_table(scenario.spec(), scenario, gpus)
    c = table.cols
    ok = ~(table.violations["memory"] | table.violations["max_gpus"] | table.violations["min_gpus"])
    rows = np.nonzero(ok)[0]
    out = {"gpu": [], "n_gpus": [], "wall_clock_days": [], "config": [], "figures": []}
    if len(rows):
        # fastest per (gpu, n): sort by (gpu, n, wall-clock, cost, row) and take the first of each group
        order = np.lexsort((rows, c["cost_units"][rows], c["wall_clock_days"][rows], c["n_gpus"][rows], c["gpu"][rows]))
        r_sorted = rows[order]
        g_s, n_s = c["gpu"][r_sorted], c["n_gpus"][r_sorted]
        first = np.ones(len(r_sorted), dtype=bool)
        first[1:] = (g_s[1:] != g_s[:-1]) | (n_s[1:] != n_s[:-1])
        for r in r_sorted[first]:
            r = int(r)
            out["gpu"].append(int(c["gpu"][r]))
            out["n_gpus"].append(int(c["n_gpus"][r]))
            out["wall_clock_days"].append(float(c["wall_clock_days"][r]))
            out["config"].append(table.config(r))
            out["figures"].append({k: float(c[k][r]) for k in ("mfu", "step_time_s", "tokens_per_s", "memory_per_gpu_bytes",
                                                                  "train_days") if k in c}
                                  | {"grad_accum": int(c["grad_accum"][r]), "global_batch": int(c["global_batch"][r])})
    out["rows"] = len(table)
    out["feasible_rows"] = int(ok.sum())
    if len(_TRAIN_CACHE) >= _TRAIN_CACHE_MAX:
        _TRAIN_CACHE.pop(next(iter(_TRAIN_CACHE)))
    _TRAIN_CACHE[key] = out
    return out


def owned_upper_gpus(portfolio_buy, t: GpuType) -> Optional[int]:
    """Most GPUs of type t the limits could ever allow owning (prunes owned options; exact)."""
    caps = []
    if not t.can_buy:
        return 0
    if t.available is not None:
        caps.append(t.available)
    if portfolio_buy.max_nodes is not None:
        caps.append(portfolio_buy.max_nodes * t.gpus_per_node)
    if portfolio_buy.max_power_kw is not None and t.it_w_per_gpu > 0:
        caps.append(int(portfolio_buy.max_power_kw * 1000 // (t.it_w_per_gpu * t.gpus_per_node)) * t.gpus_per_node)
    if portfolio_buy.budget_usd is not None and t.purchase_usd_per_node > 0:
        caps.append(int(portfolio_buy.budget_usd // t.purchase_usd_per_node) * t.gpus_per_node)
    return min(caps) if caps else None


def reduce_options(opts: list[Option]) -> list[Option]:
    """Drop every option that another of the same GPU type and source beats or ties in GPUs,
    slots and cost (exact: swapping it in keeps any schedule feasible and costs no more)."""
    out: list[Option] = []
    groups: dict[tuple[int, bool], list[Option]] = {}
    for o in opts:
        groups.setdefault((o.gpu, o.owned), []).append(o)
    for key in sorted(groups, key=lambda k: (k[0], not k[1])):
        grp = sorted(groups[key], key=lambda o: (o.n_gpus, o.slots, o.cost_units))
        kept: list[Option] = []
        for o in grp:
            if any(k.n_gpus <= o.n_gpus and k.slots <= o.slots and k.cost_units <= o.cost_units for k in kept):
                continue
            kept.append(o)
        out += kept
    return out


def _price(factors: Mapping[str, float], kind: str, gpu: str) -> float:
    return float(factors.get(f"{kind}.{gpu}", 1.0)) * float(factors.get(f"price.{gpu}", 1.0))


def build_instance(portfolio, *, catalog=None, prices: Optional[Mapping[str, float]] = None,
                   prune: bool = True) -> Instance:
    """The portfolio as plain numbers: GPU economics, each job's reduced options, the grid.

    ``prices`` scales catalog prices for sensitivity analysis: ``purchase.<gpu>``,
    ``rent.<gpu>`` or ``price.<gpu>`` (both) -> factor. ``prune=False`` keeps options that
    cannot meet their deadline (explanations need them to compute relaxations).
    """
    from optimizer.portfolio_schema import load_portfolio, job_scenario

    p = load_portfolio(portfolio)
    factors = dict(prices or {})
    gpu_opts, types, notes = fleet_gpu_types(p, catalog)
    if not types:
        raise ClusteroptError("fleet.gpus", "no GPU type can be bought or rented",
                              "list GPUs with a catalog purchase price or a rent offer in fleet.rent.mode")
    types = [_scaled(t, factors) for t in types]
    horizon = p.horizon()
    step = choose_step_days(horizon, p.time_step_days)
    H = slots_down(horizon, step)
    if H < 1:
        raise ClusteroptError("time_step_days", f"{step:g} days is longer than the horizon ({horizon:g} days)",
                              "use a finer step")
    names = [j.name for j in p.jobs]
    # with pruning, the fleet limits cap every job's GPU count (exact: no plan can use more);
    # explanations need the options beyond those limits to say how far a limit must move
    max_gpus_any = _job_gpu_cap(p, types) if prune else None
    jobs, scenarios = [], []
    for i, js in enumerate(p.jobs):
        # the searches see rental prices; the portfolio prices owned and rented GPUs itself, and a
        # job's durations do not depend on the price
        sc = job_scenario(p, i, pricing_mode=p.fleet.rent.mode, max_gpus=max_gpus_any)
        scenarios.append(sc)
        release = slots_up(js.from_day, step) if js.train is not None and js.from_day > 0 else 0
        if js.serve is not None:
            release = slots_down(js.from_day, step)
        deadline = slots_down(js.deadline_days, step) if js.deadline_days is not None else None
        latest = min(H, deadline) if deadline is not None else H
        if js.train is not None:
            opts, jnotes = _training_options(p, sc, gpu_opts, types, step)
            if not opts and sc.constraints.max_gpus is not None:
                jnotes = _capped_note(p, sc, gpu_opts, types, step, js.max_gpus is not None)
        else:
            opts, jnotes = _serving_options(p, i, sc, gpu_opts, types, horizon - js.from_day, H - release)
        if prune:
            window = latest - release
            opts = [o for o in opts if js.serve is not None or o.slots <= window]
            opts = [o for o in opts if not o.owned or _fits_owned(p.fleet.buy, types[o.gpu], o.n_gpus)]
            cap = p.fleet.rent.max_gpus
            opts = [o for o in opts if o.owned or cap is None or o.n_gpus <= cap]
        opts = reduce_options(opts)
        jobs.append(Job(name=js.name, kind=js.kind, options=tuple(opts), release=release, deadline=deadline,
                        after=tuple(names.index(a) for a in js.start_after), deadline_days=js.deadline_days,
                        notes=tuple(jnotes)))
    buy = p.fleet.buy
    return Instance(name=p.name, gpus=tuple(types), jobs=tuple(jobs), horizon_slots=H, step_days=step,
                    horizon_days=horizon, budget_usd=buy.budget_usd if buy.allowed else None,
                    max_power_w=None if buy.max_power_kw is None else int(math.floor(buy.max_power_kw * 1000 + 1e-9)),
                    max_nodes=buy.max_nodes, max_rented_gpus=p.fleet.rent.max_gpus, notes=tuple(notes),
                    sources={"scenarios": scenarios, "gpu_options": gpu_opts}, buy=buy)


def _job_gpu_cap(p, types: list[GpuType]) -> Optional[int]:
    """Most GPUs any job could get from the fleet rules (None: no rule caps it)."""
    from optimizer.portfolio_schema import DEFAULT_MAX_GPUS_PER_JOB

    own = [owned_upper_gpus(p.fleet.buy, t) for t in types if t.can_buy]
    rent_ok = p.fleet.rent.allowed and any(t.rent_offer for t in types)
    caps = own + ([p.fleet.rent.max_gpus] if rent_ok else [])
    if not caps or any(c is None for c in caps):
        return None
    return min(max(caps), DEFAULT_MAX_GPUS_PER_JOB)


def _scaled(t: GpuType, f: Mapping[str, float]) -> GpuType:
    if not f:
        return t
    from dataclasses import replace

    kb, kr = _price(f, "purchase", t.name), _price(f, "rent", t.name)
    return replace(t, purchase_usd_per_node=t.purchase_usd_per_node * kb,
                   capex_share_usd_per_node=t.capex_share_usd_per_node * kb,
                   maintenance_usd_per_node=t.maintenance_usd_per_node * kb,
                   fixed_usd_per_node=(t.capex_share_usd_per_node + t.maintenance_usd_per_node) * kb + t.hosting_usd_per_node,
                   gpu_purchase_usd_per_node=t.gpu_purchase_usd_per_node * kb,
                   rent_usd_per_gpu_hour=t.rent_usd_per_gpu_hour * kr,
                   rent_choices=tuple((rate * kr, gpi, cap, label) for rate, gpi, cap, label in t.rent_choices))


def _fits_owned(buy, t: GpuType, n: int) -> bool:
    cap = owned_upper_gpus(buy, t)
    return t.can_buy and (cap is None or n <= cap)


def _run_costs(t: GpuType, n: int, hours: float) -> tuple[Optional[float], Optional[float]]:
    """(owned power USD, rented USD) of n GPUs of type t busy for ``hours``; rented on the
    cheapest offer that can place n GPUs (``rent_offer_for``)."""
    owned = n * hours * t.power_usd_per_gpu_hour if t.can_buy else None
    best = rent_offer_for(t, n, hours)
    return owned, (None if best is None else best[0])


def rent_offer_for(t: GpuType, n: int, hours: float) -> Optional[tuple[float, str, float]]:
    """(rented USD, offer label, USD per GPU-hour) of n GPUs of type t for ``hours`` on the cheapest
    of its offers that can place them: within one instance, or on a cluster offer up to its
    largest allocation (issue 17; a scenario-given price has no instance rule). None if none can."""
    from optimizer.formulas.cost import rented_cost_usd

    if t.rent_offer is None:
        return None
    choices = t.rent_choices or ((t.rent_usd_per_gpu_hour, t.rent_gpus_per_instance, None, t.rent_offer),)
    best = None
    for rate, gpi, cap, label in choices:
        if n > gpi and cap is not None and n > cap:
            continue
        usd = float(rented_cost_usd(n, hours, rate * gpi, gpi))
        if best is None or usd < best[0]:
            best = (usd, label, rate)
    return best


def _training_options(p, sc, gpu_opts, types: list[GpuType], step: float) -> tuple[list[Option], list[str]]:
    lay = training_layouts(sc, gpu_opts)
    opts = []
    for g, n, days, cfg, fig in zip(lay["gpu"], lay["n_gpus"], lay["wall_clock_days"], lay["config"], lay["figures"]):
        t = types[g]
        owned, rented = _run_costs(t, n, days * HOURS_PER_DAY)
        detail = {"config": cfg, **fig}
        for is_owned, cost in ((True, owned), (False, rented)):
            if cost is None:
                continue
            opts.append(Option(gpu=g, owned=is_owned, n_gpus=n, slots=slots_up(days, step), cost_usd=cost,
                               duration_days=days, detail=detail))
    notes = [] if opts else [f"no layout of {sc.name} fits in memory on any fleet GPU"]
    return opts, notes


def _capped_note(p, sc, gpu_opts, types, step, own_cap: bool) -> list[str]:
    """Why a training job has no option under its GPU-count cap (the job's ``max_gpus``, else the
    most the fleet limits allow): "fits in memory" only when no layout fits at any GPU count
    up to DEFAULT_MAX_GPUS_PER_JOB; else the cap and the fewest GPUs a layout needs."""
    from optimizer.portfolio_schema import DEFAULT_MAX_GPUS_PER_JOB

    cap = int(sc.constraints.max_gpus)
    if cap >= DEFAULT_MAX_GPUS_PER_JOB:
        return [f"no layout of {sc.name} fits in memory on any fleet GPU"]
    full = sc.with_overrides({"constraints.max_gpus": DEFAULT_MAX_GPUS_PER_JOB})
    opts, notes = _training_options(p, full, gpu_opts, types, step)
    if not opts:
        return notes
    why = "the job's max_gpus" if own_cap else "the most that budget, power, max_nodes, stock and rent max_gpus allow"
    return [f"no layout of {sc.name} fits on at most {cap} GPUs ({why}); its smallest layout that fits "
            f"in memory needs {min(o.n_gpus for o in opts)} GPUs"]


def _serving_options(p, i, sc, gpu_opts, types, days, slots) -> tuple[list[Option], list[str]]:
    """Per GPU type, the serving fleet the serving planner finds (see serving_fleets)."""
    opts, notes = [], []
    for g, gpus, detail in serving_fleets(sc, gpu_opts, types):
        t = types[g]
        owned, rented = _run_costs(t, gpus, days * HOURS_PER_DAY)
        for is_owned, cost in ((True, owned), (False, rented)):
            if cost is None:
                continue
            opts.append(Option(gpu=g, owned=is_owned, n_gpus=gpus, slots=slots, cost_usd=cost,
                               duration_days=days, detail=detail))
    if not opts:
        notes.append(f"no serving fleet for {sc.name} on any fleet GPU")
    return opts, notes


_SERVE_CACHE: dict[str, list] = {}


def serving_fleets(scenario, gpu_opts, types: list[GpuType]) -> list[tuple[int, int, dict]]:
    """(GPU index, GPUs, detail) per GPU type: the fewest-GPU fleet of that type that the serving
    planner (``search.serving.solve_serving``) proves carries the request rate under the SLOs
    and the redundancy rule.

    Every GPU of a serving fleet is busy for the whole horizon, so on one GPU type the fleet
    with the fewest GPUs costs least whether owned (power) or rented (GPU-hours, whole
    instances): one option per type is exact. The planner runs with objective 'gpus' (fewest
    GPUs rented, then fewest in replicas; instances grow with GPUs, so this is the fewest GPUs
    in replicas). Fleets mixing GPU types within one serving job are not offered.
    """
    from optimizer.search.serving import solve_serving

    out = []
    for g in gpu_opts:
        t = types[g.index]
        mode = scenario.pricing.mode if t.rent_offer is not None else "owned"
        sc = scenario.with_overrides({"constraints.gpus": [g.name], "constraints.available": {},
                                      "pricing.mode": mode, "objective": "gpus", "top_k": 1})
        key = sc.model_dump_json()
        hit = _SERVE_CACHE.get(key)
        if hit is None:
            res = solve_serving(sc, top_k=1, objective="gpus", time_limit_s=10.0)
            hit = []
            if len(res.configs):
                row = res.configs.iloc[0]
                reps = list(row["replicas"])
                layout = " + ".join(f"{r['count']} x tp{r['tp']}" + (f"pp{r['pp']}" if r["pp"] > 1 else "")
                                    + f" {r['weights']}/{r['kv']} b{r['batch']}" for r in reps)
                hit = [(int(row["n_gpus_used"]),
                        {"replicas": reps, "n_replicas": int(row["n_replicas"]), "layout": layout,
                         "capacity_requests_per_s": float(row["capacity_requests_per_s"]),
                         "worst_ttft_s": float(row["worst_ttft_s"]), "worst_itl_s": float(row["worst_itl_s"]),
                         "serving_status": res.status})]
            _SERVE_CACHE[key] = hit
        out += [(g.index, n, d) for n, d in hit]
    return out


# ----------------------------------------------------------------------------------------
# model
# ----------------------------------------------------------------------------------------

class _Model:
    """The CP-SAT model of an instance with one enforcement literal per limit (see notation)."""

    def __init__(self, inst: Instance, objective: str, *, rent_peaks: bool = False):
        self.inst = inst
        m = self.m = cp_model.CpModel()
        H = inst.horizon_slots
        G = len(inst.gpus)
        # variables
        self.x = [[m.new_bool_var(f"x[{j},{k}]") for k in range(len(job.options))] for j, job in enumerate(inst.jobs)]
        # starts may pass H only when the horizon literal is dropped (explanations); then every
        # training job in sequence after H still fits below H + the sum of the longest options
        tail = sum(max((o.slots for o in job.options), default=0) for job in inst.jobs if job.kind == "train")
        self.s = []
        for j, job in enumerate(inst.jobs):
            if job.kind == "serve":
                self.s.append(m.new_constant(job.release))
            else:
                lo = min(job.release, H)
                self.s.append(m.new_int_var(lo, H + tail, f"s[{j}]"))
        self.end = [self.s[j] + sum(o.slots * self.x[j][k] for k, o in enumerate(job.options))
                    if job.kind == "train" else None for j, job in enumerate(inst.jobs)]
        ub = [0] * G
        for j, job in enumerate(inst.jobs):
            per = [0] * G
            for o in job.options:
                if o.owned:
                    per[o.gpu] = max(per[o.gpu], o.n_gpus)
            for g in range(G):
                ub[g] += per[g]
        self.nodes = [m.new_int_var(0, -(-ub[g] // inst.gpus[g].gpus_per_node) if inst.gpus[g].can_buy else 0,
                                    f"N[{g}]") for g in range(G)]
        self.lits: dict[str, cp_model.IntVar] = {}
        # constraints
        for j, xs in enumerate(self.x):
            m.add_exactly_one(xs) if xs else m.add_bool_or([])
        self._add_capacity(rent_peaks)
        self._add_deadlines()
        self._add_precedence()
        self._add_horizon()
        self._add_budget()
        self._add_power()
        self._add_max_nodes()
        self._add_stock()
        # objective expressions
        self.cost = (sum(inst.node_fixed_units(g) * self.nodes[g] for g in range(G))
                     + sum(o.cost_units * self.x[j][k] for j, job in enumerate(inst.jobs) for k, o in enumerate(job.options)))
        train = [e for e in self.end if e is not None]
        self.makespan = m.new_int_var(0, H + 2 * tail, "makespan")    # ends pass H only with the horizon dropped
        for e in train:
            m.add(self.makespan >= e)
        self.gpus_expr = (sum(inst.gpus[g].gpus_per_node * self.nodes[g] for g in range(G))
                          + (sum(self.rent_cap) if rent_peaks else 0))
        self.objective = objective
        _check_headroom(inst)

    def lit(self, name: str):
        v = self.lits.get(name)
        if v is None:
            v = self.lits[name] = self.m.new_bool_var(f"a[{name}]")
        return v

    def _add_capacity(self, rent_peaks: bool) -> None:
        """Cumulative per GPU type: owned jobs running at once fit in the owned nodes."""
        inst, m = self.inst, self.m
        G = len(inst.gpus)
        owned_iv = [[] for _ in range(G)]
        rent_iv = [[] for _ in range(G)]
        for j, job in enumerate(inst.jobs):
            for k, o in enumerate(job.options):
                if job.kind == "serve":
                    size = inst.horizon_slots - job.release
                    if size <= 0:
                        continue
                    iv = m.new_optional_fixed_size_interval_var(job.release, size, self.x[j][k], f"iv[{j},{k}]")
                else:
                    iv = m.new_optional_fixed_size_interval_var(self.s[j], o.slots, self.x[j][k], f"iv[{j},{k}]")
                (owned_iv if o.owned else rent_iv)[o.gpu].append((iv, o.n_gpus))
        for g in range(G):
            if owned_iv[g]:
                m.add_cumulative([iv for iv, _ in owned_iv[g]], [n for _, n in owned_iv[g]],
                                 inst.gpus[g].gpus_per_node * self.nodes[g])
        self._add_energy_cuts()
        all_rent = [(iv, n) for g in range(G) for iv, n in rent_iv[g]]
        self.rent_total = None
        if inst.max_rented_gpus is not None and all_rent:
            # the cap is a variable pinned by the literal, so that explanations can drop it
            hi = max(inst.max_rented_gpus, sum(n for _, n in all_rent))
            self.rent_total = m.new_int_var(0, hi, "R_all")
            m.add_cumulative([iv for iv, _ in all_rent], [n for _, n in all_rent], self.rent_total)
            m.add(self.rent_total <= inst.max_rented_gpus).only_enforce_if(self.lit("max_rented_gpus"))
        self.rent_cap = []
        if rent_peaks:
            for g in range(G):
                hi = sum(n for _, n in rent_iv[g])
                r = m.new_int_var(0, hi, f"R[{g}]")
                if rent_iv[g]:
                    m.add_cumulative([iv for iv, _ in rent_iv[g]], [n for _, n in rent_iv[g]], r)
                self.rent_cap.append(r)
            self._add_rent_cuts()

    def _add_energy_cuts(self) -> None:
        """Redundant linear cuts (implied by the cumulative): the GPU-slots of owned jobs that
        must run inside [0, D) fit in gpn[g] N[g] D, for D = each deadline and the horizon
        (enforced only while the deadlines / horizon that put those jobs inside hold). They give the LP relaxation the link between work and nodes that the cumulative hides."""
        inst, m = self.inst, self.m
        H = inst.horizon_slots
        cutoffs = sorted({min(j.deadline, H) for j in inst.jobs if j.kind == "train" and j.deadline is not None} | {H})
        for g, t in enumerate(inst.gpus):
            if not t.can_buy:
                continue
            for j, job in enumerate(inst.jobs):      # each owned job alone fits in the nodes
                terms = [(o.n_gpus, self.x[j][k]) for k, o in enumerate(job.options) if o.owned and o.gpu == g]
                if terms:
                    m.add(sum(c * x for c, x in terms) <= t.gpus_per_node * self.nodes[g])
            for D in cutoffs:
                terms, need = [], []
                for j, job in enumerate(inst.jobs):
                    if job.kind == "serve":
                        size = max(0, min(D, H) - job.release)
                        terms += [(o.n_gpus * size, self.x[j][k]) for k, o in enumerate(job.options)
                                  if o.owned and o.gpu == g and size > 0]
                    elif job.deadline is not None and job.deadline <= D:
                        need.append(self.lit(f"deadline:{job.name}"))
                        terms += [(o.n_gpus * o.slots, self.x[j][k]) for k, o in enumerate(job.options)
                                  if o.owned and o.gpu == g]
                    elif D == H:
                        need.append(self.lit("horizon"))
                        terms += [(o.n_gpus * o.slots, self.x[j][k]) for k, o in enumerate(job.options)
                                  if o.owned and o.gpu == g]
                if terms:
                    m.add(sum(c * x for c, x in terms) <= t.gpus_per_node * D * self.nodes[g]).only_enforce_if(
                        sorted(set(need), key=lambda v: v.index))

    def _add_rent_cuts(self) -> None:
        """The rented peak per type (objective 'gpus'): the same redundant cuts as the owned nodes,
        each rented job alone fits under R[g], and the rented GPU-slots due by D fit in R[g] D."""
        inst, m = self.inst, self.m
        H = inst.horizon_slots
        cutoffs = sorted({min(j.deadline, H) for j in inst.jobs if j.kind == "train" and j.deadline is not None} | {H})
        for g in range(len(inst.gpus)):
            r = self.rent_cap[g]
            for j, job in enumerate(inst.jobs):
                terms = [(o.n_gpus, self.x[j][k]) for k, o in enumerate(job.options) if not o.owned and o.gpu == g]
                if terms:
                    m.add(sum(c * x for c, x in terms) <= r)
            for D in cutoffs:
                terms, need = [], []
                for j, job in enumerate(inst.jobs):
                    rented = [(o, k) for k, o in enumerate(job.options) if not o.owned and o.gpu == g]
                    if not rented:
                        continue
                    if job.kind == "serve":
                        size = max(0, D - job.release)
                        terms += [(o.n_gpus * size, self.x[j][k]) for o, k in rented if size > 0]
                    elif job.deadline is not None and job.deadline <= D:
                        need.append(self.lit(f"deadline:{job.name}"))
                        terms += [(o.n_gpus * o.slots, self.x[j][k]) for o, k in rented]
                    elif D == H:
                        need.append(self.lit("horizon"))
                        terms += [(o.n_gpus * o.slots, self.x[j][k]) for o, k in rented]
                if terms:
                    m.add(sum(c * x for c, x in terms) <= D * r).only_enforce_if(sorted(set(need), key=lambda v: v.index))

    def _add_deadlines(self) -> None:
        for j, job in enumerate(self.inst.jobs):
            if job.kind == "train" and job.deadline is not None:
                self.m.add(self.end[j] <= job.deadline).only_enforce_if(self.lit(f"deadline:{job.name}"))

    def _add_precedence(self) -> None:
        for j, job in enumerate(self.inst.jobs):
            for i in job.after:
                self.m.add(self.s[j] >= self.end[i]).only_enforce_if(
                    self.lit(f"after:{self.inst.jobs[i].name}->{job.name}"))

    def _add_horizon(self) -> None:
        if any(job.kind == "train" for job in self.inst.jobs):
            a = self.lit("horizon")
            for j, job in enumerate(self.inst.jobs):
                if job.kind == "train":
                    self.m.add(self.end[j] <= self.inst.horizon_slots).only_enforce_if(a)

    def capex_expr(self):
        return sum(self.inst.node_capex_units(g) * self.nodes[g] for g in range(len(self.inst.gpus)))

    def power_expr(self):
        return sum(t.gpus_per_node * t.it_w_per_gpu * self.nodes[g] for g, t in enumerate(self.inst.gpus))

    def _add_budget(self) -> None:
        b = self.inst.budget_units()
        if b is not None:
            self.m.add(self.capex_expr() <= b).only_enforce_if(self.lit("budget"))

    def _add_power(self) -> None:
        if self.inst.max_power_w is not None:
            self.m.add(self.power_expr() <= self.inst.max_power_w).only_enforce_if(self.lit("power"))

    def _add_max_nodes(self) -> None:
        if self.inst.max_nodes is not None:
            self.m.add(sum(self.nodes) <= self.inst.max_nodes).only_enforce_if(self.lit("max_nodes"))

    def _add_stock(self) -> None:
        for g, t in enumerate(self.inst.gpus):
            if t.can_buy and t.available is not None:
                self.m.add(t.gpus_per_node * self.nodes[g] <= t.available).only_enforce_if(self.lit(f"stock:{t.name}"))

    # -- objective -------------------------------------------------------------------------
    def primary(self):
        if self.objective == "makespan":
            return self.makespan
        if self.objective == "gpus":
            return self.gpus_expr
        return self.cost

    def fleet_key(self, solver) -> tuple:
        inst = self.inst
        nodes = tuple(int(solver.value(v)) for v in self.nodes)
        rented = tuple(any(solver.boolean_value(self.x[j][k]) for j, job in enumerate(inst.jobs)
                           for k, o in enumerate(job.options) if not o.owned and o.gpu == g)
                       for g in range(len(inst.gpus)))
        return nodes, rented

    def forbid_fleet(self, key) -> None:
        """No-good cut on fleet ``key`` and every fleet containing it: some type owns fewer
        nodes than in ``key``, or some type rented in ``key`` is not rented. A fleet plus
        idle nodes is not an alternative; the K fleets returned are the K best minimal ones."""
        nodes, rented = key
        m, inst = self.m, self.inst
        diffs = []
        for g, v in enumerate(self.nodes):
            if nodes[g] > 0:
                d = m.new_bool_var(f"fewer_nodes[{g}]")
                m.add(v <= nodes[g] - 1).only_enforce_if(d)
                diffs.append(d)
        for g in range(len(inst.gpus)):
            if not rented[g]:
                continue
            xs = [self.x[j][k] for j, job in enumerate(inst.jobs) for k, o in enumerate(job.options)
                  if not o.owned and o.gpu == g]
            d = m.new_bool_var(f"no_rent[{g}]")          # d => no job rents type g
            for x in xs:
                m.add_implication(d, ~x)
            diffs.append(d)
        m.add_bool_or(diffs)


def _check_headroom(inst: Instance) -> None:
    """Fail loudly if an objective or limit sum could pass int64 (cents; see notation)."""
    total = sum(max((o.cost_units for o in job.options), default=0) for job in inst.jobs)
    for g in range(len(inst.gpus)):
        ub_nodes = sum(max((o.n_gpus for o in job.options if o.owned and o.gpu == g), default=0) for job in inst.jobs)
        total += ub_nodes * max(inst.node_fixed_units(g), inst.node_capex_units(g))
    if total * 4 >= INT64_SAFE:
        raise OverflowError(f"portfolio {inst.name}: cost sums up to {total} cents, too close to int64")


def _solver(time_limit_s: float, workers: int) -> cp_model.CpSolver:
    s = cp_model.CpSolver()
    s.parameters.max_time_in_seconds = max(0.01, time_limit_s)
    s.parameters.num_workers = workers
    # full LP relaxation of the cumulative and energy cuts: it proves the cost optimum far sooner
    # on these models (6 concurrent jobs: ~0.3 s against 1.5-4 s at the default level 1)
    s.parameters.linearization_level = 2
    return s


_STATUS = {cp_model.OPTIMAL: "optimal", cp_model.FEASIBLE: "feasible", cp_model.INFEASIBLE: "infeasible",
           cp_model.MODEL_INVALID: "invalid", cp_model.UNKNOWN: "unknown"}


@dataclass
class _Solution:
    choice: list[int]             # option index per job
    starts: list[int]
    nodes: list[int]
    key: tuple
    objective: tuple[int, ...]    # (primary, cost) in integer units
    status: str
    proof_s: float = 0.0          # wall time of the solves that found and proved it (no compaction)


def _lex_solve(model: _Model, enforce: dict[str, int], deadline_t: float, workers: int,
               compact: bool = True) -> Optional[_Solution]:
    """Primary objective, then cost (when the primary is not cost), then the earliest schedule
    for the chosen options and fleet (sum of end slots; it changes no cost)."""
    t0 = time.perf_counter()
    work = model.m.clone()
    for name, v in enforce.items():
        lit = model.lits.get(name)
        if lit is not None:
            work.add(lit == v)
    status = "optimal"
    keys = [model.primary()] + ([model.cost] if model.objective != "total_cost" else [])
    vals = []
    solver = None
    for expr in keys:
        work.minimize(expr)
        solver = _solver(deadline_t - time.perf_counter(), workers)
        st = solver.solve(work)
        if st == cp_model.INFEASIBLE:
            return None
        if st not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
            return _Solution([], [], [], (), (), "unknown") if not vals else None
        if st == cp_model.FEASIBLE:
            status = "feasible"
        v = int(round(solver.objective_value))
        vals.append(v)
        work.add(expr == v) if st == cp_model.OPTIMAL else work.add(expr <= v)
    sol = _decode(model, solver, tuple(vals), status)
    sol.proof_s = time.perf_counter() - t0
    if compact and model.end and any(e is not None for e in model.end):
        sol = _compact(model, work, sol, deadline_t, workers) or sol
    return sol


def _decode(model: _Model, solver, vals, status) -> _Solution:
    choice = [next(k for k, x in enumerate(xs) if solver.boolean_value(x)) for xs in model.x]
    starts = [int(solver.value(s)) for s in model.s]
    nodes = [int(solver.value(v)) for v in model.nodes]
    return _Solution(choice, starts, nodes, model.fleet_key(solver), tuple(vals), status)


def _compact(model: _Model, work: cp_model.CpModel, sol: _Solution, deadline_t: float, workers: int) -> Optional[_Solution]:
    """Same options and nodes, earliest starts (minimise the sum of end slots)."""
    c = work.clone()
    for j, k in enumerate(sol.choice):
        c.add(model.x[j][k] == 1)
    for g, n in enumerate(sol.nodes):
        c.add(model.nodes[g] == n)
    ends = [e for e in model.end if e is not None]
    c.minimize(sum(ends))
    solver = _solver(min(deadline_t - time.perf_counter(), 2.0), workers)
    st = solver.solve(c)
    if st not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return None
    return _Solution(sol.choice, [int(solver.value(s)) for s in model.s], sol.nodes, sol.key, sol.objective,
                     sol.status, sol.proof_s)


def solve_instance(inst: Instance, objective: str = "total_cost", top_k: int = 1, *, time_limit_s: float = 30.0,
                   workers: int = 2, binding: bool = True) -> dict:
    """Rank the K best distinct fleets; return solutions, status, binding limits and timing."""
    if objective not in OBJECTIVES:
        raise ClusteroptError("objective", f"unknown objective {objective!r}", "allowed: " + ", ".join(OBJECTIVES))
    t0 = time.perf_counter()
    deadline_t = t0 + time_limit_s
    if any(not job.options for job in inst.jobs):
        return {"solutions": [], "status": "infeasible", "solve_time_s": 0.0, "binding": [], "model": None}
    model = _Model(inst, objective, rent_peaks=(objective == "gpus"))
    on = {name: 1 for name in model.lits}
    sols: list[_Solution] = []
    status = "optimal"
    for _ in range(top_k):
        sol = _lex_solve(model, on, deadline_t, workers)
        if sol is None:
            break
        if not sol.choice:
            # the time limit stopped the search (CONTRACTS.md: 'feasible' when a limit stopped it),
            # before any plan was found when sols is empty: the explanation says so
            status = "feasible"
            break
        if sol.status != "optimal":
            status = "feasible"
        sols.append(sol)
        model.forbid_fleet(sol.key)
    t_solve = time.perf_counter() - t0
    if not sols and status == "optimal":
        status = "infeasible"
    bind: list[str] = []
    undecided: list[str] = []
    if binding and sols:
        bind, undecided = binding_limits(inst, objective, sols[0], workers=workers,
                                         deadline_t=time.perf_counter() + max(1.0, min(BINDING_TIME_S, time_limit_s / 2)))
    return {"solutions": sols, "status": status, "solve_time_s": t_solve, "binding": bind,
            "proof_s": [x.proof_s for x in sols],
            "binding_undecided": undecided, "time_s": time.perf_counter() - t0}


def binding_limits(inst: Instance, objective: str, best: _Solution, *, deadline_t: float,
                   workers: int = 2) -> tuple[list[str], list[str]]:
    """Limits whose removal (alone) strictly improves the optimum: the binding ones.

    Each limit is tested by one feasibility question - with that limit dropped, is there a
    plan lexicographically better than ``best``? - rather than a full re-optimisation.
    Returns (binding, undecided): limits the time budget left unanswered are 'undecided'.
    """
    model = _Model(inst, objective, rent_peaks=(objective == "gpus"))
    keys = [model.primary()] + ([model.cost] if objective != "total_cost" else [])
    m = model.m
    # better  <=>  key0 < b0, or key0 == b0 and key1 < b1
    if len(keys) == 1:
        m.add(keys[0] <= best.objective[0] - 1)
    else:
        first = m.new_bool_var("better_primary")
        m.add(keys[0] <= best.objective[0] - 1).only_enforce_if(first)
        m.add(keys[0] <= best.objective[0]).only_enforce_if(~first)
        m.add(keys[1] <= best.objective[1] - 1).only_enforce_if(~first)
    out, undecided = [], []
    names = [n for n in model.lits if n != "horizon"]
    for name in names:
        remaining = deadline_t - time.perf_counter()
        if remaining <= 0:
            undecided.append(name)
            continue
        c = m.clone()
        for n, lit in model.lits.items():
            c.add(lit == (0 if n == name else 1))
        st = _solver(remaining, workers).solve(c)
        if st in (cp_model.OPTIMAL, cp_model.FEASIBLE):
            out.append(name)
        elif st != cp_model.INFEASIBLE:
            undecided.append(name)
    return out, undecided


# ----------------------------------------------------------------------------------------
# explanations of infeasibility
# ----------------------------------------------------------------------------------------

def _limit_lhs(model: _Model, name: str):
    """The quantity that limit ``name`` caps, and how to show its least value."""
    inst = model.inst
    if name == "budget":
        return model.capex_expr(), lambda v: ("budget_usd", v / MONEY_UNITS_PER_USD)
    if name == "power":
        return model.power_expr(), lambda v: ("max_power_kw", v / 1000.0)
    if name == "max_nodes":
        return sum(model.nodes), lambda v: ("max_nodes", int(v))
    if name == "max_rented_gpus" and model.rent_total is not None:
        return model.rent_total, lambda v: ("fleet.rent.max_gpus", int(v))
    if name.startswith("stock:"):
        g = next(i for i, t in enumerate(inst.gpus) if t.name == name[6:])
        return inst.gpus[g].gpus_per_node * model.nodes[g], lambda v: (f"available.{inst.gpus[g].name}", int(v))
    if name.startswith("deadline:"):
        j = next(i for i, jb in enumerate(inst.jobs) if jb.name == name[9:])
        return model.end[j], lambda v: (f"jobs[{j}].deadline_days", v * inst.step_days)
    if name == "horizon":
        return model.makespan, lambda v: ("horizon_days", v * inst.step_days)
    return None, None


def _relax_together(model: _Model, names: list[str], drop: list[str], t_end: float, workers: int) -> Optional[dict]:
    """One verified joint relaxation of the limits ``drop`` (every other limit kept): each limit's
    least value in turn (lexicographic, in the order given), all met by one schedule. None: no
    schedule within the time left; {} values for 'drop'-only limits (precedence)."""
    cm = model.m.clone()
    for x in names:
        cm.add(model.lits[x] == (0 if x in drop else 1))
    out: dict[str, Any] = {}
    for n in drop:
        expr, show = _limit_lhs(model, n)
        if expr is None:
            out[n] = "drop"
            continue
        cm.minimize(expr)
        sv = _solver(max(0.1, t_end - time.perf_counter()), workers)
        st = sv.solve(cm)
        if st not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
            return None
        v = int(round(sv.objective_value))
        cm.add(expr <= v)                        # later limits are minimised with this one held
        key, val = show(v)
        out[key] = val
    if "horizon" in drop:                        # a longer horizon alone would coarsen the automatic grid
        out["time_step_days"] = model.inst.step_days
    return out


def _shown(key: str, val) -> str:
    if val == "drop":
        return f"drop {key.replace('after:', 'start_after ')}"
    if key == "time_step_days":
        return f"time_step_days kept at {val:g} (so the grid stays)"
    num = f"${val:,.0f}" if key.endswith("_usd") else (f"{val:,}" if isinstance(val, int) else f"{val:,.2f}")
    return f"{key} to {num}"


#: Most relaxation sets (minimal correction sets) an explanation enumerates.
MAX_RELAX_SETS = 4


def explain_infeasible_instance(inst: Instance, *, time_limit_s: float = 10.0, workers: int = 2) -> dict:
    """Why an instance is infeasible, over the enforcement literals of its limit families.

    ``relax_sets``: minimal relaxation sets S (minimal correction sets): dropping every limit of S
    makes the portfolio feasible, dropping any proper subset of S does not. Each is found by one
    CP-SAT solve that keeps as many limits as possible while keeping at least one limit of every
    set already found (the kept limits are then a maximal feasible subset; its complement is a
    new minimal S), smallest first, at most MAX_RELAX_SETS.
    ``conflicts``: an irreducible infeasible subset (CP-SAT's sufficient assumptions, then a deletion
    filter): these limits alone, every other dropped, cannot all be met - the meaning
    ``conflicts`` has in every planner (search/explain.py). Every S contains a member of it.
    ``relaxations``: for the first S, the least value of each of its limits (lexicographic, all
    met by one schedule, every limit outside S kept); ``relaxation_sets`` the same for each S.

    Same dict shape as search/explain.py: reason, conflicts, binding, relaxations, lines (plus
    relax_sets and relaxation_sets)."""
    lines: list[str] = []
    empty = [job for job in inst.jobs if not job.options]
    if empty:
        for job in empty:
            why = "; ".join(job.notes) or "no GPU option for it in the fleet"
            lines.append(f"job {job.name}: no option - {why}")
        return {"reason": "no options for " + ", ".join(j.name for j in empty), "relax_sets": [], "conflicts": [],
                "binding": [], "relaxations": {}, "relaxation_sets": [], "lines": lines}
    t_end = time.perf_counter() + time_limit_s
    model = _Model(inst, "total_cost")
    names = list(model.lits)

    def feasible_with(active: list[str]) -> Optional[bool]:
        """Feasible with exactly the limits ``active`` enforced (None: undecided in time)."""
        c = model.m.clone()
        for n in names:
            c.add(model.lits[n] == (1 if n in active else 0))
        s = _solver(max(0.1, t_end - time.perf_counter()), workers)
        st = s.solve(c)
        return None if st not in (cp_model.OPTIMAL, cp_model.FEASIBLE, cp_model.INFEASIBLE) else st != cp_model.INFEASIBLE

    nothing = {"relax_sets": [], "conflicts": [], "binding": [], "relaxations": {}, "relaxation_sets": []}
    # core: CP-SAT's sufficient assumptions, then drop every member not needed (deletion filter)
    c = model.m.clone()
    c.add_assumptions([model.lits[n] for n in names])
    s = _solver(max(0.1, t_end - time.perf_counter()), 1)
    st = s.solve(c)
    if st != cp_model.INFEASIBLE:
        return {"reason": "feasible" if st in (cp_model.OPTIMAL, cp_model.FEASIBLE) else "unknown",
                **nothing, "lines": lines}
    if feasible_with([]) is False:
        lines.append("infeasible with every limit dropped: some job fits no option within the horizon grid")
        return {"reason": "infeasible", **nothing, "lines": lines}
    idx = {model.lits[n].index: n for n in names}
    core = [idx[i] for i in s.sufficient_assumptions_for_infeasibility() if i in idx] or list(names)
    for n in list(core):
        trial = [x for x in core if x != n]
        if feasible_with(trial) is False:
            core = trial
    # relaxation sets: keep as many limits as possible, at least one of each set already found
    sets: list[list[str]] = []
    undecided = False
    while len(sets) < MAX_RELAX_SETS and time.perf_counter() < t_end:
        cm = model.m.clone()
        for S in sets:
            cm.add_bool_or([model.lits[n] for n in S])
        cm.maximize(sum(model.lits[n] for n in names))
        sv = _solver(max(0.1, t_end - time.perf_counter()), workers)
        st = sv.solve(cm)
        if st == cp_model.INFEASIBLE:
            break
        if st not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
            undecided = True
            break
        kept = [n for n in names if sv.value(model.lits[n])]
        if st != cp_model.OPTIMAL:               # not proven largest: grow it to a maximal feasible set
            for n in names:
                if n not in kept and feasible_with(kept + [n]):
                    kept.append(n)
        sets.append([n for n in names if n not in kept])
    rsets = [_relax_together(model, names, S, t_end, workers) for S in sets]

    def pretty(ns):
        return " + ".join(n.replace(":", " ") for n in ns)

    lines.append(f"conflict: {pretty(core)} " + ("cannot all be met" if len(core) > 1 else "cannot be met")
                 + (" (even with every other limit dropped)" if len(core) < len(names) else ""))
    for S, r in zip(sets, rsets):
        how = ", ".join(_shown(k, v) for k, v in r.items()) if r else "values not found within the time limit"
        if len(S) == 1:
            lines.append(f"relax {how} (all else kept)")
        else:
            lines.append(f"relax {pretty(S)} together: {how} (all else kept); none of them alone suffices")
    if sets and all(len(S) > 1 for S in sets):
        lines.append("no single limit's relaxation makes the portfolio feasible")
    if undecided or len(sets) == MAX_RELAX_SETS:
        lines.append("other combinations of limits may also restore feasibility (not enumerated)")
    first = sets[0] if sets else core
    return {"reason": " + ".join(first), "relax_sets": sets, "conflicts": [core], "binding": first,
            "relaxations": dict(rsets[0] or {}) if rsets else {}, "relaxation_sets": [dict(r or {}) for r in rsets],
            "lines": lines}


# ----------------------------------------------------------------------------------------
# decode: a plan as plain data
# ----------------------------------------------------------------------------------------

def plan_detail(inst: Instance, sol: _Solution, binding: list[str] = ()) -> dict:
    """The fleet, rentals, schedule, cost split and utilisation of one solution (plain data)."""
    dt = inst.step_days
    H_days = inst.horizon_days
    fleet, rent, schedule = [], [], []
    busy = [0.0] * len(inst.gpus)              # owned GPU-days
    power_usd = rent_usd = 0.0
    for j, job in enumerate(inst.jobs):
        o = job.options[sol.choice[j]]
        t = inst.gpus[o.gpu]
        if job.kind == "serve":
            start = job.release * dt if job.release * dt > 0 else 0.0
            start_day, end_day = start, H_days
        else:
            start_day = sol.starts[j] * dt
            end_day = start_day + o.duration_days
        rec = {"job": job.name, "kind": job.kind, "gpu": t.name, "source": "owned" if o.owned else "rented",
               "n_gpus": o.n_gpus, "n_nodes": -(-o.n_gpus // t.gpus_per_node),
               "start_day": start_day, "end_day": end_day, "duration_days": o.duration_days,
               "grid_end_day": (sol.starts[j] + o.slots) * dt if job.kind == "train" else H_days,
               "deadline_days": job.deadline_days, "cost_usd": o.cost_usd}
        rec.update({k: v for k, v in o.detail.items()})
        schedule.append(rec)
        if o.owned:
            busy[o.gpu] += o.n_gpus * o.duration_days
            power_usd += o.cost_usd
        else:
            rent_usd += o.cost_usd
            chosen = rent_offer_for(t, o.n_gpus, o.duration_days * HOURS_PER_DAY)
            rent.append({"job": job.name, "gpu": t.name, "n_gpus": o.n_gpus, "start_day": start_day, "end_day": end_day,
                         "hours": o.duration_days * HOURS_PER_DAY, "usd": o.cost_usd,
                         "offer": chosen[1] if chosen else t.rent_offer,
                         "usd_per_gpu_hour": chosen[2] if chosen else t.rent_usd_per_gpu_hour})
    capex_share = hosting = maint = purchase = 0.0
    power_kw = 0.0
    util = {}
    for g, n in enumerate(sol.nodes):
        if n <= 0:
            continue
        t = inst.gpus[g]
        gpus = n * t.gpus_per_node
        fleet.append({"gpu": t.name, "nodes": n, "gpus": gpus, "purchase_usd": n * t.purchase_usd_per_node,
                      "capex_share_usd": n * t.capex_share_usd_per_node, "hosting_usd": n * t.hosting_usd_per_node,
                      "maintenance_usd": n * t.maintenance_usd_per_node,
                      "it_power_kw": gpus * t.it_w_per_gpu / 1000.0,
                      "utilization": busy[g] / (gpus * H_days)})
        util[t.name] = busy[g] / (gpus * H_days)
        capex_share += n * t.capex_share_usd_per_node
        hosting += n * t.hosting_usd_per_node
        maint += n * t.maintenance_usd_per_node
        purchase += n * t.purchase_usd_per_node
        power_kw += gpus * t.it_w_per_gpu / 1000.0
    owned_gpus = sum(f["gpus"] for f in fleet)
    opex = power_usd + hosting + maint
    ends = [r["end_day"] for r in schedule if r["kind"] == "train"]
    investment = plan_investment(inst, sol) if owned_gpus else None
    return {
        "npv_usd": None if investment is None else investment["npv_usd"],
        "payback_years": None if investment is None else investment["payback_years"],
        "roi_pct": None if investment is None else investment["roi_pct"],
        "investment": investment,
        "fleet": fleet,
        "rent": rent,
        "schedule": schedule,
        "cost": {"capex_usd": capex_share, "opex_usd": opex, "rent_usd": rent_usd,
                 "total_usd": capex_share + opex + rent_usd, "purchase_usd": purchase,
                 "power_usd": power_usd, "hosting_usd": hosting, "maintenance_usd": maint},
        "owned_gpus": owned_gpus,
        "owned_power_kw": power_kw,
        "utilization": {"overall": (sum(busy) / (owned_gpus * H_days)) if owned_gpus else None, **util},
        "makespan_days": max(ends) if ends else 0.0,
        "binding": list(binding),
        "objective_units": list(sol.objective),
        "status": sol.status,
    }


def plan_investment(inst: Instance, sol: _Solution) -> Optional[dict]:
    """NPV, payback, ROI and buy-versus-rent flip points of the plan's owned fleet against renting
    the same jobs (formulas/investment.py). The horizon's owned work is taken as the fleet's
    steady yearly load: rent of the owned jobs (each on its cheapest runnable offer), their power
    and the fleet's hosting are scaled to a year (x 365.25 / horizon days); maintenance is a share
    of capex; the fleet lives ``fleet.buy.years``. None when an owned job could not be rented
    (no rented alternative to compare with)."""
    from optimizer.formulas.investment import OwnedPlanMoney

    from optimizer.portfolio_schema import BuySpec

    buy = inst.buy if inst.buy is not None else BuySpec()
    per_year = 365.25 / inst.horizon_days
    rent_alt = power = 0.0
    for j, job in enumerate(inst.jobs):
        o = job.options[sol.choice[j]]
        if not o.owned:
            continue
        t = inst.gpus[o.gpu]
        alt = rent_offer_for(t, o.n_gpus, o.duration_days * HOURS_PER_DAY)
        if alt is None:
            return None
        rent_alt += alt[0]
        power += o.cost_usd
    capex_gpus = sum(n * inst.gpus[g].gpu_purchase_usd_per_node for g, n in enumerate(sol.nodes) if n > 0)
    capex = sum(n * inst.gpus[g].purchase_usd_per_node for g, n in enumerate(sol.nodes) if n > 0)
    hosting = sum(n * inst.gpus[g].hosting_usd_per_node for g, n in enumerate(sol.nodes) if n > 0)
    money = OwnedPlanMoney(capex_gpus_usd=capex_gpus, capex_other_usd=capex - capex_gpus,
                           rent_usd_per_year=rent_alt * per_year, power_usd_per_year=power * per_year,
                           hosting_usd_per_year=hosting * per_year,
                           maintenance_pct_per_year=buy.maintenance_pct_per_year,
                           staff_usd_per_year=buy.staff_usd_per_year, years=buy.years,
                           discount_rate=buy.discount_rate, residual_pct=buy.residual_pct)
    f = money.figures()
    return {"npv_usd": f.npv_usd, "payback_years": f.payback_years, "roi_pct": f.roi_pct, "irr": f.irr,
            "capex_usd": f.capex_usd, "residual_usd": f.residual_usd, "rent_usd_per_year": f.rent_usd_per_year,
            "owned_opex_usd_per_year": f.owned_opex_usd_per_year, "staff_usd_per_year": f.staff_usd_per_year,
            "saving_usd_per_year": f.saving_usd_per_year, "discount_rate": f.discount_rate, "years": f.years,
            "residual_pct": buy.residual_pct, "flips": money.flips()}


def buy_vs_rent_lines(result) -> list[str]:
    """Where buying the plan's fleet stops beating renting (``plan --sensitivity``): one line per
    flip point of the plan's investment figures."""
    inv = (result.plan or {}).get("investment") if result is not None else None
    if not inv:
        return []
    f = inv["flips"]
    verdict = "beats" if inv["npv_usd"] > 0 else "does not beat"
    out = [f"buy vs rent: buying {verdict} renting at a {inv['discount_rate']:.1%} discount rate "
           f"(NPV {usd(inv['npv_usd'])} over {inv['years']:g} years)"]
    r = f["discount_rate"]["flip"]
    out.append("buy vs rent: " + (f"renting wins above a {r:.1%} discount rate (the IRR)" if r is not None
                                  else "no discount rate between -99% and 1000% flips it"))
    for key, what in (("utilization_scale", "the owned fleet's busy hours"), ("gpu_price_scale", "the GPU price")):
        k = f[key]["flip"]
        out.append(f"buy vs rent: flips at {k:.2f} x {what}" if k is not None
                   else f"buy vs rent: {what} between 0.1x and 10x does not flip it")
    return out


def verify(inst: Instance, sol: _Solution) -> None:
    """Check a decoded solution against the rules directly (not through CP-SAT); raise on any miss."""
    H = inst.horizon_slots
    for j, job in enumerate(inst.jobs):
        o = job.options[sol.choice[j]]
        s, e = interval_of(inst, j, o, sol.starts[j])
        if job.kind == "train":
            if s < job.release or e > H:
                raise RuntimeError(f"{job.name}: runs [{s},{e}) outside [{job.release},{H}]")
            if job.deadline is not None and e > job.deadline:
                raise RuntimeError(f"{job.name}: ends at slot {e} after its deadline {job.deadline}")
            for i in job.after:
                oi = inst.jobs[i].options[sol.choice[i]]
                if s < sol.starts[i] + oi.slots:
                    raise RuntimeError(f"{job.name}: starts before {inst.jobs[i].name} ends")
    for g, t in enumerate(inst.gpus):
        use = np.zeros(H + 1, dtype=np.int64)
        for j, job in enumerate(inst.jobs):
            o = job.options[sol.choice[j]]
            if o.owned and o.gpu == g:
                s, e = interval_of(inst, j, o, sol.starts[j])
                use[s:e] += o.n_gpus
        if use.max(initial=0) > sol.nodes[g] * t.gpus_per_node:
            raise RuntimeError(f"{t.name}: {use.max()} GPUs busy at once on {sol.nodes[g] * t.gpus_per_node} owned")
    if inst.max_rented_gpus is not None:
        use = np.zeros(H + 1, dtype=np.int64)
        for j, job in enumerate(inst.jobs):
            o = job.options[sol.choice[j]]
            if not o.owned:
                s, e = interval_of(inst, j, o, sol.starts[j])
                use[s:e] += o.n_gpus
        if use.max(initial=0) > inst.max_rented_gpus:
            raise RuntimeError(f"{use.max()} rented GPUs at once > fleet.rent.max_gpus {inst.max_rented_gpus}")
    b = inst.budget_units()
    if b is not None and sum(inst.node_capex_units(g) * n for g, n in enumerate(sol.nodes)) > b:
        raise RuntimeError("capex over budget")
    if inst.max_power_w is not None and sum(t.gpus_per_node * t.it_w_per_gpu * n for t, n in zip(inst.gpus, sol.nodes)) > inst.max_power_w:
        raise RuntimeError("owned fleet over the power limit")
    if inst.max_nodes is not None and sum(sol.nodes) > inst.max_nodes:
        raise RuntimeError("owned fleet over max_nodes")
    for t, n in zip(inst.gpus, sol.nodes):
        if t.available is not None and n * t.gpus_per_node > t.available:
            raise RuntimeError(f"{t.name}: {n * t.gpus_per_node} owned > {t.available} available")


def verify_layouts(inst: Instance, sol: _Solution) -> None:
    """Re-evaluate each chosen training layout through ``api.evaluate`` (the scalar path): it must
    be feasible and take the duration the model used. Raise on any disagreement."""
    from optimizer.search.api import evaluate

    if not inst.sources:
        return
    for j, job in enumerate(inst.jobs):
        o = job.options[sol.choice[j]]
        if job.kind != "train" or "config" not in o.detail:
            continue
        ev = evaluate(inst.sources["scenarios"][j], o.detail["config"], _gpus=inst.sources["gpu_options"])
        bad = [v for v in ev.violations if not v.startswith("deadline")]
        if bad or not math.isclose(ev.wall_clock_days, o.duration_days, rel_tol=1e-9, abs_tol=1e-9):
            raise RuntimeError(f"{job.name}: evaluate() disagrees with the option table for {o.detail['config']}: "
                               f"{ev.wall_clock_days} vs {o.duration_days} days; {bad}")


def total_cost_units(inst: Instance, choice, nodes) -> int:
    """The integer total_cost objective of a choice of options and node counts (cents)."""
    return (sum(inst.node_fixed_units(g) * n for g, n in enumerate(nodes))
            + sum(job.options[k].cost_units for job, k in zip(inst.jobs, choice)))


# ----------------------------------------------------------------------------------------
# public entry points
# ----------------------------------------------------------------------------------------

@dataclass
class PlanResult(_Mapping):
    portfolio: str
    status: str                          # optimal | feasible | infeasible | unknown
    objective: str
    plan: Optional[dict]
    alternatives: list[dict]
    explanation: dict
    stats: dict = field(default_factory=dict)
    instance: Any = None                 # the Instance solved (re-solve with build_instance(prices=...))
    sensitivity: Optional[Any] = None    # plan_sensitivity's {tornado, thresholds}, when asked for


def plan(portfolio, *, top_k: Optional[int] = None, objective: Optional[str] = None, time_limit_s: float = 30.0,
         catalog=None, prices: Optional[Mapping[str, float]] = None, binding: bool = True,
         workers: int = 2) -> PlanResult:
    """Plan a portfolio: the fleet to buy, what to rent and when, each job's schedule and layout.

    ``top_k`` distinct fleets are ranked (default: the portfolio's ``top_k``); ``objective`` is
    total_cost, makespan or gpus (default: the portfolio's). ``prices`` scales catalog prices
    (``purchase.<gpu>``, ``rent.<gpu>``, ``price.<gpu>`` -> factor) so that a sensitivity
    routine can re-solve with perturbed prices; option tables are cached between calls.
    """
    from optimizer.portfolio_schema import load_portfolio

    p = load_portfolio(portfolio)
    objective = objective or p.objective
    if objective not in OBJECTIVES:
        raise ClusteroptError("objective", f"unknown objective {objective!r}", "allowed: " + ", ".join(OBJECTIVES))
    k = top_k or p.top_k
    t0 = time.perf_counter()
    inst = build_instance(p, catalog=catalog, prices=prices)
    t_build = time.perf_counter() - t0
    res = solve_instance(inst, objective, k, time_limit_s=time_limit_s, workers=workers, binding=binding)
    sols = res["solutions"]
    for s in sols:
        verify(inst, s)
        verify_layouts(inst, s)
    plans = [plan_detail(inst, s, res["binding"] if i == 0 else ()) for i, s in enumerate(sols)]
    for i, pl in enumerate(plans):
        pl["rank"] = i + 1
    notes = list(inst.notes) + [n for job in inst.jobs for n in job.notes]
    if sols and binding:
        explanation = _binding_explanation(res["binding"], res.get("binding_undecided", []))
    elif sols:
        explanation = {"reason": "feasible", "binding": None, "lines": []}
    elif res["status"] != "infeasible":
        explanation = {"reason": "time limit", "binding": None, "relaxations": {},
                       "lines": [f"no plan found within {time_limit_s:g} s; raise the time limit or coarsen time_step_days"]}
    else:
        full = build_instance(p, catalog=catalog, prices=prices, prune=False)
        explanation = explain_infeasible_instance(full, time_limit_s=max(5.0, time_limit_s / 2), workers=workers)
    explanation["notes"] = notes + [f"time grid: {inst.step_days * 24:g} h slots" if inst.step_days < 1
                                    else f"time grid: {inst.step_days:g}-day slots; durations rounded up, deadlines down"]
    stats = {"build_s": t_build, "solve_s": res["solve_time_s"], "total_s": time.perf_counter() - t0,
             "options": sum(len(j.options) for j in inst.jobs), "jobs": len(inst.jobs), "slots": inst.horizon_slots,
             "step_days": inst.step_days, "options_per_job": {j.name: len(j.options) for j in inst.jobs}}
    return PlanResult(portfolio=p.name, status=res["status"], objective=objective, plan=plans[0] if plans else None,
                      alternatives=plans[1:], explanation=explanation, stats=stats, instance=inst)


def _binding_explanation(binding: list[str], undecided: list[str] = ()) -> dict:
    lines = [f"binding: {b.replace(':', ' ')} (without it the optimum would improve)" for b in binding]
    if undecided:
        lines.append("binding or not, undecided within the time limit: " + ", ".join(undecided))
    elif not binding:
        lines.append("no limit binds: the plan is the best fleet regardless of the limits")
    return {"reason": "feasible", "binding": list(binding), "binding_undecided": list(undecided), "lines": lines}


def plan_separately(portfolio, **kw) -> dict:
    """Each job planned on its own (its own fleet, the same fleet rules and horizon), for
    comparison with the joint plan. Precedence is kept: jobs are planned in precedence order
    and a job starts no earlier than its predecessors' planned ends (``from_day``).
    Returns {'jobs': {name: PlanResult}, 'total_usd': sum or None, 'status': worst status}."""
    from optimizer.portfolio_schema import load_portfolio

    p = load_portfolio(portfolio)
    names = [j.name for j in p.jobs]
    order: list[str] = []
    while len(order) < len(names):               # precedence order (the schema rejects cycles)
        for j in p.jobs:
            if j.name not in order and all(a in order for a in j.start_after):
                order.append(j.name)
    out, ends, total, status = {}, {}, 0.0, "optimal"
    for name in order:
        j = p.job(name)
        release = max([j.from_day] + [ends[a] for a in j.start_after if ends.get(a) is not None])
        data = p.model_dump(mode="python", exclude_none=True)
        data["base_dir"] = p.base_dir
        data["name"] = f"{p.name}/{j.name}"
        data["horizon_days"] = p.horizon()
        data["jobs"] = [j.model_dump(mode="python", exclude_none=True) | {"start_after": [], "from_day": release}]
        try:
            r = plan(data, top_k=1, binding=False, **kw)
        except ClusteroptError:                   # e.g. the predecessors end after this job's deadline
            r = None
        out[name] = r
        if r is None or r.plan is None:
            status, ends[name] = "infeasible", None
            continue
        ends[name] = max(x["end_day"] for x in r.plan["schedule"])
        total += r.plan["cost"]["total_usd"]
        if r.status != "optimal" and status == "optimal":
            status = r.status
    return {"jobs": out, "total_usd": total if status != "infeasible" else None, "status": status}


def fleet_identity(pl: Optional[dict]) -> Optional[tuple]:
    """A plan's fleet: owned nodes per type and the types rented (None for no plan)."""
    if pl is None:
        return None
    return (tuple(sorted((f["gpu"], f["nodes"]) for f in pl["fleet"])), tuple(sorted({r["gpu"] for r in pl["rent"]})))


#: Most jobs whose own inputs (training tokens, serving request rate) the default sensitivity
#: analysis perturbs: each input costs the tornado 2 re-plans and the thresholds up to about
#: 2 x (grid + bisection) re-plans. Beyond it, the jobs with the largest cost share are kept
#: (``job_cost_shares``); the rest are named in a note and may be passed as ``inputs``.
MAX_JOB_INPUTS = 4


def job_input(job) -> Optional[str]:
    """The dotted path of a job's uncertain workload input, without its index: ``train.tokens``
    (training) or ``serve.requests_per_s`` (serving); None when it is not a number."""
    if job.train is not None:
        return "train.tokens" if isinstance(job.train.tokens, (int, float)) else None
    return "serve.requests_per_s"


def job_cost_shares(pl: dict) -> dict[str, float]:
    """Each job's share of a plan's total cost (USD): its power or rent, plus, on owned GPUs, the
    owned fleet's fixed cost of its GPU type (capex share, hosting, maintenance) split by busy
    GPU-days (n_gpus x duration_days). Fixed cost of a type no job keeps busy is left out, so the
    shares may sum to less than the total."""
    fixed = {f["gpu"]: f["capex_share_usd"] + f["hosting_usd"] + f["maintenance_usd"] for f in pl["fleet"]}
    busy: dict[str, float] = {}
    for r in pl["schedule"]:
        if r["source"] == "owned":
            busy[r["gpu"]] = busy.get(r["gpu"], 0.0) + r["n_gpus"] * r["duration_days"]
    out = {}
    for r in pl["schedule"]:
        share = float(r["cost_usd"])
        if r["source"] == "owned" and busy.get(r["gpu"], 0.0) > 0:
            share += fixed.get(r["gpu"], 0.0) * r["n_gpus"] * r["duration_days"] / busy[r["gpu"]]
        out[r["job"]] = share
    return out


def sensitivity_inputs(portfolio, instance: Instance, pl: Optional[dict] = None,
                       max_jobs: Optional[int] = MAX_JOB_INPUTS) -> list[str]:
    """Default uncertain inputs (issue 7: GPU prices, electricity, tokens, request rate): each
    fleet GPU's prices (``price.<gpu>``: purchase and rent together), electricity
    (``fleet.buy.usd_per_kwh``), each training job's tokens (``jobs[i].train.tokens``) and each
    serving job's request rate (``jobs[i].serve.requests_per_s``).

    With more than ``max_jobs`` jobs (None: no cap) only the ``max_jobs`` jobs with the largest
    cost share in the plan ``pl`` (``job_cost_shares``; without a plan, the cheapest option of
    each job in ``instance``, a lower bound of what it costs) keep their input; ties go to the
    earlier job. Job inputs follow the portfolio's job order."""
    from optimizer.portfolio_schema import load_portfolio

    p = load_portfolio(portfolio)
    out = [f"price.{t.name}" for t in instance.gpus] + ["fleet.buy.usd_per_kwh"]
    jobs = [(i, j) for i, j in enumerate(p.jobs) if job_input(j) is not None]
    if max_jobs is not None and len(jobs) > max_jobs:
        if pl is not None:
            shares = job_cost_shares(pl)
        else:
            shares = {jb.name: min((o.cost_usd for o in jb.options), default=0.0) for jb in instance.jobs}
        ranked = sorted(jobs, key=lambda ij: (-shares.get(ij[1].name, 0.0), ij[0]))
        keep = {i for i, _ in ranked[:max_jobs]}
        jobs = [(i, j) for i, j in jobs if i in keep]
    return out + [f"jobs[{i}].{job_input(j)}" for i, j in jobs]


def sensitivity_note(portfolio, inputs: list[str]) -> Optional[str]:
    """A line naming the jobs whose inputs the default analysis left out (MAX_JOB_INPUTS), or None."""
    from optimizer.portfolio_schema import load_portfolio

    p = load_portfolio(portfolio)
    left = [j.name for i, j in enumerate(p.jobs)
            if job_input(j) is not None and f"jobs[{i}].{job_input(j)}" not in inputs]
    if not left:
        return None
    return (f"sensitivity: the inputs of the {MAX_JOB_INPUTS} jobs with the largest cost share are perturbed; "
            f"left out: {', '.join(left)} (pass them as inputs to include them)")


def perturbed_plan(portfolio, name: str, factor: float, *, prices: Optional[Mapping[str, float]] = None,
                   **kw) -> PlanResult:
    """Re-plan with one input scaled by ``factor``: a price (``price.<gpu>``, ``purchase.<gpu>``,
    ``rent.<gpu>``) or a numeric dotted field (``fleet.buy.usd_per_kwh``, ``jobs[1].train.tokens``,
    ``jobs[2].serve.requests_per_s``)."""
    from optimizer.portfolio_schema import load_portfolio

    p = load_portfolio(portfolio)
    prices = dict(prices or {})
    if name.split(".")[0] in ("price", "purchase", "rent"):      # portfolio fields start fleet. or jobs[
        prices[name] = prices.get(name, 1.0) * factor
        return plan(p, prices=prices, **kw)
    path = name.replace("[", ".").replace("]", "")
    cur: Any = p
    for part in path.split("."):
        cur = cur[int(part)] if part.isdigit() else getattr(cur, part)
    if not isinstance(cur, (int, float)):
        raise ClusteroptError(name, f"is {cur!r}, not a number", "perturb a numeric input")
    return plan(p.with_overrides({path: cur * factor}), prices=prices, **kw)


def plan_sensitivity(portfolio, *, inputs: Optional[list[str]] = None, range_pct: float = 50.0, grid: int = 5,
                     tol_pct: float = 1.0, time_limit_s: float = 10.0) -> list[dict]:
    """Switching thresholds of the plan's fleet: per input and direction, the smallest change
    within ``range_pct`` at which the optimal fleet (owned nodes per type, types rented)
    changes, by re-planning (``search.sensitivity.find_threshold``: a grid, then bisection).
    Same record shape as the training sensitivity (CONTRACTS.md 'Sensitivity'); ``new_best``
    is the new fleet."""
    from optimizer.portfolio_schema import load_portfolio
    from optimizer.search.sensitivity import find_threshold

    p = load_portfolio(portfolio)
    kw = dict(top_k=1, binding=False, time_limit_s=time_limit_s)
    base = plan(p, **kw)
    base_key = fleet_identity(base.plan)
    names = inputs or sensitivity_inputs(p, base.instance, base.plan)
    out = []
    for name in names:
        def best_at(f, name=name):
            pl = perturbed_plan(p, name, f, **kw).plan
            key = fleet_identity(pl)
            return key, (None if pl is None else {"fleet": pl["fleet"], "rent": sorted({r["gpu"] for r in pl["rent"]}),
                                                   "total_usd": pl["cost"]["total_usd"]})

        for direction in ("up", "down"):
            out.append(find_threshold(best_at, base_key, name, direction, range_pct=range_pct, grid=grid,
                                      tol_pct=tol_pct))
    return out


def plan_tornado(portfolio, *, inputs: Optional[list[str]] = None, swing_pct: float = 20.0,
                 time_limit_s: float = 10.0) -> list[dict]:
    """Total cost of the re-planned portfolio at -X% and +X% of each input (a fleet plan has no
    fixed 'chosen configuration' to hold: each end is re-optimised), sorted by swing; whether
    the fleet changes at each end."""
    from optimizer.portfolio_schema import load_portfolio

    p = load_portfolio(portfolio)
    kw = dict(top_k=1, binding=False, time_limit_s=time_limit_s)
    base = plan(p, **kw)
    if base.plan is None:
        return []
    base_key, base_cost = fleet_identity(base.plan), base.plan["cost"]["total_usd"]
    out = []
    for name in inputs or sensitivity_inputs(p, base.instance, base.plan):
        ends, changes = {}, {}
        for direction, f in (("down", 1 - swing_pct / 100), ("up", 1 + swing_pct / 100)):
            pl = perturbed_plan(p, name, f, **kw).plan
            ends[direction] = None if pl is None else pl["cost"]["total_usd"]
            changes[direction] = fleet_identity(pl) != base_key
        swing = None if None in ends.values() else abs(ends["up"] - ends["down"])
        out.append({"input": name, "swing_pct": swing_pct, "low": ends["down"], "high": ends["up"], "swing": swing,
                    "base": base_cost, "changes": changes})
    out.sort(key=lambda e: -(e["swing"] if e["swing"] is not None else float("inf")))
    return out


def _peak_rented_gpus(pl: dict, horizon_days: float) -> int:
    """Most rented GPUs in use at once (all types), over the schedule's grid intervals (training:
    start to the grid end; serving: start to the horizon), as the rented cumulative counts them."""
    spans = [(r["start_day"], r["grid_end_day"] if r["kind"] == "train" else horizon_days, r["n_gpus"])
             for r in pl["schedule"] if r["source"] == "rented"]
    return max((sum(n for a, b, n in spans if a <= t < b) for t, _, _ in spans), default=0)


def plan_slack(result: PlanResult) -> dict:
    """Slack of each fleet limit at the best plan, and which limits bind, from what ``plan``
    computed (the plan's figures and its explanation's binding analysis; nothing is re-solved).

    Returns {'status', 'limits', 'binding', 'binding_undecided', 'lines'}. ``limits`` maps each
    limit the portfolio sets, under the explanation's names, to {'limit', 'used', 'slack', 'unit',
    'binding'}: 'budget' (purchase capex, USD), 'power' (owned IT power, kW, as the power limit
    counts it), 'max_nodes' (owned nodes), 'max_rented_gpus' (peak rented GPUs at once),
    'stock:<gpu>' (owned GPUs of a type with limited stock), 'deadline:<job>' (end day of a training
    job with a deadline, days) and 'horizon' (the last training end, days). ``slack`` = limit - used
    (>= 0 for a feasible plan). ``binding`` is True when dropping the limit alone strictly improves
    the optimum, None when the analysis did not run (``plan(binding=False)``) or ran out of time.
    Without a plan (infeasible or no solution in time) ``limits`` is empty; the explanation then
    says which limits conflict and how far to relax them.
    """
    expl = result.explanation or {}
    binding = expl.get("binding")
    undecided = list(expl.get("binding_undecided", []) or [])
    out = {"status": result.status, "limits": {}, "binding": binding, "binding_undecided": undecided, "lines": []}
    pl, inst = result.plan, result.instance
    if pl is None or inst is None:
        out["lines"].append("no plan: no slack to report; see the explanation for the limits that conflict")
        return out

    def is_binding(name: str) -> Optional[bool]:
        if binding is None or name in undecided:
            return None
        return name in binding

    def add(name: str, limit: float, used: float, unit: str) -> None:
        out["limits"][name] = {"limit": limit, "used": used, "slack": limit - used, "unit": unit,
                               "binding": is_binding(name)}

    owned = {f["gpu"]: f for f in pl["fleet"]}
    if inst.budget_usd is not None:
        add("budget", float(inst.budget_usd), float(pl["cost"]["purchase_usd"]), "usd")
    if inst.max_power_w is not None:
        add("power", inst.max_power_w / 1000.0, float(pl["owned_power_kw"]), "kw")
    if inst.max_nodes is not None:
        add("max_nodes", int(inst.max_nodes), int(sum(f["nodes"] for f in pl["fleet"])), "nodes")
    if inst.max_rented_gpus is not None:
        add("max_rented_gpus", int(inst.max_rented_gpus), _peak_rented_gpus(pl, inst.horizon_days), "gpus")
    for t in inst.gpus:
        if t.available is not None and t.can_buy:
            add(f"stock:{t.name}", int(t.available), int(owned[t.name]["gpus"]) if t.name in owned else 0, "gpus")
    for r in pl["schedule"]:
        if r["kind"] == "train" and r.get("deadline_days") is not None:
            add(f"deadline:{r['job']}", float(r["deadline_days"]), float(r["end_day"]), "days")
    if any(r["kind"] == "train" for r in pl["schedule"]):
        add("horizon", float(inst.horizon_days), float(pl["makespan_days"]), "days")
    fmt = {"usd": usd, "kw": lambda v: f"{v:,.0f} kW", "nodes": lambda v: f"{v:,d} nodes",
           "gpus": lambda v: f"{v:,d} GPUs", "days": lambda v: f"{v:,.1f} days"}
    for name, e in out["limits"].items():
        f = fmt[e["unit"]]
        tag = {True: "binding", False: "not binding", None: "binding not analysed"}[e["binding"]]
        out["lines"].append(f"slack: {name.replace(':', ' ')}: {f(e['used'])} of {f(e['limit'])}, "
                            f"{f(e['slack'])} left ({tag})")
    for name in binding or []:
        if name not in out["limits"]:                  # e.g. a precedence rule (after:a->b)
            out["lines"].append(f"binding: {name.replace(':', ' ')}")
    return out


# ----------------------------------------------------------------------------------------
# renderers (the CLI's `clusteropt plan` only calls these)
# ----------------------------------------------------------------------------------------

class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


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


def plan_json(result: PlanResult) -> dict:
    """One JSON document: schema_version, status, objective, plan, alternatives, explanation, stats."""
    doc = {"schema_version": SCHEMA_VERSION, "kind": "plan", "portfolio": result.portfolio, "status": result.status,
           "objective": result.objective, "plan": result.plan, "alternatives": result.alternatives,
           "explanation": result.explanation, "stats": result.stats}
    if result.sensitivity is not None:
        doc["sensitivity"] = result.sensitivity
    return plain(doc)


SCHEDULE_COLUMNS = ("job", "kind", "gpu", "source", "n_gpus", "n_nodes", "start_day", "end_day", "duration_days",
                    "deadline_days", "cost_usd", "layout")


def plan_csv(result: PlanResult) -> str:
    """The best plan's schedule, one row per job (SCHEDULE_COLUMNS); empty body when no plan."""
    import csv
    import io

    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(SCHEDULE_COLUMNS)
    for r in (result.plan or {}).get("schedule", []):
        w.writerow([_layout(r) if k == "layout" else ("" if r.get(k) is None else r.get(k)) for k in SCHEDULE_COLUMNS])
    return buf.getvalue()


def _layout(r: dict) -> str:
    cfg = r.get("config")
    if cfg:
        return (f"tp{cfg['tp']} pp{cfg['pp']} dp{cfg['dp']}" + (f" cp{cfg['cp']}" if cfg["cp"] > 1 else "")
                + f" zero{cfg['zero']} {cfg['precision']} mb{cfg['micro_batch']} {cfg['recompute']}")
    return r.get("layout", "")


def _markdown(headers: list[str], rows: list[list]) -> str:
    rows = [[str(c) for c in r] for r in rows]
    return "\n".join(["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
                     + ["| " + " | ".join(r) + " |" for r in rows])


def _table(headers: list[str], rows: list[list]) -> str:
    rows = [[str(c) for c in r] for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]

    def fmt(cells):
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return "\n".join([fmt(headers), "  ".join("-" * w for w in widths)] + [fmt(r) for r in rows])


def plan_text(result: PlanResult, markdown: bool = False) -> str:
    """The plan as text (or Markdown): cost split, fleet to buy, schedule, alternatives, explanation."""
    text_table = _markdown if markdown else _table
    out = [f"portfolio {result.portfolio}: {result.status}, objective {result.objective}"]
    pl = result.plan
    if pl is not None:
        c = pl["cost"]
        out += ["", f"total {usd(c['total_usd'])} over the horizon = capex share {usd(c['capex_usd'])} + "
                    f"opex {usd(c['opex_usd'])} + rent {usd(c['rent_usd'])}; purchase {usd(c['purchase_usd'])}"]
        inv = pl.get("investment")
        if inv:
            pb = "never" if inv["payback_years"] is None else f"{inv['payback_years']:.1f} years"
            out.append(f"owned fleet vs renting its jobs: NPV {usd(inv['npv_usd'])} at {inv['discount_rate']:.1%}, "
                       f"payback {pb}, ROI {inv['roi_pct']:.0f}% over {inv['years']:g} years "
                       f"(residual {inv['residual_pct']:g}%, staff {usd(inv['staff_usd_per_year'])}/year)")
        if pl["fleet"]:
            out += ["", "fleet to buy:"]
            out.append(text_table(["gpu", "nodes", "gpus", "purchase", "IT kW", "utilization"],
                                  [[f["gpu"], f["nodes"], f["gpus"], usd(f["purchase_usd"]), f"{f['it_power_kw']:,.0f}",
                                    f"{f['utilization']:.0%}"] for f in pl["fleet"]]))
        else:
            out += ["", "fleet to buy: none"]
        out += ["", "schedule:"]
        rows = []
        for r in pl["schedule"]:
            rows.append([r["job"], r["kind"], r["gpu"], r["source"], r["n_gpus"], f"{r['start_day']:.1f}",
                         f"{r['end_day']:.1f}", _layout(r), usd(r["cost_usd"])])
        out.append(text_table(["job", "kind", "gpu", "source", "gpus", "start d", "end d", "layout", "power/rent"], rows))
        for i, alt in enumerate(result.alternatives, start=2):
            fl = ", ".join(f"{f['nodes']} x {f['gpu']} nodes" for f in alt["fleet"]) or "no purchase"
            rented = sorted({r["gpu"] for r in alt["rent"]})
            out.append(f"alternative {i}: {usd(alt['cost']['total_usd'])}; {fl}"
                       + (f"; rents {', '.join(rented)}" if rented else ""))
    lines = list(result.explanation.get("lines", [])) + [f"note: {n}" for n in result.explanation.get("notes", [])]
    sens = result.sensitivity or {}
    thresholds = sens.get("thresholds", []) if isinstance(sens, dict) else sens
    for e in sens.get("tornado", []) if isinstance(sens, dict) else []:
        lo, hi = (usd(e[k]) if e[k] is not None else "infeasible" for k in ("low", "high"))
        lines.append(f"tornado: {e['input']} -{e['swing_pct']:g}%: {lo}, +{e['swing_pct']:g}%: {hi}"
                     + (" (fleet changes)" if any(e["changes"].values()) else ""))
    for t in thresholds:
        if t.get("change_pct") is not None:
            lines.append(f"sensitivity: {t['input']} {t['change_pct']:+.1f}% changes the fleet")
    if lines:
        out.append("")
        out += [("- " if markdown else "") + ln for ln in lines]
    return "\n".join(out).rstrip() + "\n"
