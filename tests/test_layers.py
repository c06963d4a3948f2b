"""wsframe's modules form layers, and no module imports from a layer above its own.

Every import counts: top-level, under ``if TYPE_CHECKING:``, and inside
functions, since a type-only or deferred import is still a dependency (and the
usual way a cycle hides). A new module must be given a layer in ``LAYERS``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "wsframe"

LAYERS: dict[str, int] = {
    # L0: shared vocabulary, importing nothing of wsframe's but each other.
    "wsframe.status": 0,
    "wsframe.exceptions": 0,
    "wsframe._ids": 0,
    "wsframe._redact": 0,
    "wsframe.codec": 0,
    "wsframe.types": 0,
    # L1: settings and pure policy.
    "wsframe.config": 1,
    "wsframe.limits": 1,
    "wsframe.messages": 1,
    "wsframe.pathvars": 1,
    "wsframe._logs": 1,
    "wsframe.history": 1,
    # L2: moving bytes: backends between processes, a connection to its client.
    "wsframe.backends": 2,
    "wsframe._connection": 2,
    "wsframe._framecheck": 2,
    "wsframe._guard": 2,
    "wsframe._deadlines": 2,
    "wsframe._heartbeat": 2,
    "wsframe._tally": 2,
    # L3: which connections live here and how to reach any id.
    "wsframe.registry": 3,
    "wsframe._membership": 3,
    "wsframe.groups": 3,
    "wsframe.snapshot": 3,
    "wsframe._streams": 3,
    "wsframe._histories": 3,
    "wsframe._freeze": 3,
    # L4: serving one connection: who may connect, the handler, the driver.
    "wsframe.security": 4,
    "wsframe._session": 4,
    "wsframe.credentials": 4,
    "wsframe.websocket": 4,
    "wsframe.handshake": 4,
    # L5: assembling and running apps.
    "wsframe.routing": 5,
    "wsframe.app": 5,
    "wsframe.publisher": 5,
    "wsframe.asyncapi": 5,
    "wsframe.metrics": 5,
    "wsframe.cli": 5,
    "wsframe.__main__": 5,
    "wsframe.testing": 5,
    "wsframe": 5,
}
"""Module (or package: it covers every module under it) -> layer."""

KNOWN_EXCEPTIONS: dict[tuple[str, str], str] = {}
"""(importer prefix, imported prefix) pairs allowed to point upwards for now, with why."""


def layer_of(module: str) -> int | None:
    """The layer of *module*: that of the longest entry of LAYERS it is, or is inside."""
    best: tuple[int, int] | None = None
    for name, layer in LAYERS.items():
        if (module == name or module.startswith(name + ".")) and (best is None or len(name) > best[0]):
            best = (len(name), layer)
    return None if best is None else best[1]


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def module_name(path: Path, root: Path = PACKAGE) -> str:
    """``wsframe/backends/redis.py`` -> ``wsframe.backends.redis``; a package's ``__init__`` is the package."""
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(source: str, module: str, is_package: bool) -> Iterator[tuple[str, int]]:
    """Yield (wsframe module, line) for every import of a wsframe module in *source*, wherever it is."""
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if _within(alias.name, "wsframe"):
                    yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not _within(target, "wsframe"):
                continue
            for alias in node.names:
                # `from . import status` imports the module wsframe.status.
                submodule = f"{target}.{alias.name}"
                yield (submodule if layer_of(submodule) is not None and node.module is None else target), node.lineno


def upward_imports(
    source: str, module: str, is_package: bool = False, exceptions: dict[tuple[str, str], str] = KNOWN_EXCEPTIONS
) -> list[str]:
    """Describe every import in *source* (the text of *module*) of a module in a higher layer."""
    own = layer_of(module)
    assert own is not None, f"{module} has no layer in LAYERS"
    problems = []
    for target, line in imported_modules(source, module, is_package):
        theirs = layer_of(target)
        assert theirs is not None, f"{target} (imported by {module}) has no layer in LAYERS"
        if theirs <= own:
            continue
        if any(_within(module, a) and _within(target, b) for a, b in exceptions):
            continue
        problems.append(f"{module}:{line} (L{own}) imports {target} (L{theirs})")
    return problems


def package_modules() -> Iterator[tuple[str, Path]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        yield module_name(path), path


def test_every_module_has_a_layer() -> None:
    assert [name for name, _ in package_modules() if layer_of(name) is None] == []


def test_no_module_imports_from_a_higher_layer() -> None:
    problems = []
    for name, path in package_modules():
        problems += upward_imports(path.read_text(), name, path.name == "__init__.py")
    assert problems == []


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every cycle a depth-first walk of *graph* meets, each as the path that closes it."""
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                cycles.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target, [*path, target])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    return cycles


def import_graph() -> dict[str, set[str]]:
    modules = dict(package_modules())
    graph = {}
    for name, path in modules.items():
        targets = {t for t, _ in imported_modules(path.read_text(), name, path.name == "__init__.py")}
        graph[name] = {t for t in targets if t in modules and t != name and not _within(name, t)}
    return graph


def test_the_import_graph_has_no_cycle() -> None:
    assert find_cycles(import_graph()) == []


# ----------------------------------------------------------- the checker itself

UPWARD = """
from __future__ import annotations

from typing import TYPE_CHECKING

from .exceptions import WsframeError

if TYPE_CHECKING:
    from .registry import Registry


def later() -> None:
    from . import websocket
"""


def test_the_checker_reports_type_checking_and_function_level_upward_imports() -> None:
    assert upward_imports(UPWARD, "wsframe.codec") == [
        "wsframe.codec:9 (L0) imports wsframe.registry (L3)",
        "wsframe.codec:13 (L0) imports wsframe.websocket (L4)",
    ]


def test_the_checker_allows_imports_from_its_own_layer_and_below() -> None:
    assert upward_imports(UPWARD, "wsframe.app") == []


def test_the_checker_resolves_relative_imports_from_inside_a_package() -> None:
    source = "from ..websocket import GenericWebsocket\nfrom .. import routing\n"
    assert upward_imports(source, "wsframe.testing.errors") == []
    assert upward_imports(source, "wsframe.backends.memory") == [
        "wsframe.backends.memory:1 (L2) imports wsframe.websocket (L4)",
        "wsframe.backends.memory:2 (L2) imports wsframe.routing (L5)",
    ]


def test_the_checker_honours_a_known_exception_and_nothing_wider() -> None:
    allowed = {("wsframe.backends", "wsframe.registry"): "an example"}
    source = "from ..registry import Registry\n"
    assert upward_imports(source, "wsframe.backends.memory", exceptions=allowed) == []
    assert upward_imports("from .registry import Registry\n", "wsframe._connection", exceptions=allowed) == [
        "wsframe._connection:1 (L2) imports wsframe.registry (L3)"
    ]


def test_the_cycle_finder_reports_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycles(graph) == [["a", "b", "c", "a"]]


def test_the_real_graph_has_the_edges_the_checker_should_see() -> None:
    graph = import_graph()
    assert "wsframe._connection" in graph["wsframe.registry"]
    assert "wsframe._session" in graph["wsframe.websocket"]
