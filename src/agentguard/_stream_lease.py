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
``NOTIFY``, a Redis message, the key's expiry) is the registry's business, and so is the
audit event of the cut.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING

import anyio

from agentguard.errors import RequestRefused

if TYPE_CHECKING:
    from agentguard._permissions import Requirement

__all__ = ["StreamLease"]

_NEVER = float("-inf")


class StreamLease:
    """One open stream's permission to continue; :meth:`cut` at most once, for good.

    Attributes:
        key_id / family_id: the public ids of the access key the stream was opened with.
        user_id / workspace_id / account_id: whose stream it is (for matching revocation events).
        expires_at: when the stream's key expires: the lease is cut then at the latest.
        requirement: the route's requirement, re-authorised on each re-check (``None``: not).
        request_id / method / path / service: the request that opened the stream, for the
            audit event of a cut.

    The SHA-256 of the key (never the key) is kept for re-checks and shown nowhere.
    """

    __slots__ = (
        "_callbacks",
        "_cut",
        "_error",
        "_key_hash",
        "account_id",
        "due",
        "expires_at",
        "failing_since",
        "family_id",
        "key_id",
        "method",
        "opened",
        "path",
        "request_id",
        "requirement",
        "service",
        "user_id",
        "workspace_id",
    )

    def __init__(
        self,
        key_id: str,
        user_id: str,
        workspace_id: str,
        account_id: str,
        *,
        family_id: str | None = None,
        key_hash: bytes | None = None,
        expires_at: datetime | None = None,
        requirement: Requirement | None = None,
        request_id: str | None = None,
        method: str | None = None,
        path: str | None = None,
        service: str | None = None,
    ) -> None:
        self.key_id = key_id
        self.user_id = user_id
        self.workspace_id = workspace_id
        self.account_id = account_id
        self.family_id = family_id
        self._key_hash = key_hash
        self.expires_at = expires_at
        self.requirement = requirement
        self.request_id = request_id
        self.method = method
        self.path = path
        self.service = service
        self.due = _NEVER  # registry bookkeeping (monotonic seconds): the next re-check
        self.failing_since: float | None = None  # when re-checks started failing (outage)
        self.opened = 0.0  # when the registry took it (monotonic seconds)
        self._cut = anyio.Event()
        self._error: RequestRefused | None = None
        self._callbacks: list[Callable[[], object]] = []

    def __repr__(self) -> str:
        state = f"cut ({self._error.reason.value})" if self._error is not None else "live"
        return f"StreamLease(key_id={self.key_id!r}, {state})"

    @property
    def key_hash(self) -> bytes | None:
        """The SHA-256 of the stream's agentguard key, or ``None`` (another kind of token)."""
        return self._key_hash

    @property
    def error(self) -> RequestRefused | None:
        """Why the lease was cut (the refusal a new request would get), or ``None`` while live."""
        return self._error

    @property
    def is_cut(self) -> bool:
        return self._error is not None

    def ids(self) -> dict[str, str]:
        """The public ids of the stream's key and owner (never its hash)."""
        ids = {
            "key_id": self.key_id,
            "user_id": self.user_id,
            "workspace_id": self.workspace_id,
            "account_id": self.account_id,
        }
        if self.family_id is not None:
            ids["family_id"] = self.family_id
        return ids

    def cut(self, error: RequestRefused) -> bool:
        """End the lease with ``error``; ``True`` if this call cut it (later calls keep the first
        reason and return ``False``)."""
        if self._error is not None:
            return False
        self._error = error
        self._cut.set()
        callbacks, self._callbacks = self._callbacks, []
        failures: list[Exception] = []
        for callback in callbacks:  # each one runs, whatever another one raised
            try:
                callback()
            except Exception as failure:
                failures.append(failure)
        if failures:
            raise failures[0]
        return True

    def on_cut(self, callback: Callable[[], object]) -> None:
        """Call ``callback()`` (in the cutting task, synchronously) when the lease is cut; at
        once if it already is. For a pump that waits on something else, e.g. a cancel scope's
        ``cancel``."""
        if self._error is not None:
            callback()
        else:
            self._callbacks.append(callback)

    def off_cut(self, callback: Callable[[], object]) -> None:
        """Forget ``callback`` (registered with :meth:`on_cut`; nothing if it is not, or was
        called already)."""
        with contextlib.suppress(ValueError):
            self._callbacks.remove(callback)

    async def wait(self) -> RequestRefused:
        """Block until the lease is cut; return why."""
        await self._cut.wait()
        error = self._error
        if error is None:  # pragma: no cover - the event is only set with an error
            raise RuntimeError("a stream lease was released without a reason")
        return error
