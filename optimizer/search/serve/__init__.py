"""The serving fleet planner: table, problem, solve, evaluate, explain, sensitivity, compression."""

from __future__ import annotations


