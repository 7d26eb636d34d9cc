"""``verify_store(jobs=2)`` on a tampered SQLite log: worker processes, the same report.

Two worker processes open the file read-only from its URL and compute pages ahead; the
verifier takes their results only where its own state allows. Whatever was edited, the report
must be the one the verifier gives reading every page itself; a worker that cannot open the
store costs only speed.
"""

from __future__ import annotations

import shutil
from concurrent import futures
from pathlib import Path

import anyio
import pytest

from agentguard.audit import VerifyReport
from agentguard.audit._prefix import extend_prefix
from agentguard.audit._verify_store import PageLeaves, Prefetch, verify_store
from agentguard.storage import SQLiteStore, StorageError
from agentguard.testing import FakeClock
from tests.e2e.test_audit_verify_rows_sqlite import (
    ORIGIN,
    SIZE,
    TAMPERS,
    VKEYS,
    event,
    pristine,
    tampered,
    undecodable,
)
from tests.support.audit_logs import count_taken_pages

__all__ = ["pristine"]  # the fixture, shared with the rows test

PAGE = 16  # whole pages of a power of two: subtrees; signed sizes 100, 300, 513 fall inside


def both(path: Path, notes: list[str], url: str | None = None) -> tuple[VerifyReport, ...]:
    async def main() -> tuple[VerifyReport, ...]:
        async with SQLiteStore(path, read_only=True) as store:
            alone = await verify_store(store, notes, VKEYS, origin=ORIGIN, page=PAGE)
            workers = await verify_store(
                store,
                notes,
                VKEYS,
                origin=ORIGIN,
                page=PAGE,
                jobs=2,
                url=url or f"sqlite:///{path}",
            )
        return alone, workers

    return anyio.run(main)


def test_an_intact_log_is_verified_with_the_workers_pages(
    pristine: tuple[Path, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    taken = count_taken_pages(monkeypatch)
    alone, workers = both(pristine[0], pristine[1])
    assert workers == alone
    assert workers.ok and workers.anchored and workers.size == SIZE
    # the slow bodies (non-ASCII, escapes) are read again; most pages come from the workers
    assert len(taken) >= 2


@pytest.mark.parametrize("at", [0, 15, 16, 257, SIZE - 1])
@pytest.mark.parametrize("kind", sorted(TAMPERS))
def test_tampered_rows_get_the_same_report_with_workers(
    pristine: tuple[Path, list[str]], tmp_path: Path, kind: str, at: int
) -> None:
    path = tampered(pristine, tmp_path, kind, at)
    alone, workers = both(path, pristine[1])
    assert workers == alone, (kind, at)


def test_workers_that_cannot_open_the_store_cost_only_speed(
    pristine: tuple[Path, list[str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    taken = count_taken_pages(monkeypatch)
    missing = f"sqlite:///{tmp_path / 'nowhere.db'}"
    alone, workers = both(pristine[0], pristine[1], url=missing)
    assert workers == alone and workers.ok
    assert taken == []


def test_a_body_that_is_not_utf8_text_fails_alike_with_workers(
    pristine: tuple[Path, list[str]], tmp_path: Path
) -> None:
    path = undecodable(tampered(pristine, tmp_path, "hash_wrong", 3), 200)

    async def main(jobs: int) -> str:
        async with SQLiteStore(path, read_only=True) as store:
            with pytest.raises(StorageError) as caught:
                await verify_store(
                    store, pristine[1], VKEYS, origin=ORIGIN, page=PAGE, jobs=jobs,
                    url=f"sqlite:///{path}",
                )  # fmt: skip
        return str(caught.value)

    assert anyio.run(main, 2) == anyio.run(main, 1)


def test_a_log_with_an_archived_prefix_uses_the_workers_after_it(
    pristine: tuple[Path, list[str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Below an archived prefix the pages are empty and the verifier steps over them with a
    doubling stride; the workers follow it to where the rows are."""
    path = tmp_path / "archived.db"
    shutil.copy(pristine[0], path)

    async def drop() -> None:
        async with SQLiteStore(path) as store:
            leaves = [entry.hash for entry in await store.read(0, 256)]
            assert await store.drop_prefix(extend_prefix(None, leaves, 256, [100, 256])) == 256

    anyio.run(drop)
    taken = count_taken_pages(monkeypatch)
    alone, workers = both(path, pristine[1])
    assert workers == alone and workers.ok and workers.size == SIZE
    assert taken and min(taken) >= 256


def test_rows_appended_after_the_workers_read_the_log_s_end_are_verified(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The workers read the last, partial page before the log grew: the verifier reads that
    page itself (a page shorter than a page is never taken), so it sees the new rows as the
    one-process verifier does, and reports no gap."""
    path = tmp_path / "growing.db"
    clock = FakeClock()

    async def append(first: int, count: int) -> None:
        async with SQLiteStore(path, clock=clock) as store:
            await store.append([event(clock, n) for n in range(first, first + count)])

    anyio.run(append, 0, 40)
    original = Prefetch.take
    grown: list[bool] = []

    async def take(self: Prefetch, start: int, stop: int) -> PageLeaves | None:
        if not grown:  # first: every page handed out is read, then the log grows
            done, pending = futures.wait(list(self._futures.values()), timeout=60)
            assert not pending and len(done) == 3  # pages 0, 16 and 32 (the last, partial)
            await append(40, 20)
            grown.append(True)
        return await original(self, start, stop)

    monkeypatch.setattr(Prefetch, "take", take)

    async def main() -> tuple[VerifyReport, VerifyReport]:
        async with SQLiteStore(path, read_only=True) as store:
            workers = await verify_store(store, page=PAGE, jobs=2, url=f"sqlite:///{path}")
            alone = await verify_store(store, page=PAGE)
        return workers, alone

    workers, alone = anyio.run(main)
    assert grown and workers == alone
    assert workers.ok and workers.size == 60


def test_the_workers_serve_a_verifier_running_on_trio(
    pristine: tuple[Path, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    taken = count_taken_pages(monkeypatch)
    path, notes = pristine

    async def main(jobs: int) -> VerifyReport:
        async with SQLiteStore(path, read_only=True) as store:
            return await verify_store(
                store, notes, VKEYS, origin=ORIGIN, page=PAGE, jobs=jobs, url=f"sqlite:///{path}"
            )

    assert anyio.run(main, 2, backend="trio") == anyio.run(main, 1, backend="trio")
    assert len(taken) >= 2
