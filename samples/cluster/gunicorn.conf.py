"""gunicorn settings for wsframe: aiohttp's worker class, one worker per core, a graceful drain."""

import importlib.util
import multiprocessing
import os

bind = os.environ.get("WSFRAME_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("WSFRAME_WORKERS", multiprocessing.cpu_count()))
# uvloop when installed (pip install 'wsframe[speed]'), asyncio's loop otherwise.
worker_class = "aiohttp.GunicornUVLoopWebWorker" if importlib.util.find_spec("uvloop") else "aiohttp.GunicornWebWorker"
graceful_timeout = 30  # above the app's shutdown_timeout (10 s): workers close websockets with 1001 first
keepalive = 75
backlog = 2048
