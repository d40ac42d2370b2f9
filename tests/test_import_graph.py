"""The import graph of receiver/ and transforms/, read statically: no cycle inside receiver/, and
transforms/ never imports receiver/.

Every module is parsed with :mod:`ast`; an edge is any ``import`` or ``from … import`` of a module
of those packages, relative ones included, and imports inside functions count too (a deferred
import still makes a circle, it only hides it until first call). Imports under
``if TYPE_CHECKING:`` are left out: they never run. ``import pkg.mod`` is an edge to
``pkg.mod`` alone, not to ``pkg/__init__.py`` that Python runs first: a package whose
``__init__`` re-exports its modules is not a circle, but a module that imports names from
its own package's ``__init__`` (``from pkg import name``) is, and is reported.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("receiver", "transforms")

Graph = Mapping[str, frozenset[str]]


# --------------------------------------------------------------------------- building the graph


def module_files(root: Path, packages: Sequence[str]) -> dict[str, Path]:
    """Dotted module name → file, for every ``.py`` file under ``root/<package>``."""
    found: dict[str, Path] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement that can run, at any depth; the body of ``if TYPE_CHECKING:`` is skipped."""
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)  # the else branch does run
        else:
            stack.extend(ast.iter_child_nodes(node))


def _known(name: str, modules: Mapping[str, Path]) -> str | None:
    """``name`` itself if it is a module, else its nearest enclosing module (``pkg.mod.Class`` → ``pkg.mod``)."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in modules:
            return candidate
        parts.pop()
    return None


def _targets(name: str, node: ast.Import | ast.ImportFrom, modules: Mapping[str, Path]) -> Iterator[str | None]:
    if isinstance(node, ast.Import):
        for alias in node.names:
            yield _known(alias.name, modules)
        return
    if node.level:
        package = name if modules[name].name == "__init__.py" else name.rpartition(".")[0]
        anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
        base = ".".join([*anchor, *([node.module] if node.module else [])])
    else:
        base = node.module or ""
    for alias in node.names:  # ``from pkg import mod`` imports the module pkg.mod when there is one
        yield _known(f"{base}.{alias.name}", modules) or _known(base, modules)


def import_graph(root: Path, packages: Sequence[str]) -> dict[str, frozenset[str]]:
    """Module → the modules of ``packages`` it imports at run time."""
    modules = module_files(root, packages)
    graph: dict[str, frozenset[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        graph[name] = frozenset(
            t for node in _runtime_imports(tree) for t in _targets(name, node, modules) if t is not None
        )
    return graph


# --------------------------------------------------------------------------- reading it


def _in(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def cycles(graph: Graph, package: str) -> list[list[str]]:
    """One shortest cycle per strongly connected component among ``package``'s modules, as a path
    that starts and ends at the component's first module by name; sorted."""
    edges = {m: sorted(t for t in ts if _in(t, package)) for m, ts in graph.items() if _in(m, package)}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    components: list[set[str]] = []

    def connect(node: str) -> None:  # Tarjan
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in edges[node]:
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component: set[str] = set()
            while True:
                member = stack.pop()
                component.add(member)
                if member == node:
                    break
            components.append(component)

    for node in sorted(edges):
        if node not in index:
            connect(node)

    found = []
    for component in components:
        start = min(component)
        if len(component) == 1 and start not in edges[start]:
            continue
        paths = {start: [start]}
        frontier = [start]
        while paths[start] == [start]:  # breadth first until an edge leads back to start
            reached = []
            for node in frontier:
                for nxt in edges[node]:
                    if nxt == start:
                        paths[start] = [*paths[node], start]
                        break
                    if nxt in component and nxt not in paths:
                        paths[nxt] = [*paths[node], nxt]
                        reached.append(nxt)
                if paths[start] != [start]:
                    break
            frontier = reached
        found.append(paths[start])
    return sorted(found)


def imports_of(graph: Graph, importer: str, imported: str) -> list[str]:
    """``a -> b`` for every module of ``importer`` that imports a module of ``imported``."""
    return sorted(f"{m} -> {t}" for m, ts in graph.items() if _in(m, importer) for t in ts if _in(t, imported))


def _show(found: list[list[str]]) -> str:
    return "\n".join(" -> ".join(path) for path in found)


# --------------------------------------------------------------------------- the project


def test_receiver_has_no_import_cycle() -> None:
    graph = import_graph(ROOT, PACKAGES)
    found = cycles(graph, "receiver")
    assert not found, "import cycles inside receiver/:\n" + _show(found)


def test_transforms_never_imports_receiver() -> None:
    graph = import_graph(ROOT, PACKAGES)
    found = imports_of(graph, "transforms", "receiver")
    assert not found, "transforms/ must stay free of receiver/:\n" + "\n".join(found)


def test_the_project_graph_is_read() -> None:
    """Every module is in the graph, and the imports everyone relies on are seen."""
    graph = import_graph(ROOT, PACKAGES)
    files = [*(ROOT / "receiver").rglob("*.py"), *(ROOT / "transforms").rglob("*.py")]
    assert len(graph) == len(files) > 10
    assert "receiver" in graph and "transforms" in graph  # packages are modules too
    assert imports_of(graph, "receiver", "transforms")  # the service uses the engine


# --------------------------------------------------------------------------- the checker itself


def _package(root: Path, files: Mapping[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


def test_a_cycle_through_deferred_and_relative_imports_is_found(tmp_path: Path) -> None:
    root = _package(tmp_path, {
        "app/__init__.py": "",
        "app/a.py": "def later():\n    from app import b\n    return b\n",  # deferred, absolute
        "app/b.py": "from . import c\n",                                      # relative, a module
        "app/c.py": "from .a import later\n",                                 # relative, a name
        "app/d.py": "import app.e\n",
        "app/e.py": "import os\nVALUE = 1\n",
    })
    graph = import_graph(root, ["app"])
    assert graph["app.a"] == {"app.b"} and graph["app.b"] == {"app.c"} and graph["app.c"] == {"app.a"}
    assert graph["app.e"] == frozenset()
    assert cycles(graph, "app") == [["app.a", "app.b", "app.c", "app.a"]]
    assert _show(cycles(graph, "app")) == "app.a -> app.b -> app.c -> app.a"


def test_type_checking_imports_are_skipped_but_their_else_branch_is_not(tmp_path: Path) -> None:
    root = _package(tmp_path, {
        "app/__init__.py": "",
        "app/a.py": "import typing\nif typing.TYPE_CHECKING:\n    from app.b import B\n",
        "app/b.py": "from typing import TYPE_CHECKING\nimport app.a\nB = 1\n",
        "app/c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    pass\nelse:\n    from app import d\n",
        "app/d.py": "from .c import *\n",
    })
    graph = import_graph(root, ["app"])
    assert graph["app.a"] == frozenset()
    assert graph["app.c"] == {"app.d"}
    assert cycles(graph, "app") == [["app.c", "app.d", "app.c"]]


def test_a_package_importing_itself_and_the_shortest_cycle(tmp_path: Path) -> None:
    root = _package(tmp_path, {
        "app/__init__.py": "from app.sub import thing\n",
        "app/sub/__init__.py": "from .inner import thing\n",
        "app/sub/inner.py": "from .. import other\nthing = 1\n",            # .. from a module in app.sub
        "app/other.py": "import app.sub.inner\nfrom app import sub\n",    # two ways back
        "app/alone.py": "import app.alone\n",                             # a module importing itself
    })
    graph = import_graph(root, ["app"])
    assert graph["app.sub"] == {"app.sub.inner"}
    assert graph["app.sub.inner"] == {"app.other"}
    assert graph["app.other"] == {"app.sub", "app.sub.inner"}
    assert cycles(graph, "app") == [
        ["app.alone", "app.alone"],
        ["app.other", "app.sub.inner", "app.other"],
    ]


def test_an_import_across_the_boundary_is_named(tmp_path: Path) -> None:
    root = _package(tmp_path, {
        "service/__init__.py": "",
        "service/api.py": "from engine import core\n",
        "engine/__init__.py": "",
        "engine/core.py": "def f():\n    import service.api\n",
        "engine/pure.py": "from engine.core import f\n",
    })
    graph = import_graph(root, ["service", "engine"])
    assert imports_of(graph, "engine", "service") == ["engine.core -> service.api"]
    assert imports_of(graph, "service", "engine") == ["service.api -> engine.core"]
    assert cycles(graph, "service") == []  # the circle passes through engine, outside the package
