"""Cold high tiles after a restart: one computation at a time; operators queue behind it,
anonymous clients get 503 with ``Retry-After`` instead of queueing."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from agentguard.asgi._tile_endpoints import TileEndpoints
from agentguard.audit._chain import AuditEntry
from agentguard.audit._tile_source import TileBusy, TileSource
from agentguard.audit._tiles import Tile
from agentguard.storage import MemoryStore
from tests.audit.support import fill
from tests.audit.test_tiles_checkpoint import ask

pytestmark = pytest.mark.anyio


class Held:
    """A store whose reads of more than one tile's worth wait until released (and are counted)."""

    def __init__(self, store: MemoryStore) -> None:
        self.store = store
        self.release = anyio.Event()
        self.entries_read = 0

    async def read(self, start: int = 0, stop: int | None = None) -> list[AuditEntry]:
        if stop is None or stop - start > 256:
            await self.release.wait()
        found: list[AuditEntry] = await self.store.read(start, stop)
        self.entries_read += len(found)
        return found

    async def head(self) -> AuditEntry | None:
        found: AuditEntry | None = await self.store.head()
        return found


async def held_log(count: int) -> Any:
    store = MemoryStore()
    await fill(store, count)
    return Held(store)


async def test_anonymous_cold_requests_get_503_while_one_computation_runs() -> None:
    held = await held_log(256 * 6)
    endpoints = TileEndpoints(TileSource(held, batch=4096), access="public")
    operator: Any = object()  # any operator record: a token was presented
    results: dict[str, tuple[int, dict[str, str], bytes]] = {}

    async def first() -> None:  # an anonymous client starts the cold computation
        results["first"] = await ask(endpoints, "/log/tile/1/000.p/6")

    async def queued() -> None:  # an operator waits for it
        results["operator"] = await ask(endpoints, "/log/tile/1/000.p/5", operator)

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(first)
        await anyio.wait_all_tasks_blocked()
        tasks.start_soon(queued)
        await anyio.wait_all_tasks_blocked()
        for path in ("/log/tile/1/000.p/6", "/log/tile/1/000.p/3"):
            status, headers, _ = await ask(endpoints, path)
            assert status == 503 and headers["retry-after"] == "5", path
            assert headers["cache-control"] == "no-store"
        level0 = await ask(endpoints, "/log/tile/0/000")  # one tile's read: never busy
        assert level0[0] == 200
        held.release.set()
    assert results["first"][0] == 200 and len(results["first"][2]) == 6 * 32
    assert results["operator"][0] == 200 and results["operator"][2] == results["first"][2][:160]
    read = held.entries_read
    assert (await ask(endpoints, "/log/tile/1/000.p/4"))[0] == 200  # warm: anyone, no read
    assert held.entries_read == read


async def test_source_wait_false_is_busy_only_while_another_cold_computation_runs() -> None:
    held = await held_log(256 * 3)
    source = TileSource(held)
    held.release.set()
    assert len(await source.read(Tile(1, 0, 2), wait=False)) == 64  # nobody else: computes
    held.release = anyio.Event()
    cold = TileSource(held)
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(cold.read, Tile(1, 0, 3))
        await anyio.wait_all_tasks_blocked()
        with pytest.raises(TileBusy):
            await cold.read(Tile(1, 0, 2), wait=False)
        held.release.set()
    assert len(await cold.read(Tile(1, 0, 2), wait=False)) == 64


async def test_concurrent_cold_operator_requests_share_one_scan() -> None:
    held = await held_log(256 * 6)
    held.release.set()
    source = TileSource(held)
    async with anyio.create_task_group() as tasks:
        for width in range(1, 7):
            for _ in range(5):
                tasks.start_soon(source.read, Tile(1, 0, width))
    assert held.entries_read == 256 * 6
