"""What every planner shares: CP-SAT helpers, integer scales, the one SolveResult, Pareto
fronts, minimal conflicts and threshold search. Imports no planner."""

from __future__ import annotations


