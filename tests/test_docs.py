"""The docs site: it builds strictly, and the code its pages show runs and does what the pages say.

Pages pull their code from ``samples/`` and ``docs/examples/`` with pymdownx.snippets; this module
runs those files. The ``test_*.py`` files under ``docs/examples/`` are the tests the pages tell
users to copy, so they run here the way a user would run them: in a fresh pytest with the minimal
configuration the testing page shows.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from docs.examples import lifecycle_app, routing_app, sending_app
from samples.notifications.urls import urls as notification_urls
from samples.notifications.websockets import TABS
from tests.support.servers import ROOT
from wsframe import ConnectionClosed, GenericWebsocket, create_app, send_message_to_websocket
from wsframe.exceptions import AuthenticationFailed
from wsframe.testing import HandlerError, HandshakeRejectedError, WebsocketTestClient, WsClientFactory

DOCS = ROOT / "docs"
EXAMPLES = DOCS / "examples"

USER_INI = """\
[pytest]
asyncio_mode = auto
asyncio_default_fixture_loop_scope = function
pythonpath = .
filterwarnings = error
"""
"""The configuration the testing page tells users to add (plus ``filterwarnings = error``)."""


# ------------------------------------------------------------------ the site


def test_mkdocs_build_strict_passes(tmp_path: Path) -> None:
    if importlib.util.find_spec("mkdocs") is None:
        pytest.fail("the docs build needs the docs extra: pip install -e '.[docs]'")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "site" / "reference" / "index.html").is_file()


def included_files() -> list[str]:
    """Every file a page includes with ``--8<-- "path"`` (with or without a :section)."""
    found = set()
    for page in DOCS.glob("*.md"):
        for match in re.finditer(r'--8<-- "([^"]+)"', page.read_text()):
            found.add(match.group(1).split(":")[0])
    return sorted(found)


def test_pages_include_code_from_samples_and_examples() -> None:
    files = included_files()
    assert "samples/book/websockets.py" in files
    assert "samples/notifications/urls.py" in files
    # The one prose include: the changelog page shows CHANGELOG.md, which is not code.
    code = [f for f in files if f != "CHANGELOG.md"]
    assert all(f.startswith(("samples/", "docs/examples/")) for f in code), files


def test_snippet_lines_are_intact() -> None:
    """`ruff format` on Markdown turns `--8<-- "file"` into `--8 < --"file"`, which includes nothing."""
    broken = [page.name for page in DOCS.glob("*.md") if re.search(r"--8 < --", page.read_text())]
    assert broken == [], "exclude docs/*.md from ruff format (pyproject.toml) and restore the --8<-- lines"


def test_every_example_file_is_shown_on_a_page() -> None:
    shown = set(included_files())
    examples = {str(p.relative_to(ROOT)) for p in EXAMPLES.glob("*.py") if p.name != "__init__.py"}
    assert examples - shown == set()


@pytest.mark.parametrize("example", sorted(p.name for p in EXAMPLES.glob("test_*.py")))
def test_copyable_test_file_passes_as_users_run_it(tmp_path: Path, example: str) -> None:
    (tmp_path / "pytest.ini").write_text(USER_INI)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-c",
            str(tmp_path / "pytest.ini"),
            "--rootdir",
            str(ROOT),
            "-p",
            "no:cacheprovider",
            str(EXAMPLES / example),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"\b\d+ passed\b", result.stdout)
    assert "failed" not in result.stdout


# --------------------------------------------------------------- quickstart


async def test_book_page_is_served_with_the_seed_client(ws_client: WsClientFactory) -> None:
    from samples.book.urls import urls

    response = await ws_client(create_app(urls)).get("/")
    page = await response.text()
    assert response.status == 200
    assert "new WebSocket(" in page
    assert "ws.send('Hello, server!');" in page


# ------------------------------------------------------------------ routing


async def test_routing_int_and_str_variables(ws_client: WsClientFactory) -> None:
    async with ws_client(create_app(routing_app.urls)).connect("/ws/7/general/") as ws:
        assert await ws.receive_json() == {"user_id": 7, "room_id": "general"}


async def test_routing_static_segment_beats_variable(ws_client: WsClientFactory) -> None:
    async with ws_client(create_app(routing_app.urls)).connect("/ws/7/lobby/") as ws:
        assert await ws.receive_json() == {"lobby_of": 7}


async def test_routing_uuid_variable(ws_client: WsClientFactory) -> None:
    order = "8c4b2f10-2a5e-4a59-9a57-1f1d7f0e6a11"
    async with ws_client(create_app(routing_app.urls)).connect(f"/ws/orders/{order}/") as ws:
        assert await ws.receive_json() == {"order": order.replace("-", "")}


async def test_routing_enum_and_bool_variables(ws_client: WsClientFactory) -> None:
    async with ws_client(create_app(routing_app.urls)).connect("/ws/shelves/science/true/") as ws:
        assert await ws.receive_json() == {"shelf": "science", "signed": True}


async def test_routing_trailing_slash_is_optional(ws_client: WsClientFactory) -> None:
    async with ws_client(create_app(routing_app.urls)).connect("/ws/7/general") as ws:
        assert await ws.receive_json() == {"user_id": 7, "room_id": "general"}


@pytest.mark.parametrize(
    "path",
    [
        "/ws/seven/general/",  # not an int
        "/ws/orders/not-a-uuid/",  # not a UUID
        "/ws/shelves/poetry/true/",  # not a Shelf member
        "/ws/shelves/science/maybe/",  # not a bool
        "/ws/7/",  # too short
    ],
)
async def test_routing_value_that_does_not_convert_is_404(ws_client: WsClientFactory, path: str) -> None:
    with pytest.raises(HandshakeRejectedError) as info:
        async with ws_client(create_app(routing_app.urls)).connect(path):
            pass
    assert info.value.status == 404


async def test_routing_nested_table_is_a_prefix(ws_client: WsClientFactory) -> None:
    response = await ws_client(create_app(routing_app.urls)).get("/api/health/")
    assert (response.status, await response.json()) == (200, {"ok": True})


def test_routing_routes_command_prints_the_table() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "wsframe", "routes", "docs.examples.routing_app:app"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert [line.split()[:2] for line in result.stdout.splitlines()] == [
        ["http", "/api/health/"],
        ["websocket", "/ws/orders/<order_id>/"],
        ["websocket", "/ws/shelves/<shelf>/<signed>/"],
        ["websocket", "/ws/<user_id>/lobby/"],
        ["websocket", "/ws/<user_id>/<room_id>/"],
    ]


# ---------------------------------------------------------------- lifecycle


async def test_lifecycle_hooks_run_in_order() -> None:
    app = lifecycle_app.make_app()
    async with WebsocketTestClient(app) as client, client.connect("/ws/journal/") as ws:
        await ws.send("hi")
        assert await ws.receive() == "hi"
        await ws.close(4000)
    assert app[lifecycle_app.JOURNAL] == ["connect", "receive 'hi'", "disconnect 4000"]


async def test_lifecycle_plain_get_is_426_with_detail(ws_client: WsClientFactory) -> None:
    response = await ws_client(lifecycle_app.make_app()).get("/ws/journal/")
    assert response.status == 426
    assert "detail" in await response.json()


async def test_lifecycle_not_accepted_is_403(ws_client: WsClientFactory) -> None:
    with pytest.raises(HandshakeRejectedError) as info:
        async with ws_client(lifecycle_app.make_app()).connect("/ws/members/"):
            pass
    assert info.value.status == 403


async def test_lifecycle_accepted_member_gets_in(ws_client: WsClientFactory) -> None:
    async with ws_client(lifecycle_app.make_app()).connect("/ws/members/?member=yes") as ws:
        assert ws.close_code is None


async def test_lifecycle_close_before_accept_reaches_the_client(ws_client: WsClientFactory) -> None:
    async with ws_client(lifecycle_app.make_app()).connect("/ws/closed/") as ws:
        assert await ws.wait_closed() == 4003
        assert ws.close_reason == "the library is closed"


async def test_lifecycle_crash_before_accept_is_500(ws_client: WsClientFactory) -> None:
    client = ws_client(lifecycle_app.make_app())
    with pytest.raises(HandlerError) as info:
        async with client.connect("/ws/broken-connect/"):
            pass
    assert str(info.value.exception) == "database down"
    response = await client.get("/ws/broken-connect/", headers=UPGRADE_HEADERS)
    assert response.status == 500
    assert await response.json() == {"detail": "Internal server error"}
    client.raise_handler_errors = False  # the second crash is the point of the request above


UPGRADE_HEADERS = {
    "Upgrade": "websocket",
    "Connection": "Upgrade",
    "Sec-WebSocket-Version": "13",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
}


async def test_lifecycle_crash_after_accept_is_1011_and_disconnect_runs() -> None:
    app = lifecycle_app.make_app()
    async with WebsocketTestClient(app) as client, client.connect("/ws/broken-receive/") as ws:
        await ws.send("x")
        with pytest.raises(HandlerError):
            await ws.receive()
        assert ws.close_code == 1011
    assert app[lifecycle_app.JOURNAL] == ["disconnect 1011"]


async def test_lifecycle_oversized_message_is_1009(ws_client: WsClientFactory) -> None:
    async with ws_client(lifecycle_app.make_app()).connect("/ws/small/") as ws:
        await ws.send("a" * 1024)
        assert await ws.receive_json() == 1024
        await ws.send("a" * 1025)
        assert await ws.wait_closed() == 1009


async def test_lifecycle_first_close_wins_and_send_after_close_raises() -> None:
    app = lifecycle_app.make_app()
    async with WebsocketTestClient(app) as client, client.connect("/ws/goodbye/") as ws:
        await ws.send("bye")
        assert await ws.wait_closed() == 1000
        assert ws.close_reason == "goodbye"
    assert app[lifecycle_app.JOURNAL] == ["connection closed with code 1000 (goodbye)"]


async def test_lifecycle_shutdown_closes_with_1001(ws_client: WsClientFactory) -> None:
    client = ws_client(lifecycle_app.make_app())
    async with client.connect("/ws/journal/") as ws:
        await client.http.server.close()
        assert await ws.wait_closed() == 1001


# ------------------------------------------------------------------ sending


async def test_sending_encodings(ws_client: WsClientFactory) -> None:
    async with ws_client(sending_app.make_app()).connect("/ws/showcase/") as ws:
        frames = [await ws.receive() for _ in range(6)]
    assert frames == [
        "plain text",
        b"\x89PNG",
        '{"detail":"ok"}',
        '{"title":"Dune","year":1965}',
        '"1965-08-01"',
        "null",
    ]


async def test_sending_push_by_id_from_an_http_handler(ws_client: WsClientFactory) -> None:
    client = ws_client(sending_app.make_app())
    async with client.connect("/ws/reader/") as ws:
        connection_id = (await ws.receive_json())["your_id"]
        response = await client.post(f"/push/{connection_id}/", json={"chapter": 3})
        assert await response.json() == {"sent": True}
        assert await ws.receive_json() == {"chapter": 3}


async def test_sending_kick_by_id_closes_with_the_code(ws_client: WsClientFactory) -> None:
    client = ws_client(sending_app.make_app())
    async with client.connect("/ws/reader/") as ws:
        connection_id = (await ws.receive_json())["your_id"]
        await client.post(f"/kick/{connection_id}/")
        with pytest.raises(ConnectionClosed) as info:
            await ws.receive()
        assert (info.value.code, info.value.reason) == (4008, "kicked")


async def test_sending_to_an_unknown_id_is_not_an_error(ws_client: WsClientFactory) -> None:
    response = await ws_client(sending_app.make_app()).post("/push/" + "0" * 32 + "/", json={})
    assert (response.status, await response.json()) == (200, {"sent": True})


# ------------------------------------------------------------ notifications


async def test_notifications_page_is_served(ws_client: WsClientFactory) -> None:
    app = create_app(notification_urls)
    app[TABS] = {}
    response = await ws_client(app).get("/?user=3")
    assert response.status == 200
    assert "/ws/notifications/" in await response.text()


async def test_notifications_closed_tabs_are_forgotten() -> None:
    app = create_app(notification_urls)
    app[TABS] = {}
    client = WebsocketTestClient(app)
    async with client, client.connect("/ws/notifications/7/"), client.connect("/ws/notifications/9/"):
        assert set(app[TABS]) == {7, 9}
    assert app[TABS] == {}


async def test_notifications_non_integer_user_is_404(ws_client: WsClientFactory) -> None:
    app = create_app(notification_urls)
    app[TABS] = {}
    response = await ws_client(app).post("/notify/alice/", json={"title": "x"})
    assert response.status == 404


async def test_notifications_body_that_is_not_json_is_400(ws_client: WsClientFactory) -> None:
    app = create_app(notification_urls)
    app[TABS] = {}
    response = await ws_client(app).post("/notify/7/", data=b"{not json")
    assert (response.status, await response.json()) == (400, {"detail": "The body must be JSON."})


async def test_sending_empty_string_and_none_are_not_dropped(ws_client: WsClientFactory) -> None:
    class Empties(GenericWebsocket):
        async def connect(self) -> None:
            await self.accept()
            await self.send("")
            await self.send(None)

    async with ws_client(create_app({"ws/": Empties})).connect("/ws/") as ws:
        assert [await ws.receive(), await ws.receive()] == ["", "null"]


async def test_sending_with_app_from_outside_a_request(ws_client: WsClientFactory) -> None:
    app = sending_app.make_app()
    async with ws_client(app).connect("/ws/reader/") as ws:
        connection_id = (await ws.receive_json())["your_id"]
        await send_message_to_websocket(connection_id, {"tick": 1}, app=app)
        assert await ws.receive_json() == {"tick": 1}


# ---------------------------------------- lifecycle: checks and limits rows


class Echo(GenericWebsocket):
    async def receive(self, data: str | bytes) -> None:
        await self.send(data)


async def refused_status(client: WebsocketTestClient, path: str, headers: dict[str, str] | None = None) -> int:
    with pytest.raises(HandshakeRejectedError) as info:
        async with client.connect(path, headers=headers):
            pass
    return info.value.status


async def test_lifecycle_origin_not_allowed_is_403(ws_client: WsClientFactory) -> None:
    client = ws_client(create_app({"ws/": Echo}))
    assert await refused_status(client, "/ws/", {"Origin": "http://elsewhere.example"}) == 403


async def test_lifecycle_failed_authentication_is_401(ws_client: WsClientFactory) -> None:
    async def auth(connection: GenericWebsocket) -> object:
        raise AuthenticationFailed("no token")

    assert await refused_status(ws_client(create_app({"ws/": Echo}, auth=auth)), "/ws/") == 401


async def test_lifecycle_denied_permission_is_403(ws_client: WsClientFactory) -> None:
    async def never(connection: GenericWebsocket) -> bool:
        return False

    assert await refused_status(ws_client(create_app({"ws/": Echo}, permissions=[never])), "/ws/") == 403


async def test_lifecycle_over_max_connections_is_503(ws_client: WsClientFactory) -> None:
    client = ws_client(create_app({"ws/": Echo}, max_connections=1))
    async with client.connect("/ws/"):
        assert await refused_status(client, "/ws/") == 503


async def test_lifecycle_over_max_connections_per_ip_is_429(ws_client: WsClientFactory) -> None:
    client = ws_client(create_app({"ws/": Echo}, max_connections_per_ip=1))
    async with client.connect("/ws/"):
        assert await refused_status(client, "/ws/") == 429


async def test_lifecycle_slow_connect_is_408(ws_client: WsClientFactory) -> None:
    class Slow(GenericWebsocket):
        async def connect(self) -> None:
            await asyncio.sleep(5)  # cancelled by the handshake timeout
            await self.accept()

    client = ws_client(create_app({"ws/": Slow}, handshake_timeout=0.05))
    assert await refused_status(client, "/ws/") == 408


class Order(msgspec.Struct):
    book: str
    quantity: int


class Orders(GenericWebsocket):
    async def receive(self, data: Order) -> None:  # type: ignore[override]
        await self.send(data.quantity)


async def test_lifecycle_message_that_fails_the_receive_type_is_1007(ws_client: WsClientFactory) -> None:
    async with ws_client(create_app({"ws/": Orders})).connect("/ws/") as ws:
        await ws.send_json({"book": "Dune", "quantity": 2})
        assert await ws.receive_json() == 2
        await ws.send_json({"book": "Dune", "quantity": "two"})
        assert await ws.wait_closed() == 1007
        assert ws.close_reason == "Invalid message: Expected `int`, got `str` - at `$.quantity`"


async def test_lifecycle_rate_limit_exceeded_is_1008(ws_client: WsClientFactory) -> None:
    async with ws_client(create_app({"ws/": Echo}, rate_limit=1)).connect("/ws/") as ws:
        for _ in range(3):
            await ws.send("spam")
        assert await ws.wait_closed() == 1008
        assert ws.close_reason == "Rate limit exceeded"


async def test_lifecycle_idle_client_is_closed_with_1000(ws_client: WsClientFactory) -> None:
    async with ws_client(create_app({"ws/": Echo}, idle_timeout=0.05)).connect("/ws/") as ws:
        assert await ws.wait_closed() == 1000
        assert ws.close_reason == "Idle timeout"


async def test_lifecycle_malformed_handshake_is_400(ws_client: WsClientFactory) -> None:
    headers = {**UPGRADE_HEADERS, "Sec-WebSocket-Version": "8"}
    response = await ws_client(create_app({"ws/": Echo})).get("/ws/", headers=headers)
    assert response.status == 400
    assert "Sec-WebSocket-Version" in (await response.json())["detail"]
