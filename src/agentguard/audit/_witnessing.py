"""Getting checkpoints cosigned, off the request path: the checkpointer's witness pool.

The :class:`~agentguard.audit.Checkpointer` hands every new signed note to
:meth:`Witnesses.offer`, which only records it. :meth:`Witnesses.run` (a background task the
gateway starts) runs one loop per witness: each submits the newest offered note it has not
cosigned yet, backs off on its own after a failure, and publishes what it got to the checkpoint
sink (the log's signature line plus every cosignature collected for that checkpoint) as soon as
it has it. A slow or failing witness delays nothing but its own cosignature: checkpoints keep
being signed, and the other witnesses go on with the newest note (older pending notes are
skipped: witnesses only need the newest).

Consistency proofs come from a shared source (:class:`~agentguard.audit._witness_proofs.
LogProofs` in the checkpointer: cached chunk roots), computed once per ``(old, new)`` for all
witnesses and outside any witness's HTTP deadline.

:attr:`Witnesses.newest` is the newest checkpoint that reached the quorum, and when by *our*
clock (the time the quorum was verified here; a cosignature timestamp more than
:data:`FUTURE_SKEW` seconds ahead of our clock is valid but never makes a checkpoint look
fresh): ``/readyz`` reports its age.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import anyio

from agentguard.audit._checkpoints import CheckpointError, _split_note
from agentguard.audit._cosignatures import add_cosignatures, check_distinct, count_cosignatures
from agentguard.audit._sinks import CheckpointSink, note_size
from agentguard.audit._witness import ProofSource, WitnessClient, WitnessResult
from agentguard.audit._witness_proofs import LogProofs, store_consistency_proof

__all__ = [
    "FUTURE_SKEW",
    "LogProofs",
    "WitnessedCheckpoint",
    "Witnesses",
    "store_consistency_proof",
]

logger = logging.getLogger("agentguard.audit")

FUTURE_SKEW = 300.0
"""Seconds a cosignature may be dated ahead of our clock and still count as fresh."""
_ROUNDS = 8  # checkpoint sizes whose collected cosignatures are kept
_PROOFS = 16
LOAD_LIMIT = 256
"""Notes :meth:`Witnesses.load` looks at, newest first, to find the newest witnessed one."""


@dataclass(frozen=True, slots=True)
class WitnessedCheckpoint:
    """The newest checkpoint with a quorum of cosignatures: its size, witnesses and time."""

    size: int
    witnesses: tuple[str, ...]
    at: float  # POSIX seconds by our clock: when the quorum was verified (clamped at load)


def _size(text: bytes) -> int:
    return int(text.split(b"\n", 2)[1])


class Witnesses:
    """The witnesses a checkpointer submits to, and the quorum that makes a note witnessed.

    Args:
        clients: one :class:`WitnessClient` per witness; two with one name or one public key
            are refused (:class:`~agentguard.errors.UsageError`): they would count twice.
        quorum: cosignatures a checkpoint needs to count as witnessed (at least 1 here).
        sink: where cosigned notes are published.
        proof: the log's consistency proofs (:meth:`LogProofs.proof`).
        clock: POSIX time now (tests).
    """

    def __init__(
        self,
        clients: Sequence[WitnessClient],
        quorum: int,
        sink: CheckpointSink,
        proof: ProofSource,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        check_distinct([client.key for client in clients])
        self.clients = list(clients)
        self.quorum = max(1, quorum)
        self.sink = sink
        self.proof = proof
        self.clock = clock
        self.newest: WitnessedCheckpoint | None = None
        self.last_cosigned: str | None = None
        """The cosigned note of the greatest size this pool published, if any."""
        self._last_cosigned_size = -1
        self.loaded = False
        self._results: dict[str, WitnessResult] = {}
        self._note: str | None = None
        self._changed: anyio.Event | None = None  # created by run(), inside the event loop
        self._rounds: OrderedDict[int, tuple[str, list[str]]] = OrderedDict()
        self._proofs: OrderedDict[tuple[int, int], list[bytes]] = OrderedDict()
        self._proof_lock = anyio.Lock()
        self._publish_lock = anyio.Lock()

    def __repr__(self) -> str:
        return f"Witnesses({len(self.clients)} witnesses, quorum={self.quorum})"

    @property
    def last_results(self) -> tuple[WitnessResult, ...]:
        """Each witness's last submission outcome, in configuration order."""
        return tuple(self._results[c.name] for c in self.clients if c.name in self._results)

    def offer(self, note: str) -> None:
        """Queue ``note`` for every witness (replacing an older queued one); returns at once."""
        self._note = note
        changed = self._changed
        if changed is not None:  # wake every witness's loop; later offers wake the next event
            self._changed = anyio.Event()
            changed.set()

    def age(self, now: float | None = None) -> float | None:
        """Seconds since the newest witnessed checkpoint reached the quorum, or None."""
        if self.newest is None:
            return None
        return max(0.0, (self.clock() if now is None else now) - self.newest.at)

    def done(self, size: int) -> bool:
        """Whether every witness cosigned the checkpoint of ``size`` (or a later one)."""
        return all(client.size is not None and client.size >= size for client in self.clients)

    def failing(self) -> list[str]:
        """The names of the witnesses whose last submission failed."""
        return [client.name for client in self.clients if client.failing]

    async def load(
        self, notes: Sequence[str], trusted: Callable[[str], bool] = lambda note: True
    ) -> None:
        """Recover :attr:`newest` from the sink's notes at startup.

        Looks at the checkpoints in ``notes`` from the greatest size down (at most
        :data:`LOAD_LIMIT`, past newer ones not cosigned yet) and keeps the first that reached
        the quorum; only notes ``trusted`` accepts (the log's signature and origin) count.
        Its time is the quorum's cosignature time, never later than our clock.
        """
        self.loaded = True
        if self.newest is not None or not notes:
            return
        keys = [client.key for client in self.clients]
        by_text: dict[bytes, list[str]] = {}
        for note in notes:
            try:
                text, _ = _split_note(note)
                _size(text)
            except (CheckpointError, ValueError, IndexError):
                continue
            by_text.setdefault(text, []).append(note)
        ordered = sorted(by_text, key=lambda text: (_size(text), text), reverse=True)
        now = self.clock()
        for text in ordered[:LOAD_LIMIT]:
            mine = [note for note in by_text[text] if trusted(note)]
            if not mine:
                continue
            try:
                tally = count_cosignatures(mine, keys, text)
            except CheckpointError:
                continue
            reached = tally.reached_at(self.quorum, not_after=now + FUTURE_SKEW)
            if reached is not None:
                self.newest = WitnessedCheckpoint(_size(text), tally.valid, min(now, reached))
                return

    async def _proof(self, old: int, new: int) -> list[bytes]:
        """One proof per ``(old, new)``, shared by every witness that needs it."""
        key = (old, new)
        async with self._proof_lock:
            if key not in self._proofs:
                self._proofs[key] = list(await self.proof(old, new))
                while len(self._proofs) > _PROOFS:
                    self._proofs.popitem(last=False)
            return self._proofs[key]

    async def _submit(self, client: WitnessClient, note: str, publish: bool = True) -> None:
        """One submission; keeps its lines, and publishes them at once with ``publish``."""
        result = await client.submit(note, self._proof)
        self._results[client.name] = result
        if result.ok:
            text, _ = _split_note(note)
            size = _size(text)
            kept = self._rounds.setdefault(size, (note, []))[1]
            kept.extend(line for line in result.lines if line not in kept)
            while len(self._rounds) > _ROUNDS:
                self._rounds.popitem(last=False)
            if publish:
                await self._publish(size)

    async def _publish(self, size: int) -> str:
        """Publish the note of ``size`` with every cosignature kept; update :attr:`newest`."""
        async with self._publish_lock:
            note, kept = self._rounds[size]
            cosigned = add_cosignatures(note, kept)
            await self.sink.publish(size, cosigned)
            if size >= self._last_cosigned_size:
                self.last_cosigned, self._last_cosigned_size = cosigned, size
            now = self.clock()
            tally = count_cosignatures([cosigned], [client.key for client in self.clients])
            reached = tally.reached_at(self.quorum, not_after=now + FUTURE_SKEW)
            newest = self.newest
            if reached is not None and (newest is None or size > newest.size):
                self.newest = WitnessedCheckpoint(size, tally.valid, now)
            elif reached is not None and newest is not None and size == newest.size:
                self.newest = WitnessedCheckpoint(size, tally.valid, newest.at)
            elif reached is None:
                logger.log(
                    logging.WARNING if tally.meets(self.quorum) else logging.INFO,
                    "checkpoint of size %d has %d of the %d cosignatures required%s",
                    size,
                    tally.count(),
                    self.quorum,
                    " (some dated in the future)" if tally.meets(self.quorum) else " so far",
                )
            return cosigned

    async def witness(self, note: str) -> str:
        """Submit ``note`` to every witness that has not cosigned it, at once, and publish it
        once with the cosignatures they return; return that note (``note`` if none did).

        Never raises for a witness's failure (see :attr:`last_results`); a sink failure is
        raised, as for the log-signed note.
        """
        text, _ = _split_note(note)
        size = _size(text)
        pending = [c for c in self.clients if c.size is None or c.size < size]
        before = list(self._rounds.get(size, (note, []))[1])
        async with anyio.create_task_group() as tasks:
            for client in pending:
                tasks.start_soon(self._submit, client, note, False)
        found = self._rounds.get(size)
        if found is None or found[1] == before:
            return note if found is None else add_cosignatures(note, found[1])
        return await self._publish(size)

    async def _serve(self, client: WitnessClient) -> None:
        """One witness's loop: the newest note it has not cosigned, with its own back-off."""
        while True:
            if self._changed is None:
                self._changed = anyio.Event()
            changed = self._changed
            note = self._note
            head = None if note is None else note_size(note)
            if note is not None and head is not None and head[1] > (client.size or 0):
                wait = client.retry_at - time.monotonic()
                if wait > 0:
                    await anyio.sleep(wait)
                    continue
                try:
                    await self._submit(client, note)
                except Exception as error:  # a sink failure: logged, the next try repeats it
                    logger.error(
                        "publishing a cosigned checkpoint failed: %s", type(error).__name__
                    )
                if client.size is None or client.size < head[1]:
                    continue  # failed: the back-off above paces the retry
            await changed.wait()

    async def run(self) -> None:
        """Every witness's loop, until cancelled."""
        self._changed = anyio.Event()
        async with anyio.create_task_group() as tasks:
            for client in self.clients:
                tasks.start_soon(self._serve, client)

    async def aclose(self) -> None:
        """Close every client's connections."""
        for client in self.clients:
            await client.aclose()
