"""The hash chain: sealing an event at its position, and checking a run of sealed entries.

``event_hash = SHA-256(0x00 || canonical_bytes)``: the RFC 6962 leaf hash, so the chain and a
Merkle tree over the same events agree by construction. Each body names the previous event's
hash in ``prev`` and its own position in ``seq``; the first event's ``prev`` is 32 zero bytes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass

from agentguard.audit._events import AuditEvent

__all__ = ["GENESIS_PREV", "AuditEntry", "ChainBreak", "leaf_hash", "seal", "verify_chain"]

GENESIS_PREV = bytes(32)


def leaf_hash(body: bytes) -> bytes:
    """The RFC 6962 leaf hash of an event's canonical bytes."""
    return hashlib.sha256(b"\x00" + body).digest()


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """An event at its place in the log: position, hash, and the exact canonical bytes."""

    seq: int
    hash: bytes
    body: bytes

    def event(self) -> dict[str, object]:
        """The decoded JSON body."""
        decoded: dict[str, object] = json.loads(self.body)
        return decoded


def seal(event: AuditEvent, seq: int, prev: bytes) -> AuditEntry:
    """Place ``event`` at ``seq`` after the entry whose hash is ``prev``."""
    body = event.canonical(seq, binascii.b2a_base64(prev, newline=False).decode("ascii"))
    return AuditEntry(seq, hashlib.sha256(b"\x00" + body).digest(), body)


def _json_object(body: bytes) -> dict[str, object] | None:
    """``body`` decoded if it is a JSON object; ``None`` for anything else, never an exception."""
    try:
        decoded = json.loads(body)
    except (ValueError, RecursionError):  # bad JSON or UTF-8; nesting too deep
        return None
    return decoded if isinstance(decoded, dict) else None


@dataclass(frozen=True, slots=True)
class ChainBreak:
    """The first place a run of entries stops being one unbroken chain."""

    seq: int
    problem: str


def verify_chain(entries: Iterable[AuditEntry], prev: bytes = GENESIS_PREV) -> ChainBreak | None:
    """Check hashes, positions and links of ``entries`` (in order); ``None`` if all hold.

    ``prev`` is the hash the first entry must link to (zeros for a log that starts at 0).
    The break names the first bad entry's ``seq`` and a problem starting with ``modified``
    (hash differs from the body), ``malformed`` (body is not a JSON object), ``reordered``
    (body ``seq`` differs from the entry's), ``missing`` (at the seq that should come next)
    or ``broken link`` (``prev`` differs). A chain alone cannot show a truncated or rewritten
    tail: that takes a signed checkpoint.
    """
    expected_seq: int | None = None
    for entry in entries:
        digest = leaf_hash(entry.body)
        if digest != entry.hash:
            return ChainBreak(entry.seq, "modified: stored hash does not match the body")
        body = _json_object(entry.body)
        if body is None:
            return ChainBreak(entry.seq, "malformed: body is not a JSON object")
        seq = body.get("seq")
        # type(): json gives True for `true` and 1.0 for `1.0`, and both compare equal to 1.
        if type(seq) is not int or seq != entry.seq:
            return ChainBreak(entry.seq, "reordered: body seq differs from its position")
        if expected_seq is not None and entry.seq != expected_seq:
            return ChainBreak(expected_seq, "missing: sequence gap")
        if body.get("prev") != _b64(prev):
            return ChainBreak(entry.seq, "broken link: prev is not the previous event's hash")
        prev = digest  # the recomputed hash, never the stored column
        expected_seq = entry.seq + 1
    return None
