"""One websocket per open tab; the app remembers which connection ids belong to which user."""

from aiohttp import web

from wsframe.websocket import GenericWebsocket

TABS = web.AppKey("notification_tabs", dict[int, set[str]])
"""user id -> connection ids of that user's open tabs (process-local: one worker)."""


class NotificationWebsocket(GenericWebsocket):
    async def connect(self, user_id: int) -> None:
        # A real app checks here that the session belongs to user_id (self.cookies, self.headers).
        self.user_id = user_id
        await self.accept()
        self.app[TABS].setdefault(user_id, set()).add(self.connection_id)

    async def disconnect(self, code: int) -> None:
        tabs = self.app[TABS].get(self.user_id, set())
        tabs.discard(self.connection_id)
        if not tabs:
            self.app[TABS].pop(self.user_id, None)
