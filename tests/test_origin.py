"""The default origin rule: same host and port, with this machine's loopback names as one host."""

from __future__ import annotations

import json
import logging

import pytest

from tests.support.rawclient import TIMEOUT, HandshakeRejected, raw_connect
from tests.support.servers import Serve
from wsframe import GenericWebsocket, create_app
from wsframe.security import same_origin

LOOPBACK_PAIRS = [
    ("http://127.0.0.1:8000", "localhost:8000"),
    ("http://localhost:8000", "127.0.0.1:8000"),
    ("http://[::1]:8000", "localhost:8000"),
    ("http://localhost:8000", "[::1]:8000"),
    ("http://127.0.0.1:8000", "[::1]:8000"),
    ("http://[::1]:8000", "127.0.0.1:8000"),
]


@pytest.mark.parametrize(("origin", "host"), LOOPBACK_PAIRS)
def test_loopback_names_on_one_port_are_one_origin(origin: str, host: str) -> None:
    assert same_origin(origin, host)


@pytest.mark.parametrize(
    ("origin", "host"),
    [
        ("http://127.0.0.1:8001", "localhost:8000"),
        ("http://localhost:8000", "[::1]:8001"),
        ("http://localhost", "localhost:8000"),
    ],
)
def test_loopback_names_on_another_port_are_another_origin(origin: str, host: str) -> None:
    assert not same_origin(origin, host)


@pytest.mark.parametrize(
    ("origin", "host"),
    [
        ("http://evil.example:8000", "localhost:8000"),
        ("http://localhost:8000", "app.example:8000"),
        ("http://127.0.0.2:8000", "localhost:8000"),
        ("http://localhost.evil.example:8000", "127.0.0.1:8000"),
    ],
)
def test_a_non_loopback_name_is_not_the_loopback_origin(origin: str, host: str) -> None:
    assert not same_origin(origin, host)


def test_an_omitted_port_is_the_schemes_default() -> None:
    assert same_origin("http://example.com", "example.com:80")
    assert same_origin("https://example.com", "example.com:443")
    assert not same_origin("https://example.com", "example.com:80")


def test_other_hosts_compare_case_insensitively_and_exactly() -> None:
    assert same_origin("https://App.Example.com", "app.example.com")
    assert not same_origin("https://app.example.com", "example.com")


@pytest.mark.parametrize("origin", ["null", "file://", "chrome-extension://abc", "not a url", ""])
def test_an_origin_that_is_not_http_is_never_same_origin(origin: str) -> None:
    assert not same_origin(origin, "localhost:8000")


class Echo(GenericWebsocket):
    async def connect(self) -> None:
        await self.accept()
        await self.close()


async def rejection(serve: Serve, origin: str, host: str, **options: object) -> HandshakeRejected:
    client = await serve(create_app({"ws/": Echo}, **options))  # type: ignore[arg-type]
    with pytest.raises(HandshakeRejected) as caught:
        await raw_connect(client, "/ws/", {"Origin": origin, "Host": host})
    return caught.value


async def test_page_on_127_0_0_1_may_open_ws_to_localhost_on_the_same_port(serve: Serve) -> None:
    client = await serve(create_app({"ws/": Echo}))
    port = client.server.port
    ws = await raw_connect(client, "/ws/", {"Origin": f"http://127.0.0.1:{port}", "Host": f"localhost:{port}"})
    frames = await ws.frames_until_eof(TIMEOUT)
    assert [frame.close_code for frame in frames] == [1000]


async def test_refused_origin_403_body_names_the_origin_and_the_setting(serve: Serve) -> None:
    refused = await rejection(serve, "http://127.0.0.1:9", "localhost:8000")
    assert refused.status == 403
    assert json.loads(refused.body) == {
        "detail": "Origin 'http://127.0.0.1:9' not allowed for Host 'localhost:8000': by default only pages "
        "from the same host and port may connect. Allow it with allowed_origins=['http://127.0.0.1:9'] in "
        "create_app() or on the handler class."
    }


async def test_refused_origin_under_an_allowlist_names_the_allowlist(serve: Serve) -> None:
    refused = await rejection(serve, "https://other.example", "app.example", allowed_origins=["https://app.example"])
    assert json.loads(refused.body)["detail"] == (
        "Origin 'https://other.example' not allowed by this endpoint's allowed_origins. Allow it with "
        "'https://other.example' in allowed_origins in create_app() or on the handler class."
    )


async def test_refused_origin_is_logged_at_info_with_the_same_words(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="wsframe")
    refused = await rejection(serve, "http://evil.example", "localhost:8000")
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO and "evil.example" in r.getMessage()]
    assert lines == [f"refused handshake to /ws/ with 403: {json.loads(refused.body)['detail']}"]
