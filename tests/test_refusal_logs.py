"""Every handshake refusal logs one line saying why, and never the credentials the client sent."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

import pytest

from tests.support.rawclient import HandshakeRejected, raw_connect
from tests.support.servers import Serve
from wsframe import GenericWebsocket, create_app
from wsframe.security import TokenAuth
from wsframe.types import Handshake

SECRET = "s3cr3t-t0ken-value"
"""A credential the client sends; no log line may contain it."""


class Open(GenericWebsocket):
    async def connect(self) -> None:
        await self.accept()


class Numbered(GenericWebsocket):
    async def connect(self, n: int) -> None:
        await self.accept()


class Shy(GenericWebsocket):
    async def connect(self) -> None:
        pass  # returns without accept()


class Slow(GenericWebsocket):
    handshake_timeout = 0.05

    async def connect(self) -> None:
        await asyncio.sleep(10)


async def admins_only(connection: Handshake) -> bool:
    return False


async def refused(serve: Serve, urls: Mapping[str, Any], path: str, headers: Mapping[str, str] | None = None,
                  **settings: Any) -> int:  # fmt: skip
    """The status a handshake to *path* is refused with."""
    client = await serve(create_app(urls, **settings))
    with pytest.raises(HandshakeRejected) as info:
        await raw_connect(client, path, headers)
    return info.value.status


def refusal_lines(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    """(level, message) of every wsframe record about a refused handshake."""
    return [
        (r.levelno, r.getMessage())
        for r in caplog.records
        if r.name.startswith("wsframe") and r.getMessage().startswith("refused handshake")
    ]


@pytest.fixture(autouse=True)
def info_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="wsframe")


async def test_malformed_handshake_logs_its_problem(serve: Serve, caplog: pytest.LogCaptureFixture) -> None:
    assert await refused(serve, {"ws/": Open}, "/ws/", {"Sec-WebSocket-Version": "8"}) == 400
    assert refusal_lines(caplog) == [
        (logging.INFO, "refused handshake to /ws/ with 400: Unsupported Sec-WebSocket-Version; use 13.")
    ]


async def test_refused_origin_logs_the_origin_and_the_setting(serve: Serve, caplog: pytest.LogCaptureFixture) -> None:
    assert await refused(serve, {"ws/": Open}, "/ws/", {"Origin": "https://evil.example"}) == 403
    ((level, message),) = refusal_lines(caplog)
    assert level == logging.INFO
    assert message.startswith("refused handshake to /ws/ with 403: Origin 'https://evil.example' not allowed")


async def test_max_connections_refusal_logs_the_limit(serve: Serve, caplog: pytest.LogCaptureFixture) -> None:
    client = await serve(create_app({"ws/": Open}, max_connections=1))
    held = await raw_connect(client, "/ws/")
    with pytest.raises(HandshakeRejected) as info:
        await raw_connect(client, "/ws/")
    assert info.value.status == 503
    assert refusal_lines(caplog) == [
        (logging.INFO, "refused handshake to /ws/ with 503: 1 connection(s) already open (max_connections)")
    ]
    await held.aclose()


async def test_per_address_refusal_logs_the_limit_and_the_address(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    client = await serve(create_app({"ws/": Open}, max_connections_per_ip=1))
    held = await raw_connect(client, "/ws/")
    with pytest.raises(HandshakeRejected) as info:
        await raw_connect(client, "/ws/")
    assert info.value.status == 429
    assert refusal_lines(caplog) == [
        (
            logging.INFO,
            "refused handshake to /ws/ with 429: 1 connection(s) from 127.0.0.1 already open (max_connections_per_ip)",
        )
    ]
    await held.aclose()


async def test_path_variable_that_does_not_convert_logs_a_404(serve: Serve, caplog: pytest.LogCaptureFixture) -> None:
    assert await refused(serve, {"ws/<n>/": Numbered}, "/ws/seven/") == 404
    assert refusal_lines(caplog) == [
        (
            logging.INFO,
            "refused handshake to /ws/seven/ with 404: a path variable does not convert to the type connect() declares",
        )
    ]


async def test_failed_authentication_logs_why_without_the_token(serve: Serve, caplog: pytest.LogCaptureFixture) -> None:
    headers = {"Authorization": f"Bearer {SECRET}", "Cookie": f"session={SECRET}"}
    status = await refused(serve, {"ws/": Open}, f"/ws/?token={SECRET}", headers, auth=TokenAuth(lambda token: None))
    assert status == 401
    assert refusal_lines(caplog) == [
        (logging.INFO, "refused handshake to /ws/ with 401: authentication failed: invalid token")
    ]
    assert SECRET not in caplog.text


async def test_denied_permission_logs_which_permission_without_the_token(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    status = await refused(
        serve,
        {"ws/": Open},
        f"/ws/?token={SECRET}",
        auth=TokenAuth(lambda token: "ada"),
        permissions=[admins_only],
    )
    assert status == 403
    assert refusal_lines(caplog) == [
        (logging.INFO, "refused handshake to /ws/ with 403: permission denied: admins_only denied the connection")
    ]
    assert SECRET not in caplog.text


async def test_connect_that_returns_without_accept_logs_a_403(serve: Serve, caplog: pytest.LogCaptureFixture) -> None:
    assert await refused(serve, {"ws/": Shy}, "/ws/") == 403
    assert refusal_lines(caplog) == [
        (logging.INFO, "refused handshake to /ws/ with 403: Shy.connect() returned without accept()")
    ]


async def test_handshake_timeout_logs_a_408_as_a_warning(serve: Serve, caplog: pytest.LogCaptureFixture) -> None:
    assert await refused(serve, {"ws/": Slow}, "/ws/") == 408
    assert refusal_lines(caplog) == [
        (
            logging.WARNING,
            "refused handshake to /ws/ with 408: Slow.connect() neither accepted nor closed within 0.05 s",
        )
    ]


async def test_an_accepted_handshake_logs_no_refusal(serve: Serve, caplog: pytest.LogCaptureFixture) -> None:
    client = await serve(create_app({"ws/": Open}))
    ws = await raw_connect(client, "/ws/")
    await ws.aclose()
    assert refusal_lines(caplog) == []
