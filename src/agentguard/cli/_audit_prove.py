"""``agentguard audit prove SEQ``: an inclusion proof of one event under the newest checkpoint."""

from __future__ import annotations

import argparse
import json

import anyio

from agentguard.audit import open_checkpoint, prove_entry, tlog_proof
from agentguard.cli._audit import _entries, _notes, _vkeys
from agentguard.cli._errors import CommandError
from agentguard.cli._output import emit_json

__all__ = ["run"]


def run(args: argparse.Namespace) -> int:
    notes, vkeys = _notes(args.checkpoints), _vkeys(args)
    if not notes or not vkeys:
        raise CommandError("prove needs --checkpoints and a trusted --vkey")
    covering = []
    for note in notes:
        checkpoint = open_checkpoint(note, vkeys)
        if checkpoint.size > args.seq and (args.origin is None or checkpoint.origin == args.origin):
            covering.append((checkpoint.size, note))
    if not covering:
        raise CommandError(f"no signed checkpoint covers seq {args.seq} yet; run audit checkpoint")
    size, note = max(covering)
    entries, prefix = anyio.run(_entries, args)
    if prefix is not None:
        raise CommandError(
            "prove needs every event from seq 0 and this store archived a prefix: prove from "
            "the archive directory's events, or before archiving"
        )
    entries = entries[:size]
    document = prove_entry(entries, args.seq, note)
    if args.tlog:
        print(tlog_proof(document), end="")
        print(json.dumps(document["event"]))
    else:
        emit_json(document)
    return 0
