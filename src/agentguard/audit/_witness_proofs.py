"""Consistency proofs for witnesses, from cached roots of the log's full 256-leaf chunks.

A consistency proof from size ``old`` to ``new`` is O(log new) subtree hashes, but those
subtrees cover almost all of ``[0, new)``: rebuilding them from event bodies for every
submission re-reads the whole log. :class:`LogProofs` keeps the root of every full 256-entry
chunk of the log (32 bytes per 256 events) and the roots of larger complete subtrees once
combined, so a proof costs a few dictionary lookups plus at most a few hundred leaves read
from the store (the subtrees smaller than a chunk, at the right edge).

The roots are only ever computed here, from event bodies (``leaf_hash(body)``), or handed in
by the :class:`~agentguard.audit.Checkpointer` through :meth:`LogProofs.feed` for entries
whose bodies it has just re-hashed; never taken from a stored hash column. Each proof is
computed once per ``(old, new)`` and shared by every witness that needs it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import anyio

from agentguard.audit._chain import leaf_hash
from agentguard.audit._merkle import consistency_path, node_hash, root

__all__ = ["CHUNK", "LogProofs", "store_consistency_proof"]

CHUNK = 256
_MEMO = 16  # proofs kept: one per witness size at most, in practice


class LogProofs:
    """The consistency proofs of the log in ``store`` (an ``AuditStore``).

    Args:
        store: the log; only ``read(start, stop)`` is used.
        batch: entries per read while filling the chunk roots.
    """

    def __init__(self, store: object, batch: int = 4096) -> None:
        self.store = store
        self.batch = max(CHUNK, batch - batch % CHUNK)
        self._chunks: list[bytes] = []  # roots of chunks 0, 1, 2 ... (contiguous)
        self._partial: list[bytes] = []  # leaf hashes fed after the last full chunk
        self._blocks: dict[tuple[int, int], bytes] = {}  # (lo, size) of complete subtrees
        self._memo: OrderedDict[tuple[int, int], list[bytes]] = OrderedDict()
        self._lock = anyio.Lock()
        self.reads = 0
        """Entries read from the store so far (for tests and benchmarks)."""

    def __repr__(self) -> str:
        return f"LogProofs(chunks={len(self._chunks)})"

    @property
    def cached(self) -> int:
        """How many leading entries the chunk roots cover."""
        return len(self._chunks) * CHUNK

    def feed(self, start: int, leaves: Sequence[bytes]) -> None:
        """Leaf hashes of entries ``start ...``, just re-derived from their bodies.

        Ignored unless they continue exactly what is cached (so a gap or a re-read is harmless).
        """
        if start != self.cached + len(self._partial):
            return
        for leaf in leaves:
            self._partial.append(leaf)
            if len(self._partial) == CHUNK:
                self._chunks.append(root(self._partial))
                self._partial = []

    async def _read_leaves(self, start: int, stop: int) -> list[bytes]:
        read = getattr(self.store, "read")  # noqa: B009 - an AuditStore, typed loosely here
        leaves: list[bytes] = []
        position = start
        while position < stop:
            entries = await read(position, min(stop, position + self.batch))
            if not entries:
                raise LookupError(f"the log has no entry at seq {position}")
            for offset, entry in enumerate(entries):
                if entry.seq != position + offset:
                    raise LookupError(f"the log has no entry at seq {position + offset}")
            self.reads += len(entries)
            leaves.extend(leaf_hash(entry.body) for entry in entries)
            position += len(entries)
        return leaves

    async def _fill(self, chunks: int) -> None:
        """Make sure the roots of chunks ``0 .. chunks - 1`` are cached."""
        if len(self._chunks) >= chunks:
            return
        async with self._lock:
            while len(self._chunks) < chunks:
                start = self.cached + len(self._partial)
                stop = min(chunks * CHUNK, start + self.batch)
                self.feed(start, await self._read_leaves(start, stop))

    def _block(self, lo: int, size: int) -> bytes:
        """The root of the complete subtree ``[lo, lo + size)``, ``size`` >= CHUNK (cached)."""
        if size == CHUNK:
            return self._chunks[lo // CHUNK]
        key = (lo, size)
        found = self._blocks.get(key)
        if found is None:
            half = size // 2
            found = node_hash(self._block(lo, half), self._block(lo + half, half))
            self._blocks[key] = found
        return found

    async def _subtree(self, lo: int, hi: int) -> bytes:
        """The RFC 6962 hash of ``[lo, hi)``, a node of a tree (so ``lo`` is aligned)."""
        blocks: list[bytes] = []
        while lo < hi:
            size = 1 << ((hi - lo).bit_length() - 1)
            while lo % size:
                size //= 2
            if size >= CHUNK:
                blocks.append(self._block(lo, size))
            else:
                blocks.append(root(await self._read_leaves(lo, lo + size)))
            lo += size
        node = blocks[-1]
        for left in reversed(blocks[:-1]):
            node = node_hash(left, node)
        return node

    async def proof(self, old: int, new: int) -> list[bytes]:
        """The consistency proof from ``old`` to ``new`` (memoised); raises LookupError."""
        key = (old, new)
        if key in self._memo:
            self._memo.move_to_end(key)
            return list(self._memo[key])
        wanted: list[tuple[int, int]] = []

        def record(lo: int, hi: int) -> bytes:
            wanted.append((lo, hi))
            return bytes(32)

        consistency_path(record, old, new)
        await self._fill(new // CHUNK)
        known = {span: await self._subtree(*span) for span in dict.fromkeys(wanted)}
        built = consistency_path(lambda lo, hi: known[(lo, hi)], old, new)
        self._memo[key] = built
        while len(self._memo) > _MEMO:
            self._memo.popitem(last=False)
        return list(built)


async def store_consistency_proof(
    store: object, old: int, new: int, batch: int = 4096
) -> list[bytes]:
    """The consistency proof from size ``old`` to ``new``, from the log's own bodies (once)."""
    return await LogProofs(store, batch).proof(old, new)
