"""The stateful contract finds the revoke-versus-rotate race when a backend has it back.

``RacyStore`` is a MemoryStore with the race put back, as a SQL backend without a table of
revoked families had it: revocation stamps the key rows that exist, later inserts into a revoked
family copy the stamp (so every sequential contract passes), but ``rotate`` checks the family,
gives up the event loop (the round trip between its read and its write) and then inserts its new
keys as of its stale check. A revocation that lands in that gap leaves the successors live.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import anyio.lowlevel
import pytest
from hypothesis import Phase

from agentguard import KeyKind, KeyRecord
from agentguard.storage import MemoryStore
from agentguard.testing import FakeClock
from agentguard.testing.conformance._stateful import (
    Divergence,
    check_against_model,
    stateful_settings,
)

pytestmark = pytest.mark.anyio


class RacyStore(MemoryStore):
    """Reads only the key rows (no family marks); ``rotate`` checks, yields, then writes."""

    def _effective(self, record: KeyRecord) -> KeyRecord:
        return record

    def _stamped(self, records: Sequence[KeyRecord]) -> list[KeyRecord]:
        stamped = []
        for record in records:
            mark = self._revoked_families.get(record.family_id)
            if mark is not None and record.revoked_at is None:
                update = {"revoked_at": mark[0], "revoked_reason": mark[1]}
                stamped.append(record.model_copy(update=update))
            else:
                stamped.append(record)
        return stamped

    async def insert_keys(self, records: Sequence[KeyRecord]) -> None:
        with self._lock:
            self._insert_locked(self._stamped(records))

    async def rotate(self, used_id: str, new: Sequence[KeyRecord], *, now: datetime) -> bool:
        with self._lock:
            used = self._keys.get(used_id)
            if (
                used is None
                or used.kind is not KeyKind.REFRESH
                or used.used_at is not None
                or used.revoked_at is not None
                or used.family_id in self._revoked_families
            ):
                return False
            self._keys[used_id] = used.model_copy(update={"used_at": now})
            fresh = self._stamped(new)  # as of the check: the race is the gap that follows
        await anyio.lowlevel.checkpoint()
        with self._lock:
            self._insert_locked(fresh)
        return True


async def test_the_machine_finds_the_race() -> None:
    clock = FakeClock()
    store = RacyStore(clock=clock)
    # Finding takes a fraction of a second; shrinking the program would take far longer.
    finding = stateful_settings(phases=[Phase.explicit, Phase.generate])
    with pytest.raises(Divergence, match="lookup"):
        await check_against_model(
            store, RacyStore(clock=clock, shared_with=store), clock, config=finding
        )


async def test_the_machine_passes_the_reference() -> None:
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    await check_against_model(store, store.another_instance(), clock)
