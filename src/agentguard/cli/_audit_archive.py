"""``agentguard audit archive``: export a verified, checkpoint-anchored segment, then drop it.

Exit codes: 0 archived, 1 refused (the log, the checkpoints or the written archive did not
verify, or no signed checkpoint lies below the head; nothing was dropped), 2 usage or
environment error (no store, a store that cannot drop events, no checkpoint directory).
The store must exist; it is opened for writing (rows are deleted) but never created.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import anyio

from agentguard.audit._archive import ArchiveRefused, ArchiveResult, ArchiveUnsupported, archive_to
from agentguard.audit._sinks import DirectoryCheckpointSink
from agentguard.cli._target import Access, open_target, settings_for
from agentguard.errors import ConfigurationError
from agentguard.storage._protocols import StorageError

__all__ = ["run"]


def _vkeys(args: argparse.Namespace) -> list[str]:
    keys = list(args.vkey)
    if args.vkeys_file is not None:
        text = Path(args.vkeys_file).read_text(encoding="utf-8")
        keys += [line.strip() for line in text.splitlines() if line.strip()]
    return keys


def _notes(directory: Path | None) -> list[str]:
    if directory is None:
        raise ConfigurationError("archive needs --checkpoints: the signed notes anchor it")
    if not directory.is_dir():
        raise ConfigurationError(f"checkpoint directory {directory} does not exist")
    return DirectoryCheckpointSink(directory)._notes()


async def _archive(args: argparse.Namespace, notes: list[str], origin: str) -> ArchiveResult:
    async with open_target(args, Access.EXISTING, settings_for(args)) as (store, _):
        return await archive_to(
            store, args.out, notes=notes, vkeys=_vkeys(args), origin=origin, size=args.size
        )


def run(args: argparse.Namespace) -> int:
    """Run ``agentguard audit archive``; print what was archived, or why not."""
    try:
        origin = args.origin or os.environ.get("AGENTGUARD_AUDIT_ORIGIN")
        if not origin:
            raise ConfigurationError(
                "archive needs the log's origin: pass --origin or set AGENTGUARD_AUDIT_ORIGIN"
            )
        notes = _notes(args.checkpoints)
        result = anyio.run(_archive, args, notes, origin)
    except ArchiveUnsupported as error:
        print(f"agentguard audit archive: {error}", file=sys.stderr)
        return 2
    except ArchiveRefused as error:
        print(f"agentguard audit archive: refused: {error}", file=sys.stderr)
        return 1
    except (ConfigurationError, StorageError, OSError, ValueError) as error:
        print(f"agentguard audit archive: {error}", file=sys.stderr)
        return 2
    print(
        f"archived seq {result.first_seq}..{result.size - 1} to {result.directory} "
        f"({result.dropped} events dropped from the store; anchored at size {result.size})"
    )
    return 0
