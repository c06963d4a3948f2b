"""Memory per idle connection: server RSS with N idle connections open minus its RSS before, over N. It runs
first in each session, on a fresh server, so no other case has grown the heap yet."""

from __future__ import annotations

import asyncio

from ..client import connect_many
from ..harness import rss_kib
from . import Config, close_all

__all__ = ["idle_memory"]


async def idle_memory(cfg: Config) -> dict[str, float]:
    """Server RSS growth per idle connection with ``cfg.idle_connections`` open, in KiB."""
    before = rss_kib(cfg.server_pid)
    clients = await connect_many(cfg.port, cfg.idle_connections)
    await asyncio.sleep(cfg.settle_seconds)
    after = rss_kib(cfg.server_pid)
    await close_all(clients, settle=cfg.settle_seconds)
    figures = {"rss_before_kib": float(before), "rss_after_kib": float(after)}
    return {"kib_per_connection": (after - before) / cfg.idle_connections, **figures}
