"""Which query parameters the access-log filter redacts, and that wsframe's own log lines carry no credential."""

from __future__ import annotations

import logging
from typing import Any

import aiohttp
import pytest

from tests.apps.credentials_app import verify
from tests.support.servers import Serve
from wsframe import GenericWebsocket, MessageAuth, TokenAuth, create_app
from wsframe._redact import ACCESS_LOGGERS, RedactingFilter, redact, sensitive


def access_record(line: str) -> logging.LogRecord:
    return logging.LogRecord("aiohttp.access", logging.INFO, __file__, 1, line, None, None)


def test_the_token_parameter_is_redacted_and_the_rest_of_the_line_kept() -> None:
    line = '127.0.0.1 "GET /ws/?room=7&token=s3cret&x=1 HTTP/1.1" 101 0'
    assert redact(line) == '127.0.0.1 "GET /ws/?room=7&token=***&x=1 HTTP/1.1" 101 0'


def test_access_token_is_redacted_by_default() -> None:
    assert redact("GET /ws/?access_token=abc HTTP/1.1") == "GET /ws/?access_token=*** HTTP/1.1"


def test_a_parameter_that_only_ends_in_token_is_kept() -> None:
    assert redact("GET /ws/?csrftoken=abc HTTP/1.1") == "GET /ws/?csrftoken=abc HTTP/1.1"


def test_the_filter_rewrites_the_formatted_access_line() -> None:
    record = access_record('"GET /ws/?token=s3cret HTTP/1.1" 101')
    assert RedactingFilter().filter(record) is True
    assert record.getMessage() == '"GET /ws/?token=*** HTTP/1.1" 101'


def test_a_token_auth_query_param_is_always_redacted() -> None:
    TokenAuth(verify, query_param="jwt_for_test")
    assert redact("GET /ws/?jwt_for_test=abc HTTP/1.1") == "GET /ws/?jwt_for_test=*** HTTP/1.1"


def test_create_app_redact_query_params_adds_names() -> None:
    create_app({}, redact_query_params=["api_key_for_test"])
    assert "api_key_for_test" in sensitive()


def test_a_handler_class_redact_query_params_adds_names() -> None:
    class Handler(GenericWebsocket):
        redact_query_params = ("signature_for_test",)

    create_app({"ws/": Handler})
    assert "signature_for_test" in sensitive()


def test_create_app_puts_the_filter_on_aiohttp_and_gunicorn_access_loggers() -> None:
    create_app({})
    for name in ACCESS_LOGGERS:
        assert any(isinstance(f, RedactingFilter) for f in logging.getLogger(name).filters), name


async def test_the_in_process_access_log_line_is_redacted(serve: Serve, caplog: pytest.LogCaptureFixture) -> None:
    class Handler(GenericWebsocket):
        auth = TokenAuth(verify)  # type: ignore[assignment]  # mypy reads a callable ClassVar as a method

    client = await serve(create_app({"ws/": Handler}))
    with caplog.at_level(logging.INFO, logger="aiohttp.access"):
        async with client.ws_connect("/ws/?token=s3cret") as ws:
            await ws.close()
        await client.get("/nothing/?token=s3cret")
    lines = [r.getMessage() for r in caplog.records if r.name == "aiohttp.access"]
    assert any("GET /nothing/?token=*** " in line for line in lines), lines
    assert not any("s3cret" in line for line in lines)


# ------------------------------------------------------ wsframe's own log lines


async def test_no_wsframe_log_line_prints_a_refused_or_accepted_credential(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    class ByToken(GenericWebsocket):
        auth = TokenAuth(verify, cookie="tok")  # type: ignore[assignment]  # as above

        async def receive(self, data: Any) -> None:
            await self.send(data)

    class ByMessage(ByToken):
        auth = MessageAuth(verify, timeout=5)  # type: ignore[assignment]  # as above

    client = await serve(create_app({"token/": ByToken, "login/": ByMessage}))
    with caplog.at_level(logging.DEBUG, logger="wsframe"):
        for path, headers in [
            ("/token/?token=wrong-QUERY-secret", {}),
            ("/token/", {"Authorization": "Bearer wrong-HEADER-secret"}),
            ("/token/", {"Cookie": "tok=wrong-COOKIE-secret"}),
        ]:
            with pytest.raises(aiohttp.WSServerHandshakeError):
                await client.ws_connect(path, headers=headers)
        async with client.ws_connect("/token/?token=exp30:good-QUERY-secret") as ws:
            await ws.send_json({"type": "auth", "token": "wrong-REFRESH-secret"})
            await ws.receive(timeout=5)
        async with client.ws_connect("/login/") as ws:
            await ws.send_json({"type": "auth", "token": "wrong-LOGIN-secret"})
            await ws.receive(timeout=5)
    wsframe_lines = [r.getMessage() for r in caplog.records if r.name.startswith("wsframe")]
    assert wsframe_lines  # the refusals were logged...
    assert [line for line in wsframe_lines if "secret" in line] == []  # ...without the credentials
