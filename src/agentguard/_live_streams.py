"""Open streams kept live: re-checked on an interval and on revocation events, cut when invalid.

(Interface first: the registry below is being built; today ``hold`` hands out leases that are
never cut.)
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from agentguard._model import Principal
from agentguard._stream_lease import StreamLease

if TYPE_CHECKING:
    from agentguard._guard import Guard

__all__ = ["LiveStreams"]


class LiveStreams:
    """The open streams of one guard, each holding a :class:`StreamLease`."""

    def __init__(self, guard: Guard, *, interval: float = 5.0) -> None:
        self._guard = guard
        self.interval = interval
        self._leases: set[StreamLease] = set()

    def __repr__(self) -> str:
        return f"LiveStreams(open={len(self._leases)}, interval={self.interval})"

    @property
    def open_count(self) -> int:
        return len(self._leases)

    @contextlib.asynccontextmanager
    async def hold(self, principal: Principal) -> AsyncIterator[StreamLease]:
        """A lease for one open stream of ``principal``, released when the block ends."""
        lease = StreamLease(
            principal.key_id, principal.user_id, principal.workspace_id, principal.account_id
        )
        self._leases.add(lease)
        try:
            yield lease
        finally:
            self._leases.discard(lease)
