"""The ``agentguard db`` argument parser (no heavy imports: ``--help`` stays fast)."""

from __future__ import annotations

from typing import Any

from agentguard.cli._common_args import json_option, target_options

__all__ = ["add_parser"]


def add_parser(commands: Any) -> None:
    """Register ``db`` and its subcommands on the main parser's subparsers."""
    db = commands.add_parser("db", help="create or upgrade the store's schema")
    sub = db.add_subparsers(dest="db_command", metavar="SUBCOMMAND", required=True)
    upgrade = sub.add_parser(
        "upgrade",
        help="create or upgrade the schema (idempotent)",
        description="SQLite: creates the file (0600) and its tables. PostgreSQL: creates or "
        "upgrades the tables in the URL's ?schema= (default agentguard); run it as the role "
        "that should own them. Refuses a schema written by a newer agentguard.",
    )
    target_options(upgrade)
    json_option(upgrade)
