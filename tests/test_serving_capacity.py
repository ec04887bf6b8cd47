"""The fleet planner sized by simulated capacity at the SLOs (serve.capacity: simulated; issue 16,
search/serve/capacity.py): the capacity's direction in the SLOs, and a planned fleet that meets
the SLOs when its replicas are simulated at the rate the fleet sends each of them."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as hst

from optimizer.catalog import load_catalog
from optimizer.catalog_serving import engine_settings
from optimizer.formulas import serving_sim as ss
from optimizer.formulas.serving_load import simulate_serving, slo_capacity
from optimizer.model import get_preset
from optimizer.scenario import load_scenario
from optimizer.search.serve import capacity as sc_cap
from optimizer.search.serve.solve import solve_serving

P, O = ss.LengthDist(800.0, 3000.0), ss.LengthDist(200.0, 800.0)


@pytest.fixture(scope="module")
def h100():
    return load_catalog().hardware("H100-SXM5-80GB")


@settings(max_examples=4, deadline=None)
@given(ttft=hst.sampled_from([0.15, 0.3, 1.0]), itl=hst.sampled_from([0.025, 0.04, 0.08]),
       loosen=hst.sampled_from([1.5, 3.0]))
def test_looser_slos_never_lower_capacity(h100, ttft, itl, loosen):
    """Capacity at the SLOs is monotone: raising either p99 limit never lowers it (the
    bisection's rates and seeds are the same; every rate that met the tighter limits meets the
    looser ones)."""
    spec = get_preset("llama-3.1-8b")
    kw = dict(n_requests=200, request_overhead_s=0.01, max_num_seqs=128)
    base = slo_capacity(spec, h100, 1, 1, "bf16", "bf16", P, O, ttft, itl, **kw)
    assert slo_capacity(spec, h100, 1, 1, "bf16", "bf16", P, O, ttft * loosen, itl, **kw).requests_per_s \
        >= base.requests_per_s
    assert slo_capacity(spec, h100, 1, 1, "bf16", "bf16", P, O, ttft, itl * loosen, **kw).requests_per_s \
        >= base.requests_per_s


def _scenario(capacity: str):
    return load_scenario("llama3-8b-aws-mixed").with_overrides({
        "serve.capacity": capacity, "serve.requests_per_s": 40, "constraints.gpus": ["H100-SXM5-80GB"],
        "search.tp": [1, 2], "search.batch": [64], "search.weights": ["bf16"], "search.kv": ["bf16"],
        "pricing.provider": None, "serve.redundancy": "none"})


def test_simulated_fleet_meets_the_slos_at_its_per_replica_rate():
    """A fleet planned with simulated capacities, each replica simulated (same engine, a new
    seed) at the rate the fleet sends it (demand shared in proportion to capacity), meets both
    p99 SLOs; its capacity is at most the closed form's, so it never needs fewer GPUs."""
    sim, closed = _scenario("simulated"), _scenario("closed_form")
    res = solve_serving(sim, top_k=1, pareto=False, explain=False, catalog=load_catalog())
    ref = solve_serving(closed, top_k=1, pareto=False, explain=False, catalog=load_catalog())
    assert res.status == "optimal" and ref.status == "optimal"
    best = res.configs.iloc[0]
    assert best["n_gpus_used"] >= ref.configs.iloc[0]["n_gpus_used"]
    slo = sim.serve.slo
    share = sim.serve.requests_per_s / best["capacity_requests_per_s"]
    hw = load_catalog().hardware("H100-SXM5-80GB")
    for rep in best["replicas"]:
        assert rep["ttft_s"] <= slo.ttft_p99_s and rep["itl_s"] <= slo.itl_p99_s
        es = engine_settings("vllm", "NVIDIA", hw.memory_bytes, max_num_seqs=rep["batch"])
        r = simulate_serving(get_preset("llama-3-8b"), hw, tp=rep["tp"], weights="bf16", kv="bf16", prompt=P,
                             output=O, requests_per_s=rep["requests_per_s"] * share, n_requests=600, seed=7,
                             max_num_batched_tokens=es["max_num_batched_tokens"], max_num_seqs=es["max_num_seqs"],
                             policy=es["policy"], request_overhead_s=es["request_overhead_s"],
                             step_overhead_s=es["step_overhead_s"], efficiencies=es["efficiencies"],
                             gpu_memory_utilization=1.0 - sim.constraints.memory_headroom).sim
        assert r.stable
        assert r.ttft_p99_s <= slo.ttft_p99_s and r.itl_p99_s <= slo.itl_p99_s


def test_simulated_capacity_is_what_evaluate_reports():
    """evaluate_replica (the check on the table) reads the same cached simulated capacity."""
    from optimizer.pricing import gpu_options, gpu_types
    from optimizer.search.serve.evaluate import evaluate_replica

    sc = _scenario("simulated")
    cat = load_catalog()
    g = gpu_types(gpu_options(sc, cat)[0], sc, cat)[0]
    rep = {"tp": 1, "pp": 1, "weights": "bf16", "kv": "bf16", "batch": 64}
    ev = evaluate_replica(sc.spec(), sc, g, rep)
    cap = sc_cap.slo_capacity_of(sc.spec(), sc, g, tp=1, pp=1, weights="bf16", kv="bf16", batch=64)
    closed = evaluate_replica(sc.spec(), _scenario("closed_form"), g, rep)
    assert ev["requests_per_s"] == pytest.approx(min(cap.requests_per_s, closed["requests_per_s"]), rel=1e-12)
    assert ev["itl_s"] == pytest.approx(cap.itl_p99_s) and ev["requests_per_s"] <= closed["requests_per_s"]
