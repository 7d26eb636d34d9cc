"""The whole-log verifier as it was before streaming: kept as the oracle for differential tests.

A frozen copy of ``agentguard.audit._verify.verify_log`` (re-canonicalising every entry, one
in-memory pass). ``tests/unit/test_audit_verify_stream.py`` checks that the streaming verifier
gives the identical report on random logs, tampering and checkpoint sets.
"""

from __future__ import annotations

import hashlib
import json
from binascii import b2a_base64
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from agentguard.audit import (
    AuditEntry,
    Category,
    Checkpoint,
    CheckpointError,
    Finding,
    NoteVerifier,
    VerifyReport,
    open_checkpoint,
)
from agentguard.audit._chain import GENESIS_PREV
from agentguard.audit._events import MAX_SAFE_INT, canonical_json
from agentguard.audit._merkle import CompactRange
from agentguard.audit._prefix import ArchivedPrefix, check_prefix
from agentguard.audit._verify import fork_detail, origin_detail, rejected_detail

__all__ = ["verify_log"]


def _b64(digest: bytes) -> str:
    return b2a_base64(digest, newline=False).decode("ascii")


def _short(digest: object) -> str:
    return digest.hex()[:8] + "…" if isinstance(digest, bytes) else repr(digest)[:16]


class _NotCanonical(ValueError):
    pass


def _reject(_: str) -> object:
    raise _NotCanonical


def _safe_int(text: str) -> int:
    value = int(text)
    if not -MAX_SAFE_INT <= value <= MAX_SAFE_INT:
        raise _NotCanonical
    return value


# Canonical bodies hold no floats, no NaN/Infinity and only safe ints; anything else takes the
# slow path, where canonical_json gives the verdict.
_decode = json.JSONDecoder(parse_float=_reject, parse_int=_safe_int, parse_constant=_reject).decode
_encode = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, check_circular=False
).encode
_sha256 = hashlib.sha256
_MAX_HEADS = 16


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

    finding: int  # index into _Walk.findings; replaced on resolution
    category: Category  # what the finding becomes if resolved
    seq: int  # the suspect entry's seq
    displaced: int  # the seq expected where the suspect appeared
    head_b64: str  # the chain head before the suspect
    hash_b64: str  # the suspect entry's hash
    ttl: int  # entries left before the finding stands


@dataclass
class _Walk:
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
        self.heads[_b64(digest)] = seq
        if len(self.heads) > _MAX_HEADS:
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
        head_b64 = _b64(self.head)
        if seq == self.expected:
            if not intact or prev_field == head_b64 or prev_field in self.heads:
                self.follow(seq, digest)
                return
            at = self.expected - 1 if self.expected > 0 else seq
            detail = f"its hash is not the prev that seq {seq} names"
            index = self.add(Category.MODIFIED, at, detail)
            self.suspect = _Suspect(index, Category.INSERTED, seq, seq, head_b64, _b64(digest), 1)
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
                    _b64(digest),
                    _MAX_HEADS,
                )
        else:
            self.add(Category.INSERTED, seq, f"a second entry claims seq {seq}")
            self.set_aside(seq, digest)
            return
        self.follow(seq, digest)


def _open(
    checkpoints: Sequence[str | Checkpoint],
    vkeys: Sequence[str],
    origin: str | None,
    walk: _Walk,
) -> dict[int, bytes]:
    """The trusted checkpoints as ``{size: root}``; bad ones become findings."""
    verifiers = [NoteVerifier.from_vkey(v) for v in vkeys]
    trusted: dict[int, bytes] = {}
    for item in checkpoints:
        if isinstance(item, Checkpoint):
            checkpoint = item
        elif not verifiers:
            raise ValueError("signed checkpoints need the verifier keys (vkeys) to check them")
        else:
            try:
                checkpoint = open_checkpoint(item, verifiers)
            except CheckpointError as exc:
                walk.add(Category.BAD_SIGNATURE, None, rejected_detail(exc))
                continue
        if origin is not None and checkpoint.origin != origin:
            walk.add(Category.BAD_SIGNATURE, None, origin_detail(checkpoint.origin, origin))
            continue
        known = trusted.setdefault(checkpoint.size, checkpoint.root)
        if known != checkpoint.root:
            detail = f"two signed checkpoints at size {checkpoint.size} with different roots"
            walk.add(Category.FORK, max(checkpoint.size - 1, 0), detail)
    return trusted


def verify_log(
    entries: Iterable[AuditEntry],
    checkpoints: Sequence[str | Checkpoint] = (),
    vkeys: Sequence[str] = (),
    *,
    origin: str | None = None,
    prefix: ArchivedPrefix | None = None,
) -> VerifyReport:
    """Verify ``entries`` (the whole log from seq 0, in order) against ``checkpoints``.

    Args:
        entries: sealed entries as stored, e.g. ``await store.read()`` or an export.
        checkpoints: signed note texts (checked against ``vkeys``) or already trusted
            :class:`Checkpoint` values. Hand over the newest you hold: older ones cannot reveal
            a truncation after them.
        vkeys: trusted verifier keys, configured out of band (never read from the log).
        origin: if set, checkpoints for any other origin are rejected.
        prefix: the tree hashes a store kept of the events it archived; ``entries`` then
            start at ``prefix.size``. Checkpoints inside the prefix are checked with its
            consistency proofs (:func:`~agentguard.audit._prefix.check_prefix`).

    Raises ``ValueError`` only for configuration errors (a malformed vkey, signed notes without
    vkeys); problems with the log or the checkpoints are findings in the report.
    """
    walk = _Walk()
    trusted = _open(checkpoints, vkeys, origin, walk)
    sizes = sorted(trusted)
    compact = CompactRange()
    matched = 0
    expected, head = 0, GENESIS_PREV
    if prefix is not None:
        found = check_prefix(prefix, trusted)
        for problem in found.failures:
            walk.add(Category.FORK, prefix.size - 1, problem)
        for problem in found.warnings:
            walk.add(Category.ARCHIVED_UNCHECKED, None, problem)
        matched = found.matched
        compact, expected, head = prefix.compact(), prefix.size, prefix.last_hash
    pending = iter([s for s in sizes if s > compact.size or (s == 0 and prefix is None)])
    next_size = next(pending, -1)

    def check(size: int) -> int:
        """Compare the root at ``size``; return the next checkpoint size (-1: none)."""
        nonlocal matched
        if compact.root() == trusted[size]:
            matched = size
        else:
            later = [f.seq for f in walk.findings if f.seq is not None and f.seq >= matched]
            walk.add(Category.FORK, min(later, default=matched), fork_detail(size, matched))
        return next(pending, -1)

    if next_size == 0:
        next_size = check(0)
    decode, encode, sha256 = _decode, _encode, _sha256
    head_b64 = _b64(head)
    clean = True
    for entry in entries:
        body = entry.body
        if clean and type(body) is bytes and entry.seq == expected:
            digest = sha256(b"\x00" + body).digest()
            if digest == entry.hash:
                try:
                    obj = decode(body.decode())
                except (ValueError, RecursionError):
                    obj = None
                if (
                    type(obj) is dict
                    and obj.get("prev") == head_b64
                    and obj.get("seq") == expected
                    and type(obj["seq"]) is int
                    and body.isascii()
                    and encode(obj).encode() == body
                ):
                    compact.append(digest)
                    head, head_b64 = digest, b2a_base64(digest, newline=False).decode()
                    expected += 1
                    if compact.size == next_size:
                        next_size = check(next_size)
                    continue
        walk.expected, walk.head = expected, head
        compact.append(walk.slow(entry))
        expected, head = walk.expected, walk.head
        head_b64, clean = _b64(head), walk.suspect is None
        if compact.size == next_size:
            next_size = check(next_size)
    return _report(walk.findings, compact, sizes, matched)


def _report(
    findings: list[Finding], compact: CompactRange, sizes: list[int], matched: int
) -> VerifyReport:
    size = compact.size
    if sizes and sizes[-1] > size:
        detail = f"log size {size} < signed checkpoint size {sizes[-1]}"
        findings.append(Finding(Category.TRUNCATED, size, detail))
    if size > matched and not any(not f.warning for f in findings):
        detail = (
            f"seq {matched}..{size - 1} are covered by no signed checkpoint"
            if sizes
            else "no signed checkpoint was given"
        )
        findings.append(Finding(Category.UNANCHORED_TAIL, matched, detail))
    unique: dict[tuple[Category, int | None], Finding] = {}
    for finding in findings:
        unique.setdefault((finding.category, finding.seq), finding)
    ordered = sorted(unique.values(), key=lambda f: (f.seq is None, f.seq or 0))
    failures = [f for f in ordered if not f.warning]
    return VerifyReport(
        ok=not failures,
        size=size,
        root=compact.root(),
        findings=ordered,
        first=failures[0] if failures else None,
        anchored=size == matched,
        anchored_size=matched,
    )
