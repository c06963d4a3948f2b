"""What the backends import: nothing above them in wsframe, and redis-py only when Redis is used."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import wsframe.backends

BACKENDS = Path(wsframe.backends.__file__).parent
ALLOWED = {"wsframe.status", "wsframe.exceptions", "wsframe._ids", "wsframe.codec", "wsframe.history"}
"""The wsframe modules below the backends; besides these, a backend imports only other backend modules.
``wsframe.history`` (L1, values only) is the ``History`` setting and the position type the history
methods of the backend interface take."""


def imported_modules(path: Path) -> set[str]:
    """Every wsframe module *path* imports, at the top, under TYPE_CHECKING or inside a function."""
    # The package a relative import starts from: the module's dotted name without its last part
    # (for an __init__.py that part is "__init__", so the package is the module itself).
    package = "wsframe." + ".".join(path.relative_to(BACKENDS.parent).with_suffix("").parts[:-1])
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
            module = (f"{base}.{node.module}" if node.module else base) if node.level else (node.module or "")
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names if node.module is None)
    return {name for name in found if name == "wsframe" or name.startswith("wsframe.")}


@pytest.mark.parametrize("path", sorted(BACKENDS.rglob("*.py")), ids=lambda p: str(p.relative_to(BACKENDS)))
def test_a_backend_module_imports_nothing_above_the_backends(path: Path) -> None:
    upward = {
        name for name in imported_modules(path) if name not in ALLOWED and not name.startswith("wsframe.backends")
    }
    assert upward == set()


def test_the_import_scan_resolves_relative_imports() -> None:
    assert imported_modules(BACKENDS / "redis" / "_keys.py") == {
        "wsframe._ids",
        "wsframe.backends.base",
        "wsframe.exceptions",
    }


def run(code: str) -> None:
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)


def test_importing_wsframe_does_not_load_redis_py() -> None:
    run("import wsframe, sys; assert 'redis.asyncio' not in sys.modules, sorted(sys.modules)")


def test_the_redis_backend_loads_redis_py_when_it_is_asked_for() -> None:
    run(
        "import sys; from wsframe.backends import RedisBackend; "
        "assert 'redis.asyncio' in sys.modules; assert RedisBackend.__name__ == 'RedisBackend'"
    )


def test_the_publisher_shares_the_key_schema_without_loading_the_async_backend() -> None:
    run(
        "import sys; from wsframe import Publisher; Publisher('redis://127.0.0.1:6379/0').close(); "
        "assert 'wsframe.backends.redis._backend' not in sys.modules, 'the async backend was imported'"
    )
