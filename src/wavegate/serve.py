"""``wavegate serve``: the fake voice gateway on its own, for clients in any language."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
from collections.abc import AsyncIterator
from pathlib import Path

from ._args import count as _count
from ._args import port as _port
from ._args import positive as _positive


def _heartbeat(text: str) -> float:
    """A heartbeat interval in seconds: 1 ms at least, as HELLO gives it in whole ms."""
    value = _positive(text)
    if value < 0.001:
        raise argparse.ArgumentTypeError(f"{text!r} is under 1 ms (HELLO gives it in whole ms)")
    return value


def add_arguments(serve: argparse.ArgumentParser) -> None:
    """The ``serve`` command's options."""
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    serve.add_argument("--port", type=_port, default=8765, help="port (8765; 0 = any free port)")
    serve.add_argument(
        "--heartbeat", type=_heartbeat, default=5.0, help="heartbeat interval in seconds (5)"
    )
    serve.add_argument(
        "--replay-size",
        type=_count,
        default=256,
        help="messages kept per session for resume (256)",
    )
    serve.add_argument(
        "--duration",
        type=_positive,
        metavar="SECONDS",
        help="stop after this many seconds (default: run until Ctrl-C)",
    )
    serve.add_argument(
        "--dave-optional",
        action="store_true",
        help="accept clients without DAVE (default: close them with 4017, as Discord does)",
    )
    serve.add_argument(
        "--channel",
        type=_channel,
        action="append",
        default=[],
        metavar="SERVER=CHANNEL",
        help="the voice channel id (DAVE's MLS group id) of a server id; repeatable "
        "(default: the server id itself)",
    )
    serve.add_argument(
        "--lax",
        action="store_true",
        help="accept what Discord refuses (a URL without v=8, malformed heartbeats...)",
    )
    serve.add_argument(
        "--control-port", type=_port, help="serve the HTTP+JSON control API on 127.0.0.1:PORT"
    )
    serve.add_argument("--tls", action="store_true", help="serve wss:// with a fresh certificate")
    serve.add_argument(
        "--ca-out",
        type=Path,
        metavar="FILE",
        help="with --tls: write the certificate's authority (PEM) to FILE",
    )


class _CannotStart(Exception):
    """What stopped the gateway before it listened, in one line."""


async def serve(args: argparse.Namespace) -> int:
    """Run until ``--duration`` passes or Ctrl-C; 1 with one line on stderr when the
    gateway cannot start (a port in use, a bad address)."""
    if args.ca_out is not None and not args.tls:
        return _fail("--ca-out needs --tls", status=2)  # a usage error
    channels: dict[str, str] = {}
    for server, channel in args.channel:
        if channels.setdefault(server, channel) != channel:
            return _fail(
                f"--channel gives server {server} two channels ({channels[server]} and {channel})",
                status=2,  # a usage error
            )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("serve: %(message)s"))
    logger = logging.getLogger("wavegate.testing")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        async with _running(args):
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.Event().wait(), args.duration)
    except _CannotStart as exc:
        return _fail(str(exc))
    except OSError as exc:
        return _fail(f"cannot start on {args.host}: {exc.strerror or exc}")
    finally:
        logger.removeHandler(handler)
    return 0


@contextlib.asynccontextmanager
async def _running(args: argparse.Namespace) -> AsyncIterator[None]:
    from .testing.control import ControlServer
    from .testing.voice import FakeVoiceGateway

    tls = None
    if args.tls:
        from .testing.tls import loopback_tls

        tls = loopback_tls()
        if args.ca_out is not None:
            try:
                args.ca_out.write_bytes(tls.ca_pem)
            except OSError as exc:
                why = f"cannot write the certificate authority to {args.ca_out}"
                raise _CannotStart(f"{why}: {exc.strerror or exc}") from exc
    gateway = FakeVoiceGateway(
        heartbeat_interval=args.heartbeat,
        replay_size=args.replay_size,
        host=args.host,
        port=args.port,
        require_dave=not args.dave_optional,
        strict=not args.lax,
        channel_ids=dict(args.channel),
        ssl=tls.context if tls is not None else None,
    )
    async with gateway, contextlib.AsyncExitStack() as stack:
        control = None
        if args.control_port is not None:  # before saying "listening": it may fail
            control = ControlServer(gateway, port=args.control_port)
            try:
                await stack.enter_async_context(control)
            except OSError as exc:
                where = f"127.0.0.1:{args.control_port}"
                raise _CannotStart(
                    f"cannot start the control API on {where}: {exc.strerror or exc}"
                ) from exc
        print(f"fake voice gateway v8 listening on {gateway.url}", flush=True)
        if control is not None:
            print(f"control API on {control.url}", flush=True)
        if args.ca_out is not None:
            print(f"certificate authority written to {args.ca_out}", flush=True)
        elif tls is not None:
            print(
                "  (a fresh authority signed its certificate: pass --ca-out FILE to let "
                "clients verify it)",
                flush=True,
            )
        dave = "optional" if args.dave_optional else "required (4017 without it)"
        strict = "lax" if args.lax else "strict"
        print(
            f"  (heartbeat {args.heartbeat * 1000:.0f} ms; DAVE {dave}; {strict}; Ctrl-C to stop)",
            flush=True,
        )
        yield


def _fail(message: str, status: int = 1) -> int:
    print(f"wavegate serve: {message}", file=sys.stderr)
    return status


def _channel(text: str) -> tuple[str, str]:
    server, _, channel = text.partition("=")
    if not (server.isdigit() and channel.isdigit()):
        raise argparse.ArgumentTypeError(f"{text!r} is not SERVER=CHANNEL (two snowflakes)")
    return server, channel
