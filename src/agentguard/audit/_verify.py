"""Verify an audit log: one streaming pass over sealed entries, checked against signed checkpoints.

Each entry's stored bytes are hashed and must match its stored hash; its body must be the
canonical form of itself; its ``seq`` must continue the sequence and its ``prev`` must name the
previous event's hash. The hashes feed a :class:`~agentguard.audit._merkle.CompactRange`, whose
root at each checkpoint's size must equal the signed root. A log shorter than a signed checkpoint
was truncated; a log whose prefix root differs was rolled back or forked. Events after the newest
checkpoint are reported as an unanchored tail: a warning, because nothing outside the database
vouches for them yet, so deleting them would go unnoticed.

The report names the **first bad seq** and a :class:`Category`. Findings after the first are
best-effort diagnostics: once the log is broken, later categories can be consequences of the
first. ``verify_log`` never raises on malformed entries; it reports them.

Given witness vkeys and a quorum, the newest signed checkpoint must also carry valid
``cosignature/v1`` cosignatures (C2SP tlog-cosignature) from at least that many of those
witnesses, counted over every note of that checkpoint: fewer is an ``UNWITNESSED`` failure, and
a cosignature under a given witness key that does not verify is a ``BAD-SIGNATURE``.
"""

from __future__ import annotations

import dataclasses
import hashlib
from binascii import b2a_base64
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from agentguard.audit._canonical_check import canonical_link, template_leaves
from agentguard.audit._chain import GENESIS_PREV, AuditEntry
from agentguard.audit._checkpoints import (
    BadSignature,
    Checkpoint,
    CheckpointError,
    NoteVerifier,
    UnknownKey,
    open_checkpoint,
)
from agentguard.audit._merkle import HASH_SIZE, CompactRange
from agentguard.audit._prefix import ArchivedPrefix, check_prefix
from agentguard.audit._rows import entry_from_row, exact_columns
from agentguard.audit._verify_report import Category, Finding, VerifyReport, witness_summary
from agentguard.audit._verify_walk import Walk
from agentguard.errors import UsageError

if TYPE_CHECKING:
    from agentguard.audit._verify_store import PageLeaves

__all__ = [
    "Category",
    "Finding",
    "LogVerifier",
    "VerifyReport",
    "fast_path_leaves",
    "verify_log",
]


_sha256 = hashlib.sha256
_FLUSH = 4096  # leaf hashes held before they go into the compact range
_RUN = 256  # rows checked at once by feed_rows (below the collector's first threshold, 700)


def rejected_detail(error: CheckpointError) -> str:
    """A rejected note's finding text: a bad signature, an unknown key and a malformed note
    are different things (only the first means a trusted key's signature failed)."""
    if isinstance(error, BadSignature):
        return f"checkpoint rejected, a bad signature: {error}"
    if isinstance(error, UnknownKey):
        return (
            "checkpoint not checked: it carries no signature from a given key (an unknown "
            "key, not a bad signature)"
        )
    return f"checkpoint rejected, a malformed note: {error}"


def origin_detail(found: str, expected: str) -> str:
    """The finding text of a trusted note of another log."""
    return (
        f"checkpoint of another log: origin {found!r}, not {expected!r} (signed by a given "
        "key, but it vouches for that log only)"
    )


def fork_detail(size: int, matched: int) -> str:
    """The finding text of a root that differs; the change lies after the last match."""
    return (
        f"root at size {size} differs from the signed checkpoint: an event in seq "
        f"{matched}..{size - 1} differs from the signed history"
    )


def _open(
    checkpoints: Sequence[str | Checkpoint],
    vkeys: Sequence[str],
    origin: str | None,
    walk: Walk,
    notes: dict[int, list[str]] | None = None,
) -> dict[int, bytes]:
    """The trusted checkpoints as ``{size: root}``; bad ones become findings.

    ``notes``, if given, receives the trusted note texts by size.
    """
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
        if notes is not None and isinstance(item, str) and known == checkpoint.root:
            notes.setdefault(checkpoint.size, []).append(item)
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
    witnesses: Sequence[str] = (),
    quorum: int | None = None,
) -> VerifyReport:
    """Verify ``entries`` (the whole log from seq 0, in order) against ``checkpoints``.

    Args:
        entries: sealed entries as stored, e.g. ``await store.read()`` or an export. Any
            iterable: it is read once, entry by entry, and never held (a generator over pages
            verifies a log of any size in constant memory; see :func:`verify_store`).
        checkpoints: signed note texts (checked against ``vkeys``) or already trusted
            :class:`Checkpoint` values. Hand over the newest you hold: older ones cannot reveal
            a truncation after them.
        vkeys: trusted verifier keys, configured out of band (never read from the log).
        origin: if set, checkpoints for any other origin are rejected.
        prefix: the tree hashes a store kept of the events it archived; ``entries`` then
            start at ``prefix.size``. Checkpoints inside the prefix are checked with its
            consistency proofs (:func:`~agentguard.audit._prefix.check_prefix`).
        witnesses: trusted witness ``cosignature/v1`` vkeys; with them, the newest checkpoint
            must carry valid cosignatures from ``quorum`` of them (default 1).
        quorum: how many of ``witnesses`` must have cosigned the newest checkpoint.

    Raises ``ValueError`` only for configuration errors (a malformed vkey, signed notes without
    vkeys, a quorum larger than the witnesses given); problems with the log or the checkpoints
    are findings in the report.
    """
    verifier = LogVerifier(
        checkpoints, vkeys, origin=origin, prefix=prefix, witnesses=witnesses, quorum=quorum
    )
    verifier.feed(entries)
    return verifier.finish()


class LogVerifier:
    """:func:`verify_log` fed in pieces: ``feed`` pages of entries in order, then ``finish``.

    It keeps O(log n) state (the chain head, a compact range, the findings), so a caller
    streams a log of any size from a store or a file. ``feed_bodies`` takes the lines of an
    export, whose hashes are those of their bytes, and hashes each line once; ``feed_rows``
    takes an SQL store's rows as stored, without building an entry per row.
    """

    def __init__(
        self,
        checkpoints: Sequence[str | Checkpoint] = (),
        vkeys: Sequence[str] = (),
        *,
        origin: str | None = None,
        prefix: ArchivedPrefix | None = None,
        witnesses: Sequence[str] = (),
        quorum: int | None = None,
    ) -> None:
        required = (1 if witnesses else 0) if quorum is None else quorum
        if witnesses and required < 1:
            raise UsageError("a witness quorum is at least 1 when witnesses are given")
        if not 0 <= required <= len(witnesses):
            raise UsageError(
                f"a witness quorum of {required} needs at least that many witness vkeys "
                f"({len(witnesses)} given)"
            )
        walk = self._walk = Walk()
        notes: dict[int, list[str]] = {}
        trusted = self._trusted = _open(checkpoints, vkeys, origin, walk, notes)
        self._witness: dict[str, object] | None = None
        if required:
            self._witness, unwitnessed = witness_summary(notes, trusted, witnesses, required)
            walk.findings.extend(unwitnessed)
        self._sizes = sorted(trusted)
        self._compact = CompactRange()
        self._matched = 0
        self._expected, self._head = 0, GENESIS_PREV
        if prefix is not None:
            found = check_prefix(prefix, trusted)
            for problem in found.failures:
                walk.add(Category.FORK, prefix.size - 1, problem)
            for problem in found.warnings:
                walk.add(Category.ARCHIVED_UNCHECKED, None, problem)
            self._matched = found.matched
            self._compact = prefix.compact()
            self._expected, self._head = prefix.size, prefix.last_hash
        size = self._compact.size
        self._pending = iter([s for s in self._sizes if s > size or (s == 0 and prefix is None)])
        self._next = next(self._pending, -1)
        self._clean = True
        if self._next == 0:
            self._check(0)

    @property
    def position(self) -> int:
        """How many entries (including an archived prefix) have been fed so far."""
        return self._compact.size

    def _check(self, size: int) -> None:
        """Compare the root at ``size`` with the signed one; move on to the next size."""
        if self._compact.root() == self._trusted[size]:
            self._matched = size
        else:
            matched = self._matched
            later = [f.seq for f in self._walk.findings if f.seq is not None and f.seq >= matched]
            self._walk.add(Category.FORK, min(later, default=matched), fork_detail(size, matched))
        self._next = next(self._pending, -1)

    def feed(self, entries: Iterable[AuditEntry]) -> None:
        """Verify the next ``entries`` of the log, in order."""
        self._run(entries, False)

    def feed_bodies(self, bodies: Iterable[bytes]) -> None:
        """Verify the next entries given as their bytes only (an export's lines).

        Same as ``feed`` with ``AuditEntry(position, leaf_hash(body), body)`` for each.
        """
        self._run(bodies, True)

    def feed_rows(self, rows: Sequence[Sequence[object]]) -> None:
        """Verify the next entries given as stored rows ``(seq, hash, body)``, in order.

        Same as ``feed([entry_from_row(row) for row in rows])``
        (:func:`agentguard.audit._rows.entry_from_row`, what an SQL store's ``read`` does), for
        the rows of :meth:`~agentguard.storage._protocols.AuditRowStore.read_rows`. Runs of
        rows of the stored types that all pass the fast path are checked a run at a time
        (:func:`~agentguard.audit._canonical_check.template_leaves`); from the first run that
        does not, the rows are fed entry by entry, exactly as ``feed``.
        """
        done = self._fast_rows(rows) if self._clean else 0
        if done < len(rows):
            self._run(map(entry_from_row, rows[done:]), False)

    def take_page(self, page: PageLeaves | None) -> bool:
        """Append a page whose leaf hashes a worker computed ahead
        (:mod:`agentguard.audit._verify_store`), if this verifier may; whether it did.

        It may when its state is clean, it expects the page's first seq, and its chain head
        is the stored hash the worker started from: then the page's leaves are exactly those
        :meth:`feed_rows` would append for its rows. Otherwise nothing changes (read and feed
        the page instead).
        """
        if (
            page is None
            or page.leaves is None
            or not page.rows
            or not self._clean
            or page.start != self._expected
            or page.prev != self._head
        ):
            return False
        end = page.start + page.rows
        if (
            page.root is None
            or self._compact.size != page.start  # entries after a gap: its tree is not aligned
            or page.start < self._next < end  # a signed size inside the page: its leaves
        ):
            self._accept(page.split())
            return True
        self._compact.push_subtree(page.root, page.rows)
        self._expected, self._head = end, page.leaves[-HASH_SIZE:]
        if self._next == end:
            self._check(end)
        return True

    def _fast_rows(self, rows: Sequence[Sequence[object]]) -> int:
        """Accept the leading runs of ``rows`` that pass the fast path; return how many rows."""
        accepted = fast_path_leaves(rows, self._expected, self._head)
        if accepted:
            self._accept(accepted)
        return len(accepted)

    def _accept(self, leaves: list[bytes]) -> None:
        """Append the hashes of entries that passed the fast path (at least one), in order,
        checking each signed size they reach as the entry-by-entry loop does."""
        compact = self._compact
        start = compact.size
        end = start + len(leaves)
        while start < self._next <= end:
            compact.extend(leaves[compact.size - start : self._next - start])
            self._check(self._next)
        compact.extend(leaves[compact.size - start :])
        self._expected += len(leaves)
        self._head = leaves[-1]

    def _run(self, items: Iterable[object], from_bytes: bool) -> None:
        # One loop for both sources, with the state in locals: this is the per-event hot path.
        walk, compact, sha256, b64 = self._walk, self._compact, _sha256, b2a_base64
        expected, head, clean, next_size = self._expected, self._head, self._clean, self._next
        size = compact.size
        head_b64 = b64(head, newline=False)
        leaves: list[bytes] = []
        for item in items:
            if from_bytes:
                body: object = item
                seq: object = size
                stored: object = None
            else:
                entry: AuditEntry = item  # type: ignore[assignment]
                body, seq, stored = entry.body, entry.seq, entry.hash
            if clean and type(body) is bytes and seq == expected:
                digest = sha256(b"\x00" + body).digest()
                if (stored is None or digest == stored) and canonical_link(
                    body, head_b64, expected
                ):
                    leaves.append(digest)
                    size += 1
                    head, head_b64 = digest, b64(digest, newline=False)
                    expected += 1
                    if size == next_size or len(leaves) == _FLUSH:
                        compact.extend(leaves)
                        leaves.clear()
                        if size == next_size:
                            self._check(size)
                            next_size = self._next
                    continue
            compact.extend(leaves)
            leaves.clear()
            if from_bytes:
                digest = sha256(b"\x00" + body).digest()  # type: ignore[operator]
                entry = AuditEntry(seq=size, hash=digest, body=body)  # type: ignore[arg-type]
            walk.expected, walk.head = expected, head
            compact.append(walk.slow(entry))
            size += 1
            expected, head = walk.expected, walk.head
            head_b64, clean = b64(head, newline=False), walk.suspect is None
            if size == next_size:
                self._check(size)
                next_size = self._next
        compact.extend(leaves)
        self._expected, self._head, self._clean = expected, head, clean

    def finish(self) -> VerifyReport:
        """The report over everything fed (a missing tail below a checkpoint is TRUNCATED)."""
        report = _report(list(self._walk.findings), self._compact, self._sizes, self._matched)
        if self._witness is None:
            return report
        return dataclasses.replace(report, witness=self._witness)


def fast_path_leaves(rows: Sequence[Sequence[object]], expected: int, head: bytes) -> list[bytes]:
    """The leaf hashes of the leading runs of ``rows`` (of :data:`_RUN` rows each) that pass
    the fast path as the chain's next entries after seq ``expected - 1`` hashed ``head``:
    rows of the stored types, consecutive seqs, each accepted by
    :func:`~agentguard.audit._canonical_check.template_leaves`. Stops at the first run that
    does not pass (those rows are for the entry-by-entry check)."""
    accepted: list[bytes] = []
    for at in range(0, len(rows), _RUN):
        columns = exact_columns(rows[at : at + _RUN])
        if columns is None:
            break
        seqs, hashes, bodies = columns
        if seqs != tuple(range(expected, expected + len(seqs))):
            break
        leaves = template_leaves(bodies, hashes, expected, head)
        if leaves is None:
            break
        accepted += leaves
        expected, head = expected + len(leaves), leaves[-1]
    return accepted


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
