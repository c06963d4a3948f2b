"""The security page's example code runs and does what the page says."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType, web

from docs.examples import security_app
from tests.support.rawclient import TIMEOUT, UPGRADE_HEADERS
from tests.support.servers import Serve
from wsframe import TokenAuth, create_app


def example_app(**options: Any) -> web.Application:
    """The page's handlers and auth, in a fresh app (an aiohttp app runs on one event loop only)."""
    return create_app(
        {
            "ws/staff/": security_app.StaffWebsocket,
            "ws/upload/": security_app.UploadWebsocket,
            "ws/game/": security_app.GameWebsocket,
        },
        auth=TokenAuth(security_app.verify),
        **options,
    )


def test_page_app_is_built_with_the_documented_settings() -> None:
    from wsframe.config import SETTINGS_KEY

    settings = security_app.app[SETTINGS_KEY]
    assert settings.allowed_origins == ("https://app.example.com", "https://*.example.com")
    assert (settings.max_connections, settings.max_connections_per_ip) == (10_000, 50)


async def test_staff_endpoint_greets_the_token_user(serve: Serve) -> None:
    client = await serve(example_app())
    async with client.ws_connect("/ws/staff/?token=s3cret") as ws:
        assert await ws.receive_json(timeout=TIMEOUT) == {"hello": "ada"}


async def test_staff_endpoint_refuses_a_missing_token_with_401(serve: Serve) -> None:
    client = await serve(example_app())
    response = await client.get(
        "/ws/staff/",
        headers=UPGRADE_HEADERS,
    )
    assert response.status == 401


async def test_page_origin_allowlist_admits_a_subdomain_and_refuses_others(serve: Serve) -> None:
    client = await serve(example_app(allowed_origins=["https://app.example.com", "https://*.example.com"]))
    async with client.ws_connect("/ws/game/?token=s3cret", origin="https://shop.example.com") as ws:
        await ws.send_str('{"type":"move","x":1,"y":2}')
        assert await ws.receive_json(timeout=TIMEOUT) == {"moved": [1, 2]}
    with pytest.raises(aiohttp.WSServerHandshakeError, match="403"):
        await client.ws_connect("/ws/game/?token=s3cret", origin="https://evil.example.org")


async def test_game_endpoint_names_the_bad_field(serve: Serve) -> None:
    client = await serve(example_app())
    async with client.ws_connect("/ws/game/?token=s3cret") as ws:
        await ws.send_str('{"type":"move","x":1,"y":"two"}')
        msg = await ws.receive(timeout=TIMEOUT)
    assert (msg.type, msg.data, msg.extra) == (
        WSMsgType.CLOSE,
        1007,
        "Invalid message: Expected `int`, got `str` - at `$.y`",
    )


async def test_upload_endpoint_rate_limit_closes_1008(serve: Serve) -> None:
    client = await serve(example_app())
    async with client.ws_connect("/ws/upload/?token=s3cret") as ws:
        for _ in range(5):
            await ws.send_bytes(b"12345")
        replies = [await ws.receive(timeout=TIMEOUT) for _ in range(3)]
    assert [(m.type, m.data) for m in replies] == [
        (WSMsgType.TEXT, "5"),
        (WSMsgType.TEXT, "5"),
        (WSMsgType.CLOSE, 1008),
    ]


def test_every_test_the_security_and_deployment_pages_name_exists() -> None:
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    named = set()
    for page in ("security.md", "deployment.md"):
        named |= set(re.findall(r"`(test_[a-z0-9_]+)`", (root / "docs" / page).read_text()))
    defined = set()
    for path in (root / "tests").rglob("test_*.py"):
        defined |= set(re.findall(r"^(?:async )?def (test_[a-z0-9_]+)", path.read_text(), flags=re.MULTILINE))
    assert named  # the pages back their claims with tests...
    assert sorted(named - defined) == []  # ...that exist
