"""Multi-instance contracts: two instances over one backend behave as one store.

Production runs several processes on one database. Each has its own connections, locks and
caches, so a backend whose atomicity rests on an in-process lock, or that remembers its audit
head, passes every single-instance test and forks the chain (or lets two rotations win) in
production. These contracts drive ``store`` and ``other_store`` (a second instance over the
same backend, on the same clock) at once.
"""

from __future__ import annotations

from datetime import timedelta
from typing import ClassVar, Protocol

import anyio
import anyio.lowlevel

from agentguard._model import KeyKind, KeyRecord
from agentguard.audit._chain import verify_chain
from agentguard.storage._protocols import AuditStore, KeyStore, ReplayCache
from agentguard.testing._fakes import FakeClock
from agentguard.testing.conformance._audit import audit_event
from agentguard.testing.conformance._base import ContractBase, key_record
from agentguard.testing.conformance._directory import seed_directory

__all__ = [
    "MultiInstanceAuditContract",
    "MultiInstanceContract",
    "MultiInstanceKeyStoreContract",
    "MultiInstanceReplayContract",
    "SharedBackend",
]


class SharedBackend(KeyStore, AuditStore, ReplayCache, Protocol):
    """A backend with keys, an audit log and a replay cache: what MultiInstanceContract tests."""


RACE_TRIALS = 16
"""Trials of revoke-against-rotation, each revoking at a different step of the rotation loop."""


class MultiInstanceKeyStoreContract(ContractBase):
    """Subclass with ``store`` and ``other_store``: two instances of one KeyStore backend."""

    store_type: ClassVar[type[KeyStore]]
    """Set it to your backend's class: ``mypy --strict`` checks it against ``KeyStore``."""

    async def test_revocation_through_one_instance_is_seen_by_the_other(
        self, store: KeyStore, other_store: KeyStore, clock: FakeClock
    ) -> None:
        await seed_directory(store)
        refresh = key_record(clock, kind=KeyKind.REFRESH)
        await store.insert_keys([refresh])
        assert await other_store.revoke(family_id=refresh.family_id, reason="r", now=clock.now())
        late = key_record(clock, family_id=refresh.family_id)
        await store.insert_keys([late])  # into a family the other instance revoked
        for instance in (store, other_store):
            for record in (refresh, late):
                found = await instance.lookup(record.key_hash)
                assert found is not None and found.key.revoked_reason == "r"
            listed = await instance.list_keys(family_id=refresh.family_id)
            assert all(k.revoked_at == clock.now() for k in listed) and len(listed) == 2
        successor = [key_record(clock, family_id=refresh.family_id)]
        assert await store.rotate(refresh.id, successor, now=clock.now()) is False

    async def test_concurrent_rotation_across_instances_has_one_winner(
        self, store: KeyStore, other_store: KeyStore, clock: FakeClock
    ) -> None:
        await seed_directory(store)
        refresh = key_record(clock, kind=KeyKind.REFRESH)
        await store.insert_keys([refresh])
        candidates = [[key_record(clock, family_id=refresh.family_id)] for _ in range(30)]
        results = [False] * len(candidates)

        async def attempt(index: int) -> None:
            instance = store if index % 2 else other_store
            results[index] = await instance.rotate(refresh.id, candidates[index], now=clock.now())

        async with anyio.create_task_group() as group:
            for index in range(len(candidates)):
                group.start_soon(attempt, index)
        assert results.count(True) == 1
        inserted = [await other_store.lookup(c[0].key_hash) is not None for c in candidates]
        assert inserted == results

    async def test_revoke_racing_rotation_across_instances_leaves_nothing_live(
        self, store: KeyStore, other_store: KeyStore, clock: FakeClock
    ) -> None:
        """A thief rotates in a loop through one instance; the other revokes midway."""
        await seed_directory(store)
        for trial in range(RACE_TRIALS):
            first = key_record(clock, kind=KeyKind.REFRESH)
            await store.insert_keys([first])
            minted: list[KeyRecord] = [first]
            thief, owner = (other_store, store) if trial % 2 else (store, other_store)

            async def rotate_in_a_loop(
                first: KeyRecord = first, minted: list[KeyRecord] = minted, thief: KeyStore = thief
            ) -> None:
                current = first
                for _ in range(12):
                    pair = [
                        key_record(clock, family_id=first.family_id),
                        key_record(clock, family_id=first.family_id, kind=KeyKind.REFRESH),
                    ]
                    if not await thief.rotate(current.id, pair, now=clock.now()):
                        return
                    minted.extend(pair)
                    current = pair[1]

            async def revoke_midway(
                first: KeyRecord = first, trial: int = trial, owner: KeyStore = owner
            ) -> None:
                for _ in range(trial):
                    await anyio.lowlevel.checkpoint()
                if trial % 4 < 2:
                    await owner.revoke(family_id=first.family_id, reason="r", now=clock.now())
                else:
                    await owner.revoke(user_id="u1", reason="r", now=clock.now())

            async with anyio.create_task_group() as group:
                group.start_soon(rotate_in_a_loop)
                group.start_soon(revoke_midway)
            for instance in (store, other_store):
                for record in minted:
                    found = await instance.lookup(record.key_hash)
                    assert found is not None and found.key.revoked_at is not None, (
                        f"trial {trial}: a key minted by a rotation racing the revocation is live"
                    )
            for record in minted:
                if record.kind is KeyKind.REFRESH:
                    new = [key_record(clock, family_id=record.family_id)]
                    assert await other_store.rotate(record.id, new, now=clock.now()) is False

    async def test_directory_writes_are_seen_by_the_other(
        self, store: KeyStore, other_store: KeyStore
    ) -> None:
        await seed_directory(store)
        assert await other_store.is_member("u1", "w1")
        assert [u.id for u in await other_store.list_users("a1")] == ["u1", "u2"]
        await other_store.set_membership("u2", "w1", member=True)
        assert await store.is_member("u2", "w1")


class MultiInstanceAuditContract(ContractBase):
    """Subclass with ``store`` and ``other_store``: two instances of one AuditStore backend."""

    store_type: ClassVar[type[AuditStore]]
    """Set it to your backend's class: ``mypy --strict`` checks it against ``AuditStore``."""

    async def test_appends_from_both_instances_form_one_chain(
        self, store: AuditStore, other_store: AuditStore, clock: FakeClock
    ) -> None:
        async def writer(instance: AuditStore, n: int) -> None:
            for i in range(5):
                await instance.append([audit_event(clock, n * 100 + i)])

        async with anyio.create_task_group() as group:
            for n in range(8):
                group.start_soon(writer, store if n % 2 else other_store, n)
        entries = await store.read()
        assert entries == await other_store.read()
        assert [e.seq for e in entries] == list(range(40))
        assert verify_chain(entries) is None
        assert await store.head() == await other_store.head() == entries[-1]

    async def test_each_instance_appends_after_the_others_head(
        self, store: AuditStore, other_store: AuditStore, clock: FakeClock
    ) -> None:
        """An instance that remembers its own head instead of reading it forks the chain."""
        written = []
        for n in range(6):
            instance = store if n % 2 else other_store
            written.extend(await instance.append([audit_event(clock, n)]))
        assert [e.seq for e in written] == list(range(6))
        assert verify_chain(written) is None
        assert await store.read() == written


class MultiInstanceReplayContract(ContractBase):
    """Subclass with ``store`` and ``other_store``: two instances of one ReplayCache backend."""

    store_type: ClassVar[type[ReplayCache]]
    """Set it to your backend's class: ``mypy --strict`` checks it against ``ReplayCache``."""

    async def test_entry_stored_through_one_is_seen_by_the_other(
        self, store: ReplayCache, other_store: ReplayCache, clock: FakeClock
    ) -> None:
        until = clock.now() + timedelta(seconds=60)
        assert await store.check_and_store(b"jti-a", until) is True
        assert await other_store.check_and_store(b"jti-a", until) is False
        assert await other_store.check_and_store(b"jti-b", until) is True
        assert await store.check_and_store(b"jti-b", until) is False

    async def test_concurrent_use_across_instances_has_one_winner(
        self, store: ReplayCache, other_store: ReplayCache, clock: FakeClock
    ) -> None:
        until = clock.now() + timedelta(seconds=60)
        results: list[bool] = []

        async def attempt(instance: ReplayCache) -> None:
            results.append(await instance.check_and_store(b"shared", until))

        async with anyio.create_task_group() as group:
            for n in range(24):
                group.start_soon(attempt, store if n % 2 else other_store)
        assert results.count(True) == 1 and len(results) == 24


class MultiInstanceContract(
    MultiInstanceKeyStoreContract, MultiInstanceAuditContract, MultiInstanceReplayContract
):
    """All multi-instance contracts, for a backend that implements every protocol."""

    store_type: ClassVar[type[SharedBackend]]
    """Set it to your backend's class: ``mypy --strict`` checks it against ``SharedBackend``."""
