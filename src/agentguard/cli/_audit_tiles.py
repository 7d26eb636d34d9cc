"""``agentguard audit export --tiles DIR``: the log as static C2SP tlog-tiles (being built)."""

from __future__ import annotations

import argparse

from agentguard.cli._errors import CommandError

__all__ = ["run"]


def run(args: argparse.Namespace) -> int:
    """Write the tiles (placeholder until the tiles work lands)."""
    raise CommandError("audit export --tiles is not built yet")
