"""The whole system behind each training row: failures and checkpoints, storage, hosts, fabric
and total cost of ownership (issue 10), vectorised over the search table.

``system_columns(spec, scenario, gpus, cols)`` adds, per row (numpy, no per-row Python):

    job_mtbi_s              1 / (n_gpus lambda_gpu + n_nodes lambda_node)       reliability.job_mtbi_s
    checkpoint_bytes        all ranks, each tensor once (weights, fp32 master, moments)
    checkpoint_write_s      checkpoint bytes / min(tier write bandwidth, nodes x per-node limit)
    checkpoint_blocking_s   the stall per checkpoint (= write_s blocking; D2H snapshot when async)
    checkpoint_interval_s   Daly 2006 optimum (or system.checkpoint_interval_s)
    restart_s               detect + reschedule + reload + warm-up
    goodput                 failure-free time / expected wall-clock (Daly 2006 complete model)
    expected_interruptions  expected wall-clock / MTBI, over the whole run
    storage_tier            index into the system catalog's tiers (auto: the best durable tier)
    storage_usd             rented storage for the run (capacity x $/TB-month x wall-clock)
    host_memory_bytes       host RAM each node needs; host_memory_capacity_bytes what it has
    tco_usd_per_gpu_hour    owned pricing: the GPU option's owned rate plus the rest of this row's
                            cluster (servers, fabric sized by its nodes, storage), per GPU-hour (NaN if rented)

Defaults (all in the scenario's ``system:`` block): failure rates = catalog/failure_rates.csv's
calibrated 'default' row (Llama 3 405B held out); blocking checkpoints; 3 retained checkpoints;
bytes per token by vocabulary size (uint16 up to 65,536 ids, else uint32); the GPU's default
node type (catalog/hosts.csv, else the accelerator row's host columns); a rail-optimised
non-blocking fat-tree of QM9700 switches; storage tier 'auto' = per row the durable tier of the
pricing mode's deployment (cloud tiers for rentals, on-premise tiers when owned) that minimises
the objective (wall-clock for 'time', total cost otherwise).
"""

from __future__ import annotations


import math
from dataclasses import dataclass
from functools import lru_cache
import numpy as np

from optimizer.catalog import Catalog, load_system_catalog
from optimizer.errors import ClusteroptError, did_you_mean
from optimizer.formulas import fabric as F, hosts as H, preemption as PRE, reliability as R, storage as S, tco as T
from optimizer.formulas.offers import INTERCONNECT_CODES, offer_runs_layout
from optimizer.formulas.cost import SERVER_POWER_OVERHEAD
from optimizer.formulas.params import count_params
from optimizer.pricing import GpuOption, owned_rate, runnable_choice
from optimizer.scenario import Pricing, SystemSpec
from optimizer.units import BYTES_PER, GB, GIB, GIGABIT, SECONDS_PER_DAY, SECONDS_PER_HOUR
from types import SimpleNamespace

DEFAULT_NODE_OPTIC = "osfp-400g-sr4"
DEFAULT_SWITCH_OPTIC = "osfp-800g-2xsr4"
DEFAULT_CABLE = "mpo-fiber"


# ----------------------------------------------------------------------------------------
# context: what the scenario and catalog say, resolved once per call
# ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Host:
    """A node type in SI units (bytes, bytes/s, W); from catalog/hosts.csv or the accelerator row."""

    id: str
    gpus_per_node: int
    ram_bytes: float                  # inf when unknown
    cpu_cores: float                  # inf when unknown
    pcie_bytes_per_s: float           # per GPU, one direction
    storage_net_bytes_per_s: float
    nics: int
    nic_gbit_per_s: float
    nvme_read_bytes_per_s: float      # per node; nan when none
    nvme_write_bytes_per_s: float
    power_w: float
    server_usd: float                 # non-GPU part of the server
    gpu_usd: float                    # nan when no purchase price


def _host_for(gpu: GpuOption, system, syscat) -> Host:
    acc = gpu.accelerator
    row = None
    if system.host is not None:
        named = syscat.host(system.host)
        if named.gpu == acc.id:
            row = named
    row = row or syscat.default_host(acc.id)
    price = acc.purchase_usd if acc.purchase_usd is not None else float("nan")
    includes_server = bool(acc.purchase_includes_server)
    default_server = 0.0 if includes_server else syscat.tco_value("server_usd_excl_gpus_per_node")
    if system.server_usd_per_node is not None:
        default_server = system.server_usd_per_node
    if row is not None:
        server = row.server_usd_excl_gpus if row.server_usd_excl_gpus is not None else default_server
        if system.server_usd_per_node is not None:
            server = system.server_usd_per_node
        power = (row.max_power_kw * 1000.0 if row.max_power_kw is not None
                 else (acc.tdp_w or 0.0) * row.gpus_per_node * (1 + SERVER_POWER_OVERHEAD))
        return Host(id=row.id, gpus_per_node=row.gpus_per_node, ram_bytes=row.host_ram_gib * GIB,
                    cpu_cores=float(row.cpu_cores), pcie_bytes_per_s=row.pcie_gb_per_s_per_gpu * GB,
                    storage_net_bytes_per_s=row.storage_network_gbit_per_s * GIGABIT, nics=row.compute_nics,
                    nic_gbit_per_s=row.compute_nic_gbit_per_s,
                    nvme_read_bytes_per_s=(row.local_nvme_read_gb_per_s or float("nan")) * GB,
                    nvme_write_bytes_per_s=(row.local_nvme_write_gb_per_s or float("nan")) * GB,
                    power_w=power, server_usd=server, gpu_usd=price)
    # No node row: the accelerator's host columns; storage network ASSUMED = one GPU's NIC share.
    g = acc.gpus_per_node
    return Host(id=f"{acc.id} reference node", gpus_per_node=g,
                ram_bytes=acc.host_ram_gib * GIB if acc.host_ram_gib else float("inf"),
                cpu_cores=float(acc.host_cpu_cores) if acc.host_cpu_cores else float("inf"),
                pcie_bytes_per_s=(acc.pcie_gb_per_s or 16.0) * GB,
                storage_net_bytes_per_s=acc.inter_node_gbit_per_s * GIGABIT, nics=g,
                nic_gbit_per_s=acc.inter_node_gbit_per_s, nvme_read_bytes_per_s=float("nan"),
                nvme_write_bytes_per_s=float("nan"),
                power_w=(acc.tdp_w or 0.0) * g * (1 + SERVER_POWER_OVERHEAD), server_usd=default_server,
                gpu_usd=price)


def failure_rates(system, syscat) -> R.FailureRates:
    """The scenario's failure rates: the calibrated default row unless overridden, x scale."""
    d = syscat.default_failure_rate()
    g = d.gpu_failures_per_gpu_hour if system.failure_rate_per_gpu_hour is None else system.failure_rate_per_gpu_hour
    n = d.node_failures_per_node_hour if system.failure_rate_per_node_hour is None else system.failure_rate_per_node_hour
    src = "catalog default (calibrated, Llama 3 405B held out)"
    if system.failure_rate_per_gpu_hour is not None or system.failure_rate_per_node_hour is not None:
        src = "scenario system block"
    return R.FailureRates(per_gpu_hour=g * system.failure_rate_scale, per_node_hour=n * system.failure_rate_scale,
                          source=src)


def _owned(scenario) -> bool:
    return scenario.pricing.mode == "owned"


def candidate_tiers(scenario, syscat) -> list[int]:
    """Indices (catalog order) of the storage tiers the rows may use."""
    ids = list(syscat.storage_tiers)
    name = scenario.system.storage_tier
    if name != "auto":
        if name not in syscat.storage_tiers:
            raise ClusteroptError("system.storage_tier", f"unknown storage tier {name!r}",
                                  did_you_mean(name, ids + ["auto"]))
        return [ids.index(name)]
    out = []
    for i, t in enumerate(syscat.storage_tiers.values()):
        if not t.durable:
            continue
        if _owned(scenario):
            ok = t.deployment in ("on_premise", "any") and t.capex_usd_per_tb is not None
        else:
            ok = t.deployment in ("cloud", "any") and t.usd_per_tb_month is not None
        if ok:
            out.append(i)
    if not out:
        raise ClusteroptError("system.storage_tier", "no priced durable tier for this pricing mode",
                              "name a tier: " + ", ".join(ids))
    return out


@lru_cache(maxsize=64)
def _model_sizes(spec) -> tuple[float, float, int]:
    p = count_params(spec)
    return float(p.total), float(p.experts_routed), int(spec.vocab_size)


def _sizes(spec) -> tuple[float, float, int]:
    try:
        return _model_sizes(spec)
    except TypeError:                         # unhashable spec
        return _model_sizes.__wrapped__(spec)


# ----------------------------------------------------------------------------------------
# the per-row columns
# ----------------------------------------------------------------------------------------

def _tier_bandwidth(t, n_nodes, host_net, host_nvme, capacity_bytes, system, write: bool):
    if t.kind == "local_nvme":
        if np.any(~np.isfinite(host_nvme)):
            raise ClusteroptError("system.storage_tier", "local NVMe: a node type without NVMe figures",
                                  "name another tier")
        return np.asarray(S.tier_bandwidth_bytes_per_s(n_nodes, host_net, local_bytes_per_s_per_node=host_nvme))
    per_client = t.per_client_write_gb_per_s if write else t.per_client_read_gb_per_s
    aggregate = t.aggregate_write_gb_per_s if write else t.aggregate_read_gb_per_s
    per_tib = t.write_mb_per_s_per_tib if write else t.read_mb_per_s_per_tib
    if aggregate is not None:
        aggregate = aggregate * GB * system.storage_units
        if write and system.storage_write_gb_per_s is not None:
            aggregate = system.storage_write_gb_per_s * GB
    elif write and system.storage_write_gb_per_s is not None:
        aggregate, per_tib = system.storage_write_gb_per_s * GB, None
    return np.asarray(S.tier_bandwidth_bytes_per_s(
        n_nodes, host_net, per_client_bytes_per_s=None if per_client is None else per_client * GB,
        aggregate_bytes_per_s=aggregate, mb_per_s_per_tib=per_tib, capacity_bytes=capacity_bytes))


def _params_per_rank(n_params, n_exp, c):
    """(parameters a rank holds, parameters it updates under its ZeRO stage)."""
    tp, pp, dp, cp, ep = (c[k].astype(float) for k in ("tp", "pp", "dp", "cp", "ep"))
    held = (n_params - n_exp) / (tp * pp) + n_exp / (ep * tp * pp)
    shard = n_params / (tp * pp * dp * cp)
    return held, np.where(c["zero"] >= 1, shard, held)


def system_columns(spec, scenario, gpus, cols: dict, *, gpu_cost_per_hour=None) -> dict:
    """The per-row system columns (module docstring) for table columns ``cols``.

    ``gpu_cost_per_hour``: USD per wall-clock hour of each row's GPUs at the rented rate (used
    to pick the cheapest storage tier in 'auto' mode); owned rows use the TCO rate computed here.
    """

    system = scenario.system
    syscat = load_system_catalog()
    n = len(cols["n_gpus"])
    gi = cols["gpu"].astype(np.int64)
    hosts = [_host_for(g, system, syscat) for g in gpus]

    extra = {"option_rate": [g.usd_per_gpu_hour for g in gpus],
             "tdp_w": [g.hardware.tdp_w for g in gpus]}

    def per_gpu(attr):
        vals = extra[attr] if attr in extra else [getattr(h, attr) for h in hosts]
        return np.array(vals, dtype=float)[gi]

    n_gpus = cols["n_gpus"].astype(float)
    n_nodes = cols["n_nodes"].astype(float)
    n_params, n_exp, vocab = _sizes(spec)
    train_s = scenario.train.tokens / cols["tokens_per_s"]

    # -- checkpoint and failures --------------------------------------------------------------
    ck_total = float(R.checkpoint_bytes(n_params, optimizer=scenario.train.optimizer).total)
    per_rank = np.asarray(R.checkpoint_bytes_per_rank(
        n_params, n_exp, tp=cols["tp"], pp=cols["pp"], dp=cols["dp"], cp=cols["cp"], ep=cols["ep"],
        zero=cols["zero"], optimizer=scenario.train.optimizer).total, dtype=float) * np.ones(n)
    rates = failure_rates(system, syscat)
    # spot (issue 17): every preemption of one of the job's instances interrupts it like a failure
    preempt = np.array([getattr(g.choice, "preemptions_per_instance_hour", 0.0) if getattr(g, "choice", None)
                        else 0.0 for g in gpus], dtype=float)[gi] if len(gpus) else np.zeros(n)
    gpi = np.array([g.gpus_per_instance for g in gpus], dtype=np.int64)[gi] if len(gpus) else np.ones(n, np.int64)
    preempt_per_hour = np.asarray(PRE.job_preemptions_per_hour(-(-cols["n_gpus"].astype(np.int64) // gpi), preempt),
                                  dtype=float) * np.ones(n)
    no_failures = rates.per_gpu_hour <= 0 and rates.per_node_hour <= 0 and not np.any(preempt_per_hour > 0)
    fail_per_hour = n_gpus * rates.per_gpu_hour + n_nodes * rates.per_node_hour
    with np.errstate(divide="ignore"):
        mtbi = (np.full(n, np.inf) if no_failures
                else np.where(fail_per_hour + preempt_per_hour > 0,
                              SECONDS_PER_HOUR / np.maximum(fail_per_hour + preempt_per_hour, 1e-300), np.inf))
    bpt = system.bytes_per_token or S.bytes_per_token_for_vocab(vocab)
    data_bytes = float(S.dataset_bytes(scenario.train.tokens, bpt))
    capacity = data_bytes + float(S.checkpoint_capacity_bytes(ck_total, system.retained_checkpoints))
    host_net = per_gpu("storage_net_bytes_per_s")
    d2h = per_gpu("pcie_bytes_per_s")
    restart_kw = {k: getattr(system, f"restart_{k}") for k in ("detect_s", "reschedule_s", "warmup_s")
                  if getattr(system, f"restart_{k}") is not None}

    # -- owned: the whole-system TCO rate of this row's cluster (fabric sized by its nodes) ------
    owned_rows = np.array([g.offer == "owned" for g in gpus], dtype=bool)[gi] if len(gpus) else np.zeros(n, bool)
    tiers = list(syscat.storage_tiers.values())
    cand = candidate_tiers(scenario, syscat)
    fabric_capex = np.zeros(n)
    fabric_power = np.zeros(n)
    if owned_rows.any():
        fab = _fabric(n_nodes[owned_rows], per_gpu("nics")[owned_rows], per_gpu("nic_gbit_per_s")[owned_rows],
                      system, syscat)
        fabric_capex[owned_rows] = fab[0]
        fabric_power[owned_rows] = fab[1]

    best = None
    for ti in cand:
        t = tiers[ti]
        w_bw = _tier_bandwidth(t, n_nodes, host_net, per_gpu("nvme_write_bytes_per_s"), capacity, system, True)
        r_bw = _tier_bandwidth(t, n_nodes, host_net, per_gpu("nvme_read_bytes_per_s"), capacity, system, False)
        # min(bw, n_nodes x bw) = bw: the tier bandwidth already holds the per-node limit
        wr = R.checkpoint_write(ck_total, per_rank, n_nodes, w_bw, w_bw,
                                asynchronous=system.checkpoint == "async", d2h_bytes_per_s=d2h)
        rs = R.restart_time(ck_total, n_nodes, r_bw, r_bw, **restart_kw)
        if no_failures:
            interval = train_s.copy()
            gp = np.ones(n)
            wall = train_s.copy()
        else:
            g = R.goodput(train_s, mtbi, wr.blocking_s, rs.total, interval_s=system.checkpoint_interval_s,
                          durable_lag_s=wr.durable_lag_s)
            interval, gp, wall = (np.asarray(x, dtype=float) * np.ones(n) for x in (g.interval_s, g.goodput, g.wall_clock_s))
        rented_storage = np.asarray(S.storage_cost_usd(capacity, t.usd_per_tb_month or 0.0, wall)) * np.ones(n)
        storage_usd = np.where(owned_rows, 0.0, rented_storage)
        tco_rate = np.full(n, np.nan)
        if owned_rows.any():
            tco_rate[owned_rows] = per_gpu("option_rate")[owned_rows] + _owned_adder(
                scenario, system, syscat, n_gpus[owned_rows], per_gpu("gpus_per_node")[owned_rows],
                per_gpu("gpu_usd")[owned_rows], per_gpu("tdp_w")[owned_rows],
                per_gpu("server_usd")[owned_rows], per_gpu("power_w")[owned_rows],
                                               fabric_capex[owned_rows], fabric_power[owned_rows],
                                               capacity * (t.capex_usd_per_tb or 0.0) / 1e12,
                                               capacity / 1e12 * syscat.tco_value("storage_power_w_per_tb"))
        hourly = np.zeros(n) if gpu_cost_per_hour is None else np.asarray(gpu_cost_per_hour, dtype=float)
        hourly = np.where(owned_rows, n_gpus * np.nan_to_num(tco_rate), hourly)
        score = wall if scenario.objective == "time" else hourly * wall / SECONDS_PER_HOUR + storage_usd
        cur = {"goodput": gp, "wall_clock_s": wall, "checkpoint_write_s": np.asarray(wr.write_s) * np.ones(n),
               "checkpoint_blocking_s": np.asarray(wr.blocking_s) * np.ones(n), "checkpoint_interval_s": interval,
               "restart_s": np.asarray(rs.total) * np.ones(n), "storage_usd": storage_usd,
               "tco_usd_per_gpu_hour": tco_rate, "storage_tier": np.full(n, ti, dtype=np.int64), "_score": score}
        if best is None:
            best = cur
        else:
            better = cur["_score"] < best["_score"]
            best = {k: np.where(better, cur[k], best[k]) for k in best}

    # -- host RAM ----------------------------------------------------------------------------
    _, updated = _params_per_rank(n_params, n_exp, cols)
    offload = np.asarray(H.offload_bytes_per_rank(updated, system.offload_optimizer)) * np.ones(n)
    copy = per_rank if system.checkpoint == "async" else np.zeros(n)
    mem = H.host_memory_per_node(per_gpu("gpus_per_node"), offload_bytes_per_gpu=offload,
                                 checkpoint_copy_bytes_per_gpu=copy, data_workers_per_gpu=system.data_workers_per_gpu)
    wall = best.pop("wall_clock_s")
    best.pop("_score")
    with np.errstate(divide="ignore", invalid="ignore"):
        interruptions = np.where(np.isfinite(mtbi), wall / mtbi, 0.0)
    out = dict(best)
    out.update({
        "job_mtbi_s": mtbi,
        "checkpoint_bytes": np.full(n, ck_total),
        "expected_interruptions": interruptions,
        "host_memory_bytes": np.asarray(mem.total, dtype=float) * np.ones(n),
        "host_memory_capacity_bytes": per_gpu("ram_bytes") * (1.0 - system.host_memory_headroom),
    })
    return out


def _fabric(n_nodes, nics, nic_gbit, system, syscat):
    """(capex USD, power W) of each row's fat-tree (rows grouped by NIC count)."""
    sw = syscat.switch(system.switch)
    so, no, cable = syscat.optic(DEFAULT_SWITCH_OPTIC), syscat.optic(DEFAULT_NODE_OPTIC), syscat.optic(DEFAULT_CABLE)
    capex = np.zeros(len(n_nodes))
    power = np.zeros(len(n_nodes))
    for k in np.unique(nics):
        m = nics == k
        d = F.fat_tree(n_nodes[m].astype(np.int64), int(k), sw.ports, oversubscription=system.oversubscription,
                       rail_optimized=system.rail_optimized, switch_price_usd=sw.price_usd, switch_power_w=sw.power_w,
                       switch_optic_ports=so.ports, switch_optic_price_usd=so.price_usd,
                       switch_optic_power_w=so.power_w, node_optic_price_usd=no.price_usd,
                       node_optic_power_w=no.power_w, cable_price_usd=cable.price_usd)
        capex[m] = d.capex_usd
        power[m] = d.power_w
    return capex, power


def _tco_kwargs(scenario, system, syscat) -> dict:
    p = scenario.pricing
    return dict(utilization=p.utilization, years=p.years, pue=p.pue, usd_per_kwh=p.usd_per_kwh,
                hosting_usd_per_kw_month=(system.hosting_usd_per_kw_month if system.hosting_usd_per_kw_month is not None
                                          else syscat.tco_value("hosting_usd_per_kw_month")),
                maintenance_pct_per_year=(system.maintenance_pct_per_year if system.maintenance_pct_per_year is not None
                                          else syscat.tco_value("maintenance_pct_per_year")))


def _owned_adder(scenario, system, syscat, n_gpus, gpn, gpu_usd, tdp_w, server_usd, node_w, fab_capex, fab_w,
                 storage_capex, storage_w):
    """USD per utilised GPU-hour that the rest of the system adds to the GPU-only owned rate:
    TCO(GPUs + servers + fabric + storage, node power) - TCO(GPUs alone, TDP x server overhead).
    Added to the GPU option's owned rate, so a price override of the GPU still moves the cost."""
    kw = _tco_kwargs(scenario, system, syscat)
    price = np.nan_to_num(gpu_usd)
    full = T.owned_tco(n_gpus, gpn, price, server_usd_per_node=server_usd, node_power_w=node_w,
                       fabric_capex_usd=fab_capex, fabric_power_w=fab_w, storage_capex_usd=storage_capex,
                       storage_power_w=storage_w, **kw)
    alone = T.owned_tco(n_gpus, gpn, price, server_usd_per_node=0.0,
                        node_power_w=np.maximum(tdp_w, 1.0) * gpn * (1 + SERVER_POWER_OVERHEAD), **kw)
    return np.asarray(full.usd_per_gpu_hour.total, dtype=float) - np.asarray(alone.usd_per_gpu_hour.total, dtype=float)


# ----------------------------------------------------------------------------------------
# one configuration, in full (for the JSON 'system' object)
# ----------------------------------------------------------------------------------------

def _f(x) -> float | None:
    x = float(np.asarray(x).reshape(-1)[0])
    return x if math.isfinite(x) else None


def system_breakdown(spec, scenario, gpu_option, config_row: dict) -> dict:
    """JSON-ready ``storage``, ``hosts``, ``fabric``, ``tco`` and ``reliability`` objects for
    one configuration. ``config_row`` is a row of the solve table (``evaluate(...).figures`` or
    a configs-frame row as a dict): it needs n_gpus, n_nodes, tp, pp, dp, cp, ep, zero and
    tokens_per_s. Everything is recomputed through ``system_columns`` on a one-row table, so
    the figures equal the row's columns."""

    syscat = load_system_catalog()
    system = scenario.system
    g = gpu_option
    one = {k: np.array([config_row[k]]) for k in ("n_gpus", "n_nodes", "tp", "pp", "dp", "cp", "ep", "zero")}
    one["tokens_per_s"] = np.array([float(config_row["tokens_per_s"])])
    one["gpu"] = np.array([0])
    hourly = np.array([-(-int(config_row["n_gpus"]) // g.gpus_per_instance) * g.usd_per_instance_hour])
    sc = system_columns(spec, scenario, [g], one, gpu_cost_per_hour=hourly)
    host = _host_for(g, system, syscat)
    tier = list(syscat.storage_tiers.values())[int(sc["storage_tier"][0])]
    n_params, n_exp, vocab = _sizes(spec)
    nodes = int(config_row["n_nodes"])
    bpt = system.bytes_per_token or S.bytes_per_token_for_vocab(vocab)
    ck = R.checkpoint_bytes(n_params, optimizer=scenario.train.optimizer)
    per_rank = R.checkpoint_bytes_per_rank(n_params, n_exp, tp=int(one["tp"][0]), pp=int(one["pp"][0]),
                                           dp=int(one["dp"][0]), cp=int(one["cp"][0]), ep=int(one["ep"][0]),
                                           zero=int(one["zero"][0]), optimizer=scenario.train.optimizer)
    data_bytes = float(S.dataset_bytes(scenario.train.tokens, bpt))
    capacity = data_bytes + float(S.checkpoint_capacity_bytes(ck.total, system.retained_checkpoints))
    w_bw = _tier_bandwidth(tier, np.array([nodes], float), np.array([host.storage_net_bytes_per_s]),
                           np.array([host.nvme_write_bytes_per_s]), capacity, system, True)
    r_bw = _tier_bandwidth(tier, np.array([nodes], float), np.array([host.storage_net_bytes_per_s]),
                           np.array([host.nvme_read_bytes_per_s]), capacity, system, False)
    read_need = float(S.read_bytes_per_s_per_node(one["tokens_per_s"][0], nodes, bpt))
    final_weights = float(n_params * BYTES_PER["bf16"])
    storage = {
        "tier": tier.id, "tier_kind": tier.kind, "durable": tier.durable, "bytes_per_token": bpt,
        "dataset_bytes": data_bytes, "checkpoint_bytes": float(ck.total),
        "checkpoint_weights_bytes": float(ck.weights), "checkpoint_master_weights_bytes": float(ck.master_weights),
        "checkpoint_optimizer_states_bytes": float(ck.optimizer_states),
        "checkpoint_per_gpu_bytes": float(per_rank.total), "retained_checkpoints": system.retained_checkpoints,
        "capacity_bytes": capacity, "write_bytes_per_s": _f(w_bw), "read_bytes_per_s": _f(r_bw),
        "data_read_bytes_per_s_per_node": read_need,
        "node_storage_network_bytes_per_s": host.storage_net_bytes_per_s,
        "data_read_ok": bool(read_need <= host.storage_net_bytes_per_s),
        "checkpoint_mode": system.checkpoint, "checkpoint_write_s": _f(sc["checkpoint_write_s"]),
        "checkpoint_blocking_s": _f(sc["checkpoint_blocking_s"]),
        "storage_usd": _f(sc["storage_usd"]), "usd_per_tb_month": tier.usd_per_tb_month,
        "egress_bytes": final_weights,
        "egress_usd": _f(S.egress_cost_usd(final_weights, tier.egress_usd_per_gb or 0.0)),
    }
    _, updated = _params_per_rank(n_params, n_exp, {k: v for k, v in one.items()})
    offload = float(np.asarray(H.offload_bytes_per_rank(updated, system.offload_optimizer)).reshape(-1)[0])
    mem = H.host_memory_per_node(host.gpus_per_node, offload_bytes_per_gpu=offload,
                                 checkpoint_copy_bytes_per_gpu=float(per_rank.total) if system.checkpoint == "async" else 0.0,
                                 data_workers_per_gpu=system.data_workers_per_gpu)
    cores = float(H.cpu_cores_needed(host.gpus_per_node, system.data_workers_per_gpu))
    hosts = {
        "host": host.id, "gpus_per_node": host.gpus_per_node, "n_nodes": nodes,
        "host_ram_bytes": _f(host.ram_bytes), "host_memory_headroom": system.host_memory_headroom,
        "host_memory_bytes": float(mem.total),
        "host_memory_parts_bytes": {k: float(getattr(mem, k)) for k in
                                    ("processes", "data_workers", "pinned", "offload", "checkpoint_copy")},
        "host_memory_fits": bool(mem.total <= host.ram_bytes * (1 - system.host_memory_headroom)),
        "cpu_cores": _f(host.cpu_cores), "cpu_cores_needed": cores, "cpu_cores_ok": bool(cores <= host.cpu_cores),
        "pcie_bytes_per_s_per_gpu": host.pcie_bytes_per_s, "offload_optimizer": system.offload_optimizer,
        "pcie_offload_s_per_step": (_f(H.pcie_offload_s_per_step(updated, host.pcie_bytes_per_s))
                                    if system.offload_optimizer else 0.0),
        "node_power_w": host.power_w,
    }
    sw = syscat.switch(system.switch)
    so, no, cable = syscat.optic(DEFAULT_SWITCH_OPTIC), syscat.optic(DEFAULT_NODE_OPTIC), syscat.optic(DEFAULT_CABLE)
    fab = F.fat_tree(nodes, host.nics, sw.ports, oversubscription=system.oversubscription,
                     rail_optimized=system.rail_optimized, switch_price_usd=sw.price_usd, switch_power_w=sw.power_w,
                     switch_optic_ports=so.ports, switch_optic_price_usd=so.price_usd, switch_optic_power_w=so.power_w,
                     node_optic_price_usd=no.price_usd, node_optic_power_w=no.power_w, cable_price_usd=cable.price_usd)
    fabric = {"switch": sw.id, "switch_ports": sw.ports, "port_gbit_per_s": sw.port_gbit_per_s,
              "nics_per_node": host.nics, "nic_gbit_per_s": host.nic_gbit_per_s,
              "oversubscription": system.oversubscription, "rail_optimized": system.rail_optimized}
    fabric.update(fab.as_dict())
    fabric["capex_usd"], fabric["power_w"] = fabric.pop("capex_usd"), fabric.pop("power_w")
    tco = _tco_dict(scenario, system, syscat, g, host, int(config_row["n_gpus"]), int(config_row["tp"]), fab,
                    capacity * (tier.capex_usd_per_tb if tier.capex_usd_per_tb is not None
                                else syscat.tco_value("storage_capex_usd_per_tb")) / 1e12,
                    capacity / 1e12 * syscat.tco_value("storage_power_w_per_tb"))
    rates = failure_rates(system, syscat)
    reliability = {
        "failures_per_gpu_hour": rates.per_gpu_hour, "failures_per_node_hour": rates.per_node_hour,
        "failure_rate_source": rates.source, "job_mtbi_s": _f(sc["job_mtbi_s"]),
        "checkpoint_interval_s": _f(sc["checkpoint_interval_s"]), "restart_s": _f(sc["restart_s"]),
        "goodput": _f(sc["goodput"]), "expected_interruptions": _f(sc["expected_interruptions"]),
        "wasted_s_per_interruption": _f(R.wasted_s_per_interruption(sc["checkpoint_interval_s"],
                                                                   sc["checkpoint_blocking_s"], sc["restart_s"])),
    }
    return {"storage": storage, "hosts": hosts, "fabric": fabric, "tco": tco, "reliability": reliability}


def _tco_dict(scenario, system, syscat, g, host: Host, n_gpus: int, tp: int, fab, storage_capex, storage_w) -> dict:
    if not math.isfinite(host.gpu_usd):
        return {"available": False, "reason": f"{g.name}: no purchase price in the catalog"}
    # the rented alternative of the same plan (issue 17): the cheapest on-demand offer that can run
    # this layout (TP inside an instance; beyond one instance a cluster offer with the reach)
    rents = []
    for o in g.offers:
        rate = o.usd_per_gpu_hour("on_demand")
        if rate is not None and offer_runs_layout(n_gpus, tp, INTERCONNECT_CODES[o.interconnect], o.gpus_per_instance,
                                                  o.contiguous_max_gpus):
            rents.append((rate, f"{o.provider} {o.instance_type} ({o.region}, on_demand)"))
    cheapest = min(rents) if rents else (None, None)
    r = T.owned_tco(n_gpus, host.gpus_per_node, host.gpu_usd, server_usd_per_node=host.server_usd,
                    node_power_w=host.power_w, fabric_capex_usd=fab.capex_usd, fabric_power_w=fab.power_w,
                    storage_capex_usd=storage_capex, storage_power_w=storage_w,
                    rental_usd_per_gpu_hour=cheapest[0], **_tco_kwargs(scenario, system, syscat))
    kw = _tco_kwargs(scenario, system, syscat)
    return {
        "available": True, "pricing_mode": "+".join(scenario.pricing.modes), "n_gpus": n_gpus,
        "capex_usd": {k: float(getattr(r.capex, k)) for k in ("gpus", "servers", "fabric", "storage", "total")},
        "it_power_w": float(r.it_power_w),
        "usd_per_gpu_hour": {k: float(getattr(r.usd_per_gpu_hour, k)) for k in
                             ("capex", "power", "hosting", "maintenance", "total")},
        "utilization": kw["utilization"], "years": kw["years"], "pue": kw["pue"], "usd_per_kwh": kw["usd_per_kwh"],
        "hosting_usd_per_kw_month": kw["hosting_usd_per_kw_month"],
        "maintenance_pct_per_year": kw["maintenance_pct_per_year"],
        "cheapest_rental_usd_per_gpu_hour": cheapest[0], "cheapest_rental_offer": cheapest[1],
        "break_even_utilization": _f(r.break_even_utilization) if cheapest[0] is not None else None,
        "investment": _investment(scenario, kw, r, n_gpus, cheapest),
    }


def _investment(scenario, kw: dict, r, n_gpus: int, cheapest) -> dict | None:
    """NPV, payback, ROI and the buy-versus-rent flip points of owning this configuration's
    cluster against renting the same busy GPU-hours on demand (formulas/investment.py); None
    when no on-demand offer can run the layout."""
    from optimizer.formulas.investment import OwnedPlanMoney
    from optimizer.units import HOURS_PER_YEAR

    if cheapest[0] is None:
        return None
    p = scenario.pricing
    busy_gpu_hours = n_gpus * HOURS_PER_YEAR * kw["utilization"]
    per = r.usd_per_gpu_hour                                 # USD per utilised GPU-hour, by part
    money = OwnedPlanMoney(
        capex_gpus_usd=float(r.capex.gpus), capex_other_usd=float(r.capex.total) - float(r.capex.gpus),
        rent_usd_per_year=busy_gpu_hours * cheapest[0], power_usd_per_year=busy_gpu_hours * float(per.power),
        hosting_usd_per_year=busy_gpu_hours * float(per.hosting), maintenance_pct_per_year=kw["maintenance_pct_per_year"],
        staff_usd_per_year=getattr(p, "staff_usd_per_year", 0.0), years=kw["years"],
        discount_rate=getattr(p, "discount_rate", 0.08), residual_pct=getattr(p, "residual_pct", 0.0))
    f = money.figures()
    return {"npv_usd": f.npv_usd, "payback_years": f.payback_years, "roi_pct": f.roi_pct, "irr": f.irr,
            "capex_usd": f.capex_usd, "residual_usd": f.residual_usd, "rent_usd_per_year": f.rent_usd_per_year,
            "owned_opex_usd_per_year": f.owned_opex_usd_per_year, "staff_usd_per_year": f.staff_usd_per_year,
            "saving_usd_per_year": f.saving_usd_per_year, "discount_rate": f.discount_rate, "years": f.years,
            "residual_pct": money.residual_pct, "rented_alternative": cheapest[1],
            "flips": money.flips()}


def host_memory_parts(scenario, gpu_option, layout: dict) -> tuple[str, float, dict]:
    """(node type id, host RAM bytes, host RAM need by part in bytes) for one layout (explanations)."""

    system = scenario.system
    host = _host_for(gpu_option, system, load_system_catalog())
    n_params, n_exp, _ = _sizes(scenario.spec())
    one = {k: np.array([layout[k]]) for k in ("tp", "pp", "dp", "cp", "ep", "zero")}
    _, updated = _params_per_rank(n_params, n_exp, one)
    per_rank = R.checkpoint_bytes_per_rank(n_params, n_exp, **{k: int(one[k][0]) for k in one},
                                           optimizer=scenario.train.optimizer).total
    mem = H.host_memory_per_node(host.gpus_per_node,
                                 offload_bytes_per_gpu=float(np.asarray(H.offload_bytes_per_rank(updated, system.offload_optimizer)).reshape(-1)[0]),
                                 checkpoint_copy_bytes_per_gpu=float(per_rank) if system.checkpoint == "async" else 0.0,
                                 data_workers_per_gpu=system.data_workers_per_gpu)
    parts = {k: float(getattr(mem, k)) for k in ("processes", "data_workers", "pinned", "offload", "checkpoint_copy")}
    return host.id, host.ram_bytes, parts


def estimate_system(spec, gpu: str, layout: dict, tokens_per_s: float, tokens: float, *,
                    pricing_mode: str = "on_demand", optimizer: str = "adam", system=None,
                    catalog: Catalog, choice=None) -> dict:
    """The issue-10 figures of one layout outside a scenario (``clusteropt estimate ... --tokens N``):
    the seven SYSTEM_COLUMNS keys plus ``train_days`` and the ``system`` breakdown.

    ``layout`` holds n_gpus, tp, pp, dp, cp, ep, zero (n_nodes is derived from the catalog node);
    ``system`` is a SystemSpec, a dict of its fields, or None for the defaults; pricing_mode
    picks the cheapest offer (or the owned TCO) as ``solve`` does; ``choice`` (a
    pricing.OfferChoice) bills and times it on that offer instead.
    """

    cat = catalog
    acc = cat.accelerator(gpu)
    hw = cat.hardware(acc.id)
    sysspec = system if isinstance(system, SystemSpec) else SystemSpec(**(system or {}))
    pricing = Pricing(mode=pricing_mode)
    if pricing_mode == "owned":
        rate, gpi, offer = owned_rate(acc, pricing), 1, "owned"
        if rate is None:
            raise ClusteroptError("pricing", f"{acc.id} has no purchase price", "use a rental mode")
    else:
        # issue 17: the cheapest offer that can run this layout (TP inside an instance; beyond one
        # instance a cluster offer with the reach), with that offer's fabric and preemptions
        n, tp = int(layout.get("n_gpus", 1)), int(layout.get("tp", 1))
        ch = choice if choice is not None else runnable_choice(cat, acc.id, pricing_mode, n, tp)
        rate, gpi, offer = ((ch.usd_per_gpu_hour, ch.gpus_per_instance, ch.label) if ch is not None
                            else (0.0, 1, "no offer can run this layout"))
        if ch is not None:
            hw = ch.hardware
    g = GpuOption(index=0, name=acc.id, hardware=hw, usd_per_gpu_hour=rate, gpus_per_instance=gpi,
                  usd_per_instance_hour=rate * gpi, offer=offer, available=None, accelerator=acc,
                  offers=tuple(cat.offers(gpu=acc.id)), choice=None if pricing_mode == "owned" else ch)
    scen = SimpleNamespace(system=sysspec, pricing=pricing, objective="cost",
                           train=SimpleNamespace(tokens=float(tokens), optimizer=optimizer), spec=lambda: spec)
    node = max(hw.gpus_per_node, 1)
    row = {k: int(layout.get(k, 1)) for k in ("n_gpus", "tp", "pp", "dp", "cp", "ep")}
    row["zero"] = int(layout.get("zero", 0))
    row["n_nodes"] = -(-row["n_gpus"] // node)
    row["tokens_per_s"] = float(tokens_per_s)
    one = {k: np.array([v]) for k, v in row.items()}
    one["gpu"] = np.array([0])
    sc = system_columns(spec, scen, [g], one, gpu_cost_per_hour=np.array([-(-row["n_gpus"] // gpi) * rate * gpi]))
    train_s = float(tokens) / float(tokens_per_s)
    out = {"train_days": train_s / SECONDS_PER_DAY,
           "wall_clock_days": train_s / float(sc["goodput"][0]) / SECONDS_PER_DAY}
    for k in ("goodput", "expected_interruptions", "job_mtbi_s", "checkpoint_bytes", "checkpoint_write_s",
              "checkpoint_interval_s"):
        out[k] = _f(sc[k])
    out["system"] = system_breakdown(spec, scen, g, row)
    # the offer it is billed on (issue 17): the estimate's cost uses the same one
    out.update({"offer": g.offer, "gpus_per_instance": g.gpus_per_instance,
                "usd_per_instance_hour": g.usd_per_instance_hour,
                "term_hours": getattr(g.choice, "term_hours", 0.0) if g.choice is not None else 0.0})
    if g.choice is not None:
        o = g.choice.offer
        out.update({"provider": o.provider, "instance_type": o.instance_type, "region": o.region,
                    "interconnect": o.interconnect, "offer_max_gpus": o.contiguous_max_gpus,
                    "offer_as_of": o.price_as_of(g.choice.mode)})
    return out
