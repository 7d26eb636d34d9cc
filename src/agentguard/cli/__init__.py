"""The ``agentguard`` command.

Subcommands are imported only when chosen, so ``agentguard --help`` stays fast. Any
:class:`~agentguard.errors.AgentGuardError` is printed as one line on stderr with exit code 1;
usage errors exit with 2 (argparse's convention).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from agentguard._version import __version__
from agentguard.errors import AgentGuardError

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agentguard",
        description="Placeholder keys for AI agents, checked live on every call.",
    )
    parser.add_argument("--version", action="version", version=f"agentguard {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = commands.add_parser(
        "demo",
        help="run the whole story in-process and print it",
        description="Issue keys, call a guarded app, refresh, detect reuse, disable a user: "
        "everything in one process on an in-memory store, with nothing to set up.",
    )
    demo.add_argument("--no-color", action="store_true", help="plain output")
    from agentguard.cli import audit_args

    audit_args.add_parser(commands)
    from agentguard.cli import keys_args

    keys_args.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``agentguard`` console script; returns the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        if args.command == "demo":
            from agentguard.cli.demo import run

            return run(color=not args.no_color and sys.stdout.isatty())
        if args.command == "audit":
            from agentguard.cli.audit import run as run_audit

            return run_audit(args)
        if args.command == "keys":
            from agentguard.cli.keys import run as run_keys

            return run_keys(args)
    except AgentGuardError as error:
        print(f"agentguard: {error.description}", file=sys.stderr)
        return 1
    parser.error(f"unknown command {args.command!r}")  # pragma: no cover - argparse refuses first
    return 2  # pragma: no cover
