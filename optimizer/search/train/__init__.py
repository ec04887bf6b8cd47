"""The training planner: space, table, solve, evaluate, explain, sensitivity, system."""

from __future__ import annotations


