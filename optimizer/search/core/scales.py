"""Integer scales of every CP-SAT model, in one place (each model checks its int64 headroom at build
time with ``cpsat.check_int64`` or its own bound).

    MONEY_UNITS_PER_USD      = 10_000   training, co-design and serving money: 1e-4 USD
                                        (a $10^11 run is 10^15 units)
    TIME_UNITS_PER_S         = 1_000    wall-clock in ms: 100 years is 3.2e12 units
    PLAN_MONEY_UNITS_PER_USD = 100      portfolio plans: whole cents per cost term. A plan sums
                                        thousands of terms (options x slots) over multi-year
                                        horizons, so it keeps two orders of magnitude more headroom
                                        than the single-row training sums.
"""

MONEY_UNITS_PER_USD = 10_000
TIME_UNITS_PER_S = 1_000
PLAN_MONEY_UNITS_PER_USD = 100
