"""Run with: python -m wsframe run samples.notifications.main:app  (then open http://127.0.0.1:8000/?user=1)."""

from samples.notifications.urls import urls
from samples.notifications.websockets import TABS
from wsframe import create_app

app = create_app(urls)
app[TABS] = {}
