"""constraints.confidence (issue 15): the deadline and the budget hold at that quantile of the
throughput a layout really reaches; solve's configurations carry their 80% intervals and the
explanation says when the confidence is what binds."""

from __future__ import annotations

from pathlib import Path

import pytest

from optimizer import load_scenario, solve
from optimizer.errors import ClusteroptError

ROOT = Path(__file__).resolve().parents[1]
SCENARIO = ROOT / "scenarios" / "llama3-8b-pretrain.yaml"


@pytest.fixture(scope="module")
def base():
    return load_scenario(SCENARIO)


def test_configs_carry_intervals_around_the_central_figures(base):
    df = solve(base.with_overrides({"top_k": 3})).configs
    for r in df.to_dict(orient="records"):
        assert r["tokens_per_s_p10"] < r["tokens_per_s"] < r["tokens_per_s_p90"]
        assert r["train_days_p10"] < r["train_days"] < r["train_days_p90"]
        assert r["wall_clock_days_p10"] < r["wall_clock_days"] < r["wall_clock_days_p90"]
        assert r["cost_usd_p10"] < r["cost_usd"] < r["cost_usd_p90"]
        assert r["interval_regime"] in ("zero3_fsdp", "fp8", "small_lt10b", "other", "3d_gt100b", "cp", "moe")
        assert r["framework"] in ("megatron", "fsdp2", "deepspeed")


def test_confidence_makes_the_deadline_hold_at_the_quantile_and_says_it_binds(base):
    # a deadline between the best plan's central wall-clock and its p90: at confidence 0.9 that
    # plan no longer qualifies; every ranked plan meets the deadline at its p90
    best = solve(base.with_overrides({"top_k": 1})).configs.iloc[0]
    deadline = 0.5 * (best["wall_clock_days"] + best["wall_clock_days_p90"])
    plain = solve(base.with_overrides({"top_k": 5, "constraints.deadline_days": deadline}))
    sure = solve(base.with_overrides({"top_k": 5, "constraints.deadline_days": deadline,
                                      "constraints.confidence": 0.9}))
    assert plain.status == sure.status == "optimal"
    assert (plain.configs["wall_clock_days"] <= deadline).all()
    assert (sure.configs["wall_clock_days_p90"] <= deadline * (1 + 1e-9)).all()
    assert sure.configs.iloc[0]["cost_usd"] >= plain.configs.iloc[0]["cost_usd"]
    assert any("confidence 0.9 binds" in n for n in sure.explanation["notes"])


def test_confidence_out_of_range_is_an_error(base):
    with pytest.raises(ClusteroptError, match="confidence"):
        base.with_overrides({"constraints.confidence": 1.2})
