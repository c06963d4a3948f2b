"""tests/test_cluster.py: the book sample under real gunicorn with two workers."""


async def test_book_echoes_under_gunicorn(ws_cluster):
    cluster = ws_cluster("samples.book.main:app", workers=2)
    async with cluster.connect("/ws/book/") as first, cluster.connect("/ws/book/") as second:
        await first.send("one")
        await second.send("two")
        assert await first.receive() == "one"
        assert await second.receive() == "two"
