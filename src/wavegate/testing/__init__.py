"""Real loopback servers with fault injection, for wavegate's tests and yours."""

from .server import ConnectionDropped, HandlerError, ServerConnection, WebsocketTestServer

__all__ = ["ConnectionDropped", "HandlerError", "ServerConnection", "WebsocketTestServer"]
