"""Where wsframe's log records go under gunicorn when the app configured no logging of its own.

wsframe logs to loggers under ``"wsframe"`` and configures nothing by itself,
with one exception. gunicorn gives its own ``"gunicorn.error"`` logger
handlers (the ``--error-logfile``, syslog) and the ``--log-level``, but none to
the root logger, so without this the records of every other library reach
only Python's last-resort handler: warnings and errors printed bare (no time,
level or pid), info lines dropped. :func:`adopt_gunicorn_error_log` runs at app
startup: when this process has gunicorn's error log and a ``"wsframe"`` record
would reach no handler, it gives the ``"wsframe"`` logger gunicorn's handlers
(so its format: time, pid, level) and, when that logger has no level of its
own, gunicorn's level. Any handler the app set up first (``logging.basicConfig``,
``dictConfig``, gunicorn's ``logconfig_dict``, a handler on ``"wsframe"``) means
the app chose, and nothing is changed.
"""

from __future__ import annotations

import logging

__all__ = ["LOGGER_NAME", "GUNICORN_ERROR_LOGGER", "adopt_gunicorn_error_log"]

LOGGER_NAME = "wsframe"
"""The parent of every logger wsframe writes to."""

GUNICORN_ERROR_LOGGER = "gunicorn.error"
"""The logger gunicorn's ``Logger`` writes its error log through (and gives the ``--error-logfile`` handlers)."""


def adopt_gunicorn_error_log() -> bool:
    """Send ``"wsframe"`` records through gunicorn's error-log handlers when nothing else would show them.

    Returns whether it did: False outside gunicorn (its error logger has no
    handlers) and whenever a ``"wsframe"`` record already reaches a handler.
    Running it again changes nothing. Never raises.
    """
    ours = logging.getLogger(LOGGER_NAME)
    gunicorn = logging.getLogger(GUNICORN_ERROR_LOGGER)
    if not gunicorn.handlers or ours.hasHandlers():
        return False
    for handler in gunicorn.handlers:
        ours.addHandler(handler)
    if ours.level == logging.NOTSET:
        ours.setLevel(gunicorn.getEffectiveLevel())
    return True
