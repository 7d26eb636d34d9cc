"""LivenessContract: every fact the resolver checks is read live, on every instance.

"Checked live on every call" is the promise a backend must keep: a store that caches
:meth:`~agentguard.storage.KeyStore.lookup` (or any read the guard makes) passes every
single-instance test and still lets a revoked key through on another instance. Each test here
reads a fact through both instances (so a cache, if there is one, is warm), changes it through
``other_store``, and expects the very next call on *both* instances to see the change, through
the real :class:`~agentguard.KeyResolver` where the resolver is what reads it.

Subclass with ``store`` and ``other_store`` fixtures: two instances over one backend.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import ClassVar

import pytest

from agentguard._keys import KeyIssuer
from agentguard._model import AccountStatus, CredentialOwner, Grants, IssuedKeys, KeyKind, Level
from agentguard._resolver import KeyResolver
from agentguard.errors import InvalidToken, Reason
from agentguard.storage._protocols import CredentialStore, KeyStore
from agentguard.testing._fakes import FakeClock
from agentguard.testing.conformance._base import ContractBase, key_record
from agentguard.testing.conformance._credentials import credential
from agentguard.testing.conformance._directory import seed_directory

__all__ = ["CredentialLivenessContract", "LivenessContract"]

Change = Callable[[KeyStore, IssuedKeys, FakeClock], Awaitable[None]]


async def _disable_user(store: KeyStore, issued: IssuedKeys, clock: FakeClock) -> None:
    user = await store.get_user(issued.access.user_id)
    assert user is not None
    await store.put_user(user.model_copy(update={"enabled": False}))


async def _close_account(store: KeyStore, issued: IssuedKeys, clock: FakeClock) -> None:
    account = await store.get_account(issued.access.account_id)
    assert account is not None
    await store.put_account(account.model_copy(update={"status": AccountStatus.CLOSED}))


async def _remove_member(store: KeyStore, issued: IssuedKeys, clock: FakeClock) -> None:
    await store.set_membership(issued.access.user_id, issued.access.workspace_id, member=False)


async def _revoke_key(store: KeyStore, issued: IssuedKeys, clock: FakeClock) -> None:
    assert await store.revoke(key_id=issued.access.id, reason="leaked", now=clock.now()) == 1


async def _revoke_family(store: KeyStore, issued: IssuedKeys, clock: FakeClock) -> None:
    family = issued.access.family_id
    assert await store.revoke(family_id=family, reason="leaked", now=clock.now()) == 2


async def _revoke_user(store: KeyStore, issued: IssuedKeys, clock: FakeClock) -> None:
    user = issued.access.user_id
    assert await store.revoke(user_id=user, reason="offboarded", now=clock.now()) == 2


async def _let_expire(store: KeyStore, issued: IssuedKeys, clock: FakeClock) -> None:
    clock.advance(issued.access.expires_at - clock.now() + timedelta(seconds=1))


FACTS: dict[str, tuple[Change, Reason]] = {
    "key revoked": (_revoke_key, Reason.REVOKED),
    "family revoked": (_revoke_family, Reason.REVOKED),
    "user's keys revoked": (_revoke_user, Reason.REVOKED),
    "key expired": (_let_expire, Reason.EXPIRED),
    "user disabled": (_disable_user, Reason.USER_DISABLED),
    "membership removed": (_remove_member, Reason.NOT_A_MEMBER),
    "account closed": (_close_account, Reason.ACCOUNT_CLOSED),
}
"""Each fact the resolver checks, the change that makes it false, and the refusal it causes."""


async def _issue(store: KeyStore, clock: FakeClock) -> IssuedKeys:
    await seed_directory(store)
    return await KeyIssuer(store, clock=clock).issue("u1", "w1")


async def _refused(resolver: KeyResolver, key: str) -> Reason:
    with pytest.raises(InvalidToken) as refused:
        await resolver.resolve(key)
    return refused.value.reason


class LivenessContract(ContractBase):
    """Subclass with ``store`` and ``other_store``: two instances of one KeyStore backend."""

    store_type: ClassVar[type[KeyStore]]
    """Set it to your backend's class: ``mypy --strict`` checks it against ``KeyStore``."""

    @pytest.mark.parametrize("fact", list(FACTS))
    async def test_change_through_other_instance_is_in_force_on_the_next_call(
        self, fact: str, store: KeyStore, other_store: KeyStore, clock: FakeClock
    ) -> None:
        change, reason = FACTS[fact]
        issued = await _issue(store, clock)
        key = issued.access_key.reveal()
        resolvers = [KeyResolver(store, clock), KeyResolver(other_store, clock)]
        for resolver in resolvers:  # warm any cache on both instances
            assert (await resolver.resolve(key)).key_id == issued.access.id
        await change(other_store, issued, clock)
        for resolver in resolvers:
            assert await _refused(resolver, key) is reason

    async def test_grant_change_is_in_force_on_the_next_call(
        self, store: KeyStore, other_store: KeyStore, clock: FakeClock
    ) -> None:
        issued = await _issue(store, clock)
        key = issued.access_key.reveal()
        resolvers = [KeyResolver(store, clock), KeyResolver(other_store, clock)]
        for resolver in resolvers:
            assert (await resolver.resolve(key)).grants.level("crm") is Level.WRITE
        user = await other_store.get_user("u1")
        assert user is not None
        await other_store.put_user(user.model_copy(update={"grants": Grants({"crm": "read"})}))
        for resolver in resolvers:
            assert (await resolver.resolve(key)).grants.level("crm") is Level.READ

    async def test_restored_access_is_in_force_on_the_next_call(
        self, store: KeyStore, other_store: KeyStore, clock: FakeClock
    ) -> None:
        """A refusal is not cached either: re-enabling the user lets the key through again."""
        issued = await _issue(store, clock)
        key = issued.access_key.reveal()
        resolver = KeyResolver(store, clock)
        await _disable_user(other_store, issued, clock)
        assert await _refused(resolver, key) is Reason.USER_DISABLED
        user = await other_store.get_user("u1")
        assert user is not None
        await other_store.put_user(user.model_copy(update={"enabled": True}))
        assert (await resolver.resolve(key)).user_id == "u1"

    async def test_key_inserted_after_a_miss_is_found(
        self, store: KeyStore, other_store: KeyStore, clock: FakeClock
    ) -> None:
        await seed_directory(store)
        record = key_record(clock)
        assert await store.lookup(record.key_hash) is None
        await other_store.insert_keys([record])
        found = await store.lookup(record.key_hash)
        assert found is not None and found.key == record

    async def test_rotation_through_other_instance_uses_the_key_everywhere(
        self, store: KeyStore, other_store: KeyStore, clock: FakeClock
    ) -> None:
        await seed_directory(store)
        refresh = key_record(clock, kind=KeyKind.REFRESH)
        await store.insert_keys([refresh])
        before = await store.lookup(refresh.key_hash)
        assert before is not None and before.key.used_at is None
        successor = key_record(clock, family_id=refresh.family_id)
        assert await other_store.rotate(refresh.id, [successor], now=clock.now()) is True
        after = await store.lookup(refresh.key_hash)
        assert after is not None and after.key.used_at == clock.now()
        assert await store.lookup(successor.key_hash) is not None
        again = key_record(clock, family_id=refresh.family_id)
        assert await store.rotate(refresh.id, [again], now=clock.now()) is False


class CredentialLivenessContract(ContractBase):
    """Subclass with ``store`` and ``other_store``: two instances of one CredentialStore."""

    store_type: ClassVar[type[CredentialStore]]
    """Set it to your backend's class: ``mypy --strict`` checks it against ``CredentialStore``."""

    async def test_replaced_credential_is_read_on_the_next_call(
        self, store: CredentialStore, other_store: CredentialStore, clock: FakeClock
    ) -> None:
        first = credential(clock, cid="c1", service="crm", owner="u1")
        await store.put_credential(first)
        for instance in (store, other_store):
            assert await instance.get_credential("crm", CredentialOwner.USER, "u1") == first
        second = first.model_copy(update={"id": "c2", "ciphertext": b"\x00rotated"})
        await other_store.put_credential(second)
        for instance in (store, other_store):
            assert await instance.get_credential("crm", CredentialOwner.USER, "u1") == second
        assert await other_store.delete_credential("crm", CredentialOwner.USER, "u1") is True
        for instance in (store, other_store):
            assert await instance.get_credential("crm", CredentialOwner.USER, "u1") is None
