"""The co-design planner: model size, training tokens and layout chosen together."""

from __future__ import annotations


