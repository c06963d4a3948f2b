"""An echo app with a short handshake timeout, for the slow-client tests under real servers."""

from __future__ import annotations

from wsframe import GenericWebsocket, create_app


class Echo(GenericWebsocket):
    async def connect(self) -> None:
        await self.accept()

    async def receive(self, data: str | bytes) -> None:
        await self.send(data)


app = create_app({"ws/": Echo}, handshake_timeout=1.0, max_handshakes_per_ip=100)
