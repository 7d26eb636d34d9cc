"""How one auth flow serves ``httpx.Client`` and ``httpx.AsyncClient``.

A flow is httpx's ``auth_flow`` generator: it yields requests for the agent's client (an
``httpx`` or ``httpx2`` one: the flow only touches :mod:`agentguard.client._wire`'s members) and
receives their responses. The I/O it needs besides (a token request, a file write, waiting for
another caller's refresh) is an :class:`Io`, performed by the ``perform`` the flow was given:
:func:`inline` does it in the calling thread, so under ``httpx.Client`` the flow yields only
requests and the client drives it; :func:`deferred` yields it to :func:`adrive`, the one
driver, which awaits it under ``httpx.AsyncClient`` and ``httpx2.AsyncClient``.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable, Generator
from dataclasses import dataclass
from typing import Any, Generic, NoReturn, Protocol, TypeVar

import anyio

__all__ = ["Io", "Perform", "adrive", "deferred", "in_thread", "inline"]

T = TypeVar("T")
R = TypeVar("R")
Y_co = TypeVar("Y_co", covariant=True)


@dataclass(frozen=True)
class Io(Generic[T]):
    """One piece of I/O, in both forms: ``blocking()`` for threads, ``awaitable()`` for loops."""

    blocking: Callable[[], T]
    awaitable: Callable[[], Awaitable[T]]


def in_thread(fn: Callable[[], T]) -> Io[T]:
    """Blocking work (a file operation); under an event loop, in a worker thread, shielded."""

    async def shielded() -> T:
        # a started lock, read or write must finish: a cancelled one could lose rotated keys
        with anyio.CancelScope(shield=True):
            result: T = await anyio.to_thread.run_sync(fn)
        return result

    return Io(fn, shielded)


class Perform(Protocol[Y_co]):
    """How a flow does its I/O: ``result = yield from perform(io)``."""

    def __call__(self, io: Io[T], /) -> Generator[Y_co, Any, T]: ...


def inline(io: Io[T]) -> Generator[NoReturn, Any, T]:
    """Do ``io`` in the calling thread; the flow yields nothing for it."""
    yield from ()
    return io.blocking()


def deferred(io: Io[T]) -> Generator[Io[T], Any, T]:
    """Yield ``io`` to :func:`adrive`, which sends its result back."""
    result: T = yield io
    return result


async def adrive(flow: Generator[R | Io[Any], Any, object]) -> AsyncGenerator[R, Any]:
    """Run a :func:`deferred` flow: pass its requests to the client and await its :class:`Io`."""
    try:
        step = next(flow)
        while True:
            if not isinstance(step, Io):
                step = flow.send((yield step))
                continue
            try:
                result = await step.awaitable()
            except Exception as error:  # the flow decides: e.g. no answer is a RefreshFailed
                step = flow.throw(error)
            else:
                step = flow.send(result)
    except StopIteration:
        return
    finally:
        flow.close()
