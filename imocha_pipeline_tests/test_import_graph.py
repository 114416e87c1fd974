"""The layout's rules, read from the source: no import circles, clients at the bottom, Dagster only in ``defs/`` and
the entry points, the benchmarks and the sandbox independent of the tests, no module over 500 lines."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("imocha_pipeline", "imocha_sandbox", "imocha_drills", "bench")
ENTRY_POINTS = {"imocha_pipeline.definitions", "imocha_pipeline.cli", "imocha_pipeline.demo",
                "imocha_pipeline.doctor", "imocha_pipeline.callbacks_server"}
MAX_LINES = 500


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            parts = path.relative_to(REPO).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def imports(path: Path, name: str, known: dict[str, Path]) -> set[str]:
    """Every module of ours that ``path`` imports, at module level or inside a function."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets.add(base)
            targets |= {f"{base}.{alias.name}" for alias in node.names}
    ours = set()
    for target in targets:
        while target and target not in known:
            target = target.rpartition(".")[0]
        if target and target != name:
            ours.add(target)
    return ours


def all_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(path, name, known) for name, path in known.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for target in sorted(edges.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def _is_package_init(name: str) -> bool:
    return modules()[name].name == "__init__.py"


def test_no_import_circles():
    edges = graph()
    # A package's __init__ that re-exports its modules is not a circle of its own.
    edges = {name: {t for t in targets if not (_is_package_init(t) and name.startswith(t + "."))}
             for name, targets in edges.items()}
    assert cycles(edges) == []


def test_the_layers_point_down():
    edges = graph()
    clients = {name: targets for name, targets in edges.items() if name.startswith("imocha_pipeline.clients")}
    above = ("imocha_pipeline.sync", "imocha_pipeline.staging", "imocha_pipeline.defs", "imocha_pipeline.connections")
    assert {name: sorted(t for t in targets if t.startswith(above)) for name, targets in clients.items()
            if any(t.startswith(above) for t in targets)} == {}, "clients/ imports only settings and itself"
    staging = {name: targets for name, targets in edges.items() if name.startswith("imocha_pipeline.staging")}
    assert {name: sorted(t for t in targets if t.startswith(("imocha_pipeline.sync", "imocha_pipeline.defs")))
            for name, targets in staging.items()
            if any(t.startswith(("imocha_pipeline.sync", "imocha_pipeline.defs")) for t in targets)} == {}
    product = {name: targets for name, targets in edges.items() if name.startswith("imocha_pipeline")}
    assert {name: sorted(t for t in targets if t.startswith(("imocha_drills", "bench")))
            for name, targets in product.items() if any(t.startswith(("imocha_drills", "bench")) for t in targets)} \
        == {}, "the product never imports the drills or the benchmarks"


def test_benchmarks_sandbox_and_drills_do_not_import_the_tests():
    offenders = {name: sorted(n for n in all_imports(path) if n.startswith("imocha_pipeline_tests"))
                 for name, path in modules().items()}
    assert {name: found for name, found in offenders.items() if found} == {}


def test_only_defs_and_the_entry_points_import_dagster():
    importers = sorted(name for name, path in modules().items() if name.startswith("imocha_pipeline")
                       and any(n == "dagster" or n.startswith("dagster.") for n in all_imports(path)))
    outside = [name for name in importers if not name.startswith("imocha_pipeline.defs") and name not in ENTRY_POINTS]
    assert outside == [], outside
    assert "imocha_pipeline.definitions" in importers, "the check sees imports (it found the code location)"


def test_no_module_is_over_500_lines():
    sizes = {name: len(path.read_text().splitlines()) for name, path in modules().items()}
    assert {name: size for name, size in sizes.items() if size > MAX_LINES} == {}
    assert max(sizes.values()) > 100, "the check read the modules"


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
