"""Credentials out of access logs: query parameters named as sensitive are printed ``name=***``.

Browsers' WebSocket API cannot set headers, so a page sends its token in the
URL, and every access log prints the URL. :class:`RedactingFilter` sits on the
access loggers wsframe knows of (``aiohttp.access``, which ``wsframe run`` and
``web.run_app`` use, and ``gunicorn.access``, which aiohttp's
``GunicornWebWorker`` logs through) and rewrites each formatted line before
any handler writes it. The set of names is process-wide, as loggers are:
``token`` and ``access_token`` always, every :class:`~wsframe.security.TokenAuth`'s
``query_param``, and each app's ``redact_query_params`` setting.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

__all__ = ["ACCESS_LOGGERS", "DEFAULT_NAMES", "RedactingFilter", "add_sensitive", "install", "redact", "sensitive"]

ACCESS_LOGGERS = ("aiohttp.access", "gunicorn.access")
"""The loggers :func:`install` filters: aiohttp's default access logger and gunicorn's."""
DEFAULT_NAMES = frozenset({"token", "access_token"})
"""Query parameters redacted in every process that created a wsframe app."""

_names: set[str] = set(DEFAULT_NAMES)
_pattern: re.Pattern[str] | None = None


def _compile() -> re.Pattern[str]:
    alternatives = "|".join(sorted((re.escape(name) for name in _names), key=len, reverse=True))
    # A name right after ? or & (or its percent-encoded form), up to the next &, space, quote or #.
    return re.compile(rf"((?:[?&]|%3[Ff]|%26)(?:{alternatives})=)[^&\s\"'#]*", re.IGNORECASE)


def add_sensitive(names: Iterable[str]) -> None:
    """Redact the query parameters *names* from now on in every filtered log line."""
    global _pattern
    new = {name for name in names if name} - _names
    if new:
        _names.update(new)
        _pattern = None


def sensitive() -> frozenset[str]:
    """The query parameter names redacted now."""
    return frozenset(_names)


def redact(text: str) -> str:
    """Return *text* with the value of every sensitive query parameter replaced by ``***``."""
    global _pattern
    if "=" not in text:
        return text
    pattern = _pattern
    if pattern is None:
        pattern = _pattern = _compile()
    return pattern.sub(r"\1***", text)


class RedactingFilter(logging.Filter):
    """Rewrite a record's message (and its arguments) with :func:`redact`; never drops a record.

    aiohttp's access logger formats the line itself and logs it without
    arguments, and puts the request line in the record's ``first_request_line``
    extra (``%(first_request_line)s`` in a log format); both are redacted.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if record.args and isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        line = getattr(record, "first_request_line", None)
        if isinstance(line, str):
            record.first_request_line = redact(line)
        return True


_FILTER = RedactingFilter()


def install() -> None:
    """Put the filter on every logger of :data:`ACCESS_LOGGERS`; installing twice is a no-op."""
    for name in ACCESS_LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
