"""wsframe: real-time websocket apps on aiohttp, in the style of Panther's ``GenericWebsocket``."""

from __future__ import annotations

from . import status
from .app import create_app
from .config import Settings
from .exceptions import (
    ApplicationNotFoundError,
    BackendUnavailableError,
    ConfigurationError,
    ConnectionClosed,
    MissingDependencyError,
    WsframeError,
)
from .publisher import Publisher
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
    # exceptions.py
    "WsframeError",
    "ConfigurationError",
    "MissingDependencyError",
    "ConnectionClosed",
    "BackendUnavailableError",
    "ApplicationNotFoundError",
    # publisher.py
    "Publisher",
    # status.py
    "status",
]

__version__ = "0.1.0"
