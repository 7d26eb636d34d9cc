"""The ``agentguard`` command.

Subcommands are imported only when chosen, so ``agentguard --help`` stays fast: each one has an
``<name>_args.py`` module that only builds its parser and an ``<name>.py`` module with
``run(args) -> int``. Exit codes scripts can rely on: 0 success, 1 refused (an unknown user, a
tampered log, an issuance the live state forbids), 2 usage or environment (argparse's
convention for usage). A command stops early with :class:`~agentguard.cli._errors.CommandError`
(exit code 2) or :class:`~agentguard.cli._errors.CommandRefused` (1); any other
:class:`~agentguard.errors.AgentGuardError` that escapes a command is printed as one line on
stderr with exit code 1; a missing optional dependency anywhere is one line naming the extra
that installs it, exit code 2 (see :mod:`agentguard._extras`).

Every command that touches the store takes ``--config`` and ``--store`` and resolves them the
same way (:mod:`agentguard.cli._target`; docs/configuration.md has the order of precedence).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from agentguard._extras import MissingExtra, missing_extra
from agentguard._version import __version__
from agentguard.cli._errors import CommandError, CommandRefused
from agentguard.errors import AgentGuardError

__all__ = ["main"]

# command name -> module (``agentguard.cli.<module>`` runs it, ``<module>_args`` parses it)
_COMMANDS = {
    "init": "init",
    "serve": "serve",
    "users": "users",
    "workspaces": "workspaces",
    "accounts": "accounts",
    "credentials": "credentials",
    "keys": "keys",
    "approvals": "approvals",
    "operators": "operators",
    "connections": "connections",
    "audit": "audit",
    "db": "db",
}


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
    for module in _COMMANDS.values():
        importlib.import_module(f"agentguard.cli._{module}_args").add_parser(commands)
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
            from agentguard.cli._demo import run

            return run(color=not args.no_color and sys.stdout.isatty())
        module = importlib.import_module(f"agentguard.cli._{_COMMANDS[args.command]}")
        code: int = module.run(args)
        return code
    except ImportError as error:
        missing = missing_extra(error)
        if not isinstance(missing, MissingExtra):
            raise
        print(f"agentguard {args.command}: {missing}", file=sys.stderr)
        return 2
    except (CommandError, CommandRefused) as error:
        print(f"agentguard {args.command}: {error}", file=sys.stderr)
        return error.exit_code
    except AgentGuardError as error:
        print(f"agentguard: {error}", file=sys.stderr)
        return 1
