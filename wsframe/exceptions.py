"""Exceptions raised by wsframe.

Every error derives from :class:`WsframeError`; where the category is obvious it
also derives from the matching builtin, so ``except ValueError`` keeps working.
"""

from __future__ import annotations

__all__ = [
    "WsframeError",
    "ConfigurationError",
    "MissingDependencyError",
    "ConnectionClosed",
    "BackendUnavailableError",
    "ApplicationNotFoundError",
    "AuthenticationFailed",
    "PermissionDenied",
    "InvalidGroupNameError",
]


class WsframeError(Exception):
    """Base class of every exception wsframe raises."""


class ConfigurationError(WsframeError, ValueError):
    """The application is set up wrongly: a bad url table, setting or handler.

    Raised by :func:`wsframe.create_app` before the server starts, so a broken
    app never serves a request. The message names what to change.
    """


class MissingDependencyError(WsframeError, ImportError):
    """An optional dependency is needed but not installed; the message gives the pip line."""


class ConnectionClosed(WsframeError):
    """The websocket connection is closed; nothing more can be sent on it.

    ``code`` and ``reason`` are the close code and reason the connection ended
    with (1006 and ``''`` when the peer vanished without a close frame).
    """

    def __init__(self, code: int, reason: str = "") -> None:
        self.code = code
        self.reason = reason
        super().__init__(code, reason)

    def __str__(self) -> str:
        if self.reason:
            return f"connection closed with code {self.code} ({self.reason})"
        return f"connection closed with code {self.code}"


class BackendUnavailableError(WsframeError, ConnectionError):
    """The shared-state backend (Redis, the worker bus) cannot be reached right now.

    Raised quickly instead of waiting for the backend to come back; the message
    says which backend and since when. Retrying later is safe.
    """


class ApplicationNotFoundError(WsframeError, RuntimeError):
    """A module-level function could not tell which wsframe application to use."""


class AuthenticationFailed(WsframeError):
    """Raised by an ``auth`` callable to refuse a handshake: the client gets HTTP 401.

    The message is logged at info level, never sent to the client.
    """


class PermissionDenied(WsframeError):
    """Raised by a permission (or returned False) to refuse a handshake: HTTP 403."""


class InvalidGroupNameError(WsframeError, ValueError):
    """A group name is not a ``str``, is empty, is over 256 characters, or has a lone surrogate."""
