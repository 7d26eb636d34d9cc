"""The ``agentguard connections`` argument parser (no heavy imports: ``--help`` stays fast)."""

from __future__ import annotations

from typing import Any

from agentguard.cli._common_args import json_option, target_options

__all__ = ["add_parser"]


def _as_option(parser: Any) -> None:
    parser.add_argument(
        "--as",
        dest="operator_name",
        metavar="NAME",
        help="the operator recorded in the audit log (default: your login name)",
    )


def add_parser(commands: Any) -> None:
    """Register ``connections`` and its subcommands on the main parser's subparsers."""
    connections = commands.add_parser(
        "connections",
        help="list users' connected vendor accounts, make connect links, disconnect",
        description='A service with credentials = "connected" acts with each user\'s own vendor '
        "account, connected over OAuth in the browser. These commands list the connections "
        "(never their tokens), make a one-time connect link for a user's human, and "
        "disconnect (revoking at the vendor when it can). Every link and disconnect is "
        "recorded in the audit log with the operator's name.",
    )
    sub = connections.add_subparsers(
        dest="connections_command", metavar="SUBCOMMAND", required=True
    )

    listing = sub.add_parser("list", help="list connections (status, scopes, expiry; no tokens)")
    target_options(listing)
    listing.add_argument("--user", help="only this user's connections")
    listing.add_argument("--service", help="only this service's connections")
    json_option(listing)

    link = sub.add_parser(
        "link",
        help="make a one-time connect link for a user and print it",
        description="Print a one-time link on stdout that lets the user's human connect their "
        "own vendor account for the service. It is a secret: whoever opens it first connects "
        "as that user, so send it to that person only. It expires after [connect] ticket_ttl "
        "(15 minutes by default).",
    )
    target_options(link)
    link.add_argument("--service", required=True, help="a connected service's name")
    link.add_argument("--user", required=True, help="the user whose account is connected")
    _as_option(link)
    json_option(link)

    disconnect = sub.add_parser(
        "disconnect",
        help="delete a user's connection (revoked at the vendor when it can)",
    )
    target_options(disconnect)
    disconnect.add_argument("--service", required=True, help="the service's name")
    disconnect.add_argument("--user", required=True, help="the user whose connection goes")
    _as_option(disconnect)
