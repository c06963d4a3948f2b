"""Settings refuse out-of-range values when the app is built, naming the setting; ``None`` on a class defers to the app.

tests/test_app.py checks the first settings (message size, heartbeat, close and shutdown
timeouts, rate limit, max_connections, origins); these are the others, the same checks on a
handler class, and how a class's settings merge over the app's.
"""

from __future__ import annotations

import dataclasses

import pytest

from wsframe import ConfigurationError, GenericWebsocket, Settings, create_app


class Echo(GenericWebsocket):
    async def receive(self, data: str | bytes) -> None:
        await self.send(data)


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("max_outbound_buffer", 0, "max_outbound_buffer must be a positive number of bytes, got 0"),
        ("slow_consumer", "block", "slow_consumer must be 'close' or 'drop', got 'block'"),
        ("handshake_timeout", 0, "handshake_timeout must be a positive number, got 0"),
        ("idle_timeout", -1.0, r"idle_timeout must be a positive number, got -1\.0"),
        ("max_connections_per_ip", 0, "max_connections_per_ip must be a positive whole number or None, got 0"),
        ("max_connections", 1.5, r"max_connections must be a positive whole number or None, got 1\.5"),
    ],
)
def test_an_out_of_range_setting_given_to_create_app_is_a_configuration_error_naming_it(
    option: str, value: object, message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        create_app({"ws/": Echo}, **{option: value})  # type: ignore[arg-type]


def test_an_out_of_range_setting_on_a_handler_class_fails_create_app() -> None:
    class Huge(Echo):
        max_message_size = 0

    with pytest.raises(ConfigurationError, match="max_message_size must be a positive number of bytes, got 0"):
        create_app({"ws/": Huge})


def test_a_handler_class_setting_replaces_the_apps_and_none_keeps_it() -> None:
    app = Settings(heartbeat=5.0, close_timeout=3.0)
    merged = app.merged({"heartbeat": None, "close_timeout": 1.0})
    assert (merged.heartbeat, merged.close_timeout) == (5.0, 1.0)


def test_merging_an_out_of_range_override_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="rate_limit must be a positive number, got 0"):
        Settings().merged({"rate_limit": 0})


def test_permissions_given_as_a_list_are_kept_as_a_tuple() -> None:
    async def allow(connection: GenericWebsocket) -> bool:
        return True

    assert Settings(permissions=[allow]).permissions == (allow,)


def test_settings_cannot_be_changed_once_made() -> None:
    settings = Settings()
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.max_message_size = 10  # type: ignore[misc]
