"""TileSource: tiles computed from a real store equal the tiles of the Merkle oracle, with
bounded work, never beyond the log, and refusing what an archived prefix took away."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentguard.audit._chain import AuditEntry
from agentguard.audit._merkle import root
from agentguard.audit._tile_source import TileGone, TileNotFound, TileSource
from agentguard.audit._tiles import (
    ENTRIES,
    TILE_WIDTH,
    Tile,
    parse_entry_bundle,
    root_from_tiles,
    tiles_at,
)
from agentguard.storage import MemoryStore, SQLiteStore
from tests.audit.support import fill
from tests.audit.test_tiles import materialise

pytestmark = pytest.mark.anyio


class Counting:
    """A store that counts the entries read through it (and can pretend to have archived)."""

    def __init__(self, store: Any, archived: int = 0) -> None:
        self.store = store
        self.archived = archived
        self.entries_read = 0

    async def read(self, start: int = 0, stop: int | None = None) -> list[AuditEntry]:
        found: list[AuditEntry] = await self.store.read(max(start, self.archived), stop)
        self.entries_read += len(found)
        return found

    async def head(self) -> AuditEntry | None:
        found: AuditEntry | None = await self.store.head()
        return found

    async def archived_prefix(self) -> Any:
        return type("Prefix", (), {"size": self.archived})() if self.archived else None


async def tiles_of(source: TileSource, size: int) -> dict[Tile, bytes]:
    return {tile: await source.read(tile, limit=size) for tile in tiles_at(size)}


async def leaves_of(store: Any) -> tuple[list[bytes], list[bytes]]:
    entries = await store.read()
    bodies = [entry.body for entry in entries]
    return [hashlib.sha256(b"\x00" + body).digest() for body in bodies], bodies


@pytest.mark.parametrize("size", [1, 255, 256, 257, 513, 65536 + 300])
async def test_tiles_of_a_memory_log_equal_the_oracle(size: int) -> None:
    store = MemoryStore()
    await fill(store, size)
    leaves, bodies = await leaves_of(store)
    got = await tiles_of(TileSource(store), size)
    expected = materialise(leaves)
    assert {t: d for t, d in got.items() if not t.entries} == expected
    bundles = [got[t] for t in sorted((t for t in got if t.entries), key=lambda t: t.index)]
    assert [b for bundle in bundles for b in parse_entry_bundle(bundle)] == bodies
    assert root_from_tiles(got.__getitem__, size) == root(leaves)


@given(st.lists(st.integers(1, 700), min_size=1, max_size=4))
@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
async def test_tiles_served_while_the_log_grows_agree_with_every_size(growth: list[int]) -> None:
    store = MemoryStore()
    source = TileSource(store)
    for step in growth:
        await fill(store, step, tag=str(step))
        size = (await store.head()).seq + 1  # type: ignore[union-attr]
        leaves, _ = await leaves_of(store)
        got = await tiles_of(source, size)
        assert root_from_tiles(got.__getitem__, size) == root(leaves)


async def test_sqlite_tiles_equal_memory_tiles(tmp_path: Any) -> None:
    memory = MemoryStore()
    async with SQLiteStore(tmp_path / "log.db") as sqlite:
        await fill(memory, 700)
        await fill(sqlite, 700)
        mem_leaves, _ = await leaves_of(memory)
        sql_leaves, _ = await leaves_of(sqlite)
        sql_tiles = await tiles_of(TileSource(sqlite), 700)
        assert root_from_tiles(sql_tiles.__getitem__, 700) == root(sql_leaves)
        assert len(mem_leaves) == len(sql_leaves) == 700


async def test_never_beyond_the_log_or_the_limit() -> None:
    store = MemoryStore()
    await fill(store, 300)
    source = TileSource(store)
    assert len(await source.read(Tile(0, 1, 44))) == 44 * 32
    assert len(await source.read(Tile(0, 1, 10))) == 10 * 32  # a narrower prefix: still true
    for tile in (Tile(0, 1), Tile(0, 1, 45), Tile(1, 0), Tile(0, 2, 1), Tile(ENTRIES, 1)):
        with pytest.raises(TileNotFound):
            await source.read(tile)
    with pytest.raises(TileNotFound, match="signed size"):
        await source.read(Tile(0, 1, 44), limit=299)
    await fill(store, 212)  # 512: tile 1 is full now
    assert len(await source.read(Tile(0, 1))) == TILE_WIDTH * 32
    assert len(await source.read(Tile(1, 0, 2))) == 64


async def test_full_tile_roots_are_cached_so_high_tiles_cost_one_read() -> None:
    inner = MemoryStore()
    await fill(inner, 3 * TILE_WIDTH * TILE_WIDTH // 2, batch=4096)
    store = Counting(inner)
    source = TileSource(store, batch=8192)  # type: ignore[arg-type]
    await source.read(Tile(1, 0))
    assert store.entries_read == TILE_WIDTH * TILE_WIDTH
    await source.read(Tile(1, 0))
    await source.read(Tile(1, 1, 128))
    assert store.entries_read == TILE_WIDTH * TILE_WIDTH + 128 * TILE_WIDTH
    before = store.entries_read
    await source.read(Tile(0, 3))  # a full level-0 tile: read once, then from the LRU
    await source.read(Tile(0, 3))
    assert store.entries_read == before + TILE_WIDTH


async def test_a_store_that_archived_a_prefix_refuses_tiles_it_no_longer_holds() -> None:
    inner = MemoryStore()
    await fill(inner, 1000)
    source = TileSource(Counting(inner, archived=600))  # type: ignore[arg-type]
    with pytest.raises(TileGone):
        await source.read(Tile(0, 0))
    with pytest.raises(TileGone):
        await source.read(Tile(ENTRIES, 2))  # 512..767: 600 is archived
    with pytest.raises(TileGone):
        await source.read(Tile(1, 0, 3))
    assert len(await source.read(Tile(0, 3, 1000 - 768))) == (1000 - 768) * 32


async def test_tiles_computed_before_the_archive_are_still_served() -> None:
    inner = MemoryStore()
    await fill(inner, 1000)
    store = Counting(inner)
    source = TileSource(store)  # type: ignore[arg-type]
    before = await source.read(Tile(1, 0, 3))
    store.archived = 800
    assert await source.read(Tile(1, 0, 3)) == before
    with pytest.raises(TileGone):  # only its root was kept, not its leaves
        await source.read(Tile(0, 1))
