"""The test client's default timeout: one unit for every wait, set in the pytest ini file and scaled by the environment.

The pytest plugin stores ``wsframe_timeout`` here at configure time; every
client and cluster made afterwards takes its default from :func:`default_timeout`.
"""

from __future__ import annotations

import os
from typing import Final

__all__ = ["DEFAULT_TIMEOUT", "TIMEOUT_SCALE_ENV", "default_timeout"]

DEFAULT_TIMEOUT: Final = 1.0
"""Seconds any single wait of the test client may take, unless configured otherwise."""

TIMEOUT_SCALE_ENV: Final = "WSFRAME_TEST_TIMEOUT_SCALE"
"""Environment variable multiplying every default timeout (``3`` on a slow CI machine)."""

_configured_timeout: float = DEFAULT_TIMEOUT
"""The ``wsframe_timeout`` ini value; :func:`wsframe.testing.plugin.pytest_configure` sets it."""


def default_timeout() -> float:
    """Return the default timeout in seconds: ``wsframe_timeout`` (ini) times ``WSFRAME_TEST_TIMEOUT_SCALE``.

    Raises ``ValueError`` naming the variable when the scale is not a positive number.
    """
    return _configured_timeout * positive_number(TIMEOUT_SCALE_ENV, os.environ.get(TIMEOUT_SCALE_ENV, "1"))


def positive_number(name: str, raw: str) -> float:
    """Return *raw* as a float; raise ``ValueError`` naming *name* unless it is a positive number."""
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ValueError(f"{name} must be a positive number, got {raw!r}")
    return value
