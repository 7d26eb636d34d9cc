"""Which checkpoint note a tiled log serves at ``checkpoint``: the newest, best-signed one.

The sink may hold several notes of the newest size: the checkpointer's own, and the same
checkpoint again with witness cosignatures added. Tile clients want the one with the most
signers they can check, so :func:`served_note` picks, among the notes of ``origin`` that a
trusted log key signed, those of the greatest size, and ranks them by

1. no invalid line under a configured witness key (a client that applies signed-note's "a
   known key's signature that fails rejects the note" would refuse such a note, so a clean
   one wins over it whatever the counts);
2. the number of *distinct* valid signers: trusted log keys whose signature verifies, plus
   configured witness keys with a valid ``cosignature/v1`` line (c2sp.org/tlog-cosignature,
   Ed25519, type 0x04). A key counts once however many lines it has, so repeating a
   cosignature (or a witness's cosignatures at several timestamps) never wins, and a line that
   does not verify counts for nothing.

Reading a note's size never raises: a size line of more than 20 digits is not a checkpoint.
"""

from __future__ import annotations

from collections.abc import Sequence

from agentguard.audit._checkpoints import (
    Checkpoint,
    CheckpointError,
    NoteVerifier,
    _split_note,
    open_checkpoint,
)
from agentguard.audit._cosignatures import WitnessKey

__all__ = ["note_head", "served_note"]

_MAX_SIZE_DIGITS = 20  # 2**64 - 1 has 20 digits


def note_head(note: str) -> tuple[str, int] | None:
    """``(origin, size)`` from a note's first two lines, unverified; ``None`` if unreadable.

    Bounded: a size line that is not 1..20 ASCII digits (or is 2**64 or more) is unreadable,
    never an exception, whatever its length.
    """
    origin, _, rest = note.partition("\n")
    size_text = rest.partition("\n")[0]
    if not origin or not 0 < len(size_text) <= _MAX_SIZE_DIGITS:
        return None
    if not size_text.isascii() or not size_text.isdigit():
        return None
    size = int(size_text)
    return (origin, size) if size < 1 << 64 else None


def _score(
    note: str, origin: str, logs: Sequence[NoteVerifier], witnesses: Sequence[WitnessKey]
) -> tuple[int, bool, int] | None:
    """``(size, clean, distinct valid signers)`` for a trusted note of ``origin``; else None."""
    head = note_head(note)
    if head is None or head[0] != origin:
        return None
    try:
        text, lines = _split_note(note)
        checkpoint = open_checkpoint(note, logs) if logs else Checkpoint.parse(text)
    except (CheckpointError, ValueError):
        return None
    if checkpoint.origin != origin:
        return None
    signers = {(key.name, key.key_id): key for key in logs}
    cosigners = {(key.name, key.key_id): key for key in witnesses}
    valid: set[tuple[str, bytes]] = set()
    clean = True
    for name, ident, signature in lines:
        signer, cosigner = signers.get((name, ident)), cosigners.get((name, ident))
        if signer is not None and signer.verify(text, signature):
            valid.add(("log", signer.public_key))
        elif cosigner is not None:
            if cosigner.verify(text, signature) is None:
                clean = False
            else:
                valid.add(("witness", cosigner.public_key))
    return checkpoint.size, clean, len(valid)


def served_note(
    notes: Sequence[str],
    origin: str,
    log_keys: Sequence[NoteVerifier] = (),
    witness_keys: Sequence[WitnessKey] = (),
) -> str | None:
    """The note to serve: of ``origin``, signed by one of ``log_keys``, greatest size, then no
    invalid line under a witness key, then most distinct valid signers (the first of equals);
    ``None`` when there is none.

    With no ``log_keys`` (a signer that cannot show its public key) a well-formed note of
    ``origin`` counts as signed; clients verify it with the key they hold anyway.
    """
    best: tuple[int, bool, int] | None = None
    chosen: str | None = None
    for note in notes:
        score = _score(note, origin, log_keys, witness_keys)
        if score is not None and (best is None or score > best):
            best, chosen = score, note
    return chosen


def newest_served(
    notes: Sequence[str],
    origin: str,
    log_keys: Sequence[NoteVerifier] = (),
    witness_keys: Sequence[WitnessKey] = (),
    *,
    budget: int = 64,
) -> str | None:
    """:func:`served_note` over a sink's whole content, with bounded verification work.

    Notes are grouped by the size they claim (read without verifying, cheaply); the groups are
    tried from the greatest size down, and at most ``budget`` notes are verified in all, so a
    directory of many thousands of notes (or of untrusted ones) costs a bounded number of
    signature checks. ``None`` if no trusted note is found within the budget.
    """
    groups: dict[int, list[str]] = {}
    for note in notes:
        head = note_head(note)
        if head is not None and head[0] == origin:
            groups.setdefault(head[1], []).append(note)
    for size in sorted(groups, reverse=True):
        group = groups[size][:budget]
        budget -= len(group)
        chosen = served_note(group, origin, log_keys, witness_keys)
        if chosen is not None or budget <= 0:
            return chosen
    return None
