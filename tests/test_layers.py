"""Architecture rules of optimizer/ as code (issue 18), checked on the import graph with ``ast``.

Layers (developers' guide, STYLE.md 'Module boundaries'; each imports only from those above it):
    model/ -> formulas/ -> catalog.py -> scenario.py -> search/ -> report.py, schema.py -> cli.py
with units, errors, formatting and inputs (file reading) usable everywhere, and inside search/: core imports no planner,
serve never imports train, codesign may import train, portfolio may import train and serve.
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "optimizer"


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(PKG.rglob("*.py"))}
TREES = {m: ast.parse(p.read_text(), filename=str(p)) for m, p in MODULES.items()}


def _target(name: str) -> str | None:
    """The optimizer module an import of ``name`` loads (the deepest existing prefix)."""
    parts = name.split(".")
    while parts:
        cand = ".".join(parts)
        if cand in MODULES:
            return cand
        parts.pop()
    return None


def _imports(mod: str) -> list[tuple[str, int, str | None]]:
    """(imported module, line, imported name or None) for every optimizer import in ``mod``,
    at module level or inside functions alike."""
    out = []
    for node in ast.walk(TREES[mod]):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("optimizer"):
                    out.append((_target(a.name), node.lineno, None))
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 \
                and node.module.startswith("optimizer"):
            for a in node.names:
                sub = _target(f"{node.module}.{a.name}")
                tgt = sub if sub == f"{node.module}.{a.name}" else _target(node.module)
                out.append((tgt, node.lineno, a.name))
    return out


GRAPH = {m: sorted({t for t, _, _ in _imports(m) if t and t != m}) for m in MODULES}

#: Modules any layer may import (no optimizer imports of their own, or only each other).
BASE = {"optimizer.units", "optimizer.errors", "optimizer.formatting",
        "optimizer.inputs"}   # guarded file reading and API argument checks (issue 20): imports errors only


def _layer(mod: str) -> int:
    if mod in BASE:
        return 0
    for prefix, layer in (("optimizer.model", 1), ("optimizer.formulas", 2), ("optimizer.catalog", 3),
                          ("optimizer.catalog_refresh", 3), ("optimizer.catalog_serving", 3),
                          ("optimizer.runs", 3), ("optimizer.calibration", 3),
                          ("optimizer.scenario", 4), ("optimizer.scenario_docs", 4), ("optimizer.portfolio_schema", 4), ("optimizer.pricing", 5),
                          ("optimizer.search", 6), ("optimizer.report", 7), ("optimizer.report_plan", 7), ("optimizer.schema", 7), ("optimizer.export", 7),
                          ("optimizer.plots", 7), ("optimizer.cli", 8), ("optimizer.cli_choices", 8), ("optimizer.__main__", 8)):
        if mod == prefix or mod.startswith(prefix + "."):
            return layer
    if mod == "optimizer":
        return 6          # the package facade: lazy re-exports of the public API (search/api.py)
    raise AssertionError(f"{mod}: no layer assigned; add it to tests/test_layers.py")


def test_every_module_has_a_layer():
    for m in MODULES:
        _layer(m)


def test_no_import_cycle():
    """Tarjan's strongly connected components over every optimizer import (in functions too)."""
    index, low, stack, on, cycles = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in GRAPH:
        if v not in index:
            visit(v)
    assert cycles == []


def test_layer_order():
    """Each module imports only from its own layer or the layers above it."""
    bad = [f"{m} (layer {_layer(m)}) imports {t} (layer {_layer(t)})"
           for m, targets in GRAPH.items() for t in targets if _layer(t) > _layer(m)]
    assert bad == []


def _planner(mod: str) -> str | None:
    parts = mod.split(".")
    if len(parts) >= 3 and parts[:2] == ["optimizer", "search"]:
        return parts[2]
    return None


#: Which search packages each may import (besides itself).
ALLOWED = {"core": set(), "train": {"core"}, "serve": {"core"}, "codesign": {"core", "train"},
           "portfolio": {"core", "train", "serve"}}


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_planner_import_rules(package):
    """core imports no planner; serve never imports train; codesign may import train; portfolio
    may import train and serve; no planner imports the dispatcher, the API or sweep."""
    bad = []
    for m, targets in GRAPH.items():
        if _planner(m) != package:
            continue
        for t in targets:
            tp = _planner(t)
            if tp is not None and tp != package and tp not in ALLOWED[package]:
                bad.append(f"{m} imports {t}")
    assert bad == []


def test_search_imports_no_renderer():
    bad = [f"{m} imports {t}" for m, targets in GRAPH.items() if m.startswith("optimizer.search")
           for t in targets if t in ("optimizer.report", "optimizer.schema", "optimizer.cli", "optimizer.plots")]
    assert bad == []


def test_cli_reaches_search_only_through_the_api():
    """cli.py parses, calls the public API and renders: no planner module, no formula."""
    bad = [t for t in GRAPH["optimizer.cli"]
           if (t.startswith("optimizer.search") and t != "optimizer.search.api") or t.startswith("optimizer.formulas")]
    assert bad == []


def test_no_private_name_imported_across_modules():
    bad = [f"{m}:{line} imports {name} from {t}" for m in MODULES for t, line, name in _imports(m)
           if name is not None and name.startswith("_") and t != m]
    assert bad == []


def _argless_catalog_loads(mod: str) -> list[int]:
    return [n.lineno for n in ast.walk(TREES[mod]) if isinstance(n, ast.Call)
            and getattr(n.func, "id", getattr(n.func, "attr", None)) == "load_catalog"
            and not n.args and not n.keywords]


def test_no_default_catalog_load_below_the_api():
    """The catalog a caller passes is the one every layer below uses: only the API loads the
    default catalog (when the caller passes none)."""
    allowed = {"optimizer.search.api", "optimizer.catalog"}
    bad = {m: lines for m in MODULES if m not in allowed and (lines := _argless_catalog_loads(m))}
    assert bad == {}


def test_no_module_over_800_lines():
    long = {m: n for m, p in MODULES.items() if (n := len(p.read_text().splitlines())) > 800}
    assert long == {}


def test_one_name_per_role():
    """One SolveResult class, one money scale per integer model, one all-reduce per network model."""
    defs: dict[str, list[str]] = {}
    for m, tree in TREES.items():
        for node in tree.body:
            names = ([node.name] if isinstance(node, (ast.FunctionDef, ast.ClassDef)) else
                     [t.id for t in getattr(node, "targets", []) if isinstance(t, ast.Name)])
            for n in names:
                defs.setdefault(n, []).append(m)
    for name in ("SolveResult", "MONEY_UNITS_PER_USD", "allreduce_time_s", "frame", "COLUMNS", "_verify",
                 "ranked_frame", "check_agreement", "verify_solution"):
        assert len(defs.get(name, [])) <= 1 or name == "verify_solution", (name, defs.get(name))
    # each planner's verification has the same name and lives in the planner's own package
    assert {_planner(m) for m in defs["verify_solution"]} == {"train", "serve", "codesign"}


def test_pyproject_lists_every_package():
    """A non-editable install ships every code package (CI installs with pip install '.[test]')."""
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    on_disk = {_module_name(p) for p in PKG.rglob("__init__.py")}
    assert on_disk <= listed, on_disk - listed
    assert (PKG / "py.typed").exists()
