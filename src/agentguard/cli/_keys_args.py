"""The ``agentguard keys`` argument parser (no heavy imports: ``--help`` stays fast)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agentguard.cli._common_args import json_option, target_options

__all__ = ["add_parser"]


def add_parser(commands: Any) -> None:
    """Register ``keys`` and its subcommands on the main parser's subparsers."""
    keys = commands.add_parser("keys", help="issue, list and revoke agent keys")
    sub = keys.add_subparsers(dest="keys_command", metavar="SUBCOMMAND", required=True)

    issue = sub.add_parser(
        "issue",
        help="issue keys for a user and write a ready credentials file",
        description="Generate a DPoP key, issue an access/refresh pair bound to it, and write "
        "both keys, the DPoP key and the token endpoint to a private credentials file that "
        "AgentAuth.from_file() loads. Prints key ids only, never a key. The file is created "
        "with mode 0600; its directory may be a normal one of yours (0755) but not one that "
        "others can write to (they could swap the file), and a missing directory is created "
        "0700.",
    )
    target_options(issue)
    issue.add_argument("--user", required=True, help="the user the agent acts for")
    issue.add_argument("--workspace", required=True, help="the workspace the keys belong to")
    issue.add_argument("--out", type=Path, required=True, help="credentials file to create")
    issue.add_argument(
        "--token-url",
        required=True,
        help="token endpoint, e.g. https://api.example.com/oauth/token",
    )
    issue.add_argument("--resource-url", help="only send the keys to URLs under this base")
    issue.add_argument(
        "--audience",
        help="the one resource the keys are for (RFC 8707), e.g. https://api.example.com/mcp; "
        "resource servers that check audiences refuse them elsewhere (default: any resource); "
        "--resource-url defaults to it",
    )
    issue.add_argument("--scope", help="narrow the user's grants, e.g. 'crm:read'")
    issue.add_argument(
        "--bearer", action="store_true", help="issue unbound Bearer keys (no DPoP key)"
    )
    issue.add_argument(
        "--alg", choices=["ES256", "EdDSA"], default="ES256", help="DPoP key type (%(default)s)"
    )
    issue.add_argument("--force", action="store_true", help="replace an existing file")

    listing = sub.add_parser("list", help="list a user's keys (ids and state, never keys)")
    target_options(listing)
    listing.add_argument("--user", required=True)
    json_option(listing)

    revoke = sub.add_parser("revoke", help="revoke by key id, family or user")
    target_options(revoke)
    selector = revoke.add_mutually_exclusive_group(required=True)
    selector.add_argument("--key-id", help="one key")
    selector.add_argument("--family", help="every key of one issuance")
    selector.add_argument("--user", help="every key of one user")
    revoke.add_argument("--reason", default="revoked_by_operator", help="recorded in the audit log")
