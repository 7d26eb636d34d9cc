"""The ``agentguard accounts`` argument parser (no heavy imports: ``--help`` stays fast)."""

from __future__ import annotations

from typing import Any

from agentguard.cli._common_args import json_option, target_options

__all__ = ["add_parser"]


def add_parser(commands: Any) -> None:
    """Register ``accounts`` and its subcommands on the main parser's subparsers."""
    accounts = commands.add_parser(
        "accounts",
        help="create, close and reopen accounts",
        description="Closing an account stops every key and refresh under it on the next call.",
    )
    sub = accounts.add_subparsers(dest="accounts_command", metavar="SUBCOMMAND", required=True)

    add = sub.add_parser("add", help="create an account")
    target_options(add)
    add.add_argument("account", help="account id, e.g. acme")
    add.add_argument("--name", default="")
    json_option(add)

    for name, text in (
        ("close", "shut the account down: all its keys stop (audited)"),
        ("reopen", "reopen a closed account"),
    ):
        change = sub.add_parser(name, help=text)
        target_options(change)
        change.add_argument("account")
        change.add_argument("--reason", default="", help="recorded in the audit log")
