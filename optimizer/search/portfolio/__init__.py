"""The portfolio planner: one fleet for several training and serving jobs."""

from __future__ import annotations


