"""The ``agentguard operators`` argument parser (no heavy imports: ``--help`` stays fast)."""

from __future__ import annotations

from typing import Any

from agentguard.cli._common_args import json_option, target_options

__all__ = ["add_parser"]


def add_parser(commands: Any) -> None:
    """Register ``operators`` and its subcommands on the main parser's subparsers."""
    operators = commands.add_parser(
        "operators",
        help="issue, list and revoke operator tokens (for the operator listener)",
        description="Operator tokens (ag_op_...) authenticate people and tools on the operator "
        "listener (agentguard serve, [operator] in the settings: loopback by default). Only "
        "their SHA-256 is stored; agent keys are never accepted there.",
    )
    sub = operators.add_subparsers(dest="operators_command", metavar="SUBCOMMAND", required=True)

    issue = sub.add_parser(
        "issue",
        help="create an operator token and print it once",
        description="Print a new operator token on stdout, once: it cannot be shown again. "
        "Its id and expiry go to stderr (with --json, everything is one document on stdout).",
    )
    target_options(issue)
    issue.add_argument("--name", required=True, help="who or what uses it, e.g. alice or ci")
    issue.add_argument(
        "--ttl", type=int, metavar="SECONDS", help="expire after this long (default: never)"
    )
    json_option(issue)

    listing = sub.add_parser("list", help="list operator tokens (ids and state, never tokens)")
    target_options(listing)
    json_option(listing)

    revoke = sub.add_parser("revoke", help="revoke an operator token by id")
    target_options(revoke)
    revoke.add_argument("operator_id", metavar="ID")
