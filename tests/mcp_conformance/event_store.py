"""An in-memory SSE event store, so a client that lost a stream can resume it (Last-Event-ID)."""

from __future__ import annotations

from collections import deque

from mcp.server.streamable_http import EventCallback, EventMessage, EventStore

from mcp import types

__all__ = ["MemoryEventStore"]


class MemoryEventStore(EventStore):
    """The last ``limit`` SSE events, so a client that lost a stream can resume it."""

    def __init__(self, limit: int = 1000) -> None:
        self._events: deque[tuple[str, int, types.JSONRPCMessage | None]] = deque(maxlen=limit)
        self._next = 0

    async def store_event(self, stream_id: str, message: types.JSONRPCMessage | None) -> str:
        self._next += 1
        self._events.append((stream_id, self._next, message))
        return str(self._next)

    async def replay_events_after(
        self, last_event_id: str, send_callback: EventCallback
    ) -> str | None:
        if not last_event_id.isdigit():
            return None
        after = int(last_event_id)
        stream = next((s for s, n, _ in self._events if n == after), None)
        if stream is None:
            return None
        for stream_id, number, message in list(self._events):
            if stream_id == stream and number > after and message is not None:
                await send_callback(EventMessage(message, str(number)))
        return stream
