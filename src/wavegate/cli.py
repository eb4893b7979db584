"""The ``wavegate`` command: ``demo``, ``serve`` and ``bench``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import Sequence


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wavegate", description="Resilient websocket connections to real-time gateways."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo",
        help="a voice client rides out a scripted fault storm, then an encrypted (DAVE) call",
    )
    only = demo.add_mutually_exclusive_group()
    only.add_argument("--core", action="store_true", help="only the core Websocket tour")
    only.add_argument("--storm", action="store_true", help="only the fault storm")
    only.add_argument("--call", action="store_true", help="only the encrypted call")
    serve = commands.add_parser("serve", help="run the fake Discord voice gateway v8")
    serve.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)"
    )
    serve.add_argument(
        "--port", type=int, default=8765, help="port (default 8765; 0 = any free port)"
    )
    serve.add_argument("--heartbeat", type=float, default=5.0, help="heartbeat interval in seconds")
    serve.add_argument(
        "--replay-size", type=int, default=256, help="messages kept per session for resume"
    )
    serve.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    serve.add_argument(
        "--dave-optional",
        action="store_true",
        help="accept clients without DAVE (default: close them with 4017, as Discord does)",
    )
    bench = commands.add_parser("bench", help="a short benchmark (the full suite is `make bench`)")
    bench.add_argument("--messages", type=int, default=100_000, help="messages per throughput run")
    bench.add_argument("--rounds", type=int, default=3, help="rounds (medians are reported)")
    return parser


async def _serve(args: argparse.Namespace) -> int:
    from .testing.voice import FakeVoiceGateway

    gateway = FakeVoiceGateway(
        heartbeat_interval=args.heartbeat,
        replay_size=args.replay_size,
        host=args.host,
        port=args.port,
        require_dave=not args.dave_optional,
    )
    dave = "optional" if args.dave_optional else "required (4017 without it)"
    async with gateway:
        print(f"fake voice gateway v8 listening on {gateway.url}", flush=True)
        print(
            f"  (heartbeat {args.heartbeat * 1000:.0f} ms; DAVE {dave}; Ctrl-C to stop)",
            flush=True,
        )
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.Event().wait(), args.duration)
    return 0


def _install_uvloop() -> None:
    """Use uvloop when it is installed; it is never required."""
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()


async def _demo(args: argparse.Namespace) -> int:
    from .demo import core_tour, storm
    from .demo_call import call

    if args.core:
        return await core_tour(sys.stdout)
    failed = 0
    if not args.call:
        failed |= await storm(sys.stdout)
    if not args.storm:
        failed |= await call(sys.stdout)
    return failed


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = _parser().parse_args(argv)
    _install_uvloop()
    try:
        if args.command == "demo":
            return asyncio.run(_demo(args))
        if args.command == "serve":
            return asyncio.run(_serve(args))
        if args.command == "bench":
            from .bench import run

            return run(sys.stdout, messages=args.messages, rounds=args.rounds)
    except KeyboardInterrupt:
        return 130
    return 2  # pragma: no cover - argparse rejects unknown commands
