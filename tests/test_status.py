"""Named status codes."""

from __future__ import annotations

import http

import pytest

from wsframe import status


def test_every_http_status_has_a_constant() -> None:
    for code in http.HTTPStatus:
        assert getattr(status, f"HTTP_{code.value}_{code.name}") == code.value


def test_old_and_rfc_9110_names_of_a_status_are_the_same_code() -> None:
    """Python 3.13 renamed four statuses after RFC 9110 and kept the old names as aliases;
    iterating ``http.HTTPStatus`` yields the new names there and the old ones before."""
    assert status.HTTP_413_REQUEST_ENTITY_TOO_LARGE == status.HTTP_413_CONTENT_TOO_LARGE == 413
    assert status.HTTP_414_REQUEST_URI_TOO_LONG == status.HTTP_414_URI_TOO_LONG == 414
    assert status.HTTP_416_REQUESTED_RANGE_NOT_SATISFIABLE == status.HTTP_416_RANGE_NOT_SATISFIABLE == 416
    assert status.HTTP_422_UNPROCESSABLE_ENTITY == status.HTTP_422_UNPROCESSABLE_CONTENT == 422


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
