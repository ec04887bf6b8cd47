"""The CP-SAT fleet model: how many replicas of which serving option, least cost first.

Notation (OR-Tools sample order: data, model, variables, constraints, objective, solve, decode)

    r in R               replica options (GPU type, TP, PP, weight/KV format, batch cap, and the
                         rental offer it runs on), each meeting the SLOs on its own
                         (serve/problem.py builds them)
    g in G               billing pools: one GPU type rented through one offer (instance size);
                         type(g) is the pool's GPU type, h in H the GPU types
    g(r), n[r]           option r's pool and GPUs per replica
    cap[r] (int)         sustainable requests/s of one replica, in milli-requests/s, rounded DOWN
    D (int)              demand / max_utilization, in milli-requests/s, rounded UP
    k (int)              spare replicas: the fleet covers D with any k replicas removed
                         ('n+1' is k = 1, 'none' k = 0)
    gpi[g], price[g]     GPUs per rented instance of pool g, price of one instance (integer
                         1e-4 USD/hour, rounded UP: a fleet within the budget in these units is
                         within it in dollars)
    x[r] in [0, U[r]]    replicas of option r;  U[r] = ceil(D / cap[r]) + k
    y[r] in {0, 1}       option r is used (y[r] <=> x[r] >= 1)
    m[g] >= 0            instances of pool g rented
    z[j] in {0, 1}       the redundancy threshold t[j] is chosen (t ranges over the distinct cap)
    i in I, I(r)         one-off work items (compression: calibration, recovery, distillation of
                         one model), those option r needs; o[i] the item's cost amortised over the
                         serving horizon (1e-4 USD/hour, rounded UP)
    u[i] in {0, 1}       item i is paid for

    coverage (k = 0):    sum_r cap[r] x[r] >= D
    coverage (k >= 1):   OR_j z[j];  z[j] => sum_r min(cap[r], t[j]) x[r] >= D + k t[j]
    instances:           gpi[g] m[g] >= sum_{r in g} n[r] x[r]         (replicas share instances)
    one-off items:       y[r] => u[i]  for i in I(r)                     (paid once per fleet)
    cost                 = sum_g price[g] m[g] + sum_i o[i] u[i]
    a[stock]    =>       sum_{g: type(g) = h} gpi[g] m[g] <= available[h]  (GPUs rented, per type)
    a[max_gpus] =>       sum_g gpi[g] m[g] <= max_gpus
    a[capacity] =>       sum_{g in P(c)} gpi[g] m[g] <= cap[c]  for each capacity cap c
                         (pricing.capacity: a provider or provider/region; P(c) its pools)
    a[budget]   =>       cost <= budget                                  (floor, 1e-4 USD/hour)
    a[max_types] =>      sum_r y[r] <= max_types
    minimise  W * primary + sum_r n[r] x[r]     (primary: cost (with the one-off items), or GPUs
                                                 sum_g gpi[g] m[g]; W > the largest secondary)

Redundancy, exactly: the k largest replicas of a fleet sum to min_t (k t + sum_r x[r] (cap[r] - t)^+)
(the LP dual of 'pick k of the multiset'; the minimum is reached at t = one of the capacities, or
the total when the fleet has fewer than k replicas), so 'sum - top-k >= D' holds iff some t
satisfies sum_r min(cap[r], t) x[r] >= D + k t; only t in {cap[r]} need be tried.

Ranked alternatives: after the j-th fleet (counts c) is decoded, the cut OR_{r: c[r] > 0}
x[r] <= c[r] - 1 removes it and every fleet containing it (a fleet plus an idle replica is
not an alternative). With the secondary key strictly increasing under adding a replica, the
K fleets returned are the K best *minimal* fleets (no replica can be removed) in
lexicographic (primary, GPUs in replicas) order; a minimal fleet never has x[r] > U[r], so
the bound U loses none. ``status`` is 'optimal' only when every solve was proven optimal.
"""

from __future__ import annotations

import math
import time


from dataclasses import dataclass, field, replace
from typing import Callable, Optional
import numpy as np
from ortools.sat.python import cp_model

from optimizer.search.core.scales import MONEY_UNITS_PER_USD

#: Integer scales of the fleet model, in one place.
MILLI = 1000                      # requests/s -> milli-requests/s
INT64_SAFE = 2**62
FAMILIES = ("budget", "stock", "max_gpus", "max_types", "capacity")
#: CP-SAT's linearization level. 0 (no LP relaxation) proves these small integer models 2-4x
#: faster than the default 1 on the shipped scenarios (benchmarks/bench_serving.py); the answer
#: is the same proven optimum either way.
LINEARIZATION_LEVEL = 0


@dataclass(frozen=True)
class FleetOption:
    """One replica option as the fleet model sees it."""

    gpu: int                      # GPU type index (into FleetProblem.gpi / price)
    n_gpus: int                   # GPUs per replica
    cap: int                      # milli-requests/s, floored
    items: tuple[int, ...] = ()   # one-off work items it needs (indices into FleetProblem.one_off)
    #: False: ``cap`` is an upper bound still to be refined (FleetProblem.refine; lazy simulated
    #: capacities, search/serve/capacity.py); ``blocked``: refined to no capacity (x[r] = 0)
    exact: bool = True
    blocked: bool = False


@dataclass(frozen=True)
class FleetProblem:
    options: tuple[FleetOption, ...]
    demand: int                               # milli-requests/s, ceiled (already / max_utilization)
    spares: int = 0                           # k
    gpi: tuple[int, ...] = ()                 # per GPU type
    price: tuple[int, ...] = ()               # per GPU type, 1e-4 USD per instance-hour
    available: tuple[int | None, ...] = ()    # per GPU TYPE, GPUs
    pool_type: tuple[int, ...] = ()           # GPU type of each pool; () = pools are the types
    max_gpus: int | None = None
    budget: int | None = None                 # 1e-4 USD/hour
    max_types: int | None = None
    objective: str = "cost"                   # cost | gpus
    one_off: tuple[int, ...] = ()             # per one-off item, 1e-4 USD/hour amortised
    #: refine(i, option) -> the option with its exact capacity, for options with exact False
    refine: Optional[Callable] = field(default=None, compare=False, repr=False)
    #: issue 17: (key, GPUs, pools) per pricing.capacity cap (pricing.capacity_groups)
    capacity: tuple[tuple[str, int, tuple[int, ...]], ...] = ()

    def type_of(self, g: int) -> int:
        return self.pool_type[g] if self.pool_type else g

    def pools_of(self, h: int) -> list[int]:
        return [g for g in range(len(self.gpi)) if self.type_of(g) == h]

    def upper(self, r: int) -> int:
        o = self.options[r]
        return -(-self.demand // o.cap) + self.spares


@dataclass
class Fleet:
    counts: tuple[int, ...]                   # x[r]
    instances: tuple[int, ...]                # m[g]
    cost: int                                 # 1e-4 USD/hour
    gpus: int                                 # GPUs rented
    gpus_used: int                            # GPUs in replicas
    key: tuple[int, int]                      # (primary, secondary)


@dataclass
class FleetResult:
    fleets: list[Fleet]
    status: str                               # optimal | feasible | infeasible | unknown
    solve_time_s: float
    n_solves: int
    stats: dict = field(default_factory=dict)
    problem: Optional["FleetProblem"] = None  # the problem as refined (its options' exact capacities)


def demand_units(requests_per_s: float, max_utilization: float) -> int:
    """Demand with utilisation headroom in milli-requests/s, rounded UP (never under-provision)."""
    return max(1, math.ceil(requests_per_s / max_utilization * MILLI - 1e-9))


def capacity_units(requests_per_s) -> np.ndarray:
    """Replica capacity in milli-requests/s, rounded DOWN (never over-credit a replica)."""
    return np.floor(np.asarray(requests_per_s, dtype=float) * MILLI + 1e-9).astype(np.int64)


def usd_units(usd_per_hour: float) -> int:
    """A price in 1e-4 USD/hour, rounded UP (1e-6 of a unit forgiven for float noise: 23.92 is
    239200, not 239201)."""
    return math.ceil(usd_per_hour * MONEY_UNITS_PER_USD - 1e-6)


def instances_needed(gpus_used: int, gpi: int) -> int:
    return -(-gpus_used // gpi)


def fleet_figures(p: FleetProblem, counts) -> Fleet:
    """Instances, cost and GPU counts of a fleet (the same integers the model uses)."""
    used = [0] * len(p.gpi)
    for o, x in zip(p.options, counts):
        used[o.gpu] += o.n_gpus * int(x)
    inst = tuple(instances_needed(u, p.gpi[g]) for g, u in enumerate(used))
    paid = {i for o, x in zip(p.options, counts) if x for i in o.items}
    cost = sum(m * p.price[g] for g, m in enumerate(inst)) + sum(p.one_off[i] for i in paid)
    gpus = sum(m * p.gpi[g] for g, m in enumerate(inst))
    primary = cost if p.objective == "cost" else gpus
    return Fleet(tuple(int(x) for x in counts), inst, cost, gpus, sum(used), (primary, sum(used)))


def covers(p: FleetProblem, counts) -> bool:
    """sum - (k largest replicas) >= D, computed directly (the reference for the model)."""
    caps = sorted((o.cap for o, x in zip(p.options, counts) for _ in range(int(x))), reverse=True)
    return sum(caps[p.spares:]) >= p.demand


def violated(p: FleetProblem, f: Fleet, counts, skip=()) -> list[str]:
    """Limit families a fleet breaks (coverage aside)."""
    out = []
    if "stock" not in skip:
        for h, a in enumerate(p.available):
            if a is not None and sum(f.instances[g] * p.gpi[g] for g in p.pools_of(h)) > a:
                out.append("stock")
                break
    if "max_gpus" not in skip and p.max_gpus is not None and f.gpus > p.max_gpus:
        out.append("max_gpus")
    if "budget" not in skip and p.budget is not None and f.cost > p.budget:
        out.append("budget")
    if "max_types" not in skip and p.max_types is not None and sum(1 for x in counts if x) > p.max_types:
        out.append("max_types")
    if "capacity" not in skip and over_capacity(p, f.instances):
        out.append("capacity")
    return out


def capacity_used(p: FleetProblem, instances) -> dict[str, int]:
    """GPUs a fleet rents under each capacity cap (key -> GPUs)."""
    return {key: sum(int(instances[g]) * p.gpi[g] for g in pools) for key, _, pools in p.capacity}


def over_capacity(p: FleetProblem, instances) -> list[str]:
    """The capacity caps (keys) a fleet passes."""
    used = capacity_used(p, instances)
    return [key for key, limit, _ in p.capacity if used[key] > limit]


class _Model:
    """The CP-SAT model of one FleetProblem, with enforcement literals per limit family."""

    def __init__(self, p: FleetProblem, families=FAMILIES, stock_only: set[int] | None = None,
                 better_than: tuple[int, int] | None = None):
        self.p = p
        self.cutoff = better_than[0] if better_than is not None else None
        m = self.model = cp_model.CpModel()
        R, G = len(p.options), len(p.gpi)
        # variables
        self.x = [m.new_int_var(0, self._bound(r, families, stock_only), f"x[{r}]") for r in range(R)]
        self.y = [m.new_bool_var(f"y[{r}]") for r in range(R)]
        used_bound = [sum(o.n_gpus * p.upper(r) for r, o in enumerate(p.options) if o.gpu == g) for g in range(G)]
        m_ub = [min(instances_needed(used_bound[g], p.gpi[g]), self._pool_cap(g)) for g in range(G)]
        self.m = [m.new_int_var(0, m_ub[g], f"m[{g}]") for g in range(G)]
        self.lits = {f: m.new_bool_var(f"a[{f}]") for f in families}
        # constraints
        for r in range(R):
            m.add(self.x[r] <= p.upper(r) * self.y[r])   # y[r] = 0 forces x[r] = 0
            m.add(self.x[r] >= self.y[r])
        self._add_coverage()
        for g in range(G):
            rs = [r for r, o in enumerate(p.options) if o.gpu == g]
            m.add(p.gpi[g] * self.m[g] >= sum(p.options[r].n_gpus * self.x[r] for r in rs))
        self.u = [m.new_bool_var(f"u[{i}]") for i in range(len(p.one_off))]
        for r, o in enumerate(p.options):
            for i in o.items:
                m.add_implication(self.y[r], self.u[i])
        self.gpus_expr = sum(p.gpi[g] * self.m[g] for g in range(G))
        self.cost_expr = (sum(p.price[g] * self.m[g] for g in range(G))
                          + sum(c * u for c, u in zip(p.one_off, self.u) if c))
        self.used_expr = sum(o.n_gpus * self.x[r] for r, o in enumerate(p.options))
        if "stock" in self.lits:
            for h, a in enumerate(p.available):
                if a is not None and (stock_only is None or h in stock_only):
                    m.add(sum(p.gpi[g] * self.m[g] for g in p.pools_of(h)) <= a).only_enforce_if(self.lits["stock"])
        if "max_gpus" in self.lits and p.max_gpus is not None:
            m.add(self.gpus_expr <= p.max_gpus).only_enforce_if(self.lits["max_gpus"])
        if "budget" in self.lits and p.budget is not None:
            # a budget past int64 binds nothing (the objective bound below is < 2^62): clamp it
            m.add(self.cost_expr <= min(p.budget, INT64_SAFE)).only_enforce_if(self.lits["budget"])
        if "max_types" in self.lits and p.max_types is not None:
            m.add(sum(self.y) <= p.max_types).only_enforce_if(self.lits["max_types"])
        self._add_capacity_caps()
        for lit in self.lits.values():
            m.add(lit == 1)
        # objective: primary then GPUs in replicas (exact lexicographic via one weighted key)
        self.w = 1 + sum(o.n_gpus * p.upper(r) for r, o in enumerate(p.options))
        primary = self.cost_expr if p.objective == "cost" else self.gpus_expr
        bound = (sum((p.price[g] if p.objective == "cost" else p.gpi[g]) * m_ub[g] for g in range(G))
                 + (sum(p.one_off) if p.objective == "cost" else 0))
        if (bound + 1) * self.w >= INT64_SAFE:
            from optimizer.errors import ClusteroptError

            raise ClusteroptError("serve", f"the fleet model's integer costs would pass int64 ({bound} x {self.w})",
                                  "a lower serve.requests_per_s or redundancy, or fewer GPUs (constraints.gpus, "
                                  "constraints.max_gpus)")
        if better_than is not None:
            # only fleets strictly before ``better_than`` in (primary, secondary) order: primary
            # <= P and W primary + secondary < W P + S (exact whatever S is, as secondary < W)
            bp, bs = better_than
            m.add(primary <= bp)
            m.add(self.w * primary + self.used_expr <= self.w * bp + bs - 1)
        m.minimize(self.w * primary + self.used_expr)

    def _pool_cap(self, g: int) -> int:
        """Instances of pool g a fleet within the cutoff can rent: price[g] m[g] <= cost <= P
        (cost objective), gpi[g] m[g] <= GPUs <= P (GPU objective). INT64_SAFE without a cutoff."""
        p, c = self.p, self.cutoff
        if c is None:
            return INT64_SAFE
        unit = p.price[g] if p.objective == "cost" else p.gpi[g]
        return c // unit if unit > 0 else INT64_SAFE

    def _bound(self, r: int, families, stock_only) -> int:
        """U[r], tightened by what the enforced stock and GPU-count limits imply on their own,
        and by the cutoff (the replicas fit in the instances the cutoff allows)."""
        p, o = self.p, self.p.options[r]
        u = min(p.upper(r), self._pool_cap(o.gpu) * p.gpi[o.gpu] // o.n_gpus)
        h = p.type_of(o.gpu)
        a = p.available[h]
        if o.blocked:
            return 0
        if "stock" in families and a is not None and (stock_only is None or h in stock_only):
            u = min(u, a // o.n_gpus)
        if "max_gpus" in families and p.max_gpus is not None:
            u = min(u, p.max_gpus // o.n_gpus)
        return u

    def _add_capacity_caps(self) -> None:
        """issue 17: GPUs rented under each pricing.capacity cap (a provider or provider/region,
        shared by its pools) at most the cap, enforced with the 'capacity' literal."""
        p = self.p
        if "capacity" not in self.lits:
            return
        for _, limit, pools in p.capacity:
            self.model.add(sum(p.gpi[g] * self.m[g] for g in pools) <= limit).only_enforce_if(self.lits["capacity"])

    def _add_coverage(self) -> None:
        p, m = self.p, self.model
        caps = [o.cap for o in p.options]
        if p.spares == 0:
            m.add(sum(c * x for c, x in zip(caps, self.x)) >= p.demand)
            return
        ts = sorted(set(caps))
        z = [m.new_bool_var(f"z[{j}]") for j in range(len(ts))]
        m.add_bool_or(z)
        for j, t in enumerate(ts):
            m.add(sum(min(c, t) * x for c, x in zip(caps, self.x)) >= p.demand + p.spares * t).only_enforce_if(z[j])

    def exclude_supersets(self, counts) -> None:
        """Cut the fleet ``counts`` and every fleet containing it."""
        lits = []
        for r, c in enumerate(counts):
            if c > 0:
                b = self.model.new_bool_var("")
                self.model.add(self.x[r] <= c - 1).only_enforce_if(b)
                lits.append(b)
        self.model.add_bool_or(lits)

    def solve(self, time_limit_s: float, workers: int = 1):
        s = cp_model.CpSolver()
        s.parameters.max_time_in_seconds = max(time_limit_s, 0.01)
        s.parameters.num_workers = workers
        s.parameters.linearization_level = LINEARIZATION_LEVEL
        st = s.solve(self.model)
        if st not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
            return ("infeasible" if st == cp_model.INFEASIBLE else "unknown"), None
        counts = tuple(int(s.value(v)) for v in self.x)
        f = fleet_figures(self.p, counts)
        return ("optimal" if st == cp_model.OPTIMAL else "feasible"), f


def refine_used(p: FleetProblem, counts_list) -> FleetProblem | None:
    """Lazy capacities: the problem with every not-yet-exact option that one of the fleets uses
    refined (``p.refine``), or None when they are all exact. A fleet of exact options optimal
    over the others' upper bounds is optimal for their exact capacities (capacity.py)."""
    todo = sorted({i for counts in counts_list for i, x in enumerate(counts) if x and not p.options[i].exact})
    if not todo or p.refine is None:
        return None
    opts = list(p.options)
    for i in todo:
        opts[i] = p.refine(i, opts[i])
    return replace(p, options=tuple(opts))


def solve_fleets(p: FleetProblem, k: int = 1, *, time_limit_s: float = 30.0, families=FAMILIES,
                 better_than: tuple[int, int] | None = None) -> FleetResult:
    """``_solve_fleets`` until every option its fleets use has an exact capacity (refine_used);
    ``problem`` of the result is the refined problem. ``time_limit_s`` bounds the CP-SAT solves
    together (``solve_time_s``); the simulations refining capacities are not counted in it."""
    n, spent = 0, 0.0
    while True:
        res = _solve_fleets(p, k, time_limit_s=max(0.01, time_limit_s - spent), families=families,
                            better_than=better_than)
        n += res.n_solves
        spent += res.solve_time_s
        q = refine_used(p, [f.counts for f in res.fleets])
        if q is None:
            res.n_solves, res.solve_time_s, res.problem = n, spent, p
            return res
        p = q


def _solve_fleets(p: FleetProblem, k: int = 1, *, time_limit_s: float = 30.0, families=FAMILIES,
                  better_than: tuple[int, int] | None = None) -> FleetResult:
    """The k best minimal fleets of ``p`` (see the module notation), each checked against the
    direct coverage and limit computation (fails loudly if the model and it disagree).

    ``better_than``: a fleet key (primary, secondary), e.g. an optimum's: only fleets strictly
    before it are sought ('infeasible' when none is). Explanations ask exactly this ('does
    dropping this limit give a strictly better fleet?'); the cutoff also bounds each option's
    count and each pool's instances by what the key's cost (or GPUs) can pay for, which turns
    CP-SAT's 5-10 s searches with a poor incumbent on the shipped scenarios into proofs in
    well under a second (benchmarks/bench_serving.py)."""
    t0 = time.perf_counter()
    if not p.options:
        return FleetResult([], "infeasible", 0.0, 0)
    model = _Model(p, families, better_than=better_than)
    fleets: list[Fleet] = []
    status = "optimal"
    n = 0
    for _ in range(k):
        remaining = time_limit_s - (time.perf_counter() - t0)
        if remaining <= 0:
            status = "feasible" if fleets else "unknown"
            break
        st, f = model.solve(remaining)
        n += 1
        if f is None:
            if st == "unknown":
                status = "feasible" if fleets else "unknown"
            break
        if st == "feasible":
            status = "feasible"
        if not covers(p, f.counts):
            raise RuntimeError(f"fleet model chose {f.counts}, which does not cover demand {p.demand} "
                               f"with {p.spares} replicas removed")
        bad = violated(p, f, f.counts, skip=set(FAMILIES) - set(families))
        if bad:
            raise RuntimeError(f"fleet model chose {f.counts}, which breaks {bad}")
        fleets.append(f)
        model.exclude_supersets(f.counts)
    if not fleets and status == "optimal":
        status = "infeasible"
    return FleetResult(fleets, status, time.perf_counter() - t0, n)


def minimise(p: FleetProblem, expr: str, *, families=FAMILIES, time_limit_s: float = 10.0,
             stock_only: set[int] | None = None, gpu: int | None = None, pools: tuple[int, ...] = ()):
    """The least value of one figure over feasible fleets (for explanations: the smallest
    budget, GPU count or stock that some fleet meeting the kept limits needs). ``expr``:
    'cost', 'gpus', 'gpus_of' (GPUs rented of GPU TYPE ``gpu``, all its pools) or 'gpus_in' (GPUs
    rented in ``pools``, e.g. those a capacity cap covers); ``stock_only``:
    the GPU types whose stock is kept. None when no fleet exists. Lazy capacities are refined
    until the minimising fleet uses exact ones (refine_used)."""
    while True:
        v, counts = _minimise(p, expr, families=families, time_limit_s=time_limit_s, stock_only=stock_only, gpu=gpu,
                              pools=pools)
        q = refine_used(p, [counts] if counts is not None else [])
        if q is None:
            return v
        p = q


def _minimise(p: FleetProblem, expr: str, *, families, time_limit_s: float, stock_only, gpu, pools=()):
    model = _Model(p, families, stock_only)
    mm = model.model
    if expr == "cost":
        target = model.cost_expr
    elif expr == "gpus":
        target = model.gpus_expr
    elif expr == "gpus_in":
        target = sum(p.gpi[g] * model.m[g] for g in pools)
    else:
        target = sum(p.gpi[g] * model.m[g] for g in p.pools_of(gpu))
    mm.minimize(target)
    s = cp_model.CpSolver()
    s.parameters.max_time_in_seconds = time_limit_s
    s.parameters.num_workers = 1
    s.parameters.linearization_level = LINEARIZATION_LEVEL
    st = s.solve(mm)
    if st not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return None, None
    return int(round(s.objective_value)), tuple(int(s.value(v)) for v in model.x)
