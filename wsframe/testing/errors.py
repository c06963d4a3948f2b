"""The errors the test client raises, and the log handler that catches a handler's exception for them.

wsframe logs a handler's exception and the client only sees 1011 (or HTTP
500); :class:`_ErrorCapture` keeps those log records for the connections a
test client opened (tied to them by :data:`TEST_CLIENT_HEADER`), so the client
can raise :class:`HandlerError` where the test observes the crash.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Final

from ..exceptions import WsframeError
from ..websocket import GenericWebsocket

__all__ = ["TEST_CLIENT_HEADER", "HandlerError", "HandshakeRejectedError", "CapturedError"]

TEST_CLIENT_HEADER: Final = "X-Wsframe-Test-Client"
"""Header the client adds to each handshake, to tie a logged handler error to its connection."""


class HandlerError(WsframeError):
    """The websocket handler raised; the handler's exception is ``__cause__`` (and ``exception``).

    Raised by the test client where the test observes the crash: on receive
    after the server closed with 1011, on connect when the handshake answered
    500, or when the client closes for an error nothing observed (an exception
    in ``disconnect()``, or a 1011 the test never read).
    """

    def __init__(self, message: str, exception: BaseException) -> None:
        super().__init__(message)
        self.exception = exception


class HandshakeRejectedError(WsframeError):
    """The server answered the websocket handshake with an HTTP error instead of 101.

    ``status`` is the HTTP status: 403 when ``connect()`` did not accept, 404
    for an unknown path or a path variable that does not convert, ...
    """

    def __init__(self, path: str, status: int) -> None:
        super().__init__(f"the server answered the handshake for {path} with HTTP {status} instead of 101")
        self.path = path
        self.status = status


@dataclasses.dataclass(frozen=True, slots=True)
class CapturedError:
    """One handler exception logged by wsframe while a test client was attached."""

    message: str
    """The log message, e.g. ``BookWebsocket.receive() failed; closing with 1011``."""
    exception: BaseException
    """The exception the handler raised, with its traceback."""
    token: str
    """The test connection it belongs to (the value of :data:`TEST_CLIENT_HEADER`)."""

    def to_error(self) -> HandlerError:
        """Return the :class:`HandlerError` to raise for it, chained to the handler's exception."""
        exc = self.exception
        error = HandlerError(f"{self.message}: {type(exc).__name__}: {exc}", exc)
        error.__cause__ = exc
        return error


def _handler_of(exc: BaseException) -> GenericWebsocket | None:
    """Return the handler instance *exc* was raised for, found in its traceback's frames.

    Usually ``self`` of the method that logged it; for checks that run before
    a handler method (auth, permissions), a local variable holding the handler.
    """
    tb = exc.__traceback__
    while tb is not None:
        local = tb.tb_frame.f_locals
        candidate = local.get("self")
        if isinstance(candidate, GenericWebsocket):
            return candidate
        for value in local.values():
            if isinstance(value, GenericWebsocket):
                return value
        tb = tb.tb_next
    return None


class _ErrorCapture(logging.Handler):
    """Keeps the exceptions wsframe logs for connections opened by one test client."""

    def __init__(self, tokens: set[str]) -> None:
        super().__init__(logging.ERROR)
        self.tokens = tokens
        self.errors: list[CapturedError] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info is None or record.exc_info[1] is None:
            return
        exc = record.exc_info[1]
        handler = _handler_of(exc)
        if handler is None:
            return
        token = handler.request.headers.get(TEST_CLIENT_HEADER)
        if token in self.tokens:
            self.errors.append(CapturedError(record.getMessage(), exc, token))

    def claim(self, token: str) -> CapturedError | None:
        """Remove and return the first error of connection *token*, if any."""
        for index, error in enumerate(self.errors):
            if error.token == token:
                return self.errors.pop(index)
        return None
