"""Named status codes."""

from __future__ import annotations

import http

import pytest

from wsframe import status


def test_every_http_status_has_a_constant() -> None:
    for code in http.HTTPStatus:
        assert getattr(status, f"HTTP_{code.value}_{code.name}") == code.value


def test_websocket_codes_run_from_1000_to_1014() -> None:
    assert status.WS_1000_NORMAL_CLOSURE == 1000
    assert status.WS_1008_POLICY_VIOLATION == 1008
    assert status.WS_1014_BAD_GATEWAY == 1014


@pytest.mark.parametrize(
    ("code", "valid"),
    [
        (1000, True),
        (1011, True),
        (3000, True),
        (4999, True),
        (1005, False),
        (1006, False),
        (1015, False),
        (1004, False),
        (2999, False),
        (5000, False),
    ],
)
def test_is_valid_close_code(code: int, valid: bool) -> None:
    assert status.is_valid_close_code(code) is valid
