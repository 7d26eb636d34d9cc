"""The verifier's slow path: classifying an entry that failed the fast path, and the chain state.

:class:`Walk` keeps what the verifier knows between entries (the next expected ``seq``, the
chain head, recent heads an inserted entry may have displaced, a suspect finding a later entry
may re-classify) and turns one entry that is not simply the chain's next canonical entry into
findings: MODIFIED, NON-CANONICAL, REORDERED, MISSING or INSERTED. The fast path in
:mod:`agentguard.audit._verify` keeps the same state in locals and hands entries here only when
they fail it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

from agentguard.audit._chain import GENESIS_PREV, AuditEntry
from agentguard.audit._events import canonical_json
from agentguard.audit._verify_report import Category, Finding, b64

__all__ = ["MAX_HEADS", "Walk"]

_sha256 = hashlib.sha256
#: How many displaced chain heads (and entries a suspect finding waits for) the walk remembers.
MAX_HEADS = 16


def _short(digest: object) -> str:
    return digest.hex()[:8] + "…" if isinstance(digest, bytes) else repr(digest)[:16]


def _parse(body: object) -> dict[str, object] | None:
    if not isinstance(body, bytes):
        return None
    try:
        obj = json.loads(body)
    except (ValueError, RecursionError):
        return None
    return obj if isinstance(obj, dict) else None


@dataclass
class _Suspect:
    """A tentative finding that a later entry may re-classify (the entry it displaced arrives)."""

    finding: int  # index into Walk.findings; replaced on resolution
    category: Category  # what the finding becomes if resolved
    seq: int  # the suspect entry's seq
    displaced: int  # the seq expected where the suspect appeared
    head_b64: str  # the chain head before the suspect
    hash_b64: str  # the suspect entry's hash
    ttl: int  # entries left before the finding stands


@dataclass
class Walk:
    """The verifier's chain state between entries (the fast path keeps it in locals)."""

    findings: list[Finding] = field(default_factory=list)
    expected: int = 0
    head: bytes = GENESIS_PREV
    heads: dict[str, int] = field(default_factory=dict)
    suspect: _Suspect | None = None

    def add(self, category: Category, seq: int | None, detail: str) -> int:
        self.findings.append(Finding(category, seq, detail))
        return len(self.findings) - 1

    def follow(self, seq: int, digest: bytes) -> None:
        self.expected, self.head = seq + 1, digest

    def set_aside(self, seq: int, digest: bytes) -> None:
        self.heads[b64(digest)] = seq
        if len(self.heads) > MAX_HEADS:
            del self.heads[next(iter(self.heads))]

    def slow(self, entry: AuditEntry) -> bytes:
        """Classify an entry that failed the fast path; return the hash the tree appends."""
        seq, body, stored = entry.seq, entry.body, entry.hash
        computed = _sha256(b"\x00" + body).digest() if isinstance(body, bytes) else None
        obj = _parse(body)
        try:
            canonical = canonical_json(obj) if obj is not None else None
        except ValueError:
            canonical = None
        if not isinstance(seq, int) or isinstance(seq, bool):
            seq = self.expected
        digest = stored if isinstance(stored, bytes) and len(stored) == 32 else computed
        intact = True
        if computed != stored:
            if canonical is not None and _sha256(b"\x00" + canonical).digest() == stored:
                self.add(Category.NON_CANONICAL, seq, "re-serialised; its canonical form matches")
            else:
                detail = f"stored={_short(stored)} recomputed={_short(computed)}"
                self.add(Category.MODIFIED, seq, detail)
                intact = False
        elif canonical != body:
            self.add(Category.NON_CANONICAL, seq, "stored bytes are not in canonical form")
        prev_field: object = None
        if intact and obj is not None:
            body_seq, prev_field = obj.get("seq"), obj.get("prev")
            if type(body_seq) is not int or body_seq != seq:
                self.add(Category.REORDERED, seq, f"stored at seq {seq}, its body says {body_seq}")
                if type(body_seq) is int and body_seq >= 0:
                    seq = body_seq
        digest = digest or bytes(32)
        self._place(seq, digest, prev_field, intact)
        return digest

    def _place(self, seq: int, digest: bytes, prev_field: object, intact: bool) -> None:
        suspect = self.suspect
        if suspect is not None:
            if seq == suspect.displaced and seq < self.expected and prev_field == suspect.head_b64:
                self.findings[suspect.finding] = Finding(
                    suspect.category, seq, f"an entry with seq {suspect.seq} precedes it"
                )
                self.heads[suspect.hash_b64] = suspect.seq
                self.suspect = None
                self.follow(seq, digest)
                return
            suspect.ttl -= 1
            if suspect.ttl <= 0:
                self.suspect = None
        head_b64 = b64(self.head)
        if seq == self.expected:
            if not intact or prev_field == head_b64 or prev_field in self.heads:
                self.follow(seq, digest)
                return
            at = self.expected - 1 if self.expected > 0 else seq
            detail = f"its hash is not the prev that seq {seq} names"
            index = self.add(Category.MODIFIED, at, detail)
            self.suspect = _Suspect(index, Category.INSERTED, seq, seq, head_b64, b64(digest), 1)
        elif seq > self.expected:
            gap = f"{self.expected}..{seq - 1}" if seq - 1 > self.expected else str(seq - 1)
            index = self.add(Category.MISSING, self.expected, f"seq {gap} absent")
            if prev_field != head_b64:
                self.suspect = _Suspect(
                    index,
                    Category.REORDERED,
                    seq,
                    self.expected,
                    head_b64,
                    b64(digest),
                    MAX_HEADS,
                )
        else:
            self.add(Category.INSERTED, seq, f"a second entry claims seq {seq}")
            self.set_aside(seq, digest)
            return
        self.follow(seq, digest)
