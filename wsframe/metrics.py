"""``create_app(urls, metrics=True)``: a Prometheus ``/metrics`` endpoint, all gunicorn workers in one scrape.

The counting itself is plain integers (see :mod:`wsframe._tally`); this module
turns them into prometheus-client series when they are read, never per
message. It adds the difference since the last read to each counter, and
sets the gauges.

One process (``wsframe run``, ``aiohttp.web.run_app``): a scrape reads this
process's figures as they are at that moment.

Several gunicorn workers: prometheus-client's multiprocess mode, switched on by
the ``PROMETHEUS_MULTIPROC_DIR`` environment variable (a directory that exists,
emptied before gunicorn starts). Every worker writes its figures into its own
files there every :data:`FLUSH_SECONDS`, when it stops, and whenever it answers
a scrape; the scraped worker sums every worker's files. Counters of a worker
that died stay in the sum (totals never go down); gauges count live workers
only: a worker that stops removes its gauge files, and a scrape removes those
of any worker whose process no longer exists (killed with SIGKILL), so no
gunicorn hook is needed. See docs/deployment.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import logging
import os
import re
from collections.abc import Iterable
from typing import Any

from aiohttp import web

from .backends.ipc import in_gunicorn
from .exceptions import ConfigurationError, MissingDependencyError
from .registry import REGISTRY_KEY, Registry
from .snapshot import WorkerStats, snapshot_of

__all__ = ["enable_metrics", "metrics_path", "FLUSH_SECONDS", "MULTIPROC_ENV", "INSTALL_LINE"]

logger = logging.getLogger("wsframe.metrics")

FLUSH_SECONDS = 1.0
"""How often each worker writes its figures for the others' scrapes (multiprocess mode only)."""

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
INSTALL_LINE = "pip install 'wsframe[metrics]'"

_BACKEND_NAMES = {
    "outages": "wsframe_backend_outages",
    "publish_failures": "wsframe_backend_publish_failures",
    "possibly_lost": "wsframe_messages_possibly_lost",
    "unrouted": "wsframe_messages_unrouted",
}
"""Backend counters exported under names of their own; any other becomes ``wsframe_backend_<name>``."""

_CONTRACT_BACKEND = ("outages", "publish_failures", "possibly_lost", "unrouted")
"""Exported (as 0) even by a backend that does not count them, so dashboards and alerts always find them."""

_LIVE_GAUGE = re.compile(r"gauge_livesum_(\d+)\.db$")


def metrics_path(metrics: bool | str) -> str | None:
    """The path to serve for create_app's *metrics* option: None when off. ConfigurationError when malformed."""
    if metrics is False or metrics is None:
        return None
    if metrics is True:
        return "/metrics"
    if isinstance(metrics, str) and metrics.startswith("/"):
        return metrics
    raise ConfigurationError(f"metrics must be True, False or a path starting with '/', got {metrics!r}")


def _multiproc_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or os.environ.get(MULTIPROC_ENV.lower())


class _Exporter:
    """The prometheus-client series of one app, fed from its registry's counts."""

    def __init__(self, registry: Registry) -> None:
        try:
            import prometheus_client as prom
        except ImportError:
            raise MissingDependencyError(
                f"create_app(metrics=...) needs prometheus-client, which is not installed: {INSTALL_LINE}"
            ) from None
        self.registry = registry
        self.prom = prom
        self.directory = _multiproc_dir()
        if self.directory is not None and not os.path.isdir(self.directory):
            raise ConfigurationError(f"{MULTIPROC_ENV} is {self.directory!r}, which is not a directory; create it")
        if self.directory is None and in_gunicorn():
            logger.warning(
                "metrics under gunicorn without %s: each scrape shows one worker only (see docs/deployment.md)",
                MULTIPROC_ENV,
            )
        self.collectors = prom.CollectorRegistry(auto_describe=True)
        reg = self.collectors

        def counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> Any:
            return prom.Counter(name, doc, labels, registry=reg)

        self.connections = prom.Gauge(
            "wsframe_connections", "Open websocket connections.", ("route",), registry=reg, multiprocess_mode="livesum"
        )
        self.group_members = prom.Gauge(
            "wsframe_group_members",
            "Group memberships of open connections (a connection in two groups counts twice).",
            registry=reg,
            multiprocess_mode="livesum",
        )
        self.counters: dict[str, Any] = {
            "opened": counter("wsframe_connections_opened", "Websocket connections accepted."),
            "closed": counter("wsframe_connections_closed", "Websocket connections ended, by close code.", ("code",)),
            "refused": counter("wsframe_handshakes_refused", "Websocket handshakes refused, by reason.", ("reason",)),
            "messages_received": counter("wsframe_messages_received", "Data messages received from clients."),
            "messages_sent": counter("wsframe_messages_sent", "Data messages written to clients."),
            "bytes_received": counter("wsframe_bytes_received", "Bytes of the frames read from clients."),
            "bytes_sent": counter("wsframe_bytes_sent", "Bytes of the frames written to clients."),
            "slow": counter(
                "wsframe_slow_consumers", "Connections whose client read too slowly, by action taken.", ("action",)
            ),
            "messages_dropped": counter(
                "wsframe_messages_dropped", "Messages dropped for clients that read too slowly (slow_consumer='drop')."
            ),
        }
        self.backend_counters: dict[str, Any] = {}
        self.history_counters: dict[str, Any] = {}
        self.flushed: dict[tuple[str, str], float] = {}
        """What each counter (and label value) was last raised to, so a flush adds only the difference."""
        self.flush_task: asyncio.Task[None] | None = None
        self.routes_seen: set[str] = set()

    def _raise_to(self, key: str, label: str, value: float, metric: Any) -> None:
        delta = value - self.flushed.get((key, label), 0)
        if delta > 0:
            metric.inc(delta)
            self.flushed[key, label] = value

    def _backend_counter(self, name: str) -> Any:
        metric = self.backend_counters.get(name)
        if metric is None:
            metric_name = _BACKEND_NAMES.get(name, f"wsframe_backend_{name}")
            metric = self.prom.Counter(metric_name, f"The backend's stats.{name} counter.", registry=self.collectors)
            self.backend_counters[name] = metric
        return metric

    def flush(self) -> WorkerStats:
        """Bring every series up to this worker's current figures; returns the snapshot used."""
        snap = snapshot_of(self.registry)
        # A route whose last connection closed is set to 0, not left at its old value.
        self.routes_seen.update(snap.connections_by_route)
        for route in self.routes_seen:
            self.connections.labels(route=route).set(snap.connections_by_route.get(route, 0))
        self.group_members.set(snap.group_members)
        counters = self.counters
        for key in ("opened", "messages_received", "messages_sent", "bytes_received", "bytes_sent", "messages_dropped"):
            self._raise_to(key, "", getattr(snap, key), counters[key])
        for code, count in snap.closed.items():
            self._raise_to("closed", str(code), count, counters["closed"].labels(code=str(code)))
        for reason, count in snap.refused.items():
            self._raise_to("refused", reason, count, counters["refused"].labels(reason=reason))
        slow = counters["slow"]
        self._raise_to("slow", "close", snap.slow_consumers_closed, slow.labels(action="close"))
        self._raise_to("slow", "drop", snap.slow_consumers_dropping, slow.labels(action="drop"))
        backend = dict.fromkeys(_CONTRACT_BACKEND, 0.0) | snap.backend_counters
        for name, value in backend.items():
            self._raise_to("backend:" + name, "", value, self._backend_counter(name))
        for name, value in snap.history_counters.items():
            self._raise_to("history:" + name, "", value, self._history_counter(name))
        return snap

    def _history_counter(self, name: str) -> Any:
        metric = self.history_counters.get(name)
        if metric is None:
            metric = self.prom.Counter(
                f"wsframe_history_{name}", f"History groups: the {name} counter.", registry=self.collectors
            )
            self.history_counters[name] = metric
        return metric

    def exposition(self) -> bytes:
        """The scrape's body: this worker's series, or every worker's in multiprocess mode."""
        self.flush()
        if self.directory is None:
            return bytes(self.prom.generate_latest(self.collectors))
        from prometheus_client import multiprocess

        self._forget_dead_workers(multiprocess)
        combined = self.prom.CollectorRegistry()
        multiprocess.MultiProcessCollector(combined, path=self.directory)  # type: ignore[no-untyped-call]
        return bytes(self.prom.generate_latest(combined))

    def _forget_dead_workers(self, multiprocess: Any) -> None:
        # A worker killed outright (SIGKILL, OOM) never removed its gauge files;
        # its open connections died with it, so they must stop counting.
        for path in glob.glob(os.path.join(str(self.directory), "gauge_livesum_*.db")):
            match = _LIVE_GAUGE.search(path)
            if match is None:
                continue
            pid = int(match.group(1))
            if not _alive(pid):
                multiprocess.mark_process_dead(pid, self.directory)

    async def flush_periodically(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_SECONDS)
            try:
                self.flush()
            except Exception:  # a full disk must not end the worker's metrics for good
                logger.exception("could not write this worker's metrics")

    async def on_startup(self, app: web.Application) -> None:
        if self.directory is not None:
            self.flush()
            self.flush_task = asyncio.ensure_future(self.flush_periodically())

    async def on_cleanup(self, app: web.Application) -> None:
        task = self.flush_task
        if task is None:
            return
        self.flush_task = None
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        self.flush()  # the counts of the connections that the shutdown just closed
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(os.getpid(), self.directory)  # type: ignore[no-untyped-call]

    async def handle(self, request: web.Request) -> web.Response:
        body = self.exposition()
        return web.Response(body=body, headers={"Content-Type": self.prom.CONTENT_TYPE_LATEST})


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    return True


def enable_metrics(app: web.Application, metrics: bool | str, routes: Iterable[str] = ()) -> None:
    """Serve Prometheus metrics on *app* at the path *metrics* names (``/metrics`` for True); no-op for False.

    Raises :class:`MissingDependencyError` with the pip line when
    prometheus-client is not installed, and :class:`ConfigurationError` for a
    malformed path or a ``PROMETHEUS_MULTIPROC_DIR`` that is not a directory.
    *routes* are the websocket paths, exported (at 0) before their first connection.
    """
    path = metrics_path(metrics)
    if path is None:
        return
    exporter = _Exporter(app[REGISTRY_KEY])
    exporter.routes_seen.update(routes)
    app.router.add_get(path, exporter.handle)
    app.on_startup.append(exporter.on_startup)
    app.on_cleanup.append(exporter.on_cleanup)
