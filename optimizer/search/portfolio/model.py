"""The portfolio CP-SAT model (notation: instance.py) and its lexicographic top-K solve."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional
from ortools.sat.python import cp_model

from optimizer.errors import ClusteroptError
from optimizer.search.portfolio.instance import BINDING_TIME_S, INT64_SAFE, Instance, OBJECTIVES

# ----------------------------------------------------------------------------------------
# model
# ----------------------------------------------------------------------------------------

class PlanModel:
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
        raise ClusteroptError("portfolio", f"costs sum up to {total:.3g} cents, past the solver's int64 range",
                              "smaller jobs (tokens, request rates) or prices; fleet.buy.years of at least a month")


def make_solver(time_limit_s: float, workers: int) -> cp_model.CpSolver:
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
class Solution:
    choice: list[int]             # option index per job
    starts: list[int]
    nodes: list[int]
    key: tuple
    objective: tuple[int, ...]    # (primary, cost) in integer units
    status: str
    proof_s: float = 0.0          # wall time of the solves that found and proved it (no compaction)


def _lex_solve(model: PlanModel, enforce: dict[str, int], deadline_t: float, workers: int,
               compact: bool = True) -> Optional[Solution]:
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
        solver = make_solver(deadline_t - time.perf_counter(), workers)
        st = solver.solve(work)
        if st == cp_model.INFEASIBLE:
            return None
        if st not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
            return Solution([], [], [], (), (), "unknown") if not vals else None
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


def _decode(model: PlanModel, solver, vals, status) -> Solution:
    choice = [next(k for k, x in enumerate(xs) if solver.boolean_value(x)) for xs in model.x]
    starts = [int(solver.value(s)) for s in model.s]
    nodes = [int(solver.value(v)) for v in model.nodes]
    return Solution(choice, starts, nodes, model.fleet_key(solver), tuple(vals), status)


def _compact(model: PlanModel, work: cp_model.CpModel, sol: Solution, deadline_t: float, workers: int) -> Optional[Solution]:
    """Same options and nodes, earliest starts (minimise the sum of end slots)."""
    c = work.clone()
    for j, k in enumerate(sol.choice):
        c.add(model.x[j][k] == 1)
    for g, n in enumerate(sol.nodes):
        c.add(model.nodes[g] == n)
    ends = [e for e in model.end if e is not None]
    c.minimize(sum(ends))
    solver = make_solver(min(deadline_t - time.perf_counter(), 2.0), workers)
    st = solver.solve(c)
    if st not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return None
    return Solution(sol.choice, [int(solver.value(s)) for s in model.s], sol.nodes, sol.key, sol.objective,
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
    model = PlanModel(inst, objective, rent_peaks=(objective == "gpus"))
    on = {name: 1 for name in model.lits}
    sols: list[Solution] = []
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


def binding_limits(inst: Instance, objective: str, best: Solution, *, deadline_t: float,
                   workers: int = 2) -> tuple[list[str], list[str]]:
    """Limits whose removal (alone) strictly improves the optimum: the binding ones.

    Each limit is tested by one feasibility question - with that limit dropped, is there a
    plan lexicographically better than ``best``? - rather than a full re-optimisation.
    Returns (binding, undecided): limits the time budget left unanswered are 'undecided'.
    Every limit is analysed, the horizon included (dropped, training may end after it: the
    model's starts reach H + the longest options, as for explanations).
    """
    model = PlanModel(inst, objective, rent_peaks=(objective == "gpus"))
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
    for name in list(model.lits):
        remaining = deadline_t - time.perf_counter()
        if remaining <= 0:
            undecided.append(name)
            continue
        c = m.clone()
        for n, lit in model.lits.items():
            c.add(lit == (0 if n == name else 1))
        st = make_solver(remaining, workers).solve(c)
        if st in (cp_model.OPTIMAL, cp_model.FEASIBLE):
            out.append(name)
        elif st != cp_model.INFEASIBLE:
            undecided.append(name)
    return out, undecided
