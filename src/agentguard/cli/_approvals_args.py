"""The ``agentguard approvals`` argument parser (no heavy imports: ``--help`` stays fast)."""

from __future__ import annotations

from typing import Any

from agentguard.cli._common_args import json_option, target_options

__all__ = ["add_parser"]

STATES = ("pending", "approved", "denied", "consumed", "expired")


def add_parser(commands: Any) -> None:
    """Register ``approvals`` and its subcommands on the main parser's subparsers."""
    approvals = commands.add_parser(
        "approvals",
        help="list, show, approve and deny calls held for a human's approval",
        description="A route rule with approval = true holds matching calls until an operator "
        "approves or denies them; the agent's retry then runs once. Every decision is "
        "recorded in the audit log (approval.decide) with the operator's name.",
    )
    sub = approvals.add_subparsers(dest="approvals_command", metavar="SUBCOMMAND", required=True)

    listing = sub.add_parser("list", help="list approvals, newest first")
    target_options(listing)
    listing.add_argument(
        "--status", choices=STATES, help="only approvals in this state (expired included)"
    )
    listing.add_argument("--user", help="only this user's approvals")
    listing.add_argument(
        "--limit", type=int, default=100, help="at most this many (1-1000, %(default)s)"
    )
    json_option(listing)

    show = sub.add_parser("show", help="one approval, with the call it holds")
    target_options(show)
    show.add_argument("approval_id", metavar="ID")
    json_option(show)

    for name, text in (("approve", "let the held call run once"), ("deny", "refuse it")):
        decide = sub.add_parser(name, help=text)
        target_options(decide)
        decide.add_argument("approval_id", metavar="ID")
        decide.add_argument(
            "--as",
            dest="operator_name",
            metavar="NAME",
            help="the operator recorded as deciding (default: your login name)",
        )
        json_option(decide)
