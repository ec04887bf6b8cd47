"""clusteropt: plan GPU clusters for LLM training and serving.

Public entry points (CONTRACTS.md): ``load_scenario``, ``estimate``, ``evaluate``, ``solve``,
``sensitivity``, ``sweep``, ``plan`` (optimizer/search/api.py). They are imported lazily so that
``import optimizer`` stays cheap and side-effect free.
"""

__version__ = "0.1.0"

__all__ = ["load_scenario", "estimate", "evaluate", "solve", "sweep", "sensitivity", "plan", "ClusteroptError",
           "__version__"]

_API = ("estimate", "evaluate", "solve", "sweep", "sensitivity", "plan", "memory_breakdown", "scaling_plan",
        "disaggregation")


def __getattr__(name):
    if name == "load_scenario":
        from optimizer.scenario import load_scenario
        return load_scenario
    if name in _API:
        from optimizer.search import api
        return getattr(api, name)
    if name == "ClusteroptError":
        from optimizer.errors import ClusteroptError
        return ClusteroptError
    raise AttributeError(f"module 'optimizer' has no attribute {name!r}")
