"""Backends that carry messages between processes; see :mod:`wsframe.backends.base`."""

from __future__ import annotations

from .base import Backend, Envelope
from .memory import MemoryBackend

__all__ = ["Backend", "Envelope", "MemoryBackend"]
