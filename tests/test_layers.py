"""The packages form layers, ``guide_store`` <- ``teachers`` <- ``student`` <- ``cluster``: a module imports
only from its own package and the packages before it, and no modules import each other in a cycle.

Read from the source with ``ast`` (nothing is imported). Imports inside functions count too: they run
when the function does, and a cycle through one is still a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("guide_store", "teachers", "student", "cluster")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_names(tree: ast.AST, module: str, is_package: bool) -> list[tuple[int, str]]:
    """``(line, dotted name)`` of every import in ``module``, relative ones made absolute. ``from a import b``
    gives ``a`` and ``a.b`` (``b`` may be a module or a name in ``a``)."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.split(".") if is_package else module.split(".")[:-1]
                package = package[: len(package) - (node.level - 1)]
                base = ".".join(package + ([base] if base else []))
            out.append((node.lineno, base))
            out += [(node.lineno, f"{base}.{alias.name}") for alias in node.names if alias.name != "*"]
    return out


def project_imports() -> tuple[dict[str, dict[str, int]], list[str]]:
    """The import graph of the four packages (``{module: {imported module: line}}``) and every upward import,
    one line each naming the file, the line and both layers."""
    modules = {module_name(p): p for layer in LAYERS for p in sorted((ROOT / layer).rglob("*.py"))}
    graph, upward = {}, {}
    for name, path in modules.items():
        layer = name.split(".")[0]
        deps: dict[str, int] = {}
        for line, imported in imported_names(ast.parse(path.read_text(), str(path)), name, path.name == "__init__.py"):
            top = imported.split(".")[0]
            if top not in LAYERS:
                continue
            if LAYERS.index(top) > LAYERS.index(layer):
                where = f"{path.relative_to(ROOT)}:{line}"  # one line per import statement, naming its module
                upward.setdefault(where, f"{where}: {layer} imports {imported} ({top} is a later layer)")
            if imported in modules and imported != name:
                deps.setdefault(imported, line)
        graph[name] = deps
    return graph, sorted(upward.values())


def cycles(graph: dict[str, dict[str, int]]) -> list[str]:
    """One cycle ``a -> b -> a`` through each group of modules that import each other (Tarjan's strongly
    connected components of more than one module)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.add(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(group)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    found = []
    for group in groups:  # the shortest way from its first module back to it
        start = min(group)
        paths, frontier, cycle = {start: [start]}, [start], None
        while cycle is None:
            nxt = []
            for v in frontier:
                for w in sorted(graph[v]):
                    if w == start and cycle is None:
                        cycle = paths[v] + [start]
                    elif w in group and w not in paths:
                        paths[w] = paths[v] + [w]
                        nxt.append(w)
            frontier = nxt
        found.append(" -> ".join(cycle))
    return sorted(found)


def test_no_module_imports_from_a_later_layer():
    _, upward = project_imports()
    assert not upward, "upward imports (move what is shared down, or pass it in):\n" + "\n".join(upward)


def test_no_modules_import_each_other_in_a_cycle():
    graph, _ = project_imports()
    found = cycles(graph)
    assert not found, "import cycles:\n" + "\n".join(found)


def test_the_checker_reads_relative_imports_and_finds_cycles():
    tree = ast.parse("from .b import x\nfrom .. import c\nimport cluster.cli\n")
    assert [name for _, name in imported_names(tree, "teachers.sub.a", is_package=False)] == [
        "teachers.sub.b",
        "teachers.sub.b.x",
        "teachers",
        "teachers.c",
        "cluster.cli",
    ]
    graph = {"a": {"b": 1}, "b": {"c": 1, "d": 1}, "c": {"a": 1}, "d": {}, "e": {"e2": 1}, "e2": {"e": 1}}
    assert cycles(graph) == ["a -> b -> c -> a", "e -> e2 -> e"]
