"""The ``agentguard init`` argument parser (no heavy imports: ``--help`` stays fast)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["add_parser"]


def add_parser(commands: Any) -> None:
    """Register ``init`` on the main parser's subparsers."""
    init = commands.add_parser(
        "init",
        help="write a commented agentguard.toml, a key-encryption key and the store",
        description="Writes a settings file with every section explained, a key-encryption "
        "key (mode 0600, next to the settings file unless --kek-file or --no-kek) and creates "
        "the store the settings name (for SQLite, the database file, mode 0600), then prints "
        "the next commands. All or nothing: it checks everything it can first (the files do "
        "not exist, the store's driver is installed, the settings validate) and removes what "
        "it wrote if a later step fails.",
    )
    init.add_argument(
        "--config",
        type=Path,
        default=Path("agentguard.toml"),
        help="settings file to write (default: %(default)s)",
    )
    init.add_argument(
        "--store",
        help="store URL written into the settings; a relative SQLite path is relative to the "
        "settings file (default: $AGENTGUARD_STORE, else sqlite:///agentguard.db)",
    )
    init.add_argument(
        "--public-origin",
        default="http://127.0.0.1:8080",
        help="the URL agents use to reach the gateway (default: %(default)s)",
    )
    kek = init.add_mutually_exclusive_group()
    kek.add_argument(
        "--kek-file",
        type=Path,
        help="key-encryption key file to create (mode 0600), or to reuse when it exists "
        "(default: agentguard.kek next to the settings file)",
    )
    kek.add_argument(
        "--no-kek",
        action="store_true",
        help="make no key file (give the key in $AGENTGUARD_KEK instead)",
    )
    init.add_argument(
        "--service",
        action="append",
        default=[],
        metavar="NAME=URL",
        help="a vendor API to proxy at /NAME, e.g. crm=https://api.crm.example/v2 (repeatable)",
    )
    init.add_argument(
        "--force",
        action="store_true",
        help="replace an existing settings file (an existing key file is reused, never replaced)",
    )
