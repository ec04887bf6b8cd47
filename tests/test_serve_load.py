"""Fleets sized by simulated capacity at the SLOs (optimizer/search/serve/disaggregation.py): the two shipped
disaggregation scenarios reach opposite verdicts for the reasons their intents state, and the
scenario blocks of issue 16 validate their inputs."""

from __future__ import annotations

import pytest

import optimizer
from optimizer.errors import ClusteroptError
from optimizer.search.serve.disaggregation import length_dist


def test_rag_70b_disaggregated_is_cheaper():
    p = optimizer.disaggregation("llama31-70b-rag-disaggregated")
    assert p.status == "optimal"
    assert p.disaggregated_only_usd_per_hour < p.aggregated_only_usd_per_hour
    roles = {r["role"] for r in p.replicas}
    assert roles == {"prefill", "decode"}
    # the combined path meets both targets: TTFT on the prefill pool, ITL on the decode pool
    for r in p.replicas:
        if r["role"] == "prefill":
            assert r["ttft_p99_s"] <= 3.0
        else:
            assert r["itl_p99_s"] <= 0.05
    assert "disaggregated is cheaper" in p.explanation


def test_short_chat_8b_aggregated_is_cheaper():
    p = optimizer.disaggregation("llama31-8b-chat-aggregated")
    assert p.aggregated_only_usd_per_hour < p.disaggregated_only_usd_per_hour
    assert {r["role"] for r in p.replicas} == {"aggregated"}
    assert p.usd_per_hour == pytest.approx(p.aggregated_only_usd_per_hour)
    assert "aggregated is cheaper" in p.explanation


def test_scenario_blocks_validate():
    base = optimizer.load_scenario("llama31-8b-chat-aggregated")
    with pytest.raises(ClusteroptError, match="cv"):
        base.with_overrides({"serve.arrivals": {"process": "poisson", "cv": 2.0}})
    with pytest.raises(ClusteroptError, match="engine"):
        base.with_overrides({"serve.engine": {"name": "tgi"}})
    with pytest.raises(ClusteroptError, match="p99"):
        base.with_overrides({"serve.prompt_tokens": {"mean": 400, "p99": 100}})
    ok = base.with_overrides({"serve.arrivals": {"process": "bursty", "cv": 2.0}})
    assert ok.serve.arrivals.cv == 2.0


def test_histogram_lengths(tmp_path):
    f = tmp_path / "h.csv"
    f.write_text("tokens,weight\n100,3\n1000,1\n")
    sc = optimizer.load_scenario("llama31-8b-chat-aggregated").with_overrides(
        {"serve.prompt_tokens": {"mean": 325, "histogram": str(f)}})
    d = length_dist(sc.serve.prompt_tokens)
    assert d.mean == pytest.approx(325.0)
    assert set(d.values) == {100.0, 1000.0}
