"""Serving the audit log as C2SP tlog-tiles: tiles/s from a SQLite log, cold and cached.

Run: ``python benchmarks/bench_tiles.py [--events 65536]``.

Builds a SQLite log of ``--events`` events, then measures, in one run:

- baseline: ``store.read`` of each 256-event range alone (what any tile must at least cost);
- level-0 hash tiles, cold (a fresh :class:`~agentguard.audit._tile_source.TileSource`: read,
  re-hash every body) and cached (the full-tile LRU);
- entry bundles, cold and cached;
- the level-1 tile over the whole log, cold (reads every event once) and cached (the kept
  full-tile roots).

Figures are tiles/s with the ratio to the ``store.read`` baseline of the same run.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import anyio

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "src"))

from report import Row, record  # noqa: E402

from agentguard.audit import Action, AuditEvent  # noqa: E402
from agentguard.audit._tile_source import TileSource  # noqa: E402
from agentguard.audit._tiles import ENTRIES, TILE_WIDTH, Tile  # noqa: E402
from agentguard.storage import SQLiteStore  # noqa: E402
from agentguard.testing import FakeClock  # noqa: E402


async def build(store: SQLiteStore, count: int) -> None:
    now = FakeClock().now()
    for start in range(0, count, 4096):
        await store.append(
            [
                AuditEvent(action=Action.DECISION, ts=now, path=f"/repos/acme/issues/{n}")
                for n in range(start, min(count, start + 4096))
            ]
        )


async def rate(tiles: int, work: object) -> float:
    started = time.perf_counter()
    await work  # type: ignore[misc]
    return tiles / (time.perf_counter() - started)


async def main(events: int) -> None:
    full = events // TILE_WIDTH
    with tempfile.TemporaryDirectory() as directory:
        async with SQLiteStore(Path(directory) / "log.db") as store:
            await build(store, events)

            async def reads() -> None:
                for n in range(full):
                    await store.read(n * TILE_WIDTH, (n + 1) * TILE_WIDTH)

            async def serve(source: TileSource, level: int) -> None:
                for n in range(full):
                    await source.read(Tile(level, n))

            baseline = await rate(full, reads())
            rows: list[Row] = []
            for label, level in (("level-0 hash tiles", 0), ("entry bundles", ENTRIES)):
                source = TileSource(store, cache_bytes=256 << 20)
                cold = await rate(full, serve(source, level))
                hot = await rate(full, serve(source, level))
                rows.append(
                    Row("tiles", f"{label}, cold", cold, "tiles/s", "store.read", baseline, False)
                )
                rows.append(
                    Row("tiles", f"{label}, cached", hot, "tiles/s", "store.read", baseline, False)
                )
            if events >= TILE_WIDTH * TILE_WIDTH:
                source = TileSource(store)
                cold = await rate(1, source.read(Tile(1, 0)))
                source._lru.clear()  # the roots stay: that is the cache measured
                hot = await rate(1, source.read(Tile(1, 0)))
                per_read = baseline / TILE_WIDTH  # 256 range reads = one level-1 tile's leaves
                rows.append(
                    Row(
                        "tiles",
                        "level-1 tile, cold",
                        cold,
                        "tiles/s",
                        "store.read x256",
                        per_read,
                        False,
                    )
                )
                rows.append(
                    Row(
                        "tiles",
                        "level-1 tile, cached roots",
                        hot,
                        "tiles/s",
                        "store.read x256",
                        per_read,
                        False,
                    )
                )
    for row in rows:
        print(
            f"{row.name:32} {row.value:12,.0f} {row.unit}  "
            f"({row.ratio:6.2f}x {row.baseline}: {row.baseline_value:,.0f})"
        )
    record(rows)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=65536 + 256)
    anyio.run(main, parser.parse_args().events)
