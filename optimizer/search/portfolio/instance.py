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

Serving jobs: per GPU type, the fewest-GPU fleet that ``search.serve.solve.solve_serving`` proves
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
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional
from cachetools import LRUCache
import numpy as np

from optimizer.catalog import Catalog, load_system_catalog
from optimizer.errors import ClusteroptError
from optimizer.formulas.cost import SERVER_POWER_OVERHEAD, owned_usd_per_gpu_hour, rented_cost_usd
from optimizer.portfolio_schema import DEFAULT_MAX_GPUS_PER_JOB, job_scenario, load_portfolio
from optimizer.pricing import GpuOption, gpu_options
from optimizer.search.core.scales import PLAN_MONEY_UNITS_PER_USD
from optimizer.search.serve.solve import solve_serving
from optimizer.search.train.table import build_table
from optimizer.units import SECONDS_PER_DAY, SECONDS_PER_HOUR
from dataclasses import replace
# the schedule grid is a rule of the portfolio document (checked where it is read)
from optimizer.portfolio_schema import GRID_STEPS_DAYS, MAX_SLOTS, choose_step_days  # noqa: F401

HOURS_PER_DAY = SECONDS_PER_DAY / SECONDS_PER_HOUR
INT64_SAFE = 2**62
OBJECTIVES = ("total_cost", "makespan", "gpus")
#: Most seconds the binding-limit analysis may take after the plan is proven (limits left
#: unanswered are reported as undecided).
BINDING_TIME_S = 10.0
#: Limit families; their enforcement literals are named 'budget', 'power', 'max_nodes', 'stock:<gpu>',
#: 'deadline:<job>', 'after:<job>-><job>', 'horizon'.
LIMIT_FAMILIES = ("budget", "power", "max_nodes", "stock", "deadline", "after", "horizon")


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
        return int(math.ceil(self.cost_usd * PLAN_MONEY_UNITS_PER_USD - 1e-6))


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
        return int(math.ceil(self.gpus[g].fixed_usd_per_node * PLAN_MONEY_UNITS_PER_USD - 1e-6))

    def node_capex_units(self, g: int) -> int:
        return int(math.ceil(self.gpus[g].purchase_usd_per_node * PLAN_MONEY_UNITS_PER_USD - 1e-6))

    def budget_units(self) -> Optional[int]:
        return None if self.budget_usd is None else int(math.floor(self.budget_usd * PLAN_MONEY_UNITS_PER_USD + 1e-6))


def interval_of(inst: Instance, j: int, o: Option, start: int) -> tuple[int, int]:
    """[start, end) slots that option o of job j occupies when started at ``start``."""
    if inst.jobs[j].kind == "serve":
        return inst.jobs[j].release, inst.horizon_slots
    return start, start + o.slots


# ----------------------------------------------------------------------------------------
# data: from a portfolio to an instance
# ----------------------------------------------------------------------------------------

def slots_up(days: float, step: float) -> int:
    return max(1, int(math.ceil(days / step - 1e-9)))


def slots_down(days: float, step: float) -> int:
    return int(math.floor(days / step + 1e-9))


def fleet_gpu_types(portfolio, catalog: Catalog) -> tuple[list, list[GpuType], list[str]]:
    """The fleet's GPU types: catalog GpuOptions (for the searches) and their economics.

    A type can be bought when the catalog has a purchase price and ``fleet.buy.allowed``;
    rented when ``fleet.rent.allowed`` and an offer prices it in ``fleet.rent.mode``. Types
    that can be neither are left out with a note.
    """

    cat = catalog
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
                                 offer=src.offer, available=None, accelerator=src.accelerator,
                                 offers=src.offers))
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
    there), as the owned-cluster TCO of search/train/system.py does.
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


#: Least-recently-used caches (cachetools) of the per-scenario tables re-planning reuses.
_TRAIN_CACHE: LRUCache = LRUCache(maxsize=64)


def training_layouts(scenario, gpus) -> dict:
    """Per (GPU type, GPU count): the fastest feasible layout of the training table.

    Returns columns gpu (index), n_gpus, wall_clock_days, row config and figures. Cached by
    the scenario's content and the GPU list (re-planning with other prices reuses it).
    """

    key = scenario.model_dump_json() + "|" + ",".join(f"{g.name}:{g.hardware!r}" for g in gpus)
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


def build_instance(portfolio, *, catalog: Catalog, prices: Optional[Mapping[str, float]] = None,
                   prune: bool = True) -> Instance:
    """The portfolio as plain numbers: GPU economics, each job's reduced options, the grid.

    ``prices`` scales catalog prices for sensitivity analysis: ``purchase.<gpu>``,
    ``rent.<gpu>`` or ``price.<gpu>`` (both) -> factor. ``prune=False`` keeps options that
    cannot meet their deadline (explanations need them to compute relaxations).
    """

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
    jobs, scenarios, rentals = [], [], {}
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
            rentals[i] = _rent_options(p, sc, types, catalog)
            opts, jnotes = _training_options(p, sc, gpu_opts, types, step, rentals[i])
            if not opts and sc.constraints.max_gpus is not None:
                jnotes = _capped_note(p, sc, gpu_opts, types, step, js.max_gpus is not None)
        else:
            opts, jnotes = _serving_options(p, i, sc, gpu_opts, types, horizon - js.from_day, H - release, catalog)
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
                    sources={"scenarios": scenarios, "gpu_options": gpu_opts, "rent_options": rentals}, buy=buy)


def _job_gpu_cap(p, types: list[GpuType]) -> Optional[int]:
    """Most GPUs any job could get from the fleet rules (None: no rule caps it)."""

    own = [owned_upper_gpus(p.fleet.buy, t) for t in types if t.can_buy]
    rent_ok = p.fleet.rent.allowed and any(t.rent_offer for t in types)
    caps = own + ([p.fleet.rent.max_gpus] if rent_ok else [])
    if not caps or any(c is None for c in caps):
        return None
    return min(max(caps), DEFAULT_MAX_GPUS_PER_JOB)


def _scaled(t: GpuType, f: Mapping[str, float]) -> GpuType:
    if not f:
        return t

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


def _rent_options(p, sc, types: list[GpuType], catalog: Catalog) -> list:
    """The job's rental (offer, mode) choices as GpuOptions of their own (pricing.gpu_options):
    each with its offer's fabric and reach, so a rented run is timed on the offer it is billed
    on (issue 17), not on the accelerator's reference node. Empty when renting is not allowed
    or the fleet's types are priced by the scenario."""
    if not p.fleet.rent.allowed:
        return []
    names = {t.name for t in types if t.rent_offer is not None}
    opts = [g for g in gpu_options(sc, catalog)[0] if g.name in names and g.choice is not None]
    return [replace(g, index=i) for i, g in enumerate(opts)]


def _training_options(p, sc, gpu_opts, types: list[GpuType], step: float,
                      rent_opts: list = ()) -> tuple[list[Option], list[str]]:
    """A training job's options: per (GPU type, count) its fastest layout owned (on the type's
    reference node) and rented. With ``rent_opts`` (one per offer choice) each rented option is
    the fastest layout on one offer, timed on that offer's fabric, billed at its (scaled) rate in
    whole instances; without them, rented runs take the owned timing on the cheapest offer that
    places them (``rent_offer_for``)."""
    lay = training_layouts(sc, gpu_opts)
    opts = []
    by_name = {t.name: i for i, t in enumerate(types)}
    for g, n, days, cfg, fig in zip(lay["gpu"], lay["n_gpus"], lay["wall_clock_days"], lay["config"], lay["figures"]):
        t = types[g]
        owned, rented = _run_costs(t, n, days * HOURS_PER_DAY)
        detail = {"config": cfg, **fig}
        for is_owned, cost in ((True, owned), (False, None if rent_opts else rented)):
            if cost is None:
                continue
            opts.append(Option(gpu=g, owned=is_owned, n_gpus=n, slots=slots_up(days, step), cost_usd=cost,
                               duration_days=days, detail=detail))
    if rent_opts:
        lay = training_layouts(sc, list(rent_opts))
        for k, n, days, cfg, fig in zip(lay["gpu"], lay["n_gpus"], lay["wall_clock_days"], lay["config"], lay["figures"]):
            ch = rent_opts[k]
            g = by_name[ch.name]
            t = types[g]
            scaled = {label: rate for rate, _, _, label in t.rent_choices}
            rate = scaled.get(ch.offer, ch.usd_per_gpu_hour)
            cost = float(rented_cost_usd(n, days * HOURS_PER_DAY, rate * ch.gpus_per_instance, ch.gpus_per_instance))
            detail = {"config": {**cfg, "gpu": ch.name}, **fig, "rent_offer": ch.offer, "rent_usd_per_gpu_hour": rate}
            opts.append(Option(gpu=g, owned=False, n_gpus=n, slots=slots_up(days, step), cost_usd=cost,
                               duration_days=days, detail=detail))
    notes = [] if opts else [f"no layout of {sc.name} fits in memory on any fleet GPU"]
    return opts, notes


def _capped_note(p, sc, gpu_opts, types, step, own_cap: bool) -> list[str]:
    """Why a training job has no option under its GPU-count cap (the job's ``max_gpus``, else the
    most the fleet limits allow): "fits in memory" only when no layout fits at any GPU count
    up to DEFAULT_MAX_GPUS_PER_JOB; else the cap and the fewest GPUs a layout needs."""

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


def _serving_options(p, i, sc, gpu_opts, types, days, slots, catalog) -> tuple[list[Option], list[str]]:
    """Per GPU type, the serving fleet the serving planner finds (see serving_fleets)."""
    opts, notes = [], []
    for g, gpus, detail in serving_fleets(sc, gpu_opts, types, catalog):
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


_SERVE_CACHE: LRUCache = LRUCache(maxsize=256)


def serving_fleets(scenario, gpu_opts, types: list[GpuType], catalog: Catalog) -> list[tuple[int, int, dict]]:
    """(GPU index, GPUs, detail) per GPU type: the fewest-GPU fleet of that type that the serving
    planner (``search.serve.solve.solve_serving``) proves carries the request rate under the SLOs
    and the redundancy rule.

    Every GPU of a serving fleet is busy for the whole horizon, so on one GPU type the fleet
    with the fewest GPUs costs least whether owned (power) or rented (GPU-hours, whole
    instances): one option per type is exact. The planner runs with objective 'gpus' (fewest
    GPUs rented, then fewest in replicas; instances grow with GPUs, so this is the fewest GPUs
    in replicas). Fleets mixing GPU types within one serving job are not offered.
    """

    out = []
    for g in gpu_opts:
        t = types[g.index]
        mode = scenario.pricing.mode if t.rent_offer is not None else "owned"
        sc = scenario.with_overrides({"constraints.gpus": [g.name], "constraints.available": {},
                                      "pricing.mode": mode, "objective": "gpus", "top_k": 1})
        key = (sc.model_dump_json(), repr(g.hardware), repr(g.offers))  # the catalog rows it reads
        hit = _SERVE_CACHE.get(key)
        if hit is None:
            res = solve_serving(sc, top_k=1, objective="gpus", time_limit_s=10.0, catalog=catalog)
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
