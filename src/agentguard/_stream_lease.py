"""A stream's lease: the permission an open response stream or websocket holds to go on.

A request is decided once, when it arrives; a stream outlives that moment. Each open stream
(a streamed upstream response, a server-sent-event stream, a proxied websocket) holds a
:class:`StreamLease` from the live-stream registry, which re-checks the stream's key, user,
membership and account on an interval and on revocation events, and *cuts* the lease with the
refusal a new request would get. Whatever pumps the stream waits on :meth:`StreamLease.wait`
alongside its own work and, once cut, ends the stream the way its protocol allows: an SSE
stream gets an ``event: error`` and the connection closes without a clean end of body; a
websocket closes with 1008 (policy violation).

The lease is the only thing the pumps know about; who cuts it (an interval, a PostgreSQL
``NOTIFY``, a Redis message) is the registry's business.
"""

from __future__ import annotations

import anyio

from agentguard.errors import RequestRefused

__all__ = ["StreamLease"]


class StreamLease:
    """One open stream's permission to continue; :meth:`cut` at most once, for good.

    Attributes:
        key_id: the public id of the access key the stream was opened with.
        user_id / workspace_id / account_id: whose stream it is (for matching revocation events).
    """

    __slots__ = ("_cut", "_error", "account_id", "key_id", "user_id", "workspace_id")

    def __init__(self, key_id: str, user_id: str, workspace_id: str, account_id: str) -> None:
        self.key_id = key_id
        self.user_id = user_id
        self.workspace_id = workspace_id
        self.account_id = account_id
        self._cut = anyio.Event()
        self._error: RequestRefused | None = None

    def __repr__(self) -> str:
        state = f"cut ({self._error.reason.value})" if self._error is not None else "live"
        return f"StreamLease(key_id={self.key_id!r}, {state})"

    @property
    def error(self) -> RequestRefused | None:
        """Why the lease was cut (the refusal a new request would get), or ``None`` while live."""
        return self._error

    @property
    def is_cut(self) -> bool:
        return self._error is not None

    def cut(self, error: RequestRefused) -> None:
        """End the lease with ``error``; later calls keep the first reason."""
        if self._error is None:
            self._error = error
            self._cut.set()

    async def wait(self) -> RequestRefused:
        """Block until the lease is cut; return why."""
        await self._cut.wait()
        error = self._error
        if error is None:  # pragma: no cover - the event is only set with an error
            raise RuntimeError("a stream lease was released without a reason")
        return error
