"""Issue 17 in the planners: what each offer can run, spot, commitments, investment figures."""

import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from optimizer.catalog import load_catalog
from optimizer.formulas.offers import INTERCONNECT_CODES, offer_runs_layout
from optimizer.report import solve_json
from optimizer.scenario import load_scenario
from optimizer.search.api import evaluate, plan, solve

OFFER_KEYS = ("provider", "instance_type", "interconnect", "offer_max_gpus", "offer_as_of")


def check_offers_run_layouts(configs) -> None:
    """Every configuration is priced on an offer that can run it (used over every shipped scenario)."""
    cat = load_catalog()
    by_key = {(o.provider, o.instance_type, o.region): o for o in cat.offers()}
    for r in configs.to_dict(orient="records"):
        if r["interconnect"] in ("owned", None):
            continue
        o = by_key[(r["provider"], r["instance_type"], r["region"])]
        assert o.gpu == r["gpu"] and o.interconnect == r["interconnect"]
        assert offer_runs_layout(r["n_gpus"], r["tp"], INTERCONNECT_CODES[o.interconnect], o.gpus_per_instance,
                                 o.contiguous_max_gpus), r


def test_70b_example_is_priced_on_cluster_offers():
    res = solve("llama3-70b-pretrain")
    assert res.status == "optimal"
    doc = solve_json(res, load_scenario("llama3-70b-pretrain"))
    for c in doc["configs"]:
        assert all(k in c for k in OFFER_KEYS)
        assert c["interconnect"] == "cluster" and c["n_gpus"] > 8, c
        assert c["offer_as_of"] and c["provider"] and c["instance_type"]
    check_offers_run_layouts(res.configs)


def test_capacity_caps_gpus_per_provider():
    sc = load_scenario("llama3-8b-pretrain").with_overrides({"pricing.capacity": {"Nebius": 64}, "top_k": 5})
    res = solve(sc)
    for r in res.configs.to_dict(orient="records"):
        assert r["provider"] != "Nebius" or r["n_gpus"] <= 64, r
    check_offers_run_layouts(res.configs)


def test_spot_goodput_is_lower_than_the_same_plan_on_demand():
    sc = load_scenario("llama3-8b-spot")
    res = solve(sc)
    top = res.configs.iloc[0]
    assert top["pricing_mode"] == "spot"
    cfg = {k: (v.item() if hasattr(v, "item") else v) for k, v in top.items()
           if k in ("gpu", "n_gpus", "tp", "pp", "dp", "cp", "ep", "zero", "precision", "micro_batch",
                    "recompute", "sequence_parallel")}
    on_demand = evaluate(sc.with_overrides({"pricing.mode": "on_demand"}), cfg)
    assert on_demand["pricing_mode"] == "on_demand"
    # preemptions interrupt the spot job on top of the failures: lower goodput, more wall-clock days
    assert top["goodput"] < on_demand["goodput"]
    assert top["wall_clock_days"] > on_demand["wall_clock_days"]
    assert top["expected_interruptions"] > on_demand["expected_interruptions"]
    # the same layout, so the failure-free days are equal
    assert top["train_days"] == pytest.approx(on_demand["train_days"], rel=1e-9)


def test_committed_use_beats_on_demand_only_for_long_services():
    from optimizer.search.serve.solve import solve_serving

    sc = load_scenario("llama3-8b-committed")
    modes = {}
    for days in (90, 1095):
        res = solve_serving(sc.with_overrides({"serve.horizon_days": days}), pareto=False, explain=False,
                            catalog=load_catalog())
        top = res.configs.iloc[0]
        modes[days] = {i["offer"].rsplit(", ", 1)[-1].rstrip(")") for i in top["instances"]}
        # money per request and per month are the hourly cost re-expressed (by hand)
        assert top["usd_per_1k_requests"] == pytest.approx(top["usd_per_hour"] / (30 * 3600) * 1000)
        assert top["usd_per_month"] == pytest.approx(top["usd_per_hour"] * 720)
    assert modes[90] == {"on_demand"} and modes[1095] == {"reserved_3y"}
    # the notes say from when committing wins: Azure NC A100 v4, 3 years at 2.30 vs 3.72 on demand
    # -> 1,095.75 days x 2.30 / 3.72 = 677 days
    notes = " ".join(res.explanation["notes"])
    assert "more than 677 days" in notes


def test_owned_cluster_tco_npv_payback_roi_by_hand():
    res = solve("owned-cluster-tco", top_k=1)
    top = res.configs.iloc[0]
    inv = top["system"]["tco"]["investment"]
    tco = top["system"]["tco"]
    n = int(top["n_gpus"])
    # the rented alternative: the cheapest on-demand offer that runs this many GPUs of the type
    cat = load_catalog()
    rates = [o.usd_per_gpu_hour("on_demand") for o in cat.offers(top["gpu"])
             if o.usd_per_gpu_hour("on_demand") is not None
             and offer_runs_layout(n, int(top["tp"]), INTERCONNECT_CODES[o.interconnect], o.gpus_per_instance,
                                   o.contiguous_max_gpus)]
    rent = n * 8766 * 0.8 * min(rates)                              # busy GPU-hours a year x rate
    assert inv["rent_usd_per_year"] == pytest.approx(rent)
    capex = tco["capex_usd"]["total"]
    assert inv["capex_usd"] == pytest.approx(capex)
    per = tco["usd_per_gpu_hour"]                                   # USD per utilised GPU-hour by part
    opex = n * 8766 * 0.8 * (per["power"] + per["hosting"] + per["maintenance"]) + 2.0e6   # + staff
    assert inv["owned_opex_usd_per_year"] == pytest.approx(opex, rel=1e-9)
    s = rent - opex
    residual = 0.15 * capex
    annuity = (1 - 1.08 ** -4) / 0.08                                # 3.312127
    assert inv["npv_usd"] == pytest.approx(-capex + s * annuity + residual * 1.08 ** -4, rel=1e-9)
    assert inv["payback_years"] == pytest.approx(capex / s, rel=1e-9)
    assert inv["roi_pct"] == pytest.approx((4 * s + residual - capex) / capex * 100, rel=1e-9)
    assert (top["npv_usd"], top["payback_years"], top["roi_pct"]) == (inv["npv_usd"], inv["payback_years"], inv["roi_pct"])
    # the IRR is where buying stops beating renting: NPV 0 there
    r = inv["flips"]["discount_rate"]["flip"]
    assert -capex + s * (1 - (1 + r) ** -4) / r + residual * (1 + r) ** -4 == pytest.approx(0, abs=1.0)


def test_plan_sensitivity_finds_the_discount_rate_where_buying_stops_beating_renting():
    from optimizer.formulas.investment import npv_usd
    from optimizer.report import buy_vs_rent_lines

    result = plan("rent-vs-buy")
    inv = result.plan["investment"]
    assert result.plan["npv_usd"] == inv["npv_usd"] and inv["npv_usd"] > 0
    r = inv["flips"]["discount_rate"]["flip"]
    assert r is not None and r > inv["discount_rate"]
    # by hand from the plan's own yearly figures: NPV is 0 at the flip rate, positive below, negative above
    c, s, n, res = inv["capex_usd"], inv["saving_usd_per_year"], inv["years"], inv["residual_usd"]
    assert npv_usd(c, s, n, r, res) == pytest.approx(0, abs=1.0)
    assert npv_usd(c, s, n, r - 0.01, res) > 0 > npv_usd(c, s, n, r + 0.01, res)
    lines = buy_vs_rent_lines(result.plan)
    assert any(f"{r:.1%} discount rate" in ln for ln in lines)


def test_pruned_offer_choices_lose_nothing():
    # pricing.offer_choices drops dominated (offer, mode) pairs: every layout any offer can run is
    # still runnable on a kept choice at no higher price per GPU-hour, with at least its fabric,
    # no longer commitment and no more preemptions (so the search's optimum cannot change).
    from optimizer.catalog import TERM_HOURS
    from optimizer.pricing import offer_choices
    from optimizer.scenario import Pricing

    cat = load_catalog()
    pricing = Pricing(mode=["on_demand", "spot", "reserved_1y", "reserved_3y"])
    for acc in cat.accelerators:
        kept, _ = offer_choices(cat, acc.id, pricing)
        every = [(o, m) for o in cat.offers(acc.id) for m in pricing.modes if o.usd_per_hour(m) is not None]
        for n in (1, 2, 4, 8, 16, 64, 1024, 20000, 30000):
            for tp in (1, 2, 4, 8):
                for o, m in every:
                    if not offer_runs_layout(n, tp, INTERCONNECT_CODES[o.interconnect], o.gpus_per_instance,
                                             o.contiguous_max_gpus):
                        continue
                    fabric = cat.offer_hardware(o).inter_node_bytes_per_s if o.interconnect == "cluster" else 0.0
                    assert any(offer_runs_layout(n, tp, INTERCONNECT_CODES[k.offer.interconnect], k.gpus_per_instance,
                                                 k.max_gpus)
                               and k.gpus_per_instance == o.gpus_per_instance
                               and k.usd_per_gpu_hour <= o.usd_per_gpu_hour(m) + 1e-12
                               and k.term_hours <= TERM_HOURS[m] and k.fabric_bytes_per_s >= fabric
                               for k in kept), (acc.id, o.instance_type, m, n, tp)


def test_spot_serving_keeps_spares_for_expected_preemptions():
    from optimizer.formulas.preemption import spare_replicas
    from optimizer.search.serve.problem import SPOT_REPLACE_S
    from optimizer.search.serve.solve import solve_serving

    sc = load_scenario("llama3-8b-api").with_overrides({"pricing.mode": "spot", "constraints.gpus": ["H100-SXM5-80GB"],
                                                        "pricing.spot_preemptions_per_hour": 2.0, "top_k": 1})
    calm = solve_serving(sc.with_overrides({"pricing.spot_preemptions_per_hour": 0.0}), pareto=False, explain=False,
                         catalog=load_catalog())
    rough = solve_serving(sc, pareto=False, explain=False, catalog=load_catalog())
    a, b = calm.configs.iloc[0], rough.configs.iloc[0]
    assert a["spot_spare_replicas"] == 0 and b["spot_spare_replicas"] > 0
    assert b["n_replicas"] >= a["n_replicas"] + b["spot_spare_replicas"] - 1 and b["usd_per_hour"] > a["usd_per_hour"]
    # by hand: the spares are the 99th percentile of spot instances down at once, times the
    # replicas one instance holds (8 GPUs / 1 GPU per replica)
    inst = sum(i["count"] for i in b["instances"])
    per = 8 // b["replicas"][0]["gpus_per_replica"]
    assert b["spot_spare_replicas"] == spare_replicas(inst, 2.0, SPOT_REPLACE_S / 3600) * per


def test_buy_vs_rent_is_rendered_in_the_sensitivity_text():
    from optimizer.report import sensitivity_text

    sens = {"objective": "cost", "swing_pct": 20.0, "base_objective": 1.0e6, "range_pct": 50.0, "tolerance_pct": 0.1,
            "tornado": [{"input": "efficiency", "low": 9e5, "high": 1.1e6, "swing": 2e5,
                         "reoptimised": {"down": {"changes": False}, "up": {"changes": False}}}],
            "thresholds": [], "slack": {},
            "buy_vs_rent": {"npv_usd": 9.2e7, "years": 4.0, "at_discount_rate": 0.08,
                            "discount_rate": {"current": 0.08, "flip": 1.2317},
                            "utilization_scale": {"current": 1.0, "flip": 0.337},
                            "gpu_price_scale": {"current": 1.0, "flip": None}}}
    text = sensitivity_text(sens)
    assert "renting wins above a 123.2% discount rate" in text
    assert "flips at 0.34 x the utilisation" in text and "GPU price 0.1-10x does not flip it" in text


# ----------------------------------------------------------------------------------------
# capacity caps on serving fleets (pricing.capacity: provider or provider/region)
# ----------------------------------------------------------------------------------------

from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402


def _rented_by_provider(rec) -> dict:
    out = {}
    for i in rec["instances"]:
        out[i["provider"]] = out.get(i["provider"], 0) + i["count"] * i["gpus_per_instance"]
    return out


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_fleet_model_capacity_caps_match_brute_force(data):
    """The fleet model's optimum under shared caps (several pools per cap, pools under two caps)
    equals the cheapest fleet found by enumerating every replica count, caps checked directly."""
    import itertools

    from optimizer.search.serve import fleet as fm

    n_pools = data.draw(st.integers(1, 3))
    opts = tuple(fm.FleetOption(gpu=data.draw(st.integers(0, n_pools - 1)), n_gpus=data.draw(st.sampled_from([1, 2])),
                                cap=data.draw(st.integers(800, 3000))) for _ in range(data.draw(st.integers(1, 3))))
    caps = []
    for key in ("A", "A/r1", "B"):
        pools = tuple(g for g in range(n_pools) if data.draw(st.booleans()))
        if pools and data.draw(st.booleans()):
            caps.append((key, data.draw(st.integers(0, 10)), pools))
    p = fm.FleetProblem(options=opts, demand=data.draw(st.integers(500, 5000)), spares=data.draw(st.integers(0, 1)),
                        gpi=tuple(data.draw(st.sampled_from([1, 2, 4])) for _ in range(n_pools)),
                        price=tuple(data.draw(st.integers(1000, 9000)) for _ in range(n_pools)),
                        available=(None,) * n_pools, capacity=tuple(caps))
    best = None
    for counts in itertools.product(*[range(p.upper(r) + 1) for r in range(len(opts))]):
        if not fm.covers(p, counts):
            continue
        used = [0] * n_pools
        for o, x in zip(opts, counts):
            used[o.gpu] += o.n_gpus * x
        inst = [-(-u // p.gpi[g]) for g, u in enumerate(used)]
        if any(sum(inst[g] * p.gpi[g] for g in pools) > limit for _, limit, pools in caps):
            continue
        key = (sum(m * p.price[g] for g, m in enumerate(inst)), sum(used))
        best = key if best is None or key < best else best
    res = fm.solve_fleets(p, 1, time_limit_s=20)
    if best is None:
        assert res.status == "infeasible" and not res.fleets
    else:
        assert res.status == "optimal" and res.fleets[0].key == best
        assert not fm.over_capacity(p, res.fleets[0].instances)


def test_capacity_caps_bound_serving_fleets_and_explain_when_they_bind():
    from optimizer.search.serve.evaluate import evaluate_fleet
    from optimizer.search.serve.solve import solve_serving

    cat = load_catalog()
    sc = load_scenario("llama3-8b-api").with_overrides({"constraints.gpus": ["H100-SXM5-80GB"], "top_k": 3})
    free = solve_serving(sc, pareto=False, explain=True, catalog=cat)
    top = free.configs.iloc[0]
    provider, n = max(_rented_by_provider(top).items(), key=lambda kv: kv[1])
    cap = n // 2
    capped_sc = sc.with_overrides({"pricing.capacity": {provider: cap}})
    capped = solve_serving(capped_sc, pareto=False, explain=True, catalog=cat)
    assert capped.status == "optimal"
    for rec in capped.configs.to_dict(orient="records"):
        assert _rented_by_provider(rec).get(provider, 0) <= cap, rec["instances"]
        assert evaluate_fleet(capped_sc, rec["replicas"], catalog=cat)["feasible"]
    assert capped.configs.iloc[0]["usd_per_hour"] > top["usd_per_hour"]
    assert "capacity" in capped.explanation["binding"]
    assert capped.explanation["slack"]["capacity"][provider] >= 0
    assert any(f"pricing.capacity.{provider}" in line for line in capped.explanation["lines"])
    # evaluate applies the same cap to a given fleet: the uncapped optimum breaks it
    ev = evaluate_fleet(capped_sc, top["replicas"], catalog=cat)
    assert not ev["feasible"] and any(v.startswith(f"capacity: rents {n} GPUs under pricing.capacity.{provider}")
                                      for v in ev["violations"])


def test_capacity_caps_that_leave_no_fleet_name_the_least_relaxation():
    from optimizer.search.serve.solve import solve_serving

    cat = load_catalog()
    providers = sorted({o.provider for o in cat.offers("H100-SXM5-80GB")})
    base = load_scenario("llama3-8b-api").with_overrides({"constraints.gpus": ["H100-SXM5-80GB"], "top_k": 1})
    caps = {p: 4 for p in providers}
    res = solve_serving(base.with_overrides({"pricing.capacity": caps}), pareto=False, explain=True, catalog=cat)
    assert res.status == "infeasible"
    rel = res.explanation["relaxations"]["capacity"]
    assert rel and any("capacity" in cf for cf in res.explanation["conflicts"])
    for key, need in rel.items():          # the least cap that suffices with every other cap kept
        assert need > caps[key]
        assert solve_serving(base.with_overrides({"pricing.capacity": {**caps, key: need}}), pareto=False,
                             explain=False, catalog=cat).status == "optimal"
        assert solve_serving(base.with_overrides({"pricing.capacity": {**caps, key: need - 1}}), pareto=False,
                             explain=False, catalog=cat).status == "infeasible"
        assert any(f"relax pricing.capacity.{key} from 4 to {need} GPUs" in line for line in res.explanation["lines"])


def test_a_replica_is_one_contiguous_allocation_within_the_offer_reach():
    from dataclasses import replace

    from optimizer.pricing import gpu_options, gpu_types
    from optimizer.search.serve.table import billing_pools, pool_fits

    cat = load_catalog()
    sc = load_scenario("llama3-8b-api").with_overrides({"constraints.gpus": ["H100-SXM5-80GB"],
                                                        "pricing.capacity": {"Nebius": 8}})
    pools, _ = billing_pools(sc, gpu_types(gpu_options(sc, cat)[0], sc, cat))
    neb = [q for q in pools if q.choice is not None and q.choice.offer.provider == "Nebius"
           and q.choice.offer.interconnect == "cluster"]
    assert neb and all(q.choice.max_gpus == 8 for q in neb)
    assert all(pool_fits(q, 8, 8) and not pool_fits(q, 8, 16) for q in neb)   # pp=2 x tp=8 spans 16 > 8
    wide = replace(neb[0], choice=replace(neb[0].choice, max_gpus=None))
    assert pool_fits(wide, 8, 16)


def test_disaggregated_pools_respect_capacity_caps():
    import optimizer

    sc = load_scenario("llama31-70b-rag-disaggregated")
    free = optimizer.disaggregation(sc)
    by = {}
    for r in free.replicas:
        by[r["offer"].split()[0]] = by.get(r["offer"].split()[0], 0) + r["count"] * r["tp"]
    provider, n = max(by.items(), key=lambda kv: kv[1])
    capped = optimizer.disaggregation(sc.with_overrides({"pricing.capacity": {provider: n - 4}}))
    used = sum(r["count"] * r["tp"] for r in capped.replicas if r["offer"].split()[0] == provider)
    assert used <= n - 4 and capped.usd_per_hour > free.usd_per_hour
    assert f"pricing.capacity.{provider} = {n - 4} GPUs" in capped.explanation
    # a TP group never spans instances: no TP-4 replica on a one-GPU pod
    assert all(not r["offer"] or "1x" not in r["offer"] for r in free.replicas + capped.replicas)
    with pytest.raises(Exception, match="pricing.capacity"):
        optimizer.disaggregation(sc.with_overrides({"pricing.capacity": {p: 3 for p in ("AWS", "GCP", "Azure", "Nebius", "Lambda", "RunPod", "Hyperstack")}}))


def test_portfolio_rentals_are_timed_on_the_offer_they_are_billed_on():
    # GCP's a3-highgpu-8g gives 100 Gbit/s per GPU, the H100 reference node 400: a 128-GPU rental
    # billed on GCP takes the days of GCP's fabric (as evaluate prices it there), more than the
    # same layout on a 400 Gbit/s cluster offer
    from optimizer.portfolio_schema import job_scenario, load_portfolio

    p = load_portfolio("rent-vs-buy").with_overrides({"fleet.rent.provider": "GCP"})
    r = plan(p, top_k=1, binding=False)
    rent = next(x for x in r.plan["rent"] if x["job"] == "burst-70b")
    row = next(s for s in r.plan["schedule"] if s["job"] == "burst-70b")
    assert rent["offer"].startswith("GCP ") and row["rent_offer"] == rent["offer"] and row["n_gpus"] > 8
    sc = job_scenario(p, 1, pricing_mode="on_demand")
    on_gcp = evaluate(sc, row["config"])
    assert on_gcp["provider"] == "GCP"
    assert row["duration_days"] == pytest.approx(on_gcp["wall_clock_days"], rel=1e-9)
    on_400 = evaluate(sc.with_overrides({"pricing.provider": "Nebius"}), row["config"])
    assert on_400["wall_clock_days"] < row["duration_days"]
    # billed in whole instances at the offer's rate for those days
    assert rent["usd"] == pytest.approx(row["n_gpus"] * rent["usd_per_gpu_hour"] * row["duration_days"] * 24, rel=1e-9)


# ----------------------------------------------------------------------------------------
# estimate on an offer (--offer / --provider)
# ----------------------------------------------------------------------------------------

LAYOUT_64 = dict(gpu="h100", tp=8, pp=2, dp=4, global_batch=64)


def test_estimate_times_a_layout_on_the_offers_fabric():
    from optimizer.search.api import estimate

    ref = estimate("llama-3-70b", **LAYOUT_64)["train"]
    gcp = estimate("llama-3-70b", **LAYOUT_64, offer="GCP/a3-highgpu-8g/us-east4")["train"]
    assert gcp["interconnect"] == "cluster" and gcp["fabric_gbit_per_s_per_gpu"] == 100 and gcp["provider"] == "GCP"
    # the same figure as the reference node with its inter-node bandwidth set to GCP's 100 Gbit/s
    by_hand = estimate("llama-3-70b", **LAYOUT_64, inter_node_gbps=100)["train"]
    assert gcp["step_time_s"] == pytest.approx(by_hand["step_time_s"], rel=1e-12)
    assert gcp["step_time_s"] > ref["step_time_s"]                 # 100 < the reference node's 400 Gbit/s
    aws = estimate("llama-3-70b", **LAYOUT_64, provider="AWS", tokens=1e10)["train"]
    assert aws["instance_type"] == "p5.48xlarge"
    assert aws["step_time_s"] == pytest.approx(estimate("llama-3-70b", **LAYOUT_64, inter_node_gbps=400)["train"]
                                               ["step_time_s"], rel=1e-12)
    hours = aws["wall_clock_days"] * 24
    storage = aws["system"]["storage"].get("storage_usd") or 0.0
    assert aws["cost_usd"] == pytest.approx(64 / 8 * 55.04 * hours + storage, rel=1e-9)


@pytest.mark.parametrize("kw, field", [
    (dict(LAYOUT_64, offer="RunPod/8x_H100-SXM_SECURE"), "--offer"),          # one node, no multi-node fabric
    (dict(gpu="h100", tp=2, serve=True, offer="RunPod/1x_H100-SXM_SECURE"), "--offer"),   # TP 2 on a 1-GPU pod
    (dict(LAYOUT_64, provider="Lambda"), "--provider"),                        # Lambda: nodes only
    (dict(LAYOUT_64, offer="AWS/p5.48xlarge", tokens=1e10, pricing="reserved_3y"), "--pricing"),
    (dict(tp=8, offer="Nebius/gpu-h200-sxm_8gpu-128vcpu-1600gb"), "--offer"),  # three regions: name one
    (dict(tp=8, gpu="h200", offer="GCP/a3-highgpu-8g/us-east4"), "--offer"),            # an H100 offer
    (dict(tp=8, gpu="h100", provider="lamda"), "--provider"),
])
def test_estimate_refuses_a_layout_the_offer_cannot_run(kw, field):
    from optimizer.errors import ClusteroptError
    from optimizer.search.api import estimate

    with pytest.raises(ClusteroptError) as e:
        estimate("llama-3-70b", **kw)
    assert e.value.field == field


def test_estimate_offer_cli_exit_2_with_one_line(capsys):
    import json

    from optimizer.cli import main

    def run(*argv):
        with pytest.raises(SystemExit) as e:
            main(list(argv))
        out, err = capsys.readouterr()
        return e.value.code, out, err

    code, out, err = run("estimate", "llama-3-70b", "--gpu", "h100", "--tp", "8", "--pp", "2", "--dp", "4",
                         "--global-batch", "64", "--offer", "RunPod/8x_H100-SXM_SECURE")
    lines = [x for x in err.splitlines() if x.strip()]
    assert code == 2 and out == ""
    assert len(lines) == 1 and lines[0].startswith("error: --offer: ") and "cannot run 64 GPUs" in lines[0]
    code, out, _ = run("estimate", "llama-3-70b", "--tp", "8", "--serve", "--offer",
                       "Nebius/gpu-h100-sxm_8gpu-128vcpu-1600gb", "--json")
    assert code == 0 and json.loads(out)["serve"]["instance_type"] == "gpu-h100-sxm_8gpu-128vcpu-1600gb"


# ----------------------------------------------------------------------------------------
# commitment prices: dated and sourced apart from on-demand (reserved_as_of)
# ----------------------------------------------------------------------------------------

def test_commitment_prices_carry_their_own_date_and_source():
    cat = load_catalog()
    committed = [o for o in cat.offers() if o.reserved_usd_per_hour or o.reserved_3y_usd_per_hour]
    assert len(committed) >= 10
    for o in committed:
        # a commitment costs less per hour than on demand (that is what it is bought for), 3 years
        # less than 1; its date is the row's or its own, and the source says where it was read
        assert o.usd_per_hour("reserved_3y") < o.usd_per_hour("reserved") < o.on_demand_usd_per_hour, o.key
        assert o.price_as_of("reserved") in (o.as_of, o.reserved_as_of)
        assert any(w in o.source for w in ("1-year", "1y", "reserved")), o.key
    p4d = next(o for o in cat.offers("A100-SXM4-40GB", "AWS") if o.instance_type == "p4d.24xlarge")
    assert (p4d.price_as_of("on_demand"), p4d.price_as_of("reserved_3y")) == ("2026-11-09", "2025-03-02")
    assert "UNCERTAIN" in p4d.notes                   # read before AWS's 2025 price cut
    # by hand from the archived per-GPU rates x 8 (the derived GCP row says so)
    gcp = next(o for o in cat.offers("H100-SXM5-80GB", "GCP") if o.region == "us-central1")
    assert (gcp.on_demand_usd_per_hour, gcp.reserved_usd_per_hour, gcp.reserved_3y_usd_per_hour) == pytest.approx(
        (8 * 11.06, 8 * 7.67, 8 * 4.86)) and "DERIVED" in gcp.notes
    # the JSON names the commitment's date for a committed configuration
    from optimizer.pricing import offer_choices, offer_keys
    from optimizer.scenario import Pricing

    ch = next(c for c in offer_choices(cat, "A100-SXM4-40GB", Pricing(mode=["reserved_3y"]), only=p4d)[0])
    assert offer_keys(SimpleNamespace(choice=ch, offer=ch.label))["offer_as_of"] == "2025-03-02"


@pytest.mark.parametrize("row, problem", [
    ({"reserved_as_of": "spring 2025"}, "not a date"),
    ({"reserved_as_of": "2025-03-02", "reserved_usd_per_hour": ""}, "without a reserved"),
])
def test_reserved_as_of_is_validated(tmp_path, row, problem):
    import csv as _csv

    from optimizer.errors import ClusteroptError

    base = {"provider": "Test", "instance_type": "t1", "gpu": "H100-SXM5-80GB", "gpus_per_instance": "1",
            "interconnect": "single_gpu", "on_demand_usd_per_hour": "3", "reserved_usd_per_hour": "2",
            "as_of": "2026-12-01", "source": "synthetic test row"}
    base.update(row)
    p = tmp_path / "offers.csv"
    with open(p, "w", newline="") as f:
        w = _csv.DictWriter(f, fieldnames=list(base))
        w.writeheader()
        w.writerow(base)
    with pytest.raises(ClusteroptError, match=problem):
        load_catalog([p])


def test_refresh_keeps_commitments_with_the_date_they_were_read(tmp_path):
    import shutil

    from optimizer.catalog_refresh import refresh_offers

    snap = tmp_path / "snap"
    shutil.copytree(Path(__file__).parent / "data" / "skypilot_catalog", snap)
    with open(snap / "aws" / "vms.csv", "a") as f:
        f.write("p4d.24xlarge,A100,8.0,96.0,1152.0,,21.0,5.0,us-east-1,use1-az2\n")
    offers, _ = refresh_offers(snap, as_of="2026-12-20", catalog=load_catalog())
    p4d = next(o for o in offers if (o.provider, o.instance_type, o.region) == ("AWS", "p4d.24xlarge", "us-east-1"))
    assert p4d.on_demand_usd_per_hour == 21.0 and p4d.as_of == "2026-12-20"
    assert (p4d.reserved_usd_per_hour, p4d.reserved_as_of) == (19.22, "2025-03-02")   # not re-dated by the snapshot
    # a row whose commitments shared its old date (no reserved_as_of) keeps that date for them
    user = tmp_path / "user_offers.csv"
    user.write_text("provider,instance_type,gpu,gpus_per_instance,interconnect,fabric_gbit_per_s_per_gpu,fabric_rails,"
                    "fabric_rdma,on_demand_usd_per_hour,reserved_usd_per_hour,region,as_of,source\n"
                    "AWS,p5.48xlarge,H100-SXM5-80GB,8,cluster,400,32,yes,60,40,us-east-1,2026-01-15,synthetic test row\n")
    offers, _ = refresh_offers(snap, as_of="2026-12-20", catalog=load_catalog([user]))
    p5 = next(o for o in offers if (o.provider, o.instance_type, o.region) == ("AWS", "p5.48xlarge", "us-east-1"))
    assert (p5.on_demand_usd_per_hour, p5.as_of) == (55.04, "2026-12-20")
    assert (p5.reserved_usd_per_hour, p5.price_as_of("reserved")) == (40, "2026-01-15")


def test_a_gpu_whose_offers_are_all_capped_at_zero_says_so():
    from optimizer.pricing import gpu_options

    cat = load_catalog()
    caps = {p: 0 for p in {o.provider for o in cat.offers("H100-SXM5-80GB")}}
    sc = load_scenario("llama3-8b-api").with_overrides({"constraints.gpus": ["H100-SXM5-80GB"], "pricing.capacity": caps})
    opts, notes = gpu_options(sc, cat)
    assert opts == [] and any("capped at 0 GPUs by pricing.capacity" in n for n in notes), notes
    # one provider allowed again: its offers come back, the others stay out
    opts, _ = gpu_options(sc.with_overrides({"pricing.capacity": {**caps, "Nebius": 16}}), cat)
    assert opts and {g.choice.offer.provider for g in opts} == {"Nebius"}
