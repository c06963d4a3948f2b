"""Backends that carry messages between processes; see :mod:`wsframe.backends.base`.

:func:`resolve_backend` turns ``create_app``'s ``backend=`` / ``redis=`` into
one: a :class:`Backend` instance as given, or a URL by its scheme
(``memory://``, ``ipc://`` or ``ipc:///dir``, ``redis://``, ``rediss://``,
``unix://`` for Redis on a socket, ``redis+cluster://host:port,host:port`` for a
Redis Cluster). With neither, the default is the IPC
backend when running under gunicorn (so ``gunicorn -w N`` works with no
Redis) and the process-local memory backend otherwise.

:class:`RedisBackend` is imported on first use, so an app that does not use
Redis never loads redis-py.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from ..exceptions import ConfigurationError
from .base import Backend, Envelope
from .ipc import IpcBackend, in_gunicorn
from .memory import MemoryBackend

if TYPE_CHECKING:
    import redis.asyncio as aioredis

    from .redis import RedisBackend

__all__ = ["Backend", "Envelope", "MemoryBackend", "IpcBackend", "RedisBackend", "backend_from_url", "resolve_backend"]

logger = logging.getLogger("wsframe.backends")

_REDIS_SCHEMES = ("redis", "rediss", "unix")


def __getattr__(name: str) -> Any:
    # RedisBackend imports redis.asyncio: loaded when asked for, not with wsframe.
    if name == "RedisBackend":
        from .redis import RedisBackend

        return RedisBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def backend_from_url(url: str) -> Backend:
    """Return the backend a URL names, chosen by its scheme.

    ``memory://``; ``ipc://`` (directory chosen for you) or ``ipc:///abs/dir``;
    ``redis://``, ``rediss://`` and ``unix://`` go to :class:`RedisBackend`;
    ``redis+cluster://host:port,host:port`` to ``RedisClusterBackend`` (sharded pub/sub).
    Raises :class:`~wsframe.exceptions.ConfigurationError` for any other scheme.
    """
    scheme = urlsplit(url).scheme
    if scheme == "memory":
        return MemoryBackend()
    if scheme == "ipc":
        parts = urlsplit(url)
        if parts.netloc:
            raise ConfigurationError(f"an ipc URL names a local directory: ipc:///abs/path, got {url!r}")
        return IpcBackend(unquote(parts.path) or None)
    if scheme in _REDIS_SCHEMES:
        from .redis import RedisBackend

        return RedisBackend(url)
    if scheme == "redis+cluster":
        from .redis import RedisClusterBackend

        return RedisClusterBackend(url)
    raise ConfigurationError(
        f"unknown backend URL {url!r}: use memory://, ipc://, ipc:///a/dir, redis://host:port/db, rediss://... or redis+cluster://host:port,host:port"
    )


def resolve_backend(backend: Backend | str | None = None, redis: str | aioredis.Redis | None = None) -> Backend:
    """Return the backend for ``create_app(backend=..., redis=...)`` (see the module docstring).

    Raises :class:`~wsframe.exceptions.ConfigurationError` when both are
    given, or for a value of the wrong type. Logs a warning when the
    process-local memory backend is chosen under gunicorn, where other
    workers' connections are then out of reach.
    """
    if backend is not None and redis is not None:
        raise ConfigurationError("pass either backend= or redis= to create_app, not both")
    if isinstance(redis, str) and redis.startswith("redis+cluster:"):
        return backend_from_url(redis)
    if redis is not None:
        from .redis import RedisBackend

        return RedisBackend(redis)
    if backend is None:
        return IpcBackend() if in_gunicorn() else MemoryBackend()
    if isinstance(backend, str):
        chosen = backend_from_url(backend)
    elif isinstance(backend, Backend):
        chosen = backend
    else:
        raise ConfigurationError(
            f"backend= takes a Backend or a URL such as 'redis://...' or 'ipc://', got {type(backend).__name__}"
        )
    if isinstance(chosen, MemoryBackend) and in_gunicorn():
        logger.warning(
            "wsframe is running under gunicorn with the process-local memory backend: "
            "send_message_to_websocket and close_websocket_connection cannot reach connections in other "
            "workers. With more than one worker, drop backend= (the default shares them over local sockets) "
            "or pass redis='redis://...'."
        )
    return chosen
