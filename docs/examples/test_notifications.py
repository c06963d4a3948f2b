"""tests/test_notifications.py: an HTTP request pushes to every open tab of one user."""

import pytest

from samples.notifications.urls import urls
from samples.notifications.websockets import TABS
from wsframe import create_app


def make_app():
    app = create_app(urls)
    app[TABS] = {}
    return app


async def test_notify_reaches_every_tab_of_the_user(ws_client):
    client = ws_client(make_app())
    async with client.connect("/ws/notifications/7/") as tab1, client.connect("/ws/notifications/7/") as tab2:
        response = await client.post("/notify/7/", json={"title": "Your book is ready"})
        assert await response.json() == {"sent": 2}
        assert await tab1.receive_json() == {"title": "Your book is ready"}
        assert await tab2.receive_json() == {"title": "Your book is ready"}


async def test_other_users_get_nothing(ws_client):
    client = ws_client(make_app())
    async with client.connect("/ws/notifications/8/") as other:
        response = await client.post("/notify/7/", json={"title": "not for you"})
        assert await response.json() == {"sent": 0}
        with pytest.raises(TimeoutError):
            await other.receive(timeout=0.1)
