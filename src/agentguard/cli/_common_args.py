"""Options every operator command shares (no heavy imports: ``--help`` stays fast)."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["config_option", "json_option", "target_options"]

CONFIG_HELP = "settings file (default: $AGENTGUARD_CONFIG, else ./agentguard.toml if present)"


def config_option(parser: argparse.ArgumentParser) -> None:
    """``--config`` alone, for commands that need no store (every command accepts it)."""
    parser.add_argument("--config", type=Path, help=CONFIG_HELP + "; this command needs none")


def target_options(parser: argparse.ArgumentParser) -> None:
    """``--config`` and ``--store``: which settings file, or which store directly."""
    parser.add_argument(
        "--config",
        type=Path,
        help=CONFIG_HELP,
    )
    parser.add_argument(
        "--store",
        help="store URL, overriding $AGENTGUARD_STORE and the settings' store.url "
        "(default: sqlite:///agentguard.db)",
    )


def json_option(parser: argparse.ArgumentParser) -> None:
    """``--json``: one JSON document on stdout instead of text."""
    parser.add_argument("--json", action="store_true", help="machine-readable output")
