"""Per-application settings and their defaults: the one declaration of every setting.

Every field of :class:`Settings` is a keyword of :func:`wsframe.create_app` for
the whole app, and every field in :data:`OVERRIDABLE` (all but
those in :data:`APP_ONLY`, which are about the app, not a connection) is also a
class attribute of :class:`~wsframe.GenericWebsocket` of the same name that
overrides it for one handler. tests/test_config.py fails when the keywords,
the class attributes or the docs' settings table drift from this list.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from aiohttp import web

from ._redact import add_sensitive
from .exceptions import ConfigurationError
from .history import History, check_history
from .limits import ConnectionLimiter, OutboundPolicy
from .messages import MessageDecoder
from .pathvars import PathConverters
from .types import Auth, OriginPolicy, Permission

__all__ = [
    "Settings",
    "SETTINGS_KEY",
    "MIB",
    "FIELDS",
    "APP_ONLY",
    "OVERRIDABLE",
    "HandlerConfig",
    "validate_origin_policy",
]

MIB = 1024 * 1024


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """The limits and timeouts one application runs with.

    Raises :class:`~wsframe.exceptions.ConfigurationError` on construction when
    a value is out of range, naming the setting.
    """

    max_message_size: int = MIB
    """Largest incoming message in bytes; a larger one closes the connection with 1009."""
    heartbeat: float | None = 25.0
    """Seconds of silence from a peer before it is pinged; one that sends nothing (no pong,
    no message) for half of it more is dropped (1006). ``None`` or ``0`` turns pings off
    (on a handler class, ``None`` means "as the app")."""
    compression: bool = False
    """Offer permessage-deflate. Off by default: it costs CPU and opens the door to
    compression bombs."""
    close_timeout: float = 5.0
    """Seconds to wait for the peer's close frame after sending ours."""
    shutdown_timeout: float = 10.0
    """Seconds the app waits on shutdown for every connection to finish closing with
    1001 before it drops the rest."""
    max_outbound_buffer: int = MIB
    """Bytes that may wait in a connection's send buffer. A client that reads slower
    than we send fills it; past it the connection is closed with 1013 (or, with
    ``slow_consumer='drop'``, messages are dropped and counted), so a slow client never
    delays a sender or grows the server's memory."""
    slow_consumer: Literal["close", "drop"] = "close"
    """What happens past ``max_outbound_buffer``: close with 1013, or drop the message."""
    handshake_timeout: float = 10.0
    """Seconds ``connect()`` may take to accept or close; past it the client gets HTTP 408."""
    idle_timeout: float | None = None
    """Seconds without a message from the client before the server closes with 1000
    ("Idle timeout"). ``None``: no limit (the heartbeat still drops dead peers)."""
    rate_limit: float | None = None
    """Messages per second one connection may send (a burst of the same size is allowed);
    past it the connection is closed with 1008. ``None``: no limit."""
    max_connections: int | None = None
    """Open connections (and handshakes in progress) per worker; past it HTTP 503."""
    max_connections_per_ip: int | None = None
    """Open connections per client address per worker; past it HTTP 429. Behind a proxy
    every client has the proxy's address: set it there instead."""
    max_handshakes_per_ip: int | None = 256
    """Connections per client address per worker that may be open without having sent a
    complete HTTP request yet; past it a new one gets HTTP 429 at once. Such a connection
    is closed with HTTP 408 after the app's ``handshake_timeout``. About the app: the route
    is not known until the request is in. ``None``: no cap."""
    gc_freeze: bool = True
    """Call ``gc.freeze()`` after startup and after bursts of accepted connections, and run
    one full collection (then freeze again) only when half the connections were replaced:
    full collections of tens of thousands of connections stall a worker for 0.3-0.6 s each.
    About the process, so about the app. ``False``: Python's automatic collection as it is."""
    allowed_origins: OriginPolicy = None
    """``None``: browsers may connect only from a page on the same host; ``'*'``: from
    anywhere; a list: those origins (fnmatch patterns allowed). No Origin header: allowed."""
    auth: Auth | None = None
    """Called with the connection before ``connect()``; returns the user (``self.user``)
    or raises AuthenticationFailed (HTTP 401)."""
    permissions: Sequence[Permission] = ()
    """Called in order after ``auth``; the first False or PermissionDenied answers HTTP 403."""
    redact_query_params: Sequence[str] = ()
    """Query parameters printed ``name=***`` in the access log, beside ``token``,
    ``access_token`` and every TokenAuth's ``query_param`` (always redacted). Process-wide,
    as loggers are: a name one app declares is redacted in every line of the process."""
    history: Mapping[str, History] | None = None
    """Group-name prefix -> :class:`~wsframe.History`: the groups whose names start with it
    (the longest prefix wins) keep their last messages, so a member can resume after a
    reconnect (``join_group(..., since=...)``). About the app: groups span handlers."""

    def __post_init__(self) -> None:
        if self.max_outbound_buffer < 1:
            raise ConfigurationError(
                f"max_outbound_buffer must be a positive number of bytes, got {self.max_outbound_buffer!r}"
            )
        if self.slow_consumer not in ("close", "drop"):
            raise ConfigurationError(f"slow_consumer must be 'close' or 'drop', got {self.slow_consumer!r}")
        if self.max_message_size < 1:
            raise ConfigurationError(
                f"max_message_size must be a positive number of bytes, got {self.max_message_size!r}"
            )
        if self.heartbeat is not None and self.heartbeat < 0:
            raise ConfigurationError(
                f"heartbeat must be a number of seconds (0 or None for off), got {self.heartbeat!r}"
            )
        for name in ("close_timeout", "shutdown_timeout", "handshake_timeout", "idle_timeout", "rate_limit"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ConfigurationError(f"{name} must be a positive number, got {value!r}")
        for name in ("max_connections", "max_connections_per_ip", "max_handshakes_per_ip"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ConfigurationError(f"{name} must be a positive whole number or None, got {value!r}")
        object.__setattr__(self, "allowed_origins", validate_origin_policy(self.allowed_origins, "allowed_origins"))
        object.__setattr__(self, "permissions", tuple(self.permissions))
        names = self.redact_query_params
        if isinstance(names, str) or not all(isinstance(name, str) and name for name in names):
            raise ConfigurationError(
                f"redact_query_params must be a list of query parameter names such as ['key'], got {names!r}"
            )
        object.__setattr__(self, "redact_query_params", tuple(names))
        add_sensitive(names)
        if self.history is not None:
            object.__setattr__(self, "history", check_history(self.history))

    def merged(self, overrides: dict[str, Any]) -> Settings:
        """Return these settings with *overrides* applied (``None`` values are ignored)."""
        changes = {k: v for k, v in overrides.items() if v is not None}
        return dataclasses.replace(self, **changes) if changes else self


def validate_origin_policy(policy: Any, where: str) -> OriginPolicy:
    """Check a policy given as a setting; raises ConfigurationError saying what is accepted."""
    if policy is None or policy == "*":
        return policy  # type: ignore[no-any-return]
    if isinstance(policy, str) or not all(isinstance(p, str) for p in policy):
        raise ConfigurationError(
            f"{where}: allowed_origins must be '*', None or a list of origins such as ['https://example.com']"
        )
    return tuple(policy)


FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Settings))
"""Every setting, in declaration order."""
APP_ONLY: tuple[str, ...] = ("shutdown_timeout", "max_handshakes_per_ip", "history", "gc_freeze")
"""Settings about the whole app, not one connection: no handler class overrides them."""
OVERRIDABLE: tuple[str, ...] = tuple(name for name in FIELDS if name not in APP_ONLY)
"""The settings a handler class may override with a class attribute of the same name."""

SETTINGS_KEY = web.AppKey("wsframe_settings", Settings)


@dataclasses.dataclass(frozen=True, slots=True)
class HandlerConfig:
    """What a mounted handler class needs per connection, computed once at create_app.

    Built by :func:`wsframe.handshake.build_handler_config`.
    """

    settings: Settings
    converters: PathConverters
    decoder: MessageDecoder | None
    limiter: ConnectionLimiter
    outbound: OutboundPolicy
    """What to do past max_outbound_buffer; shared by every connection of the handler."""
    outbound_limit: int
    """settings.max_outbound_buffer, one attribute away on the per-frame path."""
    calls_disconnect: bool = True
    """Whether the class overrides disconnect() (else there is no coroutine to run per connection)."""
    route: str = ""
    """The path the class is mounted at, as the url table writes it (the ``route`` label of metrics)."""
