"""Audit rows as SQL stores read them, ``(seq, hash, body)``, to entries and to columns.

:func:`entry_from_row` is the one conversion every SQL store's ``read`` uses (and the verifier,
for rows a store hands over raw): a column someone rewrote with another type is kept as data
for the verifier to report, never an error. :func:`exact_columns` gives a page of rows as three
columns when every row already has the types a conversion would produce, so the verifier's
fast path can skip building an entry per row.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from agentguard.audit._chain import AuditEntry

__all__ = ["Columns", "blob", "entry_from_row", "exact_columns"]

Columns = tuple[tuple[int, ...], tuple[bytes, ...], tuple[bytes, ...]]
"""A page of audit rows as ``(seqs, hashes, bodies)``."""


def blob(value: object) -> bytes:
    """Column bytes as stored; a value someone rewrote as text or a number is kept, not fatal."""
    if type(value) is bytes:
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    return str(value).encode("utf-8", "surrogatepass")


def entry_from_row(row: Sequence[Any]) -> AuditEntry:
    """An audit row ``(seq, hash, body)`` as read; tampered types reach the verifier as data."""
    return AuditEntry(seq=int(row[0]), hash=blob(row[1]), body=blob(row[2]))


def exact_columns(rows: Sequence[Sequence[Any]]) -> Columns | None:
    """``rows`` as ``(seqs, hashes, bodies)`` if each row is exactly ``(int, bytes, bytes)``.

    For such rows :func:`entry_from_row` changes nothing: ``AuditEntry(*row)`` is its result.
    ``None`` for any other row (another type, a subclass, another length) and for no rows.
    Meant for a few hundred rows at a time (it makes an iterator per row).
    """
    if not rows:
        return None
    try:
        seqs, hashes, bodies = zip(*rows, strict=True)
    except (TypeError, ValueError):  # rows of other or unequal lengths, or not sequences
        return None
    if (
        set(map(type, seqs)) == {int}
        and set(map(type, hashes)) == {bytes}
        and set(map(type, bodies)) == {bytes}
    ):
        return seqs, hashes, bodies
    return None
