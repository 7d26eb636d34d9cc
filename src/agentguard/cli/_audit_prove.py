"""``agentguard audit prove SEQ``: an inclusion proof of one event under the newest checkpoint.

Three forms: the JSON document (default), the ``c2sp.org/tlog-proof@v1`` text on stdout
(``--tlog``), and with ``--out DIR`` the pair a third party verifies in one go: ``SEQ.tlog-proof``
and ``SEQ.event``, the event's exact bytes (its leaf is ``SHA-256(0x00 || those bytes)``).
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import anyio

from agentguard.audit import open_checkpoint, prove_entry, tlog_proof
from agentguard.audit._checkpoints import CheckpointError, NoteVerifier, _split_note
from agentguard.audit._cosignatures import WitnessKey, count_cosignatures
from agentguard.cli._audit import _entries, _notes, _vkeys
from agentguard.cli._errors import CommandError
from agentguard.cli._output import emit_json
from agentguard.cli._target import settings_for

__all__ = ["run"]


def _origin(args: argparse.Namespace) -> str:
    """``--origin``, else ``$AGENTGUARD_AUDIT_ORIGIN``, else the settings' ``audit.origin``."""
    origin: str | None = args.origin or os.environ.get("AGENTGUARD_AUDIT_ORIGIN") or None
    if origin is None:
        settings = settings_for(args)
        origin = settings.audit.origin if settings is not None else None
    if not origin:
        raise CommandError(
            "prove needs the log's origin (a key may sign several logs' checkpoints): pass "
            "--origin or set AGENTGUARD_AUDIT_ORIGIN"
        )
    return origin


def _signers(note: str, witnesses: list[WitnessKey]) -> int:
    """The distinct signers on ``note``: the trusted log key, plus the witnesses whose
    cosignatures verify (given ``--witness``), else every other distinct key on a line."""
    if witnesses:
        return 1 + count_cosignatures([note], witnesses).count()
    _, signatures = _split_note(note)
    return len({(name, ident) for name, ident, _ in signatures})


def _newest(args: argparse.Namespace) -> tuple[int, str]:
    """The checkpoint to prove under: of the notes of the log's origin that a trusted key
    signed, the greatest size covering ``seq``, then the most distinct signers.

    Of two notes of one size (the log's alone, and the same with witness cosignatures), the one
    with more signers carries the cosignatures an auditor's witness quorum needs. Notes of
    another origin, notes no trusted key signed, and notes that fail to verify are skipped.
    """
    notes, vkeys = _notes(args.checkpoints), _vkeys(args)
    if not notes or not vkeys:
        raise CommandError("prove needs --checkpoints and a trusted --vkey")
    origin = _origin(args)
    witnesses = _witness_keys(args)
    verifiers = [NoteVerifier.from_vkey(vkey) for vkey in vkeys]
    covering = []
    for note in notes:
        try:
            checkpoint = open_checkpoint(note, verifiers)
        except CheckpointError:
            continue
        if checkpoint.origin == origin and checkpoint.size > args.seq:
            covering.append((checkpoint.size, _signers(note, witnesses), note))
    if not covering:
        raise CommandError(
            f"no checkpoint of {origin} signed by the given keys covers seq {args.seq} in "
            f"{args.checkpoints}; run audit checkpoint"
        )
    size, _, note = max(covering)
    return size, note


def _witness_keys(args: argparse.Namespace) -> list[WitnessKey]:
    keys = []
    for vkey in getattr(args, "witness", None) or []:
        try:
            keys.append(WitnessKey.from_vkey(vkey))
        except CheckpointError as error:
            raise CommandError(f"--witness {vkey[:40]!r}: {error}") from None
    return keys


def _write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (a reader never sees half a proof)."""
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as sink:
            sink.write(data)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def run(args: argparse.Namespace) -> int:
    if args.seq < 0:
        raise CommandError("seq must be 0 or more")
    size, note = _newest(args)
    entries, prefix = anyio.run(_entries, args)
    if prefix is not None:
        raise CommandError(
            "prove needs every event from seq 0 and this store archived a prefix: prove from "
            "the archive directory's events, or before archiving"
        )
    if len(entries) < size:
        raise CommandError(
            f"the store holds {len(entries)} events, fewer than the checkpoint's {size}"
        )
    try:
        document = prove_entry(entries[:size], args.seq, note)
    except ValueError as error:  # the store's events do not give the signed root: say so
        raise CommandError(f"cannot prove seq {args.seq}: {error}") from None
    if args.out is not None:
        if not args.out.is_dir():
            raise CommandError(f"--out {args.out} is not a directory")
        proof, event = args.out / f"{args.seq}.tlog-proof", args.out / f"{args.seq}.event"
        _write(proof, tlog_proof(document).encode())
        _write(event, entries[args.seq].body)
        print(f"wrote {proof} and {event} (checkpoint size {size})")
    elif args.tlog:
        print(tlog_proof(document), end="")
    else:
        emit_json(document)
    return 0
