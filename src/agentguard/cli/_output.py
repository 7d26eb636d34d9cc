"""Printing for the CLI: tables for people, JSON for scripts, progress on stderr."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable

__all__ = ["emit_json", "progress_printer"]


def emit_json(document: object) -> None:
    """Print one JSON document on stdout."""
    print(json.dumps(document, indent=2, sort_keys=True))


def progress_printer(label: str, enabled: bool) -> Callable[[int], None] | None:
    """A callback that rewrites ``label: N`` on stderr when it is a terminal (or forced)."""
    if not enabled:
        return None

    def show(count: int) -> None:
        print(f"\r{label}: {count}", end="", file=sys.stderr, flush=True)

    return show
