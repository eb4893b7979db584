"""The ``wavegate`` command: ``demo``, ``serve`` and ``bench``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import Sequence

from .serve import add_arguments as add_serve_arguments
from .serve import serve


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
    add_serve_arguments(serve)
    bench = commands.add_parser("bench", help="a short benchmark (the full suite is `make bench`)")
    bench.add_argument("--messages", type=int, default=100_000, help="messages per throughput run")
    bench.add_argument("--rounds", type=int, default=3, help="rounds (medians are reported)")
    return parser


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
            return asyncio.run(serve(args))
        if args.command == "bench":
            from .bench import run

            return run(sys.stdout, messages=args.messages, rounds=args.rounds)
    except KeyboardInterrupt:
        return 130
    except ImportError as exc:
        # A missing extra: its message names it (pip install 'wavegate[...]').
        print(f"wavegate {args.command}: {exc}", file=sys.stderr)
        return 1
    return 2  # pragma: no cover - argparse rejects unknown commands
