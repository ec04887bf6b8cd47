"""Rented and owned GPU cost (issue 3 'Cost', issue 10 'Total cost of ownership')."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from optimizer.errors import ClusteroptError
from optimizer.formulas import cost

# AWS p5.48xlarge: 8 x H100-SXM5-80GB at $98.32/instance-hour on demand, us-east-1
# (shared/validation/gpu_prices.csv, skypilot-catalog snapshot 001367d; AWS later cut it to $55.04).
P5_USD_PER_HOUR = 98.32
P5_GPUS = 8


def test_whole_instances_are_billed():
    # 12 GPUs on 8-GPU instances need 2 instances: 2 x 98.32 x 10 h = $1,966.40.
    assert cost.instances_needed(12, P5_GPUS) == 2
    assert cost.rented_cost_usd(12, 10.0, P5_USD_PER_HOUR, P5_GPUS) == pytest.approx(1966.40)
    # 16 GPUs fill 2 instances exactly: same bill, so the per-GPU rate is the instance rate / 8.
    assert cost.rented_cost_usd(16, 10.0, P5_USD_PER_HOUR, P5_GPUS) == pytest.approx(1966.40)
    assert cost.usd_per_gpu_hour(P5_USD_PER_HOUR, P5_GPUS) == pytest.approx(12.29)


def test_cost_per_million_tokens():
    # $1,966.40 for 2e9 tokens -> $0.9832 per million tokens.
    assert cost.usd_per_million_tokens(1966.40, 2e9) == pytest.approx(0.9832)


def test_owned_rate_hand_computed():
    # Independent hand computation for an H100-class GPU: $25,000 (Raymond James estimate via
    # Epoch's training-cost-trends, in gpu_prices.csv), 700 W TDP, u = 1, module defaults:
    #   IT power   = 700 W x 10.2 kW/(8 x 700 W) = 1.275 kW          (DGX H100 datasheet)
    #   capex      = 25000 / 5 y / 8766 h             = 0.570386 $/h
    #   power      = 1.275 kW x 1.56 x $0.0806/kWh     = 0.160314 $/h
    #   hosting    = 1.275 kW x $184.06 x 12 / 8766 h  = 0.321255 $/h
    #   maintenance= 5% x 25000 / 8766 h               = 0.142596 $/h
    b = cost.owned_usd_per_gpu_hour(25000.0, 700.0, 1.0)
    assert b.capex == pytest.approx(0.570386, rel=1e-5)
    assert b.power == pytest.approx(0.160314, rel=1e-5)
    assert b.hosting == pytest.approx(0.321255, rel=1e-5)
    assert b.maintenance == pytest.approx(0.142596, rel=1e-5)
    assert b.capex + b.power + b.hosting + b.maintenance == pytest.approx(b.total, rel=1e-12)
    # At u = 0.5 the fixed parts double per utilised hour, power does not.
    h = cost.owned_usd_per_gpu_hour(25000.0, 700.0, 0.5)
    assert h.capex == pytest.approx(2 * b.capex) and h.power == pytest.approx(b.power)


def test_interest_uses_the_capital_recovery_factor():
    # Capital recovery factor at 10%/yr over 5 years is 0.26380 (standard engineering-economy
    # interest tables, A/P, i = 10%, n = 5).
    b = cost.owned_usd_per_gpu_hour(10000.0, 700.0, 1.0, years=5, interest_pct_per_year=10.0)
    assert b.capex * 8766 / 10000.0 == pytest.approx(0.26380, abs=5e-5)


def test_break_even_round_trip():
    # At the break-even utilisation the owned rate equals the rental rate exactly.
    rent = np.array([2.0, 4.0, 12.29])
    u = cost.break_even_utilization(rent, 25000.0, 700.0)
    owned = cost.owned_usd_per_gpu_hour(25000.0, 700.0, np.minimum(u, 1.0))
    np.testing.assert_allclose(owned.total[u <= 1], rent[u <= 1], rtol=1e-12)
    # Hand value at $2/GPU-h: (0.570386 + 0.321255 + 0.142596) / (2 - 0.160314) = 0.5622.
    assert u[0] == pytest.approx(0.5622, abs=1e-4)
    # A rental below the power cost alone never breaks even.
    assert np.isinf(cost.break_even_utilization(0.1, 25000.0, 700.0))


def test_owned_cost_of_a_run():
    rate = cost.owned_usd_per_gpu_hour(25000.0, 700.0, 0.8)
    assert cost.owned_cost_usd(1024, 100.0, rate) == pytest.approx(1024 * 100.0 * rate.total)


def test_vectorised_over_arrays():
    prices = np.array([20000.0, 25000.0, 30000.0])
    b = cost.owned_usd_per_gpu_hour(prices, 700.0, 0.7)
    for i, p in enumerate(prices):
        assert b.total[i] == pytest.approx(cost.owned_usd_per_gpu_hour(p, 700.0, 0.7).total)
    assert cost.rented_cost_usd(np.array([1, 8, 9]), 1.0, 10.0, 8).tolist() == [10.0, 10.0, 20.0]


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 100000), st.floats(0.0, 1e5), st.floats(0.0, 500.0), st.sampled_from([1, 2, 4, 8, 16]),
       st.floats(1.0, 2.0), st.integers(1, 64))
def test_rented_cost_monotone(n, hours, price, per_inst, k, extra):
    base = cost.rented_cost_usd(n, hours, price, per_inst)
    assert cost.rented_cost_usd(n, hours, price * k, per_inst) >= base       # higher price
    assert cost.rented_cost_usd(n + extra, hours, price, per_inst) >= base   # more GPUs
    assert cost.rented_cost_usd(n, hours * k, price, per_inst) >= base       # longer


@settings(max_examples=100, deadline=None)
@given(st.floats(1000.0, 100000.0), st.floats(50.0, 1500.0), st.floats(0.05, 1.0), st.floats(1.0, 3.0),
       st.floats(0.0, 0.5), st.floats(1.0, 1.8))
def test_owned_cost_monotone(price, tdp, u, k, kwh, pue):
    base = cost.owned_usd_per_gpu_hour(price, tdp, u, usd_per_kwh=kwh, pue=pue).total
    assert cost.owned_usd_per_gpu_hour(price * k, tdp, u, usd_per_kwh=kwh, pue=pue).total >= base
    assert cost.owned_usd_per_gpu_hour(price, tdp * k, u, usd_per_kwh=kwh, pue=pue).total >= base
    assert cost.owned_usd_per_gpu_hour(price, tdp, u, usd_per_kwh=kwh * k, pue=pue).total >= base
    assert cost.owned_usd_per_gpu_hour(price, tdp, min(1.0, u * k), usd_per_kwh=kwh, pue=pue).total <= base
    rate = cost.owned_usd_per_gpu_hour(price, tdp, u, usd_per_kwh=kwh, pue=pue)
    assert cost.owned_cost_usd(9, 10.0, rate) >= cost.owned_cost_usd(8, 10.0, rate)


@settings(max_examples=60, deadline=None)
@given(st.floats(0.5, 50.0), st.floats(1.01, 4.0))
def test_break_even_falls_as_rent_rises(rent, k):
    assert cost.break_even_utilization(rent * k, 25000.0, 700.0) <= cost.break_even_utilization(rent, 25000.0, 700.0)


@pytest.mark.parametrize("call, field", [
    (lambda: cost.rented_cost_usd(0, 1.0, 10.0, 8), "n_gpus"),
    (lambda: cost.rented_cost_usd(8, -1.0, 10.0, 8), "hours"),
    (lambda: cost.owned_usd_per_gpu_hour(25000.0, 700.0, 1.5), "utilization"),
    (lambda: cost.owned_usd_per_gpu_hour(25000.0, 700.0, 0.5, pue=0.9), "pue"),
    (lambda: cost.usd_per_million_tokens(10.0, 0), "n_tokens"),
])
def test_bad_input_names_the_field(call, field):
    with pytest.raises(ClusteroptError) as exc:
        call()
    assert exc.value.field == field
