"""Signed checkpoints, published where the log's own database cannot roll them back.

A hash chain shows edits in the middle of a log, not the loss of its tail: every prefix of a
valid chain is valid. A signed checkpoint (origin, size, Merkle root) that someone outside the
database keeps turns truncation and rollback into findings. The :class:`Checkpointer` extends an
RFC 6962 compact range with the entries appended since its last run, re-checks their chain
links, signs a C2SP tlog-checkpoint note and hands it to a :class:`CheckpointSink`.

Before it signs, it proves the log still extends what it already vouched for: the newest
checkpoint of its origin in the sink (size ``m``, root ``r``) must be a prefix of the log, i.e.
the log must hold at least ``m`` entries and the Merkle root of its first ``m`` must be ``r``
(computed from the log itself). A restored database snapshot, a rollback or a fork fails that
test; the checkpointer then signs nothing, logs a CRITICAL alert, and stays unhealthy
(:attr:`Checkpointer.healthy`, which the gateway's ``/readyz`` reports) until it is restarted.

It never trusts a stored hash. Every entry it reads is hashed again from its canonical bytes and
must link to the *recomputed* hash of the entry before it. What it read before is checked again
at every checkpoint: the entry it read last is re-read and re-hashed (so a replaced head whose
``hash`` column was set back to the old value is a fork, not a continuation), and by default the
whole prefix it read is re-read and its Merkle root re-derived from the bodies, so rewriting any
old event after it was read, even at the same length, is refused before anything more is
signed. That full re-read is O(n) per checkpoint (about 5 µs per event on SQLite: 0.5 s at 100k
events); ``reverify_every=k`` does it on every k-th checkpoint only, and a rewrite of an old
entry is then caught within k checkpoints instead of at the next one.

Only the checkpointer needs the signing key; the request path never does.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

import anyio

from agentguard.audit._chain import GENESIS_PREV, AuditEntry, leaf_hash, verify_chain
from agentguard.audit._checkpoints import (
    Checkpoint,
    CheckpointError,
    NoteVerifier,
    Signer,
    open_checkpoint,
    sign_checkpoint,
)
from agentguard.audit._checkpoints import _split_note as split_note
from agentguard.audit._merkle import CompactRange
from agentguard.audit._prefix import ArchivedPrefix, check_prefix
from agentguard.audit._sinks import (
    CheckpointSink,
    DirectoryCheckpointSink,
    MemoryCheckpointSink,
    note_size,
)
from agentguard.errors import AgentGuardError, UsageError

if TYPE_CHECKING:
    from agentguard.audit._witness import WitnessClient
    from agentguard.audit._witnessing import LogProofs, Witnesses
    from agentguard.storage._protocols import AuditStore

__all__ = [
    "ChainBroken",
    "CheckpointRefused",
    "CheckpointSink",
    "Checkpointer",
    "DirectoryCheckpointSink",
    "LogForked",
    "MemoryCheckpointSink",
]

logger = logging.getLogger("agentguard.audit")

_KEPT_ROOTS = 64


class CheckpointRefused(AgentGuardError, RuntimeError):
    """The checkpointer would not sign this log; nothing was published."""


class ChainBroken(CheckpointRefused):
    """The log the checkpointer was about to sign does not chain; nothing was signed."""


class LogForked(CheckpointRefused):
    """The log does not extend a checkpoint already signed (restored snapshot, rollback, fork)."""


class Checkpointer:
    """Signs checkpoints of an :class:`AuditStore` and publishes them.

    Args:
        store: the log.
        signer: the checkpoint key (``Ed25519Signer``, or a KMS-backed :class:`Signer`).
        origin: the log's name in every note, e.g. ``"audit.example.com/agentguard/prod"``.
        sink: where notes go.
        batch: how many entries to read per round trip while catching up.
        vkeys: further keys whose notes of ``origin`` in the sink are trusted (the previous
            key during a rotation). The signer's own key is trusted when it has a ``vkey()``.
            A note of ``origin`` that no trusted key signed makes the checkpointer refuse.
        reverify_every: re-read the whole prefix already read (re-deriving its root from the
            event bodies) on every ``reverify_every``-th checkpoint; 1, the default, re-reads
            it before every signature. The entry read last is re-hashed every time regardless.
        witnesses: C2SP tlog-witness clients each new checkpoint is offered to; the note they
            cosign is published to ``sink`` too (see :attr:`witnesses`, whose ``run()`` must
            be started as a background task, as the gateway does).
        witness_quorum: cosignatures a checkpoint needs to count as witnessed (at least 1).

    Attributes:
        healthy: ``False`` once a checkpoint was refused (see :attr:`problem`); it stays so.
        witnesses: the :class:`~agentguard.audit._witnessing.Witnesses` pool, or ``None``.
    """

    def __init__(
        self,
        store: AuditStore,
        signer: Signer,
        origin: str,
        sink: CheckpointSink,
        *,
        batch: int = 4096,
        vkeys: Sequence[str] = (),
        reverify_every: int = 1,
        witnesses: Sequence[WitnessClient] = (),
        witness_quorum: int = 1,
    ) -> None:
        if reverify_every < 1:
            raise UsageError("reverify_every is a number of checkpoints, at least 1")
        self.store = store
        self.signer = signer
        self.origin = origin
        self.sink = sink
        self.batch = batch
        self._verifiers = [NoteVerifier.from_vkey(v) for v in vkeys]
        own = getattr(signer, "vkey", None)
        if callable(own):
            self._verifiers.append(NoteVerifier.from_vkey(str(own())))
        self._range = CompactRange()
        self._last_hash = GENESIS_PREV
        self._last_note: str | None = None
        self._roots: dict[int, bytes] = {}
        self._refusal: CheckpointRefused | None = None
        self._reverify_every = reverify_every
        self._rounds = 0
        self._prefix: ArchivedPrefix | None = None
        self.witnesses: Witnesses | None = None
        self._proofs: LogProofs | None = None
        if witnesses:
            from agentguard.audit._witnessing import LogProofs, Witnesses

            self._proofs = LogProofs(store, batch)
            self.witnesses = Witnesses(witnesses, witness_quorum, sink, self._proofs.proof)

    @property
    def last_note(self) -> str | None:
        """The log-signed note this checkpointer last published (or returned again), if any."""
        return self._last_note

    @property
    def healthy(self) -> bool:
        """Whether every checkpoint so far was signed (no fork, rollback or broken chain)."""
        return self._refusal is None

    @property
    def problem(self) -> str | None:
        """Why the checkpointer refused to sign, or ``None`` while healthy."""
        return None if self._refusal is None else str(self._refusal)

    async def check(self) -> None:
        """Raise the refusal again if a checkpoint was refused: a readiness probe.

        The gateway's ``/readyz`` runs it, so a forked or rolled-back log turns it 503.
        """
        if self._refusal is not None:
            raise type(self._refusal)(str(self._refusal))

    def _remember(self) -> None:
        self._roots[self._range.size] = self._range.root()
        while len(self._roots) > _KEPT_ROOTS:
            del self._roots[next(iter(self._roots))]

    async def _check_read(self, full: bool) -> None:
        """Refuse if the log lost or replaced entries this checkpointer already read.

        The entry read last is re-read and hashed again from its body; with ``full``, so is
        every entry before it, and the Merkle root of them must be the one computed when they
        were first read (and chain-checked).
        """
        size = self._range.size
        if size == 0:
            return
        head: AuditEntry | None = await self.store.head()
        length = 0 if head is None else head.seq + 1
        if length < size:
            raise LogForked(
                f"the log shrank from {size} to {length} entries since this checkpointer read it "
                "(rolled back or restored from an older snapshot)"
            )
        prefix = self._prefix
        if prefix is not None and size == prefix.size:  # what was read last is archived now
            if prefix.last_hash != self._last_hash or prefix.compact().root() != self._range.root():
                raise LogForked(
                    f"the archived prefix of size {size} is not the log this checkpointer read"
                )
            return
        last = await self.store.read(size - 1, size)
        if len(last) != 1 or last[0].seq != size - 1:
            raise LogForked(f"the entry at seq {size - 1}, read before, is gone (a rollback)")
        if not hmac.compare_digest(leaf_hash(last[0].body), self._last_hash):
            raise LogForked(
                f"the entry at seq {size - 1} was replaced since it was read (a fork): its body "
                "no longer hashes to what this checkpointer read"
            )
        if last[0].hash != self._last_hash:
            raise ChainBroken(f"refusing to sign: seq {size - 1}: its stored hash was rewritten")
        if full:
            await self._reread(size)

    async def _reread(self, size: int) -> None:
        """Re-derive the root of the first ``size`` entries from their bodies; refuse on change."""
        compact = CompactRange() if self._prefix is None else self._prefix.compact()
        while compact.size < size:
            start = compact.size
            entries = await self.store.read(start, min(size, start + self.batch))
            if not entries:
                raise LogForked(
                    f"the log lost entries from seq {start} on since this checkpointer read them"
                )
            leaves = [leaf_hash(entry.body) for entry in entries]
            for offset, (entry, leaf) in enumerate(zip(entries, leaves, strict=True)):
                if entry.seq != start + offset:
                    raise LogForked(f"seq {start + offset} was read before and is now missing")
                if entry.hash != leaf:
                    raise LogForked(
                        f"seq {entry.seq}, read before, was rewritten: its body no longer hashes "
                        "to its stored hash"
                    )
            compact.extend(leaves)
        if not hmac.compare_digest(compact.root(), self._range.root()):
            raise LogForked(
                f"the log's first {size} entries, read before, no longer have the root they had: "
                "entries were rewritten or replaced after they were read (a fork)"
            )

    async def _catch_up(self, stop_at: int | None) -> None:
        """Read and chain-check new entries; record the root at ``stop_at`` on the way."""
        if stop_at == self._range.size:
            self._remember()
        while True:
            start = self._range.size
            stop = start + self.batch
            if stop_at is not None and start < stop_at < stop:
                stop = stop_at
            entries = await self.store.read(start, stop)
            if not entries:
                return
            broken = verify_chain(entries, prev=self._last_hash)
            if broken is not None or entries[0].seq != start:
                seq = broken.seq if broken is not None else start
                problem = broken.problem if broken is not None else "unexpected first seq"
                if seq == start and start > 0 and "broken link" in problem:
                    raise LogForked(
                        f"seq {seq} does not extend the entry at seq {start - 1} that was read "
                        "before: the log was rolled back and rewritten (a fork)"
                    )
                raise ChainBroken(f"refusing to sign: seq {seq}: {problem}")
            # verify_chain re-hashed every body and found it equal to the stored hash.
            if self._proofs is not None:  # the roots witnesses' proofs are built from
                self._proofs.feed(start, [entry.hash for entry in entries])
            self._range.extend([entry.hash for entry in entries])
            self._last_hash = entries[-1].hash
            if self._range.size == stop_at:
                self._remember()

    async def _root_at(self, size: int) -> bytes:
        """The Merkle root of the log's first ``size`` entries, read again from the log."""
        known = self._roots.get(size)
        if known is not None:
            return known
        compact, prev = CompactRange(), GENESIS_PREV
        if self._prefix is not None:
            compact, prev = self._prefix.compact(), self._prefix.last_hash
        while compact.size < size:
            entries = await self.store.read(compact.size, min(size, compact.size + self.batch))
            if not entries or verify_chain(entries, prev=prev) is not None:
                raise LogForked(f"the log's first {size} entries changed while being read")
            leaves = [leaf_hash(entry.body) for entry in entries]
            compact.extend(leaves)
            prev = leaves[-1]
        return compact.root()

    def _open(self, note: str) -> Checkpoint | None:
        """The checkpoint in ``note`` if it is of this origin; refuse on an untrusted one."""
        head = note_size(note)
        if head is not None and head[0] != self.origin:
            return None
        try:
            if self._verifiers:
                return open_checkpoint(note, self._verifiers)
            # A Signer that cannot show its public key: the note's text is all there is.
            return Checkpoint.parse(split_note(note)[0])
        except CheckpointError as exc:
            raise CheckpointRefused(
                f"the sink holds a note of {self.origin} that cannot be trusted: {exc}"
            ) from None

    async def _newest_notes(self) -> list[str]:
        finder = getattr(self.sink, "newest", None)
        notes: list[str] = (
            await finder(self.origin) if callable(finder) else await self.sink.notes()
        )
        return notes

    async def _recent_notes(self) -> list[str]:
        """The sink's newest notes of this origin, a bounded number (for the witness pool)."""
        from agentguard.audit._witnessing import LOAD_LIMIT

        finder = getattr(self.sink, "recent", None)
        if callable(finder):
            notes: list[str] = await finder(self.origin, LOAD_LIMIT)
            return notes
        return await self.sink.notes()

    def _trusted(self, note: str) -> bool:
        """Whether ``note`` is a checkpoint of this origin signed by a trusted key."""
        try:
            return self._open(note) is not None
        except CheckpointRefused:
            return False

    async def _newest(self) -> list[Checkpoint]:
        """The sink's checkpoints of this origin at the greatest size (verified)."""
        notes = await self._newest_notes()
        found = [cp for note in notes if (cp := self._open(note)) is not None]
        top = max((cp.size for cp in found), default=None)
        return [cp for cp in found if cp.size == top]

    async def _prove_extends(self, newest: list[Checkpoint]) -> None:
        """Refuse unless the log's tree at each newest checkpoint's size has its root."""
        for checkpoint in newest:
            size = checkpoint.size
            if size > self._range.size:
                raise LogForked(
                    f"the log has {self._range.size} entries but the sink already holds a signed "
                    f"checkpoint of size {size}: the log was truncated or restored from an older "
                    "snapshot"
                )
            prefix = self._prefix
            if prefix is not None and size < prefix.size:
                found = check_prefix(prefix, {size: checkpoint.root})
                if found.failures or found.matched != size:
                    problem = (found.failures or found.warnings)[0]
                    raise LogForked(
                        f"cannot prove the log extends the newest checkpoint: {problem}"
                    )
                continue
            root = self._range.root() if size == self._range.size else await self._root_at(size)
            if not hmac.compare_digest(root, checkpoint.root):
                raise LogForked(
                    f"the log's first {size} entries do not have the root of the signed "
                    f"checkpoint of size {size}: the log forked (an older snapshot was restored "
                    "and written to, or entries were rewritten)"
                )

    async def _load_prefix(self) -> None:
        """Start from the store's archived prefix, if it dropped one (``AuditArchiveStore``)."""
        finder = getattr(self.store, "archived_prefix", None)
        prefix: ArchivedPrefix | None = await finder() if callable(finder) else None
        self._prefix = prefix
        if prefix is None or self._range.size >= prefix.size:
            return
        if self._range.size:  # archived past what this checkpointer read: prove the jump
            found = check_prefix(prefix, self._roots)
            if found.failures:
                raise LogForked(
                    f"the archived prefix does not extend what was read: {found.failures[0]}"
                )
        self._range, self._last_hash = prefix.compact(), prefix.last_hash
        self._remember()

    async def _sign(self) -> str:
        await self._load_prefix()
        before = self._range.size
        newest = await self._newest()
        self._rounds += 1
        await self._check_read(full=self._rounds % self._reverify_every == 0)
        await self._catch_up(newest[0].size if newest else None)
        await self._prove_extends(newest)
        if self._last_note is not None and self._range.size == before:
            if self.witnesses is not None and not self.witnesses.done(self._range.size):
                self.witnesses.offer(self._last_note)  # a witness failed: try it again
            return self._last_note
        note = sign_checkpoint(
            Checkpoint(origin=self.origin, size=self._range.size, root=self._range.root()),
            [self.signer],
        )
        if self.witnesses is not None and not self.witnesses.loaded:
            await self.witnesses.load(await self._recent_notes(), self._trusted)
        await self.sink.publish(self._range.size, note)
        self._remember()
        self._last_note = note
        if self.witnesses is not None:  # cosigned in the background, never waited for here
            self.witnesses.offer(note)
        return note

    async def checkpoint(self) -> str:
        """Sign and publish a checkpoint of the log as it is now; return the note.

        If nothing was appended since the last checkpoint, the last note is returned again
        without publishing a duplicate. Raises :class:`LogForked` (the log does not extend the
        newest checkpoint of this origin in the sink, or what this checkpointer read before)
        or :class:`ChainBroken` (new entries do not chain) rather than sign; after either,
        :attr:`healthy` is ``False`` and every later call refuses too.
        """
        await self.check()
        try:
            return await self._sign()
        except CheckpointRefused as refusal:
            self._refusal = refusal
            logger.critical(
                "AUDIT ALERT: refusing to sign a checkpoint of %s: %s; the gateway reports "
                "not ready until the log is investigated and the checkpointer restarted",
                self.origin,
                refusal,
            )
            raise

    async def run(self, every: float = 1.0) -> None:
        """Checkpoint every ``every`` seconds until cancelled."""
        while True:
            await self.checkpoint()
            await anyio.sleep(every)

    def __repr__(self) -> str:
        return f"Checkpointer(origin={self.origin!r}, size={self._range.size})"
