"""Issue 17: buy-versus-rent figures, commitments, preemption and offer rules, checked by hand."""

import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from optimizer.errors import ClusteroptError
from optimizer.formulas import investment as I, offers as O, preemption as P


# --- NPV, payback, ROI, IRR ----------------------------------------------------------------

def test_npv_payback_roi_by_hand():
    # C = $1M, S = $300k a year for 5 years, r = 8%, residual 10% of C.
    # By hand: 1.08^-5 = 0.680583197; annuity = (1 - 0.680583197) / 0.08 = 3.992710037;
    # NPV = -1,000,000 + 300,000 x 3.992710037 + 100,000 x 0.680583197 = 265,871.33
    # payback = 1,000,000 / 300,000 = 3.333 years; ROI = (5 x 300,000 + 100,000 - 1,000,000) / 1,000,000 = 60 %
    b = I.buy_vs_rent(1_000_000, rent_usd_per_year=350_000, owned_opex_usd_per_year=30_000, years=5,
                      discount_rate=0.08, residual_pct=10, staff_usd_per_year=20_000)
    assert b.saving_usd_per_year == pytest.approx(300_000)
    assert b.npv_usd == pytest.approx(265_871.33, abs=0.05)
    assert b.payback_years == pytest.approx(10 / 3)
    assert b.roi_pct == pytest.approx(60.0)
    # IRR: the rate where NPV = 0 lies where the NPV changes sign
    assert I.npv_usd(1_000_000, 300_000, 5, b.irr, 100_000) == pytest.approx(0, abs=1e-3)
    assert I.npv_usd(1_000_000, 300_000, 5, 0.17, 100_000) > 0 > I.npv_usd(1_000_000, 300_000, 5, 0.18, 100_000)


def test_payback_is_none_when_it_never_pays_back():
    assert I.payback_years(1_000_000, 150_000, years=4) is None        # 6.7 years > 4
    assert I.payback_years(1_000_000, -5_000, years=4) is None
    b = I.buy_vs_rent(1e6, 100_000, 200_000, years=4, discount_rate=0.05)
    assert b.payback_years is None and b.npv_usd < 0 and b.irr is None


def test_annuity_factor_at_zero_rate_is_the_years():
    assert I.annuity_factor(0.0, 4) == pytest.approx(4.0)
    assert I.annuity_factor(0.0, 2.5) == pytest.approx(2.5)


@settings(max_examples=60, deadline=None)
@given(c=st.floats(1e4, 1e9), s=st.floats(1e3, 1e9), n=st.integers(1, 10), r1=st.floats(0, 0.5), dr=st.floats(0.001, 0.5))
def test_npv_falls_as_the_discount_rate_rises(c, s, n, r1, dr):
    assert I.npv_usd(c, s, n, r1 + dr) < I.npv_usd(c, s, n, r1)


def test_serving_money_per_request_and_month():
    # $120/hour at 10 requests/s: 36,000 requests an hour -> $3.333 per 1,000; 30 days = $86,400
    assert I.usd_per_1k_requests(120.0, 10.0) == pytest.approx(120 / 36)
    assert I.usd_per_month(120.0) == pytest.approx(86_400.0)


def test_bad_inputs_raise():
    with pytest.raises(ClusteroptError, match="residual_pct"):
        I.buy_vs_rent(1e6, 1e5, 1e4, years=4, discount_rate=0.05, residual_pct=120)
    with pytest.raises(ClusteroptError, match="discount_rate"):
        I.annuity_factor(-1.5, 3)


# --- commitments ---------------------------------------------------------------------------

def test_commitment_billed_for_whole_terms():
    year = 8766.0
    assert O.committed_billed_hours(100.0, year) == pytest.approx(year)          # one term billed in full
    assert O.committed_billed_hours(9000.0, year) == pytest.approx(2 * year)     # a second term starts
    assert O.committed_billed_hours(100.0, 0.0) == pytest.approx(100.0)          # on demand: as used


def test_commitment_break_even_by_hand():
    # Azure ND96amsr_A100_v4 per GPU-hour: 3-year 2.13 vs on demand 4.10 (2024-01-29 page):
    # one 3-year term costs 26,298 h x 2.13; on demand costs the same after 26,298 x 2.13 / 4.10 = 13,662 h
    assert O.commitment_break_even_hours(3 * 8766.0, 2.13, 4.10) == pytest.approx(3 * 8766 * 2.13 / 4.10)


# --- offers: what they can run --------------------------------------------------------------

@pytest.mark.parametrize("n, tp, kind, gpi, cap, ok", [
    (1, 1, "single_gpu", 1, None, True),
    (8, 1, "single_gpu", 1, None, False),       # 8 unrelated pods are not a training cluster
    (8, 8, "node", 8, None, True),
    (16, 8, "node", 8, None, False),            # two instances need a fabric
    (256, 8, "cluster", 8, None, True),
    (256, 8, "cluster", 8, 128, False),         # beyond the largest contiguous allocation
    (16, 16, "cluster", 8, None, False),        # TP never leaves an instance
])
def test_offer_runs_layout(n, tp, kind, gpi, cap, ok):
    assert O.offer_runs_layout(n, tp, O.INTERCONNECT_CODES[kind], gpi, cap) is ok


# --- preemption ----------------------------------------------------------------------------

def test_default_preemption_rate_by_hand():
    # 10% a day: 1 - exp(-24 lambda) = 0.1 -> lambda = -ln(0.9) / 24 = 0.0043900 per instance-hour
    assert P.DEFAULT_SPOT_PREEMPTIONS_PER_HOUR == pytest.approx(-math.log(0.9) / 24)
    assert P.job_preemptions_per_hour(32, 0.01) == pytest.approx(0.32)


def test_spare_replicas_poisson_by_hand():
    # 10 replicas, 0.0044 preemptions per replica-hour, 1 h to replace: mean down = 0.044;
    # P(0 down) = e^-0.044 = 0.957 < 0.99, P(<= 1) = 0.957 (1 + 0.044) = 0.9991 >= 0.99 -> 1 spare
    assert P.spare_replicas(10, 0.0044, 1.0) == 1
    assert P.spare_replicas(10, 0.0, 1.0) == 0
    assert P.spare_replicas(1000, 0.0044, 1.0) > P.spare_replicas(100, 0.0044, 1.0)


def test_owned_plan_flips_by_hand():
    # capex 1.0M (0.8M GPUs + 0.2M rest); rent 500k/yr, power 100k/yr, hosting 50k/yr, maintenance 5% (50k),
    # staff 0; 4 years, 8%, residual 0. Saving = 500 - 100 - 50 - 50 = 300k/yr.
    m = I.OwnedPlanMoney(capex_gpus_usd=800_000, capex_other_usd=200_000, rent_usd_per_year=500_000,
                         power_usd_per_year=100_000, hosting_usd_per_year=50_000, maintenance_pct_per_year=5,
                         staff_usd_per_year=0, years=4, discount_rate=0.08)
    f = m.figures()
    assert f.saving_usd_per_year == pytest.approx(300_000)
    # NPV = -1e6 + 300k x (1 - 1.08^-4) / 0.08 = -1e6 + 300k x 3.312127 = -6,361.9
    assert f.npv_usd == pytest.approx(-6_361.92, abs=0.05)
    flips = m.flips()
    # utilisation: saving(k) = 400k k - 100k; NPV = 0 at 400k k - 100k = 1e6 / 3.312127 = 301,920.8 -> k = 1.004802
    assert flips["utilization_scale"]["flip"] == pytest.approx((1e6 / 3.3121268 + 100_000) / 400_000, rel=1e-6)
    # GPU price: capex(k) = 800k k + 200k, maintenance 5% of it; NPV = 0 at
    # -(800k k + 200k) + (350k - 0.05 (800k k + 200k)) x 3.3121268 = 0 -> k = 0.991937
    a = 3.3121268
    k = (350_000 * a - 200_000 - 0.05 * 200_000 * a) / (800_000 * (1 + 0.05 * a))
    assert flips["gpu_price_scale"]["flip"] == pytest.approx(k, rel=1e-6)
    # IRR just under 8% (NPV slightly negative at 8%)
    assert 0.07 < flips["discount_rate"]["flip"] < 0.08


@settings(max_examples=60, deadline=None)
@given(util=st.floats(0.1, 10.0), price=st.floats(0.1, 10.0), rate=st.floats(0.0, 0.5),
       staff=st.floats(0.0, 1e6), residual=st.floats(0.0, 60.0), years=st.floats(0.5, 8.0))
def test_npv_shortcut_equals_the_full_figures(util, price, rate, staff, residual, years):
    # the flip searches use OwnedPlanMoney.npv; it must be the same number as figures().npv_usd
    m = I.OwnedPlanMoney(capex_gpus_usd=800_000, capex_other_usd=200_000, rent_usd_per_year=500_000,
                         power_usd_per_year=40_000, hosting_usd_per_year=30_000, maintenance_pct_per_year=5.0,
                         staff_usd_per_year=staff, years=years, discount_rate=rate, residual_pct=residual)
    full = m.figures(utilization_scale=util, gpu_price_scale=price).npv_usd
    assert m.npv(utilization_scale=util, gpu_price_scale=price) == pytest.approx(full, rel=1e-12, abs=1e-6)
