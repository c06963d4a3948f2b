"""wsframe: real-time websocket apps on aiohttp, in the style of Panther's ``GenericWebsocket``."""

from __future__ import annotations

from . import status
from .app import create_app
from .config import Settings
from .credentials import Expiring, MessageAuth
from .exceptions import (
    ApplicationNotFoundError,
    AuthenticationFailed,
    BackendUnavailableError,
    ConfigurationError,
    ConnectionClosed,
    InvalidGroupNameError,
    MissingDependencyError,
    PermissionDenied,
    WsframeError,
)
from .groups import close_group, group_members, send_message_to_group
from .history import History, Joined
from .publisher import Publisher
from .security import SessionAuth, TokenAuth
from .snapshot import WorkerStats, stats
from .websocket import GenericWebsocket, close_websocket_connection, send_message_to_websocket

__all__ = [
    # app.py
    "create_app",
    # config.py
    "Settings",
    # websocket.py
    "GenericWebsocket",
    "send_message_to_websocket",
    "close_websocket_connection",
    # groups.py
    "send_message_to_group",
    "close_group",
    "group_members",
    # history.py
    "History",
    "Joined",
    # security.py
    "TokenAuth",
    # credentials.py
    "MessageAuth",
    "Expiring",
    "SessionAuth",
    # exceptions.py
    "WsframeError",
    "ConfigurationError",
    "MissingDependencyError",
    "ConnectionClosed",
    "BackendUnavailableError",
    "ApplicationNotFoundError",
    "AuthenticationFailed",
    "PermissionDenied",
    "InvalidGroupNameError",
    # snapshot.py
    "stats",
    "WorkerStats",
    # publisher.py
    "Publisher",
    # status.py
    "status",
]

__version__ = "0.1.0"
