"""OperatorContract: operator token records, found by their hash, revoked once.

Every guarantee of :class:`~agentguard.storage.OperatorStore`'s docstrings, on ``store`` and on
``store`` and ``other_store`` (two instances over one backend): a revocation through one is seen
by the other, of concurrent revocations one changes the record, and of concurrent inserts of
one token hash one is stored.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta
from typing import ClassVar

import anyio

from agentguard._keys._format import new_id
from agentguard._model import OperatorRecord
from agentguard.storage._gate_protocols import OperatorStore
from agentguard.storage._protocols import IntegrityError
from agentguard.testing._fakes import FakeClock
from agentguard.testing.conformance._base import ContractBase, assert_store_type

__all__ = ["OperatorContract", "operator_record"]


def operator_record(
    clock: FakeClock,
    *,
    name: str = "ops",
    operator_id: str | None = None,
    token_hash: bytes | None = None,
    expires_at: datetime | None = None,
) -> OperatorRecord:
    """An operator token record created now, with the hash of a random token."""
    return OperatorRecord(
        id=operator_id or new_id("op"),
        name=name,
        token_hash=token_hash or hashlib.sha256(secrets.token_bytes(32)).digest(),
        created_at=clock.now(),
        expires_at=expires_at,
    )


async def refused(store: OperatorStore, record: OperatorRecord) -> bool:
    """Whether ``put_operator(record)`` raised :class:`IntegrityError`."""
    try:
        await store.put_operator(record)
    except IntegrityError:
        return True
    return False


class OperatorContract(ContractBase):
    """Subclass with ``store`` and ``other_store``: two instances of one OperatorStore backend."""

    store_type: ClassVar[type[OperatorStore]]
    """Set it to your backend's class: ``mypy --strict`` checks it against ``OperatorStore``."""

    async def test_store_implements_operator_store(self, store: OperatorStore) -> None:
        assert_store_type(self, store, OperatorStore)

    async def test_record_is_found_by_its_token_hash(
        self, store: OperatorStore, clock: FakeClock
    ) -> None:
        record = operator_record(clock, expires_at=clock.now() + timedelta(days=30))
        await store.put_operator(record)
        assert await store.lookup_operator(record.token_hash) == record
        assert await store.lookup_operator(hashlib.sha256(b"another token").digest()) is None

    async def test_duplicate_id_or_token_hash_raises_integrity_error(
        self, store: OperatorStore, clock: FakeClock
    ) -> None:
        first = operator_record(clock)
        await store.put_operator(first)
        same_id = operator_record(clock, operator_id=first.id, name="other")
        same_hash = operator_record(clock, token_hash=first.token_hash, name="other")
        assert await refused(store, same_id), "a duplicate operator id was stored"
        assert await refused(store, same_hash), "a duplicate token hash was stored"
        assert await store.list_operators() == [first]
        assert await store.lookup_operator(first.token_hash) == first
        assert await store.lookup_operator(same_id.token_hash) is None

    async def test_revocation_is_recorded_once(
        self, store: OperatorStore, clock: FakeClock
    ) -> None:
        record = operator_record(clock)
        kept = operator_record(clock, name="kept")
        await store.put_operator(record)
        await store.put_operator(kept)
        clock.advance(10)
        revoked_at = clock.now()
        assert await store.revoke_operator(record.id, now=revoked_at) is True
        revoked = record.model_copy(update={"revoked_at": revoked_at})
        assert await store.lookup_operator(record.token_hash) == revoked  # revoked: still found
        clock.advance(10)
        assert await store.revoke_operator(record.id, now=clock.now()) is False
        assert await store.lookup_operator(record.token_hash) == revoked
        assert await store.revoke_operator("op_unknown", now=clock.now()) is False
        assert await store.lookup_operator(kept.token_hash) == kept

    async def test_expired_record_is_still_found(
        self, store: OperatorStore, clock: FakeClock
    ) -> None:
        record = operator_record(clock, expires_at=clock.now() + timedelta(seconds=1))
        await store.put_operator(record)
        clock.advance(3600)
        assert await store.lookup_operator(record.token_hash) == record

    async def test_list_is_every_record_oldest_first(
        self, store: OperatorStore, clock: FakeClock
    ) -> None:
        assert await store.list_operators() == []
        records = []
        for n in range(4):
            records.append(operator_record(clock, name=f"op {n}"))
            await store.put_operator(records[-1])
            clock.advance(1)
        await store.revoke_operator(records[1].id, now=clock.now())
        records[1] = records[1].model_copy(update={"revoked_at": clock.now()})
        assert await store.list_operators() == records

    # two instances over one backend

    async def test_each_instance_sees_the_others_operators(
        self, store: OperatorStore, other_store: OperatorStore, clock: FakeClock
    ) -> None:
        record = operator_record(clock)
        await store.put_operator(record)
        assert await other_store.lookup_operator(record.token_hash) == record
        assert await refused(other_store, operator_record(clock, token_hash=record.token_hash))
        assert await other_store.revoke_operator(record.id, now=clock.now()) is True
        found = await store.lookup_operator(record.token_hash)
        assert found is not None and found.revoked_at == clock.now()
        assert await store.list_operators() == await other_store.list_operators() == [found]

    async def test_concurrent_revocations_across_instances_change_one_record(
        self, store: OperatorStore, other_store: OperatorStore, clock: FakeClock
    ) -> None:
        record = operator_record(clock)
        await store.put_operator(record)
        results = [False] * 20

        async def revoke(n: int) -> None:
            instance = store if n % 2 else other_store
            results[n] = await instance.revoke_operator(
                record.id, now=clock.now() + timedelta(seconds=n)
            )

        async with anyio.create_task_group() as group:
            for n in range(len(results)):
                group.start_soon(revoke, n)
        assert results.count(True) == 1, f"{results.count(True)} revocations changed the record"
        winner = results.index(True)
        found = await other_store.lookup_operator(record.token_hash)
        assert found is not None and found.revoked_at == clock.now() + timedelta(seconds=winner)

    async def test_concurrent_inserts_of_one_token_hash_store_one(
        self, store: OperatorStore, other_store: OperatorStore, clock: FakeClock
    ) -> None:
        token_hash = hashlib.sha256(secrets.token_bytes(32)).digest()
        candidates = [operator_record(clock, token_hash=token_hash) for _ in range(20)]
        stored = [False] * len(candidates)

        async def put(n: int) -> None:
            instance = store if n % 2 else other_store
            stored[n] = not await refused(instance, candidates[n])

        async with anyio.create_task_group() as group:
            for n in range(len(candidates)):
                group.start_soon(put, n)
        assert stored.count(True) == 1, f"{stored.count(True)} records took one token hash"
        assert await store.lookup_operator(token_hash) == candidates[stored.index(True)]
        assert await other_store.list_operators() == [candidates[stored.index(True)]]
