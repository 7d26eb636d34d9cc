"""KeyStoreContract: insert, one-round-trip lookup, atomic rotation, revocation.

Revocation of a family or a user must win against rotation. A single store cannot force a
rotation to commit after a revocation whose snapshot missed it, but ``insert_keys`` into a
revoked family leaves the store in exactly the state that interleaving leaves, so the contract
pins it down deterministically; a concurrent test then races the two for real.
"""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar

import anyio
import anyio.lowlevel
import pytest

from agentguard._model import AccountStatus, KeyKind, KeyRecord, Workspace
from agentguard.storage._protocols import IntegrityError, KeyStore
from agentguard.testing._fakes import FakeClock
from agentguard.testing.conformance._base import ContractBase, assert_store_type, key_record
from agentguard.testing.conformance._directory import seed_directory

__all__ = ["KeyStoreContract"]


async def _assert_dead(
    store: KeyStore, clock: FakeClock, record: KeyRecord, at: datetime, reason: str
) -> None:
    """``record`` reads as revoked at ``at`` for ``reason`` (lookup, list) and cannot rotate."""
    found = await store.lookup(record.key_hash)
    assert found is not None
    assert (found.key.revoked_at, found.key.revoked_reason) == (at, reason)
    listed = {k.id: k for k in await store.list_keys(family_id=record.family_id)}
    assert (listed[record.id].revoked_at, listed[record.id].revoked_reason) == (at, reason)
    if record.kind is KeyKind.REFRESH:
        successor = key_record(clock, family_id=record.family_id)
        assert await store.rotate(record.id, [successor], now=clock.now()) is False
        assert await store.lookup(successor.key_hash) is None


async def _assert_live(store: KeyStore, clock: FakeClock, refresh: KeyRecord) -> None:
    found = await store.lookup(refresh.key_hash)
    assert found is not None and found.key.revoked_at is None
    successor = key_record(clock, family_id=refresh.family_id)
    assert await store.rotate(refresh.id, [successor], now=clock.now()) is True


class KeyStoreContract(ContractBase):
    """Subclass with a ``store`` fixture returning a fresh, empty store built on ``clock``."""

    store_type: ClassVar[type[KeyStore]]
    """Set it to your backend's class: ``mypy --strict`` checks it against ``KeyStore``."""

    async def test_store_implements_key_store(self, store: KeyStore) -> None:
        assert_store_type(self, store, KeyStore)

    async def test_lookup_joins_owner_facts(self, store: KeyStore, clock: FakeClock) -> None:
        await seed_directory(store)
        record = key_record(clock)
        await store.insert_keys([record])
        found = await store.lookup(record.key_hash)
        assert found is not None
        assert found.key == record
        assert found.user is not None and found.user.id == "u1"
        assert found.account is not None and found.account.id == "a1"
        assert found.member is True

    async def test_lookup_member_is_for_the_keys_own_workspace(
        self, store: KeyStore, clock: FakeClock
    ) -> None:
        """Removed from the key's workspace, a user still in another one is no member of it."""
        await seed_directory(store)
        await store.put_workspace(Workspace(id="w2", account_id="a1", name="Support"))
        await store.set_membership("u1", "w2", member=True)
        in_w1, in_w2 = key_record(clock), key_record(clock, workspace_id="w2")
        await store.insert_keys([in_w1, in_w2])
        await store.set_membership("u1", "w1", member=False)
        found = {k.id: await store.lookup(k.key_hash) for k in (in_w1, in_w2)}
        assert [(f is not None and f.member) for f in found.values()] == [False, True]
        await store.set_membership("u1", "w2", member=False)
        await store.set_membership("u1", "w1", member=True)
        found = {k.id: await store.lookup(k.key_hash) for k in (in_w1, in_w2)}
        assert [(f is not None and f.member) for f in found.values()] == [True, False]

    async def test_list_keys_is_oldest_first(self, store: KeyStore, clock: FakeClock) -> None:
        """In insertion order, whatever the ids (which are random)."""
        await seed_directory(store)
        family = key_record(clock).family_id
        records = [key_record(clock, family_id=family) for _ in range(6)]
        await store.insert_keys(records[:2])
        for record in records[2:]:
            clock.advance(1)
            await store.insert_keys([record])
        for listed in (
            await store.list_keys(family_id=family),
            await store.list_keys(user_id="u1"),
        ):
            assert [k.id for k in listed] == [r.id for r in records]

    async def test_lookup_unknown_hash_is_none(self, store: KeyStore) -> None:
        assert await store.lookup(bytes(32)) is None

    async def test_lookup_sees_owner_changes_immediately(
        self, store: KeyStore, clock: FakeClock
    ) -> None:
        await seed_directory(store)
        record = key_record(clock)
        await store.insert_keys([record])
        await store.set_membership("u1", "w1", member=False)
        user = await store.get_user("u1")
        assert user is not None
        await store.put_user(user.model_copy(update={"enabled": False}))
        account = await store.get_account("a1")
        assert account is not None
        await store.put_account(account.model_copy(update={"status": AccountStatus.CLOSED}))
        found = await store.lookup(record.key_hash)
        assert found is not None
        assert found.member is False
        assert found.user is not None and not found.user.enabled
        assert found.account is not None and not found.account.active

    async def test_lookup_reports_missing_owner_as_none(
        self, store: KeyStore, clock: FakeClock
    ) -> None:
        await seed_directory(store)
        orphan = key_record(clock, user_id="ghost", account_id="gone")
        await store.insert_keys([orphan])
        found = await store.lookup(orphan.key_hash)
        assert found is not None
        assert (found.user, found.account, found.member) == (None, None, False)

    async def test_failed_rotation_leaves_the_refresh_key_unused(
        self, store: KeyStore, clock: FakeClock
    ) -> None:
        await seed_directory(store)
        refresh = key_record(clock, kind=KeyKind.REFRESH)
        existing = key_record(clock)
        await store.insert_keys([refresh, existing])
        clash = existing.model_copy(update={"id": "key_clash"})  # same hash as an existing key
        with pytest.raises(IntegrityError):
            await store.rotate(refresh.id, [clash], now=clock.now())
        found = await store.lookup(refresh.key_hash)
        assert found is not None and found.key.used_at is None
        assert await store.rotate(refresh.id, [key_record(clock)], now=clock.now()) is True

    async def test_insert_is_all_or_nothing(self, store: KeyStore, clock: FakeClock) -> None:
        await seed_directory(store)
        first = key_record(clock)
        await store.insert_keys([first])
        fresh = key_record(clock)
        duplicate = key_record(clock).model_copy(update={"key_hash": first.key_hash})
        with pytest.raises(IntegrityError):
            await store.insert_keys([fresh, duplicate])
        assert await store.lookup(fresh.key_hash) is None

    async def test_duplicate_id_is_refused(self, store: KeyStore, clock: FakeClock) -> None:
        await seed_directory(store)
        first = key_record(clock)
        await store.insert_keys([first])
        with pytest.raises(IntegrityError):
            await store.insert_keys([key_record(clock).model_copy(update={"id": first.id})])

    async def test_rotate_once(self, store: KeyStore, clock: FakeClock) -> None:
        await seed_directory(store)
        refresh = key_record(clock, kind=KeyKind.REFRESH)
        await store.insert_keys([refresh])
        new = [key_record(clock, family_id=refresh.family_id)]
        clock.advance(5)
        assert await store.rotate(refresh.id, new, now=clock.now()) is True
        used = await store.lookup(refresh.key_hash)
        assert used is not None and used.key.used_at == clock.now()
        assert await store.lookup(new[0].key_hash) is not None
        again = [key_record(clock, family_id=refresh.family_id)]
        assert await store.rotate(refresh.id, again, now=clock.now()) is False
        assert await store.lookup(again[0].key_hash) is None

    async def test_rotate_refuses_access_revoked_and_unknown(
        self, store: KeyStore, clock: FakeClock
    ) -> None:
        await seed_directory(store)
        access = key_record(clock)
        revoked = key_record(clock, kind=KeyKind.REFRESH)
        await store.insert_keys([access, revoked])
        await store.revoke(key_id=revoked.id, reason="test", now=clock.now())
        for key_id in (access.id, revoked.id, "key_missing"):
            new = [key_record(clock)]
            assert await store.rotate(key_id, new, now=clock.now()) is False
            assert await store.lookup(new[0].key_hash) is None

    async def test_concurrent_rotation_has_one_winner(
        self, store: KeyStore, clock: FakeClock
    ) -> None:
        await seed_directory(store)
        refresh = key_record(clock, kind=KeyKind.REFRESH)
        await store.insert_keys([refresh])
        candidates = [[key_record(clock, family_id=refresh.family_id)] for _ in range(20)]
        results: list[bool] = [False] * len(candidates)

        async def attempt(index: int) -> None:
            results[index] = await store.rotate(refresh.id, candidates[index], now=clock.now())

        async with anyio.create_task_group() as group:
            for index in range(len(candidates)):
                group.start_soon(attempt, index)
        assert results.count(True) == 1
        inserted = [await store.lookup(c[0].key_hash) is not None for c in candidates]
        assert inserted == results

    async def test_revoke_by_key_family_and_user(self, store: KeyStore, clock: FakeClock) -> None:
        await seed_directory(store)
        a = key_record(clock)
        b = key_record(clock, family_id=a.family_id, kind=KeyKind.REFRESH)
        c = key_record(clock)
        d = key_record(clock, user_id="u2")
        await store.insert_keys([a, b, c, d])
        assert await store.revoke(key_id=c.id, reason="r1", now=clock.now()) == 1
        assert await store.revoke(family_id=a.family_id, reason="r2", now=clock.now()) == 2
        assert await store.revoke(user_id="u2", reason="r3", now=clock.now()) == 1
        assert await store.revoke(user_id="u1", reason="r4", now=clock.now()) == 0
        for record, reason in ((a, "r2"), (b, "r2"), (c, "r1"), (d, "r3")):
            found = await store.lookup(record.key_hash)
            assert found is not None
            assert found.key.revoked_at == clock.now()
            assert found.key.revoked_reason == reason

    async def test_revoke_keeps_first_reason(self, store: KeyStore, clock: FakeClock) -> None:
        await seed_directory(store)
        record = key_record(clock)
        await store.insert_keys([record])
        first = clock.now()
        await store.revoke(key_id=record.id, reason="first", now=first)
        clock.advance(60)
        assert await store.revoke(key_id=record.id, reason="second", now=clock.now()) == 0
        found = await store.lookup(record.key_hash)
        assert found is not None
        assert (found.key.revoked_at, found.key.revoked_reason) == (first, "first")

    async def test_revoke_needs_exactly_one_selector(
        self, store: KeyStore, clock: FakeClock
    ) -> None:
        with pytest.raises(ValueError, match="exactly one"):
            await store.revoke(reason="x", now=clock.now())
        with pytest.raises(ValueError, match="exactly one"):
            await store.revoke(key_id="a", user_id="b", reason="x", now=clock.now())

    async def test_list_keys_filters(self, store: KeyStore, clock: FakeClock) -> None:
        await seed_directory(store)
        a = key_record(clock)
        b = key_record(clock, user_id="u2")
        await store.insert_keys([a, b])
        assert {k.id for k in await store.list_keys()} == {a.id, b.id}
        assert [k.id for k in await store.list_keys(user_id="u2")] == [b.id]
        assert [k.id for k in await store.list_keys(family_id=a.family_id)] == [a.id]

    async def test_scope_round_trips(self, store: KeyStore, clock: FakeClock) -> None:
        from agentguard._model import Grants

        await seed_directory(store)
        record = key_record(clock, scope=Grants({"crm": "read"}))
        await store.insert_keys([record])
        found = await store.lookup(record.key_hash)
        assert found is not None
        assert found.key.scope == Grants({"crm": "read"})

    async def test_audience_round_trips(self, store: KeyStore, clock: FakeClock) -> None:
        """``audience`` (RFC 8707) comes back from lookup, listing and a rotation's inserts;
        ``None`` stays ``None``."""
        await seed_directory(store)
        url = "https://api.example.com/mcp/" + "a" * 1990  # near the 2048-character cap
        refresh = key_record(clock, kind=KeyKind.REFRESH).model_copy(update={"audience": url})
        plain = key_record(clock)
        await store.insert_keys([refresh, plain])
        successor = key_record(clock, family_id=refresh.family_id).model_copy(
            update={"audience": "https://api.example.com/mcp"}
        )
        assert await store.rotate(refresh.id, [successor], now=clock.now()) is True
        for record in (refresh, plain, successor):
            found = await store.lookup(record.key_hash)
            assert found is not None and found.key.audience == record.audience
        listed = {key.id: key.audience for key in await store.list_keys()}
        assert listed == {r.id: r.audience for r in (refresh, plain, successor)}

    # Revocation against rotation. revoke(family_id=F) revokes F for good: every key of F,
    # including keys a rotation adds after the revocation, reads as revoked and cannot rotate.

    async def test_rotation_before_revocation_is_revoked_with_the_family(
        self, store: KeyStore, clock: FakeClock
    ) -> None:
        await seed_directory(store)
        refresh = key_record(clock, kind=KeyKind.REFRESH)
        await store.insert_keys([refresh])
        minted = [
            key_record(clock, family_id=refresh.family_id),
            key_record(clock, family_id=refresh.family_id, kind=KeyKind.REFRESH),
        ]
        assert await store.rotate(refresh.id, minted, now=clock.now()) is True
        clock.advance(1)
        assert await store.revoke(family_id=refresh.family_id, reason="r", now=clock.now()) == 3
        for record in [refresh, *minted]:
            await _assert_dead(store, clock, record, clock.now(), "r")

    async def test_keys_committed_into_a_revoked_family_are_revoked(
        self, store: KeyStore, clock: FakeClock
    ) -> None:
        """The interleaving a multi-instance race produces: the successor commits after."""
        await seed_directory(store)
        refresh = key_record(clock, kind=KeyKind.REFRESH)
        await store.insert_keys([refresh])
        revoked_at = clock.now()
        assert await store.revoke(family_id=refresh.family_id, reason="r", now=revoked_at) == 1
        clock.advance(1)
        late = [
            key_record(clock, family_id=refresh.family_id),
            key_record(clock, family_id=refresh.family_id, kind=KeyKind.REFRESH),
        ]
        await store.insert_keys(late)
        for record in [refresh, *late]:
            await _assert_dead(store, clock, record, revoked_at, "r")

    async def test_a_family_keeps_its_first_revocation(
        self, store: KeyStore, clock: FakeClock
    ) -> None:
        await seed_directory(store)
        early = key_record(clock, kind=KeyKind.REFRESH)
        await store.insert_keys([early])
        first = clock.now()
        assert await store.revoke(family_id=early.family_id, reason="first", now=first) == 1
        late = key_record(clock, family_id=early.family_id, kind=KeyKind.REFRESH)
        await store.insert_keys([late])
        clock.advance(60)
        assert await store.revoke(key_id=late.id, reason="again", now=clock.now()) == 0
        assert await store.revoke(family_id=early.family_id, reason="again", now=clock.now()) == 0
        assert await store.revoke(user_id="u1", reason="again", now=clock.now()) == 0
        for record in (early, late):
            await _assert_dead(store, clock, record, first, "first")

    async def test_revoking_a_key_leaves_its_family_alive(
        self, store: KeyStore, clock: FakeClock
    ) -> None:
        await seed_directory(store)
        access = key_record(clock)
        refresh = key_record(clock, family_id=access.family_id, kind=KeyKind.REFRESH)
        await store.insert_keys([access, refresh])
        assert await store.revoke(key_id=access.id, reason="r", now=clock.now()) == 1
        await _assert_live(store, clock, refresh)

    async def test_user_revocation_covers_every_family_and_spares_later_ones(
        self, store: KeyStore, clock: FakeClock
    ) -> None:
        await seed_directory(store)
        mine = [key_record(clock, kind=KeyKind.REFRESH) for _ in range(2)]
        theirs = key_record(clock, user_id="u2", kind=KeyKind.REFRESH)
        await store.insert_keys([*mine, theirs])
        revoked_at = clock.now()
        assert await store.revoke(user_id="u1", reason="gone", now=revoked_at) == 2
        clock.advance(1)
        late = [key_record(clock, family_id=r.family_id, kind=KeyKind.REFRESH) for r in mine]
        await store.insert_keys(late)
        for record in [*mine, *late]:
            await _assert_dead(store, clock, record, revoked_at, "gone")
        # Keys issued to the user afterwards are a new family: unaffected. Others' too.
        later = key_record(clock, kind=KeyKind.REFRESH)
        await store.insert_keys([later])
        await _assert_live(store, clock, later)
        await _assert_live(store, clock, theirs)

    async def test_concurrent_rotation_never_outlives_revocation(
        self, store: KeyStore, clock: FakeClock
    ) -> None:
        await seed_directory(store)
        for trial in range(8):
            first = key_record(clock, kind=KeyKind.REFRESH)
            await store.insert_keys([first])
            minted: list[KeyRecord] = [first]

            async def rotate_in_a_loop(
                first: KeyRecord = first, minted: list[KeyRecord] = minted
            ) -> None:
                current = first
                for _ in range(20):
                    pair = [
                        key_record(clock, family_id=first.family_id),
                        key_record(clock, family_id=first.family_id, kind=KeyKind.REFRESH),
                    ]
                    if not await store.rotate(current.id, pair, now=clock.now()):
                        return
                    minted.extend(pair)
                    current = pair[1]

            async def revoke_midway(first: KeyRecord = first, trial: int = trial) -> None:
                for _ in range(trial):
                    await anyio.lowlevel.checkpoint()
                if trial % 2:
                    await store.revoke(family_id=first.family_id, reason="r", now=clock.now())
                else:
                    await store.revoke(user_id="u1", reason="r", now=clock.now())

            async with anyio.create_task_group() as group:
                group.start_soon(rotate_in_a_loop)
                group.start_soon(revoke_midway)
            for record in minted:
                found = await store.lookup(record.key_hash)
                assert found is not None and found.key.revoked_at is not None
            for record in reversed(minted):
                if record.kind is KeyKind.REFRESH:
                    new = [key_record(clock, family_id=record.family_id)]
                    assert await store.rotate(record.id, new, now=clock.now()) is False
