"""Each caller's share of a service's upstream connections.

The proxy's pooled client has ``max_connections`` per service. Without a per-caller bound, one
user with many slow exchanges could hold every connection while everyone else waits for the pool
and gets 504. :class:`CallerSlots` counts the upstream exchanges each caller has in flight and
refuses one more beyond ``limit`` with 429 (``Retry-After``) at once, so the rest of the pool
stays free for other callers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import httpx

from agentguard.errors import TooManyRequests

__all__ = ["CallerSlots", "ReleasingStream"]


class CallerSlots:
    """In-flight upstream exchanges per caller, at most ``limit`` each.

    The event loop is single-threaded and :meth:`acquire` does not await, so no lock is needed.
    """

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("limit is at least 1")
        self.limit = limit
        self._in_flight: dict[str, int] = {}

    def __repr__(self) -> str:
        return f"CallerSlots(limit={self.limit}, callers={len(self._in_flight)})"

    def in_flight(self, caller: str) -> int:
        """How many exchanges ``caller`` has in flight."""
        return self._in_flight.get(caller, 0)

    def acquire(self, caller: str) -> Callable[[], None]:
        """Take a slot for ``caller`` (429 if it holds ``limit``); returns its release."""
        held = self._in_flight.get(caller, 0)
        if held >= self.limit:
            raise TooManyRequests(
                f"you already have {self.limit} requests in flight to this service;"
                " retry when one finishes"
            )
        self._in_flight[caller] = held + 1
        released = False

        def release() -> None:
            nonlocal released
            if released:
                return
            released = True
            left = self._in_flight.get(caller, 1) - 1
            if left > 0:
                self._in_flight[caller] = left
            else:
                self._in_flight.pop(caller, None)

        return release


class ReleasingStream(httpx.AsyncByteStream):
    """A response stream that frees the caller's slot when it is closed."""

    def __init__(self, inner: httpx.AsyncByteStream, release: Callable[[], None]) -> None:
        self._inner = inner
        self._release = release

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._inner:
            yield chunk

    async def aclose(self) -> None:
        try:
            await self._inner.aclose()
        finally:
            self._release()
