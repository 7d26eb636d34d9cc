"""Verifying a store's audit log in pages, and on several cores.

:func:`verify_store` walks the log in pages, in order. With
``jobs > 1`` it hands the pages ahead of it to worker processes, each with its own read-only
connection to the store (opened from its URL): a worker reads a page's rows and the row just
before it, and runs the verifier's fast path over the page with that row's stored hash as the
chain head (:func:`page_leaves`). What it returns is *speculative*: the verifier takes a
page's leaf hashes only when, at that page, its own state is clean, it expects the page's
first seq, and its computed chain head is the hash the worker started from. The fast path is
a pure function of the rows, the expected seq and the head, so the verifier then appends
exactly what :meth:`~agentguard.audit._verify.LogVerifier.feed_rows` would have. Anything else
(a run the fast path refuses, a gap, a worker that failed or died, a page not computed ahead)
is read again in the verifier's process and fed as before: parallelism changes how fast a
verdict comes, never which.

The Merkle tree and the signed checkpoints stay in the verifier's process; a page's leaves
travel as one ``bytes`` of 32-byte hashes.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import signal
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing.util import Finalize
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread

from agentguard.audit._chain import GENESIS_PREV
from agentguard.audit._checkpoints import Checkpoint
from agentguard.audit._merkle import HASH_SIZE, perfect_root
from agentguard.audit._prefix import ArchivedPrefix
from agentguard.audit._rows import exact_columns
from agentguard.audit._verify import LogVerifier, fast_path_leaves
from agentguard.audit._verify_report import VerifyReport

if TYPE_CHECKING:
    from agentguard.storage._protocols import AuditStore

__all__ = ["PageLeaves", "Prefetch", "auto_jobs", "page_leaves", "verify_store"]

AHEAD = 4  # pages computed ahead per worker
MIN_AUTO_EVENTS = 200_000  # below this, starting worker processes costs more than it saves
MAX_AUTO_JOBS = 4


@dataclass(frozen=True)
class PageLeaves:
    """What a worker found for the page ``[start, stop)``.

    ``prev`` is the stored hash of the row ``start - 1`` (the genesis ``prev`` for ``start``
    0), ``None`` when that row is missing; ``leaves`` the leaf hashes of the page's rows,
    joined, when every row passed the fast path with ``prev`` as the head, else ``None``;
    ``rows`` how many rows the page holds; ``root`` the root of their perfect subtree when
    the leaves are known and the page is whole (a power of two of rows from a multiple of it),
    so the verifier appends one node where it would hash the page's tree itself.
    """

    start: int
    prev: bytes | None
    leaves: bytes | None
    rows: int
    root: bytes | None = None

    def split(self) -> list[bytes]:
        """The leaf hashes, one per row (only for a page whose ``leaves`` are known)."""
        blob = self.leaves or b""
        return [blob[at : at + HASH_SIZE] for at in range(0, len(blob), HASH_SIZE)]


def page_leaves(rows: Sequence[Sequence[object]], start: int, stop: int) -> PageLeaves:
    """The fast path over ``rows``: those of ``read_rows(max(start - 1, 0), stop)``."""
    if start == 0:
        prev = GENESIS_PREV
    else:
        first = exact_columns(rows[:1])
        if first is None or first[0] != (start - 1,):
            return PageLeaves(start, None, None, len(rows))
        prev = first[1][0]
        rows = rows[1:]
    leaves = fast_path_leaves(rows, start, prev)
    count = len(leaves)
    if count < len(rows):  # a run the fast path refuses: the verifier checks the page itself
        return PageLeaves(start, prev, None, len(rows))
    whole = count == stop - start and count > 0 and not count & (count - 1) and not start % count
    return PageLeaves(start, prev, b"".join(leaves), count, perfect_root(leaves) if whole else None)


def auto_jobs(events: int) -> int:
    """How many worker processes ``audit verify`` uses by default for a log of ``events``:
    none below :data:`MIN_AUTO_EVENTS`, else one per CPU this process may run on, up to
    :data:`MAX_AUTO_JOBS`."""
    if events < MIN_AUTO_EVENTS:
        return 1
    return max(1, min(_usable_cpus(), MAX_AUTO_JOBS))


def _usable_cpus() -> int:
    affinity = getattr(os, "sched_getaffinity", None)  # Linux: the CPUs this process may use
    if affinity is not None:
        return len(affinity(0)) or 1
    return os.cpu_count() or 1


# The worker processes: each opens the store once and reads the pages it is given. A worker
# never prints: a store it cannot open, or a page it cannot read, comes back to the verifier
# as an exception (the verifier then reads that page itself), and Ctrl-C is the verifier's.

_worker: dict[str, Any] = {}


class _WorkerUnavailable(RuntimeError):
    """The worker could not open the store (the verifier reads the page itself)."""


def _open_worker(url: str) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    loop = asyncio.new_event_loop()
    try:
        from agentguard.storage._urls import open_store

        store = open_store(url, read_only=True)
        initialize = getattr(store, "initialize", None)
        if initialize is not None:
            loop.run_until_complete(initialize())
    except Exception as error:  # only its type: a driver's message may name the DSN
        _worker.update(failure=type(error).__name__)
        return
    _worker.update(loop=loop, store=store)
    Finalize(None, _close_worker, exitpriority=10)  # close the connection as the worker exits


def _close_worker() -> None:
    loop, store = _worker.pop("loop", None), _worker.pop("store", None)
    if loop is None:
        return
    with contextlib.suppress(Exception):
        close = getattr(store, "close", None)
        if close is not None:
            loop.run_until_complete(close())
    loop.close()


def _read_page(start: int, stop: int) -> PageLeaves:
    if "store" not in _worker:
        raise _WorkerUnavailable(f"the worker could not open the store ({_worker.get('failure')})")
    loop: asyncio.AbstractEventLoop = _worker["loop"]
    rows = loop.run_until_complete(_worker["store"].read_rows(max(start - 1, 0), stop))
    return page_leaves(rows, start, stop)


class Prefetch:
    """Pages of ``page`` seqs up to ``last`` computed ahead by ``jobs`` worker processes.

    :meth:`take` gives the worker's result for a page (``None``: not computed ahead, or the
    worker failed); pages are asked for in order and the pool keeps ``AHEAD`` per worker in
    flight. Close it (``async with``, or :meth:`aclose`) to stop the workers: it waits for the
    pages in flight on a thread, so the event loop it runs on is never held up.
    """

    def __init__(self, url: str, jobs: int, page: int, last: int) -> None:
        if jobs < 2:
            raise ValueError("a prefetch needs at least 2 jobs")
        self.page, self.last = page, last
        self._pool = ProcessPoolExecutor(
            jobs,
            mp_context=multiprocessing.get_context("spawn"),  # safe beside the store's threads
            initializer=_open_worker,
            initargs=(url,),
        )
        self._ahead = jobs * AHEAD
        self._futures: dict[int, Future[PageLeaves]] = {}
        self._submitted = 0  # the start of the next page to hand out
        self._fill()

    async def __aenter__(self) -> Prefetch:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop the workers; pages not taken are dropped. The wait for the pages in flight runs
        on a thread, not on the caller's event loop."""
        self._futures.clear()
        await anyio.to_thread.run_sync(self._shutdown, abandon_on_cancel=False)

    def _shutdown(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _fill(self) -> None:
        while len(self._futures) < self._ahead and self._submitted <= self.last:
            start = self._submitted
            try:
                self._futures[start] = self._pool.submit(_read_page, start, start + self.page)
            except RuntimeError:  # the pool broke (a worker died): the verifier reads itself
                self._submitted = self.last + 1
                return
            self._submitted += self.page

    async def take(self, start: int, stop: int) -> PageLeaves | None:
        """The worker's result for ``[start, stop)``, or ``None`` (read it yourself).

        Pages before ``start`` still in flight are dropped; a ``start`` beyond those handed
        out (the verifier stepped over a gap) moves the workers there."""
        if stop - start != self.page:
            return None
        for stale in [at for at in self._futures if at < start]:
            self._futures.pop(stale).cancel()
        self._submitted = max(self._submitted, start)
        self._fill()
        future = self._futures.pop(start, None)
        if future is None:
            return None
        try:  # waited for on a thread: any event loop anyio runs on (asyncio, trio)
            result: PageLeaves | None = await anyio.to_thread.run_sync(future.result)
        except Exception:  # a worker's failure only costs the fast lane
            result = None
        self._fill()
        if result is not None and result.rows != self.page:
            # The log's end or a gap, as read some pages ago: rows may have been appended
            # since, which the verifier's own read of the page sees.
            return None
        return result


async def verify_store(
    store: AuditStore,
    checkpoints: Sequence[str | Checkpoint] = (),
    vkeys: Sequence[str] = (),
    *,
    origin: str | None = None,
    page: int = 8192,
    witnesses: Sequence[str] = (),
    quorum: int | None = None,
    jobs: int = 1,
    url: str | None = None,
) -> VerifyReport:
    """:func:`~agentguard.audit._verify.verify_log` over a store's log, read in pages of
    ``page`` seqs.

    Memory stays bounded by a page whatever the log's size. A store that archived a prefix
    (``archived_prefix()``) is verified from it. A store that hands over its stored rows
    (``read_rows()``, :class:`~agentguard.storage._protocols.AuditRowStore`: the SQL stores) is
    read through them and verified with
    :meth:`~agentguard.audit._verify.LogVerifier.feed_rows`, the same report as from
    ``read()`` at a fraction of the cost per event. The pages cover exactly what
    ``store.read()`` returns: a gap in the seqs (deleted rows) is stepped over by asking
    ``store.head()`` whether entries lie beyond, with a doubling stride so a forged huge seq
    costs few reads.

    ``jobs`` > 1, with ``url`` (the URL of ``store`` itself: a worker's page is taken as this
    store's page) and a store with ``read_rows``: that many
    worker processes, each with its own read-only connection, compute the fast path of the
    pages ahead (see the module docstring); the report is the same. ``0``: :func:`auto_jobs`
    for the log's size. The workers are started with ``spawn``: a script that calls this
    with ``jobs`` > 1 guards its entry point with ``if __name__ == "__main__":``.
    """
    finder = getattr(store, "archived_prefix", None)
    prefix: ArchivedPrefix | None = await finder() if callable(finder) else None
    verifier = LogVerifier(
        checkpoints, vkeys, origin=origin, prefix=prefix, witnesses=witnesses, quorum=quorum
    )
    read_rows = getattr(store, "read_rows", None)
    read: Callable[[int, int], Awaitable[Sequence[Any]]]
    feed: Callable[[Sequence[Any]], None]
    if callable(read_rows):  # an AuditRowStore: the rows read() would convert
        read, feed = read_rows, verifier.feed_rows
    else:
        read, feed = store.read, verifier.feed
    last = await _last_seq(store) if callable(read_rows) and url and jobs != 1 else None
    if last is not None and jobs == 0:  # the events kept: those above an archived prefix
        jobs = auto_jobs(last + 1 - (0 if prefix is None else prefix.size))
    prefetch = Prefetch(url, jobs, page, last) if url and last is not None and jobs > 1 else None
    async with prefetch if prefetch is not None else contextlib.nullcontext():
        start, stride = 0, page
        while True:
            ahead = None if prefetch is None else await prefetch.take(start, start + stride)
            found = verifier.take_page(ahead) or await _feed_page(read, feed, start, start + stride)
            start += stride
            if found:
                stride = page
                continue
            head = await store.head()
            if head is None or type(head.seq) is not int or head.seq < start:
                break
            stride *= 2
    return verifier.finish()


async def _last_seq(store: AuditStore) -> int | None:
    head = await store.head()
    return head.seq if head is not None and type(head.seq) is int and head.seq >= 0 else None


async def _feed_page(
    read: Callable[[int, int], Awaitable[Sequence[Any]]],
    feed: Callable[[Sequence[Any]], None],
    start: int,
    stop: int,
) -> bool:
    """Feed what ``read`` gives for ``[start, stop)``; whether there was any (the page is not
    kept once fed)."""
    page = await read(start, stop)
    if page:
        feed(page)
    return bool(page)
