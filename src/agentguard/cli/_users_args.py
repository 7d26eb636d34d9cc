"""The ``agentguard users`` argument parser (no heavy imports: ``--help`` stays fast)."""

from __future__ import annotations

from typing import Any

from agentguard.cli._common_args import json_option, target_options

__all__ = ["add_parser"]


def add_parser(commands: Any) -> None:
    """Register ``users`` and its subcommands on the main parser's subparsers."""
    users = commands.add_parser(
        "users",
        help="add, disable, enable users and change their grants",
        description="Users own agent keys; their grants are the ceiling of every key. Changes "
        "take effect on the next call, and each is recorded in the audit log.",
    )
    sub = users.add_subparsers(dest="users_command", metavar="SUBCOMMAND", required=True)

    add = sub.add_parser("add", help="create a user in an existing account")
    target_options(add)
    add.add_argument("user", help="user id, e.g. alice")
    add.add_argument("--account", required=True, help="the account the user belongs to")
    add.add_argument("--name", default="", help="display name")
    add.add_argument(
        "--grants",
        action="append",
        default=[],
        metavar="SERVICE:LEVEL",
        help="initial grants, e.g. 'crm:read projects:write' (repeatable)",
    )
    add.add_argument(
        "--workspace", action="append", default=[], help="make the user a member (repeatable)"
    )
    json_option(add)

    for name, text in (("disable", "stop every key of the user at once"), ("enable", "undo it")):
        toggle = sub.add_parser(name, help=text)
        target_options(toggle)
        toggle.add_argument("user")
        toggle.add_argument("--reason", default="", help="recorded in the audit log")
        if name == "disable":
            toggle.add_argument(
                "--revoke-keys",
                action="store_true",
                help="also revoke the user's keys (so enabling again does not revive them)",
            )

    grant = sub.add_parser(
        "grant",
        help="set the user's level on services: users grant alice crm:write",
        description="Set the user's level on one or more services, written service:level as "
        "in --grants and OAuth scopes (crm:read, crm:write; crm:none removes). The older form "
        "'users grant alice crm write' is accepted.",
    )
    target_options(grant)
    grant.add_argument("user")
    grant.add_argument("grants", nargs="+", metavar="SERVICE:LEVEL", help="e.g. crm:write")

    revoke = sub.add_parser("revoke-grant", help="remove the user's access to services")
    target_options(revoke)
    revoke.add_argument("user")
    revoke.add_argument("services", nargs="+", metavar="SERVICE", help="service name, e.g. crm")

    listing = sub.add_parser("list", help="list users with their state and grants")
    target_options(listing)
    listing.add_argument("--account", help="only this account's users")
    json_option(listing)
