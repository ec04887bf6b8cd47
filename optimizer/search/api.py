"""``solve`` and ``evaluate``: the public entry points of the training search.

solve(scenario)   -> SolveResult: status, configs (DataFrame, rank from 1), pareto, explanation
evaluate(scenario, config) -> Evaluation: feasible, violations and every figure of one layout

Both run the same table code (tables.complete_table), so a configuration's figures are
identical whichever way they were reached; ``solve`` re-evaluates each returned row and
raises if they disagree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
import pandas as pd

from optimizer.errors import ClusteroptError
from optimizer.search import cpsat
from optimizer.search.explain import explain_infeasible, binding_summary
from optimizer.search.pareto import pareto_front
from optimizer.search.space import PRECISIONS, RECOMPUTES, GpuOption
from optimizer.search.tables import (CONFIG_KEYS, LIMIT_FAMILIES, Table, build_table, complete_table,
                                     limits_of, objective_keys, OBJECTIVE_COLUMN_BY_NAME)

#: Column order of the configs DataFrame (and of the JSON configs), defined once.
COLUMNS = ("rank", "objective", "gpu", "n_gpus", "n_nodes", "tp", "pp", "dp", "cp", "ep", "zero",
           "precision", "micro_batch", "grad_accum", "global_batch", "recompute",
           "sequence_parallel", "memory_per_gpu_bytes", "memory_capacity_bytes", "memory_headroom",
           "mfu", "hfu", "step_time_s", "tokens_per_s", "train_days", "wall_clock_days",
           "gpu_hours", "usd_per_gpu_hour", "cost_usd", "cost_per_mtoken_usd", "offer",
           "provider", "instance_type", "region", "interconnect", "offer_max_gpus", "offer_as_of", "pricing_mode",
           "npv_usd", "payback_years", "roi_pct", "goodput", "expected_interruptions", "job_mtbi_s", "checkpoint_bytes", "checkpoint_write_s",
           "checkpoint_interval_s", "storage_tier", "system")

#: Float columns copied from the table row as they are (system columns: tables.SYSTEM_COLUMNS).
_FLOAT_COLUMNS = ("mfu", "hfu", "step_time_s", "tokens_per_s", "train_days", "wall_clock_days", "gpu_hours",
                  "usd_per_gpu_hour", "cost_usd", "cost_per_mtoken_usd", "goodput", "expected_interruptions",
                  "job_mtbi_s", "checkpoint_bytes", "checkpoint_write_s", "checkpoint_interval_s")

OBJECTIVE_COLUMN = OBJECTIVE_COLUMN_BY_NAME


class _Mapping:
    """Readable both as attributes and as a mapping (CONTRACTS.md)."""

    def __getitem__(self, key):
        try:
            return getattr(self, key)
        except AttributeError:
            raise KeyError(key) from None

    def __contains__(self, key):
        return hasattr(self, key)

    def keys(self):
        return [f for f in self.__dataclass_fields__]


@dataclass
class Evaluation(_Mapping):
    config: dict
    feasible: bool
    violations: list[str]
    cost_usd: float
    train_days: float
    wall_clock_days: float
    step_time_s: float
    memory_per_gpu_bytes: float
    memory_capacity_bytes: int
    mfu: float
    hfu: float
    tokens_per_s: float
    n_nodes: int
    grad_accum: int
    global_batch: int
    gpu_hours: float
    usd_per_gpu_hour: float
    figures: dict = field(default_factory=dict)       # every column of the table row

    def __getitem__(self, key):
        """Fields first, then any column of the table row (goodput, checkpoint_write_s, ...)."""
        if key in self.__dataclass_fields__:
            return getattr(self, key)
        if key in self.figures:
            return self.figures[key]
        raise KeyError(key)

    def __getattr__(self, key):
        figures = self.__dict__.get("figures", {})
        if key in figures:
            return figures[key]
        raise AttributeError(key)


@dataclass
class SolveResult(_Mapping):
    scenario: str
    status: str                       # optimal | feasible | infeasible
    objective: str
    configs: pd.DataFrame
    pareto: pd.DataFrame
    explanation: dict
    stats: dict = field(default_factory=dict)
    table: Any = None                 # the full candidate Table (for sensitivity, plots)


# ----------------------------------------------------------------------------------------
# GPU options: catalog rows + prices for this scenario
# ----------------------------------------------------------------------------------------

def gpu_types(options: list[GpuOption], scenario) -> list[GpuOption]:
    """One option per GPU type (the first, i.e. cheapest, of its offers), re-indexed, with the
    scenario's stock as its limit: for planners that bill each type through pools of their own
    (the serving fleet's billing_pools)."""
    from dataclasses import replace

    stock = {}
    if scenario is not None:
        from optimizer.catalog import load_catalog

        cat = load_catalog()
        stock = {cat.resolve_gpu_id(k): v for k, v in scenario.constraints.available.items()}
    out, seen = [], set()
    for g in options:
        if g.name in seen:
            continue
        seen.add(g.name)
        out.append(replace(g, index=len(out), available=stock.get(g.name) if g.choice is not None else g.available))
    return out


def gpu_options(scenario, catalog=None) -> tuple[list[GpuOption], list[str]]:
    """Eligible GPU types with their hardware figures and the scenario's price per GPU-hour.

    Returns the options and notes on GPUs left out (no offer in this pricing mode...).
    """
    from optimizer.catalog import load_catalog
    from optimizer.offering import offer_choices

    cat = catalog or load_catalog()
    c, pricing = scenario.constraints, scenario.pricing
    if c.gpus is not None:
        names = []
        for i, g in enumerate(c.gpus):
            try:
                names.append(cat.resolve_gpu_id(g))
            except ClusteroptError as e:
                raise ClusteroptError(f"constraints.gpus[{i}]", e.problem, e.allowed) from None
    else:
        names = [a.id for a in cat.accelerators if _deployable(a, c.deployment)]
    for k in c.available:
        try:
            cat.resolve_gpu_id(k)
        except ClusteroptError as e:
            raise ClusteroptError(f"constraints.available.{k}", e.problem, e.allowed) from None
    available = {cat.resolve_gpu_id(k): v for k, v in c.available.items()}
    explicit = {cat.resolve_gpu_id(k): v for k, v in pricing.usd_per_gpu_hour.items()}
    out, notes = [], []
    seen = set()
    for name in names:
        if name in seen:
            continue
        seen.add(name)
        hw = cat.hardware(name)
        if c.max_power_w_per_device is not None and not 0 < hw.tdp_w <= c.max_power_w_per_device:
            notes.append(f"{name}: " + (f"{hw.tdp_w:g} W exceeds" if hw.tdp_w else "no published power for")
                         + f" constraints.max_power_w_per_device {c.max_power_w_per_device:g} W; left out")
            continue
        if name in explicit:
            rate, gpi, offer = explicit[name], 1, "scenario price"
        elif pricing.modes == ("owned",):
            rate = owned_rate(cat.accelerator(name), pricing)
            if rate is None:
                notes.append(f"{name}: no purchase price in the catalog; left out of owned pricing")
                continue
            gpi, offer = 1, "owned"
        else:
            # issue 17: one option per undominated (offer, mode), each with the offer's fabric and
            # reach; the search prices a layout only on options that can run it
            choices, why = offer_choices(cat, name, pricing, available.get(name))
            notes += why
            for ch in choices:
                out.append(GpuOption(index=len(out), name=name, hardware=ch.hardware,
                                     usd_per_gpu_hour=ch.usd_per_gpu_hour, gpus_per_instance=ch.gpus_per_instance,
                                     usd_per_instance_hour=ch.usd_per_instance_hour, offer=ch.label,
                                     available=ch.max_gpus, choice=ch))
            continue
        out.append(GpuOption(index=len(out), name=name, hardware=hw, usd_per_gpu_hour=rate,
                             gpus_per_instance=gpi, usd_per_instance_hour=rate * gpi, offer=offer,
                             available=available.get(name)))
    return out, notes


def _deployable(acc, deployment: str) -> bool:
    kind = getattr(acc, "deployment", "datacenter")
    if deployment == "edge":
        return kind == "edge"
    if deployment == "on_premise":
        return kind in ("datacenter", "workstation")
    return kind == "datacenter"


def owned_rate(acc, pricing) -> float | None:
    """Owned $/GPU-hour by total cost of ownership (formulas/cost.py)."""
    from optimizer.formulas.cost import owned_usd_per_gpu_hour

    price = getattr(acc, "purchase_usd", None)
    if price is None or (isinstance(price, float) and math.isnan(price)):
        return None
    br = owned_usd_per_gpu_hour(purchase_usd_per_gpu=price, years=pricing.years, tdp_w=acc.tdp_w,
                                utilization=pricing.utilization, pue=pricing.pue,
                                usd_per_kwh=pricing.usd_per_kwh)
    return float(getattr(br, "total", br))


# ----------------------------------------------------------------------------------------
# solve
# ----------------------------------------------------------------------------------------

def _limits(table: Table, scenario) -> list[cpsat.Limit]:
    """The scenario's limits as CP-SAT linear constraints over the rows (see cpsat notation)."""
    lim = limits_of(scenario, table.gpus)
    c = table.cols
    out = [cpsat.Limit("memory", c["memory_units"] - lim["memory_cap"][c["gpu"]], 0)]
    if lim["budget"] is not None:
        out.append(cpsat.Limit("budget", c["cost_units"], lim["budget"]))
    if lim["deadline"] is not None:
        out.append(cpsat.Limit("deadline", c["time_units"], lim["deadline"]))
    for g in table.gpus:
        if g.available is not None:
            out.append(cpsat.Limit("stock", np.where(c["gpu"] == g.index, c["n_gpus"], 0), g.available, g.name))
    if lim["max_gpus"] is not None:
        out.append(cpsat.Limit("max_gpus", c["n_gpus"], lim["max_gpus"]))
    out.append(cpsat.Limit("min_gpus", -c["n_gpus"], -lim["min_gpus"]))
    return out


def candidate_rows(table: Table, objective: str, k: int) -> np.ndarray:
    """Rows that can be in the top-K: feasible, and not worse on the primary key than the
    K-th best feasible row (ties kept). Exact: any other row is beaten by K rows."""
    feas = best_offer_rows(table, np.nonzero(table.feasible)[0], objective)
    if len(feas) <= k:
        return feas
    primary = objective_keys(table, objective)[0][feas]
    kth = np.partition(primary, k - 1)[k - 1]
    return feas[primary <= kth]


def best_offer_rows(table: Table, rows: np.ndarray, objective: str) -> np.ndarray:
    """Of ``rows``, each configuration's best row: the same layout on several offers (issue 17)
    counts once, on the offer best for the objective (offering.best_per_config)."""
    from optimizer.offering import best_per_config

    names = {}
    name_idx = np.array([names.setdefault(g.name, len(names)) for g in table.gpus], dtype=np.int64)
    c = table.cols
    cfg = [name_idx[c["gpu"]]] + [c[k] for k in CONFIG_KEYS if k != "gpu"]
    return best_per_config(cfg, objective_keys(table, objective), rows)


def solve(scenario, *, top_k: int | None = None, objective: str | None = None,
          time_limit_s: float = 30.0, catalog=None, efficiency_scale: float = 1.0,
          table: Table | None = None, full_table: Table | None = None) -> SolveResult:
    """Rank the K best distinct feasible configurations of a training scenario, proven by CP-SAT.

    ``table`` (optional): a candidate table already built for this scenario (sweeps re-price one
    table for many points). ``full_table``: the same with every GPU count (``build_table(...,
    gpu_count_limits=False)``), which explanations of infeasibility need; built when missing.
    """
    from optimizer.scenario import load_scenario

    scenario = load_scenario(scenario)
    if scenario.workload == "serve":                 # the fleet planner (issue 6)
        from optimizer.search.serving import solve_serving

        return solve_serving(scenario, top_k=top_k, objective=objective, time_limit_s=time_limit_s,
                             catalog=catalog)
    if scenario.workload == "codesign":              # model size chosen with the cluster (issue 9)
        from optimizer.search.codesign import solve_codesign

        return solve_codesign(scenario, top_k=top_k, objective=objective, time_limit_s=time_limit_s,
                              catalog=catalog, efficiency_scale=efficiency_scale)
    objective = objective or scenario.objective
    if objective not in OBJECTIVE_COLUMN:
        raise ClusteroptError("objective", f"{objective!r} is not a training objective", "allowed: cost, time, gpus")
    k = top_k or scenario.top_k
    spec = scenario.spec()
    notes: list[str] = []
    if table is None:
        gpus, notes = gpu_options(scenario, catalog)
        table = build_table(spec, scenario, gpus, efficiency_scale)
    rows = candidate_rows(table, objective, k)
    sub = table.subset(rows)
    res = cpsat.solve_top_k(objective_keys(sub, objective), k, _limits(sub, scenario), time_limit_s=time_limit_s)
    chosen = rows[res.rows] if res.rows else np.zeros(0, dtype=np.int64)
    status = res.status if len(chosen) else "infeasible"
    if res.status == "unknown" or (len(chosen) < min(k, len(rows)) and res.status != "optimal"):
        # the time limit stopped CP-SAT before it ranked K rows: every candidate row meets every
        # limit, so complete the ranking from the table's own order (not proven by CP-SAT)
        keys = [key[rows] for key in objective_keys(table, objective)]
        order = rows[np.lexsort(keys[::-1])]
        chosen = np.concatenate([chosen, order[~np.isin(order, chosen)]])[:k]
        status = "feasible" if len(chosen) else "infeasible"
        notes.append(f"CP-SAT time limit ({time_limit_s:g} s) reached before the ranking was proven; the "
                     "configurations are the best by sorting the candidate table (status 'feasible', not proven)")
    configs = frame(table, chosen, scenario, objective)
    _verify(scenario, table, chosen, spec, efficiency_scale, objective)
    if len(chosen):
        explanation = binding_summary(table, scenario, int(chosen[0]))
    else:
        # the table left out rows breaking GPU-count limits; explanations need them all
        full = full_table if full_table is not None else build_table(
            spec, scenario, table.gpus, efficiency_scale, gpu_count_limits=False)
        explanation = explain_infeasible(full, scenario, spec)
    from optimizer.offering import commitment_notes

    explanation["notes"] = notes + commitment_notes(table.gpus) + explanation.get("notes", [])
    return SolveResult(
        scenario=scenario.name, status=status, objective=objective, configs=configs,
        pareto=frame(table, pareto_front(table), scenario, objective, ranked=False),
        explanation=explanation,
        stats={"rows": len(table), "feasible_rows": int(table.feasible.sum()), "cpsat_rows": len(rows),
               "cpsat_solves": res.n_solves, "cpsat_time_s": res.solve_time_s},
        table=table)


def _tier_name(i: int) -> str:
    from optimizer.catalog import load_system_catalog

    return list(load_system_catalog().storage_tiers)[i]


def _plain(x):
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x.item() if hasattr(x, "item") else x


def frame(table: Table, rows, scenario, objective: str, ranked: bool = True, row_context=None) -> pd.DataFrame:
    """One row per configuration, fixed column order (COLUMNS), raw numbers; ``system`` holds the
    storage, hosts, fabric, TCO and reliability breakdown (search/system.py).

    ``row_context(r) -> (spec, scenario)``: the model and scenario of row r where they vary by
    row (co-design: each rung and token count); default the scenario's own."""
    from optimizer.search.system import system_breakdown

    if row_context is None:
        spec = scenario.spec() if len(rows) else None
        row_context = lambda r: (spec, scenario)  # noqa: E731
    recs = []
    for i, r in enumerate(rows):
        r = int(r)
        c = table.cols
        g = table.gpus[int(c["gpu"][r])]
        rec = table.config(r)
        rec.update({
            "rank": i + 1,
            "objective": float(c[OBJECTIVE_COLUMN[objective]][r]),
            "n_nodes": int(c["n_nodes"][r]),
            "grad_accum": int(c["grad_accum"][r]),
            "global_batch": int(c["global_batch"][r]),
            "memory_per_gpu_bytes": float(c["memory_per_gpu_bytes"][r]),
            "memory_capacity_bytes": int(g.hardware.memory_bytes),
            "memory_headroom": 1.0 - float(c["memory_per_gpu_bytes"][r]) / g.hardware.memory_bytes,
            "offer": g.offer,
        })
        for k in _FLOAT_COLUMNS:
            rec[k] = float(c[k][r])
        rec["storage_tier"] = _tier_name(int(c["storage_tier"][r]))
        rec.update(offer_keys(g, r_scenario_mode(scenario)))
        r_spec, r_scenario = row_context(r)
        rec["system"] = _plain(system_breakdown(r_spec, r_scenario, g, {k: v[r] for k, v in c.items()}))
        inv = (rec["system"].get("tco") or {}).get("investment") if rec["interconnect"] == "owned" else None
        for k in ("npv_usd", "payback_years", "roi_pct"):
            rec[k] = None if inv is None else inv[k]
        recs.append(rec)
    df = pd.DataFrame.from_records(recs, columns=list(COLUMNS))
    if not ranked:
        df = df.drop(columns=["rank"])
    return df


def r_scenario_mode(scenario) -> str:
    modes = getattr(getattr(scenario, "pricing", None), "modes", ("on_demand",))
    return modes[0] if len(modes) == 1 else "+".join(modes)


def offer_keys(g: GpuOption, mode: str = "on_demand") -> dict:
    """The flat keys naming a configuration's offer (CONTRACTS.md 'Offers and money'): provider,
    instance_type, region, interconnect (single_gpu | node | cluster; 'owned' for owned hardware),
    offer_max_gpus (None: no stated limit), offer_as_of, and the pricing mode it is billed in."""
    ch = getattr(g, "choice", None)
    if ch is not None:
        o = ch.offer
        return {"provider": o.provider, "instance_type": o.instance_type, "region": o.region,
                "interconnect": o.interconnect, "offer_max_gpus": o.contiguous_max_gpus, "offer_as_of": o.as_of,
                "pricing_mode": ch.mode}
    owned = g.offer == "owned"
    return {"provider": None, "instance_type": None, "region": None, "interconnect": "owned" if owned else None,
            "offer_max_gpus": None, "offer_as_of": None, "pricing_mode": "owned" if owned else mode}


def _verify(scenario, table: Table, rows, spec, efficiency_scale: float, objective: str = "cost") -> None:
    """Re-evaluate each chosen row through evaluate(); fail loudly on any disagreement."""
    for r in rows:
        ev = evaluate(scenario, table.config(int(r)), _gpus=table.gpus, _spec=spec,
                      efficiency_scale=efficiency_scale, _objective=objective)
        for key in ("cost_usd", "wall_clock_days", "memory_per_gpu_bytes", "goodput"):
            a, b = float(table.cols[key][r]), float(ev[key])
            if not math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9):
                raise RuntimeError(f"solver and evaluate disagree on {key} for {table.config(int(r))}: {a} vs {b}")
        if not ev.feasible:
            raise RuntimeError(f"solver chose a configuration evaluate() finds infeasible: {ev.violations}")


# ----------------------------------------------------------------------------------------
# evaluate
# ----------------------------------------------------------------------------------------

def _config_rows(spec, scenario, gpus: list[GpuOption], config: Mapping[str, Any]) -> tuple[dict, list[str]]:
    """A one-row column table for an arbitrary configuration, plus its rule violations."""
    from optimizer.formulas.layout import TrainLayout
    from optimizer.formulas.training import layout_violations

    missing = [k for k in CONFIG_KEYS if k not in config]
    if missing:
        raise ClusteroptError("config", f"missing keys {missing}", f"a configuration has the 12 keys {', '.join(CONFIG_KEYS)}")
    extra = [k for k in config if k not in CONFIG_KEYS and k not in ("grad_accum",)]
    if extra:
        raise ClusteroptError("config", f"unknown keys {extra}", f"allowed: {', '.join(CONFIG_KEYS)}")
    from optimizer.catalog import load_catalog

    try:
        gid = load_catalog().resolve_gpu_id(str(config["gpu"]))
    except ClusteroptError as e:
        raise ClusteroptError("config.gpu", e.problem, e.allowed) from None
    mine = [x for x in gpus if x.name.lower() == gid.lower()]      # every offer of that GPU (issue 17)
    g = mine[0] if mine else None
    if g is None:
        raise ClusteroptError("config.gpu", f"{gid} is not eligible in this scenario (no price or not listed)",
                              "eligible: " + ", ".join(x.name for x in gpus))
    if config["precision"] not in PRECISIONS:
        raise ClusteroptError("config.precision", f"{config['precision']!r}", f"allowed: {', '.join(PRECISIONS)}")
    if config["recompute"] not in RECOMPUTES:
        raise ClusteroptError("config.recompute", f"{config['recompute']!r}", f"allowed: {', '.join(RECOMPUTES)}")
    ints = {k: int(config[k]) for k in ("n_gpus", "tp", "pp", "dp", "cp", "ep", "zero", "micro_batch")}
    for k, v in ints.items():
        if v < (0 if k == "zero" else 1):
            raise ClusteroptError(f"config.{k}", f"{v}", "must be >= 1" if k != "zero" else "must be 0-3")
    if ints["zero"] > 3:
        raise ClusteroptError("config.zero", f"{ints['zero']}", "allowed: 0, 1, 2, 3")
    train = scenario.train
    target = train.target_batch_sequences()
    tol = train.batch_tolerance_effective()
    mb, dp = ints["micro_batch"], ints["dp"]
    ga = int(config.get("grad_accum") or max(1, round(target / (mb * dp))))
    violations = []
    if ints["tp"] * ints["pp"] * dp * ints["cp"] != ints["n_gpus"]:
        violations.append(f"dp x tp x pp x cp = {dp * ints['tp'] * ints['pp'] * ints['cp']} != n_gpus = {ints['n_gpus']}")
    gb = mb * dp * ga
    if abs(gb - target) > tol * target + 1e-9:
        violations.append(f"global batch: micro_batch x dp x grad_accum = {gb} sequences, "
                          f"target {target:g}" + (f" within {tol:.0%}" if tol else " exactly"))
    layout = TrainLayout(seq_len=train.seq_len, global_batch=gb, tp=ints["tp"], pp=ints["pp"], dp=dp,
                         cp=ints["cp"], ep=ints["ep"], zero=ints["zero"], micro_batch=mb,
                         recompute=config["recompute"], sequence_parallel=bool(config["sequence_parallel"]),
                         precision=config["precision"], interleave=train.interleave,
                         optimizer=train.optimizer, flash_attention=train.flash_attention)
    violations += list(layout_violations(spec, g.hardware, layout))
    node = max(g.hardware.gpus_per_node, 1)
    n = ints["n_gpus"]
    if n > node and n % node:
        violations.append(f"n_gpus = {n} is not a whole number of {node}-GPU nodes")
    m = len(mine)
    full = lambda v: np.full(m, v)  # noqa: E731
    cols = {
        "gpu": np.array([x.index for x in mine]), "tp": full(ints["tp"]), "pp": full(ints["pp"]),
        "dp": full(dp), "cp": full(ints["cp"]), "ep": full(ints["ep"]),
        "zero": full(ints["zero"]), "precision": full(PRECISIONS.index(config["precision"])),
        "micro_batch": full(mb), "recompute": full(RECOMPUTES.index(config["recompute"])),
        "sequence_parallel": full(bool(config["sequence_parallel"])),
        "grad_accum": full(ga), "global_batch": full(gb), "n_gpus": full(n),
        "n_nodes": full(-(-n // node)),
    }
    return cols, violations


def _limit_messages(table: Table, r: int, scenario) -> list[str]:
    from optimizer.search.explain import describe_violation

    return [describe_violation(table, r, scenario, fam) for fam in LIMIT_FAMILIES if table.violations[fam][r]]


def evaluate(scenario, config: Mapping[str, Any], *, catalog=None, efficiency_scale: float = 1.0,
             _gpus: list[GpuOption] | None = None, _spec=None, _objective: str | None = None) -> Evaluation:
    """Every figure of one configuration, its feasibility and the rules it breaks."""
    from optimizer.scenario import load_scenario

    scenario = load_scenario(scenario)
    spec = _spec or scenario.spec()
    gpus = _gpus if _gpus is not None else gpu_options(scenario, catalog)[0]
    cols, violations = _config_rows(spec, scenario, gpus, config)
    table = complete_table(spec, scenario, gpus, cols, efficiency_scale)
    # one row per offer of the GPU: the configuration is priced on its best offer that meets
    # every limit (as solve ranks it), else on its best offer overall, with that offer's violations
    objective = _objective if _objective in OBJECTIVE_COLUMN else (
        scenario.objective if scenario.objective in OBJECTIVE_COLUMN else "cost")
    order = np.lexsort([k for k in objective_keys(table, objective)][::-1])
    msgs = {int(i): _limit_messages(table, int(i), scenario) for i in order}
    pick = next((int(i) for i in order if not msgs[int(i)]), int(order[0]))
    violations += msgs[pick]
    c = {k: (v[pick].item() if hasattr(v[pick], "item") else v[pick]) for k, v in table.cols.items()}
    g = gpus[int(c["gpu"])]
    c.update(offer_keys(g, r_scenario_mode(scenario)), offer=g.offer)
    return Evaluation(
        config=table.config(pick), feasible=not violations, violations=violations,
        cost_usd=c["cost_usd"], train_days=c["train_days"], wall_clock_days=c["wall_clock_days"],
        step_time_s=c["step_time_s"], memory_per_gpu_bytes=c["memory_per_gpu_bytes"],
        memory_capacity_bytes=int(g.hardware.memory_bytes), mfu=c["mfu"], hfu=c["hfu"],
        tokens_per_s=c["tokens_per_s"], n_nodes=int(c["n_nodes"]), grad_accum=int(c["grad_accum"]),
        global_batch=int(c["global_batch"]), gpu_hours=c["gpu_hours"], usd_per_gpu_hour=c["usd_per_gpu_hour"],
        figures=c)
