"""Fixtures of the protocol-conformance suite: one live server for the session, checked after every test.

After each test (hostile or not) the server must still be alive, a connection
opened *before* the test must still echo, a fresh connection must echo, the
registry must be back to empty, and the server log must hold no traceback.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.checks import assert_closes_cleanly, assert_echoes
from tests.support.liveserver import LiveServer

__all__: list[str] = []

_ERROR_LINE = re.compile(r"^\S+ \S+ (ERROR|CRITICAL) ", re.MULTILINE)


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """The conformance app served by ``python -m wsframe run`` in a subprocess."""
    live = LiveServer(Path(tmp_path_factory.mktemp("conformance")) / "server.log")
    live.wait_ready()
    yield live
    code = live.stop()
    assert code == 0, f"server exited with {code}:\n{live.log_path.read_text(errors='replace')}"


@pytest.fixture(autouse=True)
def server_survives(server: LiveServer) -> Iterator[None]:
    """Check, around every test, that the server and an unrelated connection are unaffected."""
    assert server.alive(), "the server died before this test"
    server.new_log()
    with server.connect("/ws/echo/") as bystander:
        assert_echoes(bystander, "before")
        yield
        assert server.alive(), f"the server died:\n{server.new_log()}"
        assert_echoes(bystander, "bystander still served")
        assert_closes_cleanly(bystander)
    with server.connect("/ws/echo/") as fresh:
        assert_echoes(fresh, "fresh connection served")
        assert_closes_cleanly(fresh)
    assert server.wait_registry_size(0) == 0, "a connection was left in the registry"
    log = server.new_log()
    assert not _ERROR_LINE.search(log), f"the server logged an error:\n{log}"
    assert "Traceback" not in log, f"the server logged a traceback:\n{log}"
