"""tests/test_book.py: the book sample's echo, through wsframe's test client."""

from samples.book.urls import urls
from wsframe import create_app


async def test_book_echoes_text(ws_client):
    app = create_app(urls)
    async with ws_client(app).connect("/ws/book/") as ws:
        await ws.send("hi")
        assert await ws.receive() == "hi"


async def test_book_echoes_bytes(ws_client):
    app = create_app(urls)
    async with ws_client(app).connect("/ws/book/") as ws:
        await ws.send(b"\x00\x01")
        assert await ws.receive() == b"\x00\x01"
