"""Options every operator command shares (no heavy imports: ``--help`` stays fast)."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["json_option", "target_options"]


def target_options(parser: argparse.ArgumentParser) -> None:
    """``--config`` and ``--store``: which settings file, or which store directly."""
    parser.add_argument(
        "--config",
        type=Path,
        help="settings file (default: $AGENTGUARD_CONFIG, else ./agentguard.toml if present)",
    )
    parser.add_argument(
        "--store",
        help="store URL, overriding the settings "
        "(default: $AGENTGUARD_STORE, else sqlite:///agentguard.db)",
    )


def json_option(parser: argparse.ArgumentParser) -> None:
    """``--json``: one JSON document on stdout instead of text."""
    parser.add_argument("--json", action="store_true", help="machine-readable output")
