"""One process: python -m wsframe run samples.chat.main:app  (open http://127.0.0.1:8000/ in two tabs).

Many workers: WSFRAME_REDIS=redis://127.0.0.1:6379/0 gunicorn -w 4 -k aiohttp.GunicornWebWorker samples.chat.main:app
"""

import os

from samples.chat.urls import urls
from wsframe import create_app

app = create_app(urls, redis=os.environ.get("WSFRAME_REDIS") or None)
