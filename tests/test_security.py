"""Origin checks, authentication, permissions and sessions: refused before the upgrade."""

from __future__ import annotations

from typing import Any

import aiohttp_session
import pytest
from aiohttp import web

from tests.support.rawclient import TEXT, TIMEOUT, Frame, HandshakeRejected, raw_connect
from tests.support.servers import Serve
from wsframe import GenericWebsocket, create_app
from wsframe.exceptions import AuthenticationFailed
from wsframe.security import SessionAuth, TokenAuth


class WhoAmI(GenericWebsocket):
    async def connect(self) -> None:
        await self.accept()
        await self.send({"user": self.user})
        await self.close()


async def status_of(client: Any, path: str, headers: dict[str, str] | None = None) -> int:
    try:
        ws = await raw_connect(client, path, headers)
    except HandshakeRejected as exc:
        return exc.status
    await ws.frames_until_eof(TIMEOUT)
    return 101


# -------------------------------------------------------------------- origin


async def test_same_origin_handshake_is_accepted(serve: Serve) -> None:
    client = await serve(create_app({"ws/": WhoAmI}))
    origin = f"http://{client.server.host}:{client.server.port}"
    assert await status_of(client, "/ws/", {"Origin": origin}) == 101


async def test_cross_origin_handshake_is_refused_with_403(serve: Serve) -> None:
    client = await serve(create_app({"ws/": WhoAmI}))
    assert await status_of(client, "/ws/", {"Origin": "https://evil.example"}) == 403


async def test_same_host_on_another_port_is_another_origin(serve: Serve) -> None:
    client = await serve(create_app({"ws/": WhoAmI}))
    assert await status_of(client, "/ws/", {"Origin": f"http://{client.server.host}:1"}) == 403


async def test_null_origin_is_refused(serve: Serve) -> None:
    client = await serve(create_app({"ws/": WhoAmI}))
    assert await status_of(client, "/ws/", {"Origin": "null"}) == 403


async def test_no_origin_header_is_allowed_for_non_browser_clients(serve: Serve) -> None:
    client = await serve(create_app({"ws/": WhoAmI}))
    assert await status_of(client, "/ws/") == 101


async def test_allowlist_patterns_admit_matching_origins_only(serve: Serve) -> None:
    client = await serve(create_app({"ws/": WhoAmI}, allowed_origins=["https://*.example.com"]))
    assert await status_of(client, "/ws/", {"Origin": "https://app.example.com"}) == 101
    assert await status_of(client, "/ws/", {"Origin": "https://example.org"}) == 403


async def test_star_opts_out_of_origin_checks(serve: Serve) -> None:
    client = await serve(create_app({"ws/": WhoAmI}, allowed_origins="*"))
    assert await status_of(client, "/ws/", {"Origin": "https://anywhere.example"}) == 101


async def test_handler_class_origin_policy_overrides_the_app(serve: Serve) -> None:
    class Public(WhoAmI):
        allowed_origins = "*"

    client = await serve(create_app({"ws/public/": Public, "ws/private/": WhoAmI}))
    assert await status_of(client, "/ws/public/", {"Origin": "https://other.example"}) == 101
    assert await status_of(client, "/ws/private/", {"Origin": "https://other.example"}) == 403


# ---------------------------------------------------------------------- auth

TOKENS = {"s3cret": "ada"}


def token_auth(**options: Any) -> TokenAuth:
    return TokenAuth(TOKENS.get, **options)


async def first_message(client: Any, path: str, headers: dict[str, str] | None = None) -> Frame:
    ws = await raw_connect(client, path, headers)
    frames = await ws.frames_until_eof(TIMEOUT)
    return frames[0]


async def test_token_in_authorization_header_authenticates(serve: Serve) -> None:
    client = await serve(create_app({"ws/": WhoAmI}, auth=token_auth()))
    frame = await first_message(client, "/ws/", {"Authorization": "Bearer s3cret"})
    assert frame == Frame(TEXT, b'{"user":"ada"}')


async def test_token_in_query_parameter_authenticates(serve: Serve) -> None:
    client = await serve(create_app({"ws/": WhoAmI}, auth=token_auth()))
    assert await first_message(client, "/ws/?token=s3cret") == Frame(TEXT, b'{"user":"ada"}')


async def test_token_in_cookie_authenticates(serve: Serve) -> None:
    client = await serve(create_app({"ws/": WhoAmI}, auth=token_auth(cookie="auth")))
    assert await first_message(client, "/ws/", {"Cookie": "auth=s3cret"}) == Frame(TEXT, b'{"user":"ada"}')


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic s3cret"}],
    ids=["missing", "wrong", "other-scheme"],
)
async def test_bad_or_missing_token_is_401(serve: Serve, headers: dict[str, str]) -> None:
    client = await serve(create_app({"ws/": WhoAmI}, auth=token_auth()))
    with pytest.raises(HandshakeRejected) as info:
        await raw_connect(client, "/ws/", headers)
    assert info.value.status == 401
    assert b"s3cret" not in info.value.body


async def test_async_verify_function_is_awaited(serve: Serve) -> None:
    async def verify(token: str) -> str | None:
        return "grace" if token == "t" else None

    client = await serve(create_app({"ws/": WhoAmI}, auth=TokenAuth(verify)))
    assert await first_message(client, "/ws/?token=t") == Frame(TEXT, b'{"user":"grace"}')


async def test_handler_auth_overrides_the_app_default(serve: Serve) -> None:
    async def everyone(connection: GenericWebsocket) -> str:
        return "guest"

    class Open(WhoAmI):
        auth = everyone

    client = await serve(create_app({"ws/open/": Open, "ws/closed/": WhoAmI}, auth=token_auth()))
    assert await first_message(client, "/ws/open/") == Frame(TEXT, b'{"user":"guest"}')
    assert await status_of(client, "/ws/closed/") == 401


async def test_crashing_auth_is_500_without_details(serve: Serve, caplog: pytest.LogCaptureFixture) -> None:
    async def broken(connection: GenericWebsocket) -> str:
        raise RuntimeError("auth database down")

    client = await serve(create_app({"ws/": WhoAmI}, auth=broken))
    with pytest.raises(HandshakeRejected) as info:
        await raw_connect(client, "/ws/")
    assert info.value.status == 500
    assert b"database" not in info.value.body
    assert "auth database down" in caplog.text


# --------------------------------------------------------------- permissions


async def is_admin(connection: GenericWebsocket) -> bool:
    return bool(connection.user == "ada")


async def never(connection: GenericWebsocket) -> bool:
    raise AssertionError("a later permission must not run after a denial")


async def test_permission_denial_is_403_and_stops_the_chain(serve: Serve) -> None:
    async def deny(connection: GenericWebsocket) -> bool:
        return False

    class Guarded(WhoAmI):
        permissions = (deny, never)

    client = await serve(create_app({"ws/": Guarded}))
    assert await status_of(client, "/ws/") == 403


async def test_permissions_see_the_authenticated_user(serve: Serve) -> None:
    TOKENS["plain"] = "bob"

    class AdminOnly(WhoAmI):
        permissions = (is_admin,)

    client = await serve(create_app({"ws/": AdminOnly}, auth=token_auth()))
    assert await status_of(client, "/ws/?token=s3cret") == 101
    assert await status_of(client, "/ws/?token=plain") == 403


# ------------------------------------------------------------------- session


def session_app(urls: dict[str, Any], **options: Any) -> web.Application:
    storage = aiohttp_session.SimpleCookieStorage(cookie_name="SESSION")
    return create_app(urls, middlewares=[aiohttp_session.session_middleware(storage)], **options)


async def login(request: web.Request) -> web.Response:
    session = await aiohttp_session.new_session(request)
    session["user"] = request.match_info["name"]
    return web.json_response({"ok": True})


async def test_session_cookie_authenticates_with_session_auth(serve: Serve) -> None:
    client = await serve(session_app({"login/<name>/": login, "ws/": WhoAmI}, auth=SessionAuth()))
    await client.post("/login/ada/")
    cookie = client.session.cookie_jar.filter_cookies(client.make_url("/"))["SESSION"]
    frame = await first_message(client, "/ws/", {"Cookie": f"SESSION={cookie.coded_value}"})
    assert frame == Frame(TEXT, b'{"user":"ada"}')


async def test_no_session_is_401_with_session_auth(serve: Serve) -> None:
    client = await serve(session_app({"ws/": WhoAmI}, auth=SessionAuth()))
    assert await status_of(client, "/ws/") == 401


async def test_session_auth_without_session_middleware_is_401_and_logged(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    client = await serve(create_app({"ws/": WhoAmI}, auth=SessionAuth()))
    assert await status_of(client, "/ws/") == 401
    assert "needs aiohttp_session.session_middleware" in caplog.text


async def test_session_is_read_only_in_handlers(serve: Serve) -> None:
    errors: list[str] = []

    class Writer(GenericWebsocket):
        async def connect(self) -> None:
            assert self.session is not None
            try:
                self.session["visits"] = 1  # type: ignore[index]
            except TypeError as exc:
                errors.append(type(exc).__name__)
            await self.accept()
            await self.send(dict(self.session))
            await self.close()

    client = await serve(session_app({"login/<name>/": login, "ws/": Writer}))
    await client.post("/login/ada/")
    cookie = client.session.cookie_jar.filter_cookies(client.make_url("/"))["SESSION"]
    frame = await first_message(client, "/ws/", {"Cookie": f"SESSION={cookie.coded_value}"})
    assert frame == Frame(TEXT, b'{"user":"ada"}')
    assert errors == ["TypeError"]


async def test_session_is_none_without_session_middleware(serve: Serve) -> None:
    seen: list[Any] = []

    class Look(GenericWebsocket):
        async def connect(self) -> None:
            seen.append(self.session)
            await self.accept()
            await self.close()

    client = await serve(create_app({"ws/": Look}))
    await (await raw_connect(client, "/ws/")).frames_until_eof(TIMEOUT)
    assert seen == [None]


def test_authentication_failed_is_a_wsframe_error() -> None:
    from wsframe import WsframeError

    assert issubclass(AuthenticationFailed, WsframeError)


async def test_session_cookie_from_a_foreign_origin_is_refused_403_before_any_handler_runs(serve: Serve) -> None:
    # Cross-site websocket hijacking: another site's page opens a socket and the browser
    # attaches the user's valid session cookie. The Origin check refuses it first.
    connects: list[Any] = []

    class Counted(GenericWebsocket):
        async def connect(self) -> None:
            connects.append(self.user)
            await self.accept()
            await self.send({"user": self.user})
            await self.close()

    client = await serve(session_app({"login/<name>/": login, "ws/": Counted}, auth=SessionAuth()))
    await client.post("/login/ada/")
    cookie = client.session.cookie_jar.filter_cookies(client.make_url("/"))["SESSION"]
    cookie_header = {"Cookie": f"SESSION={cookie.coded_value}"}
    assert await status_of(client, "/ws/", {**cookie_header, "Origin": "https://evil.example"}) == 403
    assert connects == []
    own_origin = f"http://{client.server.host}:{client.server.port}"
    frame = await first_message(client, "/ws/", {**cookie_header, "Origin": own_origin})
    assert frame == Frame(TEXT, b'{"user":"ada"}')  # the same cookie is valid from the app's own page
    assert connects == ["ada"]
