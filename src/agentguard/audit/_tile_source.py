"""Tiles of an :class:`~agentguard.storage.AuditStore`, computed from ``store.read`` on demand.

:class:`TileSource` answers "the bytes of this tile" for the log as the store holds it:

- a level-0 hash tile or an entry bundle reads its (at most 256) entries; every leaf hash is
  recomputed from the entry's canonical bytes, never taken from the stored hash column, so the
  hash tiles and the entry bundles always agree with each other;
- a level-``L`` tile (``L >= 1``) is made of the roots of full tiles one level down. Those roots
  are cached once computed (32 bytes each, one per 256 entries at level 0): a full tile never
  changes in an append-only log, so the first request for a high tile pays for reading the
  leaves under it once, in batches, and every later request is a dictionary lookup. Cold work
  is single-flight (one lock), so concurrent cold requests do not multiply it; a caller that
  must not queue behind it (an anonymous request) passes ``wait=False`` and gets
  :class:`TileBusy` instead while another cold computation runs;
- full tiles and full entry bundles are kept in a small LRU (by bytes), so hot tiles cost no
  store read.

Never beyond the log: a full tile only once all its 256 hashes are in the log, a partial tile
of width ``W`` only once those ``W`` are (a wider log still serves it: it is a prefix of what is
there now). ``limit`` bounds that further, e.g. to the newest signed checkpoint's size. A store
that archived a prefix (``AuditArchiveStore``) no longer holds the leaves under it: a tile that
needs them, and was not computed before, is :class:`TileGone`.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

import anyio

from agentguard.audit._merkle import root
from agentguard.audit._tiles import TILE_WIDTH, Tile, entry_bundle
from agentguard.errors import AgentGuardError
from agentguard.storage._protocols import AuditStore

__all__ = ["TileBusy", "TileGone", "TileMissing", "TileNotFound", "TileSource"]

_LEAF = b"\x00"


class TileMissing(AgentGuardError, LookupError):
    """The tile cannot be served."""


class TileNotFound(TileMissing):
    """The log (or the signed part of it) does not have this tile: 404."""


class TileGone(TileMissing):
    """The tile covers events the store archived and dropped: 410."""


class TileBusy(TileMissing):
    """The tile needs a cold computation while another one runs, and the caller would not
    wait: 503, retry later."""


class TileSource:
    """Computes the C2SP tlog-tiles of ``store``'s log; safe to share between requests.

    Args:
        store: the audit log.
        batch: entries per ``store.read`` while computing the roots of a high tile.
        cache_bytes: budget of the LRU of full tiles and full entry bundles.
    """

    def __init__(
        self, store: AuditStore, *, batch: int = 4096, cache_bytes: int = 32 << 20
    ) -> None:
        self.store = store
        self.batch = max(TILE_WIDTH, batch - batch % TILE_WIDTH)
        self.cache_bytes = cache_bytes
        self._roots: dict[tuple[int, int], bytes] = {}
        self._lru: OrderedDict[Tile, bytes] = OrderedDict()
        self._lru_bytes = 0
        self._known_size = 0
        self._lock = anyio.Lock()

    def __repr__(self) -> str:
        return f"TileSource(store={type(self.store).__name__}, roots={len(self._roots)})"

    async def size(self) -> int:
        """How many entries the log has now (and remember it: the log only grows)."""
        head = await self.store.head()
        size = 0 if head is None else head.seq + 1
        self._known_size = max(self._known_size, size)
        return size

    async def _archived(self) -> int:
        finder = getattr(self.store, "archived_prefix", None)
        prefix = await finder() if callable(finder) else None
        return 0 if prefix is None else int(prefix.size)

    async def read(self, tile: Tile, *, limit: int | None = None, wait: bool = True) -> bytes:
        """The bytes of ``tile``: 32 bytes per hash, or the entry bundle.

        Raises :class:`TileNotFound` if the log (its first ``limit`` entries, when given) does
        not have it, :class:`TileGone` if it needs archived entries. A high tile whose roots
        are not all cached yet is computed by one caller at a time: the others wait, or with
        ``wait=False`` get :class:`TileBusy` at once.
        """
        _, stop = tile.leaves
        if limit is not None and stop > limit:
            raise TileNotFound(f"{tile.path()} is beyond the signed size of the log")
        if stop > self._known_size and stop > await self.size():
            raise TileNotFound(f"the log has no {tile.path()} yet")
        cached = self._lru.get(tile)
        if cached is not None:
            self._lru.move_to_end(tile)
            return cached
        data = await self._compute(tile, wait)
        if tile.full:
            self._keep(tile, data)
        return data

    def _keep(self, tile: Tile, data: bytes) -> None:
        if len(data) > self.cache_bytes:
            return
        self._lru[tile] = data
        self._lru_bytes += len(data)
        while self._lru_bytes > self.cache_bytes:
            _, dropped = self._lru.popitem(last=False)
            self._lru_bytes -= len(dropped)

    async def _compute(self, tile: Tile, wait: bool = True) -> bytes:
        if tile.entries or tile.level == 0:
            start, stop = tile.leaves
            bodies = await self._bodies(start, stop)
            if tile.entries:
                try:
                    return entry_bundle(bodies)
                except ValueError as error:
                    raise TileNotFound(str(error)) from None
            leaves = [hashlib.sha256(_LEAF + body).digest() for body in bodies]
            if tile.full:
                self._roots.setdefault((0, tile.index), root(leaves))
            return b"".join(leaves)
        first = tile.index * TILE_WIDTH
        return b"".join(await self._full_roots(tile.level - 1, first, first + tile.width, wait))

    async def _bodies(self, start: int, stop: int) -> list[bytes]:
        """The canonical bytes of entries ``start .. stop - 1``, all of them or an error."""
        entries = await self.store.read(start, stop)
        if len(entries) == stop - start and all(
            entry.seq == start + offset for offset, entry in enumerate(entries)
        ):
            return [entry.body for entry in entries]
        if start < await self._archived():
            raise TileGone(f"events from seq {start} on were archived and dropped from the store")
        raise TileNotFound(f"the log does not hold entries {start}..{stop - 1}")

    async def _full_roots(
        self, level: int, first: int, stop: int, wait: bool = True
    ) -> list[bytes]:
        """The roots of the full level-``level`` tiles ``first .. stop - 1`` (cached)."""
        roots = self._roots
        if not all((level, index) in roots for index in range(first, stop)):
            if not wait and self._lock.locked():
                raise TileBusy("the log's tree is being computed after a restart; retry later")
            async with self._lock:
                await self._fill(level, first, stop)
        return [roots[(level, index)] for index in range(first, stop)]

    async def _fill(self, level: int, first: int, stop: int) -> None:
        roots = self._roots
        missing = [index for index in range(first, stop) if (level, index) not in roots]
        if not missing:
            return
        if level > 0:
            for index in missing:
                below = index * TILE_WIDTH
                await self._fill(level - 1, below, below + TILE_WIDTH)
                roots[(level, index)] = root(
                    [roots[(level - 1, n)] for n in range(below, below + TILE_WIDTH)]
                )
            return
        run = self.batch // TILE_WIDTH
        at = 0
        while at < len(missing):
            group = [missing[at]]
            while (
                len(group) < run
                and at + len(group) < len(missing)
                and missing[at + len(group)] == group[-1] + 1
            ):
                group.append(missing[at + len(group)])
            at += len(group)
            bodies = await self._bodies(group[0] * TILE_WIDTH, (group[-1] + 1) * TILE_WIDTH)
            for offset, index in enumerate(group):
                chunk = bodies[offset * TILE_WIDTH : (offset + 1) * TILE_WIDTH]
                roots[(0, index)] = root([hashlib.sha256(_LEAF + body).digest() for body in chunk])
