"""The package's shape (README "Layout"): pure cores, edges on top, no import cycles.

Read from the source with `ast`, so a change that breaks a rule fails here before review.
"""
from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "grid_service"
# Decided without Flask or a database: the workflow's table and declaration, working-time arithmetic,
# a clock's deadlines, the sweeper's decisions.
PURE = ("grid_service.events.states", "grid_service.events.actions", "grid_service.sla.calendar",
        "grid_service.sla.deadlines", "grid_service.escalation.decide")
FRAMEWORKS = ("flask", "flask_sqlalchemy", "flask_smorest", "flask_migrate", "sqlalchemy", "marshmallow", "webargs")
# The HTTP edges: each may use the shared toolkit (web.kit), none another edge.
EDGES = ("grid_service.web.api", "grid_service.web.hotline", "grid_service.web.open311")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(path): path for path in PACKAGE.rglob("*.py")}


@cache
def imports(module: str) -> frozenset[str]:
    """Every module `module` imports (at the top or inside a function), as absolute names."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names if f"{target}.{alias.name}" in MODULES)
    return frozenset(name for name in found if name in MODULES or not name.startswith("grid_service"))


def internal(module: str) -> set[str]:
    return {name for name in imports(module) if name in MODULES and name != module}


@pytest.mark.parametrize("module", PURE)
def test_the_pure_cores_import_neither_flask_nor_the_database(module):
    seen, todo = set(), [module]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        frameworks = sorted(name for name in imports(current) if name.split(".")[0] in FRAMEWORKS)
        assert not frameworks, f"{current} (reached from {module}) imports {frameworks}"
        todo += [name for name in internal(current) if not MODULES[name].name == "__init__.py"]


def test_nothing_below_the_edges_imports_an_edge():
    offenders = {module: sorted(name for name in internal(module) if name.startswith("grid_service.web"))
                 for module in MODULES if not module.startswith("grid_service.web") and module != "grid_service"}
    assert {module: names for module, names in offenders.items() if names} == {}


@pytest.mark.parametrize("edge", EDGES)
def test_the_edges_share_the_toolkit_but_never_import_each_other(edge):
    for module in (name for name in MODULES if name == edge or name.startswith(edge + ".")):
        others = [name for name in internal(module) if name.startswith("grid_service.web.")
                  and not name.startswith("grid_service.web.kit") and not (name == edge or name.startswith(edge + "."))]
        assert not others, f"{module} imports another edge: {others}"


def test_no_import_cycles_between_modules():
    graph = {module: internal(module) - {"grid_service"} for module in MODULES}
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for name in sorted(graph[module]):
            if name in graph[module] and name.startswith(module + "."):
                continue  # a package importing its own submodule is not a cycle
            if state.get(name) == 1:
                cycle = path[path.index(name):] + [name] if name in path else [module, name]
                pytest.fail(f"import cycle: {' -> '.join(cycle)}")
            if state.get(name) is None:
                visit(name, path + [name])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
