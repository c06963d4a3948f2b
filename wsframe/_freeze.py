"""Garbage collection for a server that holds many long-lived objects: ``gc.freeze()`` at the right moments.

Python's full collection walks every tracked object, and each open websocket
owns a few hundred: with tens of thousands of connections a worker stops for
0.3-0.6 s per full collection, and the automatic rule runs one whenever the
objects that survived since the last one reach a quarter of the rest, so while
connections keep arriving they come again and again. ``gc.freeze()`` moves every
tracked object into a generation no collection walks, so what is frozen costs
nothing afterwards. Its price: a reference cycle that becomes garbage once frozen
is not freed until the objects are unfrozen.

:class:`Freezer` (one per app, with ``gc_freeze=True``, the default):

- at app startup, freezes what the app's import and setup made (modules, routes);
- whenever :data:`BURST` more connections are open than at the last freeze,
  freezes again, at once (``Registry.add`` compares one number per connection);
  a young collection first, which is cheap, so the freeze takes no young garbage
  with it;
- every :data:`CHECK_SECONDS`, when as many connections ended since the last full collection as half of
  those open then (and at least :data:`BURST`), unfreezes, runs one full
  collection (the cycles of the connections that ended are freed) and freezes
  again: one full collection per half the population replaced, where the
  automatic rule runs one per quarter;
- at app shutdown, unfreezes, so a process that starts apps again (tests) frees
  its garbage as usual.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time

from .registry import Registry

_NEVER = 1 << 62

__all__ = ["Freezer", "CHECK_SECONDS", "BURST"]

logger = logging.getLogger("wsframe.app")

CHECK_SECONDS = 5.0
"""How often the freezer looks at how many connections came and went."""

BURST = 1000
"""Connections accepted (or ended) since the last freeze that make another one worth it."""


class Freezer:
    """Freezes the collector's objects for one app's *registry*; :meth:`start` at startup, :meth:`stop` at shutdown."""

    __slots__ = ("_ended", "_open_at_full", "_timer", "freezes", "full_collections", "registry")

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.freezes = 0
        """How many times this freezer called ``gc.freeze()`` (startup included)."""
        self.full_collections = 0
        """Full collections it ran to free the cycles of connections that ended."""
        self._ended = self._open_at_full = 0
        self._timer: asyncio.TimerHandle | None = None

    def start(self) -> None:
        """Freeze what startup made and start watching; needs a running event loop."""
        registry = self.registry
        self._ended = sum(registry.tally.closed.values())
        self._open_at_full = len(registry.connections)
        self._freeze()
        registry.on_burst = self._freeze
        self._timer = asyncio.get_running_loop().call_later(CHECK_SECONDS, self._check)

    def stop(self) -> None:
        """Stop watching and unfreeze (the process's garbage is collected as usual again)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.registry.on_burst = None
        self.registry.burst_at = _NEVER
        gc.unfreeze()

    def _freeze(self) -> None:
        """Freeze now; the registry calls this again when :data:`BURST` more connections are open."""
        gc.collect(1)  # the young generations only: cheap, and their garbage is not frozen
        gc.freeze()
        self.freezes += 1
        self.registry.burst_at = self.registry.unfinished + BURST

    def _check(self) -> None:
        self._timer = None
        try:
            self.check()
        finally:
            self._timer = asyncio.get_running_loop().call_later(CHECK_SECONDS, self._check)

    def check(self) -> None:
        """One look: after many connections ended, one full collection; and the next burst counts from here."""
        registry = self.registry
        ended = sum(registry.tally.closed.values())
        if ended - self._ended >= max(BURST, self._open_at_full // 2):
            gc.unfreeze()
            started = time.perf_counter()
            gc.collect()
            logger.debug(
                "full garbage collection after %d connections ended: %.3f s",
                ended - self._ended,
                time.perf_counter() - started,
            )
            self.full_collections += 1
            self._open_at_full = len(registry.connections)
            self._ended = ended
            self._freeze()
        else:
            # Fewer connections open than at the last freeze: a burst counts from here.
            registry.burst_at = min(registry.burst_at, registry.unfinished + BURST)
