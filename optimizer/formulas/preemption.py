"""Spot preemption: its rate, its cost to a training job, and spare replicas for serving (issue 17).

Conventions: rates per instance-hour (one spot instance is reclaimed as a unit), hours,
seconds. Preemptions are a Poisson process per instance, like failures
(formulas/reliability.py), so a training job on spot adds n_instances x rate to its
interruption rate: each preemption costs a restart and the work since the last checkpoint,
and Daly 2006's model of reliability.goodput prices both.

Default rate. Providers publish no per-instance-type rate for GPU spot capacity. Google states
for its preemptible VMs: 'we've observed from historical data that the average preemption rate
varies between 5% and 15% per day per project, on a seven-day average, occasionally spiking
higher' (cloud.google.com/compute/docs/instances/preemptible, as quoted in public repositories;
read 2026-12-07). DEFAULT_SPOT_PREEMPTION_FRACTION_PER_DAY = 0.10 is the middle of that range;
an offer's ``spot_preemptions_per_hour`` replaces it, and the scenario's
``pricing.spot_preemptions_per_hour`` replaces both. ASSUMPTION: GPU spot capacity is reclaimed
at least this often (it is scarcer than general-purpose capacity), so the default is optimistic.
"""

from __future__ import annotations

import math

import numpy as np

from optimizer.formulas._checks import as_array as _arr, scalar_or_array as _out

HOURS_PER_DAY = 24.0
DEFAULT_SPOT_PREEMPTION_FRACTION_PER_DAY = 0.10
DEFAULT_SPOT_PREEMPTION_SOURCE = ("Google Cloud preemptible VMs: 5-15% per day per project on a seven-day "
                                  "average (cloud.google.com/compute/docs/instances/preemptible); middle of the range")


def rate_per_hour_from_fraction(fraction, period_hours):
    """Poisson rate (per hour) at which a fraction ``fraction`` of instances is preempted within
    ``period_hours``: P(preempted within T) = 1 - exp(-lambda T)  =>  lambda = -ln(1 - p) / T."""
    p = _arr("fraction", fraction, hi=1.0)
    t = _arr("period_hours", period_hours, lo_open=True)
    with np.errstate(divide="ignore"):
        return _out(-np.log1p(-p) / t)


DEFAULT_SPOT_PREEMPTIONS_PER_HOUR = float(rate_per_hour_from_fraction(DEFAULT_SPOT_PREEMPTION_FRACTION_PER_DAY,
                                                                      HOURS_PER_DAY))
"""0.00439 preemptions per spot instance-hour (10% a day)."""


def job_preemptions_per_hour(n_instances, rate_per_instance_hour):
    """Preemption rate of a gang-scheduled job: any of its instances reclaimed stops the job, so
    rates add (superposition of independent Poisson processes): n_instances x rate."""
    return _out(_arr("n_instances", n_instances) * _arr("rate_per_instance_hour", rate_per_instance_hour))


def spare_replicas(n_replicas, rate_per_replica_hour, downtime_hours, *, quantile: float = 0.99) -> int:
    """Spare replicas a spot serving fleet keeps so that at most ``quantile`` of the time fewer
    than the needed replicas are up. Replicas down at a time: Poisson with mean
    n x rate x downtime (Little's law: preemption arrivals x time to replace one); the spares are
    the smallest k with P(down <= k) >= quantile. 0 when the rate is 0."""
    n = int(_arr("n_replicas", n_replicas))
    lam = float(_arr("rate_per_replica_hour", rate_per_replica_hour)) * float(_arr("downtime_hours", downtime_hours))
    mean = n * lam
    if mean <= 0:
        return 0
    k, term = 0, math.exp(-mean)
    cdf = term
    while cdf < quantile:
        k += 1
        term *= mean / k
        cdf += term
    return k
