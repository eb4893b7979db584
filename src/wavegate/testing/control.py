"""An HTTP+JSON control API for the fake voice gateway, so tests in any language can
inspect sessions and inject faults (``wavegate serve --control-port``).

    GET  /sessions                          sessions: id, user, connected, seq, DAVE epoch
    POST /sessions/{session_id}/close       {"code": 4015, "reason": "..."}
    POST /sessions/{session_id}/drop        TCP reset, no close frame
    POST /sessions/{session_id}/stop-acking heartbeats go unanswered (a zombie)
    POST /sessions/{session_id}/expire      the next RESUME gets 4006
    POST /handshakes                        {"reject": 503} | {"stall": true} | {"normal": true}
    GET  /received/{user_id}                what that user sent, as [op, d] pairs
    POST /users/{user_id}/token             a fresh token for that user's next session
                                            (what VOICE_SERVER_UPDATE brings a bot)

Answers are JSON; errors are ``{"error": "..."}`` with 400 (a bad request body) or
404 (no such session). It listens on loopback only.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from .voice import FakeVoiceGateway

log = logging.getLogger("wavegate.testing.control")
NO_CONNECTION = "that session has no connection now"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ControlError(Exception):
    """A request the API refuses: ``status`` and a message for the body."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class ControlServer:
    """The control API of ``gateway`` on ``host:port`` (0: any free port)."""

    def __init__(self, gateway: FakeVoiceGateway, *, host: str = "127.0.0.1", port: int = 0):
        self.gateway = gateway
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None
        app = web.Application(middlewares=[_errors])
        app.add_routes([
            web.get("/sessions", self.sessions),
            web.post("/sessions/{session_id}/close", self.close),
            web.post("/sessions/{session_id}/drop", self.drop),
            web.post("/sessions/{session_id}/stop-acking", self.stop_acking),
            web.post("/sessions/{session_id}/expire", self.expire),
            web.post("/handshakes", self.handshakes),
            web.get("/received/{user_id}", self.received),
            web.post("/users/{user_id}/token", self.token),
        ])  # fmt: skip
        self.app = app

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        """Listen (raises ``OSError`` when the port is taken)."""
        runner = web.AppRunner(self.app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> ControlServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # -- the endpoints -----------------------------------------------------------------

    async def sessions(self, request: web.Request) -> web.Response:
        rows = []
        for session_id, session in self.gateway.sessions.items():
            channel = self.gateway.channels.get(session.server_id)
            rows.append({
                "session_id": session_id,
                "user_id": session.user_id,
                "server_id": session.server_id,
                "connected": session.live.is_set(),
                "seq": session.seq,
                "seq_ack": session.seq_ack,
                "heartbeats": session.heartbeats,
                "resumes": session.resumes,
                "expired": session.expired,
                "dave_epoch": channel.epoch if channel is not None else None,
            })  # fmt: skip
        return web.json_response(rows)

    async def close(self, request: web.Request) -> web.Response:
        session_id = self._session(request)
        body = await _body(request)
        code, reason = body.get("code", 4015), body.get("reason", "")
        if not isinstance(code, int) or not (code == 1000 or 3000 <= code <= 4999):
            raise ControlError(400, "code must be 1000 or 3000-4999")
        if not isinstance(reason, str) or len(reason.encode()) > 123:
            raise ControlError(400, "reason must be a string of at most 123 bytes")
        try:
            await self.gateway.close_session(session_id, code, reason)
        except asyncio.TimeoutError:
            raise ControlError(409, f"{NO_CONNECTION} (none came back within 5 s)") from None
        log.info("control: closed a session of user %s with %s", self._user(session_id), code)
        return web.json_response({"closed": code})

    async def drop(self, request: web.Request) -> web.Response:
        session_id = self._session(request)
        try:
            await self.gateway.drop(session_id)
        except asyncio.TimeoutError:
            raise ControlError(409, f"{NO_CONNECTION} (none came back within 5 s)") from None
        log.info("control: dropped TCP under user %s", self._user(session_id))
        return web.json_response({"dropped": True})

    async def stop_acking(self, request: web.Request) -> web.Response:
        session_id = self._session(request)
        self.gateway.stop_acking(session_id, permanently=True)
        log.info("control: heartbeats of user %s go unanswered", self._user(session_id))
        return web.json_response({"acking": False})

    async def expire(self, request: web.Request) -> web.Response:
        session_id = self._session(request)
        self.gateway.expire(session_id)
        log.info("control: the session of user %s expired", self._user(session_id))
        return web.json_response({"expired": True})

    async def handshakes(self, request: web.Request) -> web.Response:
        body = await _body(request)
        if "reject" in body:
            status = body["reject"]
            if not isinstance(status, int) or not 400 <= status <= 599:
                raise ControlError(400, "reject takes an HTTP status from 400 to 599")
            self.gateway.reject_handshakes(status)
        elif body.get("stall") is True:
            self.gateway.stall_handshakes()
        elif body.get("normal") is True:
            self.gateway.accept_handshakes()
        else:
            raise ControlError(
                400, 'expected {"reject": status}, {"stall": true} or {"normal": true}'
            )
        log.info("control: handshakes %s", body)
        return web.json_response(body)

    async def received(self, request: web.Request) -> web.Response:
        user_id = request.match_info["user_id"]
        messages = self.gateway.received_by_user.get(user_id, [])
        return web.json_response([[op, _jsonable(data)] for op, data in messages])

    async def token(self, request: web.Request) -> web.Response:
        user_id = request.match_info["user_id"]
        if not user_id.isdigit():
            raise ControlError(400, "user ids are snowflakes (digits)")
        log.info("control: a fresh token for user %s", user_id)
        return web.json_response({"token": self.gateway.fresh_token(user_id)})

    # -- helpers -----------------------------------------------------------------------

    def _session(self, request: web.Request) -> str:
        session_id = request.match_info["session_id"]
        session = self.gateway.sessions.get(session_id)
        if session is None:
            raise ControlError(404, "no such session")
        # Ended and disconnected (it left with 1000, say): no connection will come
        # back to it; one merely lost is waited for (close_session, drop).
        gone = session.conn is None or (session.expired and not session.live.is_set())
        if gone and request.path.endswith(("/close", "/drop")):
            raise ControlError(409, NO_CONNECTION)
        return session_id

    def _user(self, session_id: str) -> str:
        return self.gateway.sessions[session_id].user_id


def _jsonable(data: Any) -> Any:
    """Binary bodies as base64 strings; everything else as it was received."""
    if isinstance(data, (bytes, bytearray)):
        return {"base64": base64.b64encode(bytes(data)).decode()}
    return data


async def _body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except ValueError:
        raise ControlError(400, "the body is not JSON") from None
    if not isinstance(body, dict):
        raise ControlError(400, "the body must be a JSON object")
    return body


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ControlError as exc:
        return web.json_response({"error": str(exc)}, status=exc.status)
    except web.HTTPException as exc:  # an unknown route or method: JSON too, as documented
        if exc.status < 400:
            raise
        why = f"{exc.reason}: {request.method} {request.path}"
        return web.json_response({"error": why}, status=exc.status)
