"""clusteropt: plan GPU clusters for LLM training and serving.

Public entry points (CONTRACTS.md): ``load_scenario``, ``evaluate``, ``solve``, ``sweep``.
They are imported lazily so that ``import optimizer`` stays cheap and side-effect free.
"""

__version__ = "0.1.0"

__all__ = ["load_scenario", "evaluate", "solve", "sweep", "sensitivity", "ClusteroptError", "__version__"]


def __getattr__(name):
    if name == "load_scenario":
        from optimizer.scenario import load_scenario
        return load_scenario
    if name in ("evaluate", "solve"):
        from optimizer.search import api
        return getattr(api, name)
    if name == "ClusteroptError":
        from optimizer.errors import ClusteroptError
        return ClusteroptError
    if name == "sensitivity":
        from optimizer.search.sensitivity import sensitivity
        return sensitivity
    if name == "sweep":
        from optimizer.search.sweep import sweep
        return sweep
    raise AttributeError(f"module 'optimizer' has no attribute {name!r}")
