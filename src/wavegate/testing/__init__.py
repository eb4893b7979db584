"""Real loopback servers with fault injection, for wavegate's tests and yours."""

from .server import ConnectionDropped, ServerConnection, WebsocketTestServer

__all__ = ["ConnectionDropped", "ServerConnection", "WebsocketTestServer"]
