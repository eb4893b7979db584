"""The ``wavegate`` command."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wavegate", description="Resilient websocket connections to real-time gateways."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="scripted faults against an embedded fake gateway")
    demo.add_argument("--core", action="store_true", help="only the core Websocket tour")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = _parser().parse_args(argv)
    if args.command == "demo":
        from .demo import core_tour

        return asyncio.run(core_tour(sys.stdout))
    return 2  # pragma: no cover - argparse rejects unknown commands
