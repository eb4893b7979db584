"""The ``wavegate`` command: ``demo``, ``serve``, ``connect`` and ``bench``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NoReturn

from . import __version__
from ._args import count as _count
from .connect import add_arguments as add_connect_arguments
from .connect import connect, option_problem
from .serve import add_arguments as add_serve_arguments
from .serve import serve

EXAMPLES = """examples:
  wavegate demo                              a fault storm, then an encrypted call
  wavegate serve --port 8765 --control-port 8766 --tls --ca-out ca.pem
  echo '{"op": 3, "d": {"t": 1}}' | wavegate connect --wait 1 'ws://127.0.0.1:8765/?v=8'
  wavegate bench --messages 20000
"""


class _Version(argparse.Action):
    """``--version``: wavegate's version and the transports it can use here (looked
    up only when asked: importing picows is not free)."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        kwargs.setdefault("help", "show the version and the transports, and exit")
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> None:
        sys.stdout.write(version_text())
        parser.exit(0)


def version_text() -> str:
    """What ``wavegate --version`` prints."""
    from .transport import transports

    lines = [f"wavegate {__version__}"]
    for info in transports():
        note = " (default)" if info.default else ""
        lines.append(f"  transport {info.name}: {info.detail}{note}")
    return "\n".join(lines) + "\n"


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line (and where to look), not a usage dump."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="wavegate",
        description="Resilient websocket connections to real-time gateways.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action=_Version)
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    # --debug also after the command; SUPPRESS keeps `wavegate --debug serve` working
    # (a subparser's default would overwrite the value set before the command).
    common = _Parser(add_help=False)
    common.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks on errors"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    _add_commands(commands, common)
    return parser


def _add_commands(commands: Any, common: argparse.ArgumentParser) -> None:

    def command(name: str, summary: str, example: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = commands.add_parser(
            name, parents=[common], help=summary, epilog=f"example: {example}"
        )
        return parser

    demo = command(
        "demo",
        "a voice client rides out a scripted fault storm, then an encrypted (DAVE) call",
        "wavegate demo --storm",
    )
    only = demo.add_mutually_exclusive_group()
    only.add_argument("--core", action="store_true", help="only the core Websocket tour")
    only.add_argument("--storm", action="store_true", help="only the fault storm")
    only.add_argument("--call", action="store_true", help="only the encrypted call")
    add_serve_arguments(
        command(
            "serve",
            "run the fake Discord voice gateway v8",
            "wavegate serve --port 8765 --control-port 8766 --heartbeat 1",
        )
    )
    add_connect_arguments(
        command(
            "connect",
            "an interactive client that resumes and reconnects by policy",
            "wavegate connect --policy discord-gateway wss://gateway.example/",
        )
    )
    bench = command(
        "bench",
        "a short benchmark (the full suite is `make bench`)",
        "wavegate bench --messages 20000 --rounds 1",
    )
    bench.add_argument(
        "--messages", type=_count, default=100_000, help="messages per throughput run"
    )
    bench.add_argument("--rounds", type=_count, default=3, help="rounds (medians are reported)")


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
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    if args.command == "connect" and (problem := option_problem(args)) is not None:
        print(f"wavegate connect: {problem} (see wavegate connect --help)", file=sys.stderr)
        return 2
    _install_uvloop()
    try:
        return _run(args)
    except KeyboardInterrupt:
        return 130
    except ImportError as exc:
        # A missing extra: its message names it (pip install 'wavegate[...]').
        print(f"wavegate {args.command}: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:
        if args.debug:
            raise
        name = type(exc).__name__
        print(
            f"wavegate {args.command}: {name}: {exc} (--debug shows the traceback)", file=sys.stderr
        )
        return 1


def _run(args: argparse.Namespace) -> int:
    if args.command == "demo":
        return asyncio.run(_demo(args))
    if args.command == "serve":
        return asyncio.run(serve(args))
    if args.command == "connect":
        return asyncio.run(connect(args))
    from .bench import run

    with _progress_bar() as progress:
        return run(sys.stdout, messages=args.messages, rounds=args.rounds, progress=progress)


@contextlib.contextmanager
def _progress_bar() -> Iterator[Callable[[str, int, int], None]]:
    """A rich progress bar on stderr when it is a terminal (and rich is installed);
    otherwise nothing, so pipes and logs get only the results."""
    if not sys.stderr.isatty():
        yield lambda what, done, total: None
        return
    try:
        from rich.console import Console
        from rich.progress import Progress
    except ImportError:
        yield lambda what, done, total: None
        return

    console = Console(stderr=True)
    with Progress(console=console, transient=True, redirect_stdout=False) as bar:
        task = bar.add_task("benchmark", total=None)

        def show(what: str, done: int, total: int) -> None:
            bar.update(task, description=what, completed=done, total=total)
            if what == "done":
                bar.stop()  # gone before the results table is printed

        yield show
