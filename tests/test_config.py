"""Settings: one declaration (wsframe.config.Settings), checked against every place that lists it."""

from __future__ import annotations

import inspect
import re
import typing
from pathlib import Path
from typing import Any

import pytest

import wsframe.websocket
from wsframe import GenericWebsocket, History, create_app
from wsframe.config import FIELDS, OVERRIDABLE, SETTINGS_KEY, Settings
from wsframe.exceptions import ConfigurationError

DOCS = Path(__file__).resolve().parent.parent / "docs"

# A value other than the default for every setting, to see it arrive.
NON_DEFAULTS: dict[str, Any] = {
    "max_message_size": 1234,
    "heartbeat": 7.0,
    "compression": True,
    "close_timeout": 1.5,
    "shutdown_timeout": 2.5,
    "max_outbound_buffer": 4321,
    "slow_consumer": "drop",
    "handshake_timeout": 3.5,
    "idle_timeout": 4.5,
    "rate_limit": 5.5,
    "max_connections": 6,
    "max_connections_per_ip": 2,
    "max_handshakes_per_ip": 7,
    "gc_freeze": False,
    "allowed_origins": ("https://example.com",),
    "auth": None,
    "permissions": (),
    "redact_query_params": ("api_key",),
    "history": {"chat:": History(size=10, ttl=60)},
}


def test_every_setting_but_the_app_level_ones_is_overridable() -> None:
    # They act before (or after) any handler: shutdown, requests not yet routed, the process's
    # collector; and history is about groups, which span handlers.
    assert set(FIELDS) - set(OVERRIDABLE) == {"shutdown_timeout", "max_handshakes_per_ip", "history", "gc_freeze"}


def test_the_handler_declares_a_class_attribute_for_exactly_the_overridable_settings() -> None:
    hints = typing.get_type_hints(GenericWebsocket, vars(wsframe.websocket), include_extras=True)
    class_vars = {name for name, hint in hints.items() if typing.get_origin(hint) is typing.ClassVar}
    # send_type is the one class attribute that is not a setting: it only describes send() for AsyncAPI.
    assert class_vars == {*OVERRIDABLE, "send_type"}


def test_every_handler_class_attribute_defaults_to_none_meaning_as_the_app() -> None:
    assert {name: getattr(GenericWebsocket, name) for name in OVERRIDABLE} == dict.fromkeys(OVERRIDABLE)


def test_create_app_takes_every_setting_as_a_keyword_only_argument() -> None:
    parameters = inspect.signature(create_app).parameters
    keyword_only = {name for name, p in parameters.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}
    assert keyword_only >= set(FIELDS)


@pytest.mark.parametrize("name", [name for name in FIELDS if name not in ("auth", "permissions")])
def test_create_app_passes_each_setting_through(name: str) -> None:
    assert getattr(create_app({}, **{name: NON_DEFAULTS[name]})[SETTINGS_KEY], name) == NON_DEFAULTS[name]


def test_create_app_passes_auth_and_permissions_through() -> None:
    async def auth(connection: GenericWebsocket) -> str:
        return "user"

    async def allowed(connection: GenericWebsocket) -> bool:
        return True

    settings = create_app({}, auth=auth, permissions=[allowed])[SETTINGS_KEY]
    assert (settings.auth, settings.permissions) == (auth, (allowed,))


def test_the_handler_docstring_names_every_overridable_setting() -> None:
    doc = GenericWebsocket.__doc__ or ""
    assert [name for name in OVERRIDABLE if f"``{name}``" not in doc] == []


def test_the_lifecycle_page_names_every_overridable_setting() -> None:
    text = (DOCS / "lifecycle.md").read_text()
    assert [name for name in OVERRIDABLE if f"`{name}`" not in text] == []


def test_the_docs_settings_table_has_a_row_for_exactly_every_setting() -> None:
    text = (DOCS / "security.md").read_text()
    section = text.split("## Limits and their defaults", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `([a-z_]+)` \|", section, flags=re.MULTILINE)
    assert sorted(rows) == sorted(FIELDS)


def test_a_bad_value_is_refused_naming_the_setting() -> None:
    with pytest.raises(ConfigurationError, match="max_outbound_buffer"):
        Settings(max_outbound_buffer=0)


def test_merged_ignores_none_and_applies_the_rest() -> None:
    merged = Settings().merged({"heartbeat": None, "close_timeout": 2.0})
    assert (merged.heartbeat, merged.close_timeout) == (Settings().heartbeat, 2.0)
