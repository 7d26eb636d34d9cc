"""The ``agentguard credentials`` argument parser (no heavy imports: ``--help`` stays fast)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agentguard.cli._common_args import config_option, json_option, target_options

__all__ = ["add_parser"]


def add_parser(commands: Any) -> None:
    """Register ``credentials`` and its subcommands on the main parser's subparsers."""
    credentials = commands.add_parser(
        "credentials",
        help="store real vendor credentials (encrypted) and rotate the encryption key",
        description="Real credentials are encrypted under the key-encryption key "
        "($AGENTGUARD_KEK or secrets.kek_file). No command ever prints one.",
    )
    sub = credentials.add_subparsers(
        dest="credentials_command", metavar="SUBCOMMAND", required=True
    )

    keygen = sub.add_parser(
        "keygen",
        help="create a new key-encryption key file (mode 0600)",
        description="Writes 'ID:base64url(32 random bytes)' to a new file, mode 0600 (never "
        'overwrites one). Name it in the settings: kek_file = "FILE" under [secrets]. Back '
        "it up: stored credentials cannot be decrypted without it.",
    )
    keygen.add_argument("--out", type=Path, required=True, help="file to create")
    keygen.add_argument("--id", default="kek-1", help="key id (default: %(default)s)")
    config_option(keygen)

    put = sub.add_parser(
        "set",
        help="store a credential, read from stdin or a prompt (never from the command line)",
        description="Reads the credential from stdin when it is not a terminal "
        '(printf %%s "$KEY" | agentguard credentials set crm --user alice), else prompts '
        "without echo. A user's credential is forwarded as is; an account's admin credential "
        "is only used to mint user-scoped tokens.",
    )
    target_options(put)
    put.add_argument("service", help="service name, e.g. crm")
    owner = put.add_mutually_exclusive_group(required=True)
    owner.add_argument("--user", help="the user whose credential this is")
    owner.add_argument("--account", help="the account whose credential this is")
    put.add_argument(
        "--scope",
        choices=["user", "admin"],
        help="user: forwarded as is; admin: only used to mint "
        "(default: user for --user, admin for --account)",
    )

    listing = sub.add_parser("list", help="list stored credentials (ids and owners only)")
    target_options(listing)
    listing.add_argument("--service", help="only this service")
    json_option(listing)

    rotate = sub.add_parser(
        "rotate-kek",
        help="re-encrypt every credential and connected account under the primary "
        "key-encryption key",
        description="Put the new key first in AGENTGUARD_KEK and keep the old ones after it "
        "(new:KEY,old:KEY), run this, then drop the old keys. Users' connected accounts are "
        "re-encrypted too; one that does not open is named and the exit code is 1 (keep the "
        "old key until it is resolved). Progress goes to stderr.",
    )
    target_options(rotate)
    json_option(rotate)

    reseal = sub.add_parser(
        "reseal",
        help="re-seal old-format (v1) credentials once you confirm each one's scope",
        description="Credentials stored before seal format v2 did not bind their scope, so "
        "it may have been edited in the database; the gateway refuses them until re-sealed. "
        "Review 'agentguard credentials list' (seal=v1), then confirm each id's scope: "
        "--confirm-admin always applies; --confirm-user is refused for a row stored as "
        "admin (set that credential again instead). On a terminal, unconfirmed rows are "
        "asked about. Also moves every row, and every connected account, under the primary "
        "key-encryption key.",
    )
    target_options(reseal)
    reseal.add_argument(
        "--confirm-admin",
        nargs="+",
        action="extend",
        metavar="ID",
        help="credential ids that are admin-scoped (only used to mint)",
    )
    reseal.add_argument(
        "--confirm-user",
        nargs="+",
        action="extend",
        metavar="ID",
        help="credential ids that are user-scoped (forwarded as is)",
    )
    reseal.add_argument("--no-input", action="store_true", help="never prompt, even on a terminal")
    json_option(reseal)
