"""The ``agentguard workspaces`` argument parser (no heavy imports: ``--help`` stays fast)."""

from __future__ import annotations

from typing import Any

from agentguard.cli._common_args import json_option, target_options

__all__ = ["add_parser"]


def add_parser(commands: Any) -> None:
    """Register ``workspaces`` and its subcommands on the main parser's subparsers."""
    workspaces = commands.add_parser(
        "workspaces",
        help="create workspaces and manage their members",
        description="Keys are issued for a (user, workspace) pair; removing a member stops "
        "the user's keys for that workspace on the next call.",
    )
    sub = workspaces.add_subparsers(dest="workspaces_command", metavar="SUBCOMMAND", required=True)

    add = sub.add_parser("add", help="create a workspace in an existing account")
    target_options(add)
    add.add_argument("workspace", help="workspace id, e.g. sales")
    add.add_argument("--account", required=True)
    add.add_argument("--name", default="")
    json_option(add)

    for name, text in (
        ("add-member", "make a user a member of the workspace"),
        ("remove-member", "remove a user from the workspace (audited)"),
    ):
        member = sub.add_parser(name, help=text)
        target_options(member)
        member.add_argument("workspace")
        member.add_argument("user")
        if name == "remove-member":
            member.add_argument("--reason", default="", help="recorded in the audit log")
