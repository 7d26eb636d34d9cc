"""A Starlette/FastAPI ``lifespan`` that opens the guard's stores at startup and closes them.

::

    guard = Guard(PostgresStore(dsn), replay_cache=RedisReplayCache(redis_url), ...)
    app = FastAPI(lifespan=guard_lifespan(guard, inner=my_lifespan))

Opening at startup makes a bad DSN, an unreachable database or a schema written by a newer
agentguard stop the server from starting rather than fail the first request; a store that
binds to its event loop (:class:`~agentguard.storage.PostgresStore`) binds to the
server's. Each guard's live-stream registry (:attr:`Guard.streams <agentguard.Guard.streams>`)
runs from startup, listening for revocations before the first stream opens. Closing at shutdown
stops it, writes the audit events still buffered (refusal summaries of the open interval,
events held back by an outage, stream cuts) and checkpoints SQLite's write-ahead log.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from typing import Any

import anyio

from agentguard._guard import Guard

__all__ = ["Lifespan", "guard_lifespan"]

#: What Starlette and FastAPI accept as ``lifespan=``: ``app -> async context manager``.
Lifespan = Callable[[Any], AbstractAsyncContextManager[Any]]


def _parts(resources: tuple[object, ...]) -> list[object]:
    """Every store and cache to open, each once, in the order given (a Guard's store first)."""
    found: dict[int, object] = {}
    for resource in resources:
        if isinstance(resource, Guard):
            parts = [resource.store, resource.audit.store, resource.replay_cache]
        else:
            parts = [resource]
        for part in parts:
            if part is not None:
                found.setdefault(id(part), part)
    return list(found.values())


async def _open(stack: AsyncExitStack, resource: object) -> None:
    """Open ``resource`` now and schedule its close on ``stack``."""
    if isinstance(resource, AbstractAsyncContextManager):  # has __aenter__ and __aexit__
        await stack.enter_async_context(resource)
        return
    close = getattr(resource, "close", None)
    if callable(close):
        stack.push_async_callback(close)
    initialize = getattr(resource, "initialize", None)
    if callable(initialize):
        await initialize()


def guard_lifespan(*resources: object, inner: Lifespan | None = None) -> Lifespan:
    """A ``lifespan=`` that opens ``resources`` at startup and closes them at shutdown.

    Each resource is a :class:`~agentguard.Guard` (its key store, audit store and replay
    cache, each once; its buffered audit events are flushed before they close) or a store or
    cache of its own: an async context manager, else an object with ``initialize()`` and/or
    ``close()``; one with neither (:class:`~agentguard.storage.MemoryStore`) needs nothing;
    a guard's live-stream registry is started too.
    ``inner`` is the app's own lifespan, run inside: the stores are open for its startup and
    shutdown, and its state becomes the app's. A failure while opening closes what was
    already open and stops the server from starting. Closing is shielded from cancellation.
    """
    guards = [resource for resource in resources if isinstance(resource, Guard)]
    parts = _parts(resources)

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[Any]:
        stack = AsyncExitStack()
        try:
            for part in parts:
                await _open(stack, part)
            for guard in guards:  # runs before the stores close (last in, first out)
                stack.push_async_callback(guard.audit.flush)
            for guard in guards:  # live streams from startup; stopped before the flush
                await guard.streams.start()
                stack.push_async_callback(guard.streams.aclose)
            if inner is None:
                yield None
            else:
                async with inner(app) as state:
                    yield state
        finally:
            with anyio.CancelScope(shield=True):
                await stack.aclose()

    return lifespan
