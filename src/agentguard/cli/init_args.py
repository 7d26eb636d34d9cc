"""The ``agentguard init`` argument parser (no heavy imports: ``--help`` stays fast)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["add_parser"]


def add_parser(commands: Any) -> None:
    """Register ``init`` on the main parser's subparsers."""
    init = commands.add_parser(
        "init",
        help="write a commented agentguard.toml and create the store",
        description="Writes a settings file with every section explained, then creates the "
        "store it names (for SQLite, the database file, mode 0600). Secrets are not written: "
        "the file says which environment variables or 0600 files hold them.",
    )
    init.add_argument(
        "--config",
        type=Path,
        default=Path("agentguard.toml"),
        help="settings file to write (default: %(default)s)",
    )
    init.add_argument(
        "--store",
        default="sqlite:///agentguard.db",
        help="store URL; a relative SQLite path is relative to the settings file "
        "(default: %(default)s)",
    )
    init.add_argument(
        "--public-origin",
        default="http://127.0.0.1:8080",
        help="the URL agents use to reach the gateway (default: %(default)s)",
    )
    init.add_argument(
        "--kek-file",
        type=Path,
        help="also generate a key-encryption key into this new file (mode 0600) and use it",
    )
    init.add_argument("--force", action="store_true", help="replace an existing settings file")
