"""DirectoryStoreContract: accounts, workspaces, users, memberships, grants."""

from __future__ import annotations

from typing import ClassVar

import pytest

from agentguard._model import Account, AccountStatus, Grants, Level, User, Workspace
from agentguard.storage._protocols import DirectoryStore, IntegrityError
from agentguard.testing.conformance._base import ContractBase, assert_store_type

__all__ = ["DirectoryStoreContract", "seed_directory"]


async def seed_directory(store: DirectoryStore) -> None:
    """Account ``a1`` with workspace ``w1`` and users ``u1`` (crm:write), ``u2`` (crm:read)."""
    await store.put_account(Account(id="a1", name="Acme"))
    await store.put_workspace(Workspace(id="w1", account_id="a1", name="Sales"))
    await store.put_user(User(id="u1", account_id="a1", grants=Grants({"crm": "write"})))
    await store.put_user(User(id="u2", account_id="a1", grants=Grants({"crm": "read"})))
    await store.set_membership("u1", "w1", member=True)


class DirectoryStoreContract(ContractBase):
    """Subclass with a ``store`` fixture returning a fresh, empty store."""

    store_type: ClassVar[type[DirectoryStore]]
    """Set it to your backend's class: ``mypy --strict`` checks it against ``DirectoryStore``."""

    async def test_store_implements_directory_store(self, store: DirectoryStore) -> None:
        assert_store_type(self, store, DirectoryStore)

    async def test_account_round_trip(self, store: DirectoryStore) -> None:
        account = Account(id="a1", name="Acme")
        await store.put_account(account)
        assert await store.get_account("a1") == account
        assert await store.get_account("nope") is None

    async def test_put_replaces_record(self, store: DirectoryStore) -> None:
        await seed_directory(store)
        await store.put_account(Account(id="a1", name="Acme", status=AccountStatus.CLOSED))
        stored = await store.get_account("a1")
        assert stored is not None
        assert stored.status is AccountStatus.CLOSED

    async def test_user_round_trip_keeps_grants(self, store: DirectoryStore) -> None:
        await seed_directory(store)
        user = await store.get_user("u1")
        assert user is not None
        assert user.grants.level("crm") is Level.WRITE
        assert user.grants.level("projects") is Level.NONE
        assert user.enabled

    async def test_user_update_is_visible_at_once(self, store: DirectoryStore) -> None:
        await seed_directory(store)
        user = await store.get_user("u1")
        assert user is not None
        await store.put_user(user.model_copy(update={"enabled": False, "grants": Grants()}))
        updated = await store.get_user("u1")
        assert updated is not None
        assert not updated.enabled
        assert updated.grants == Grants()

    async def test_workspace_needs_account(self, store: DirectoryStore) -> None:
        with pytest.raises(IntegrityError):
            await store.put_workspace(Workspace(id="w1", account_id="missing"))

    async def test_user_needs_account(self, store: DirectoryStore) -> None:
        with pytest.raises(IntegrityError):
            await store.put_user(User(id="u1", account_id="missing"))

    async def test_membership_add_and_remove(self, store: DirectoryStore) -> None:
        await seed_directory(store)
        assert await store.is_member("u1", "w1")
        assert not await store.is_member("u2", "w1")
        await store.set_membership("u1", "w1", member=False)
        assert not await store.is_member("u1", "w1")
        await store.set_membership("u1", "w1", member=False)  # idempotent
        await store.set_membership("u2", "w1", member=True)
        await store.set_membership("u2", "w1", member=True)  # idempotent
        assert await store.is_member("u2", "w1")

    async def test_membership_needs_known_user_and_workspace(self, store: DirectoryStore) -> None:
        await seed_directory(store)
        with pytest.raises(IntegrityError):
            await store.set_membership("ghost", "w1", member=True)
        with pytest.raises(IntegrityError):
            await store.set_membership("u1", "ghost", member=True)

    async def test_membership_across_accounts_is_refused(self, store: DirectoryStore) -> None:
        await seed_directory(store)
        await store.put_account(Account(id="a2"))
        await store.put_user(User(id="x", account_id="a2"))
        with pytest.raises(IntegrityError):
            await store.set_membership("x", "w1", member=True)

    async def test_records_never_change_account(self, store: DirectoryStore) -> None:
        await seed_directory(store)
        await store.put_account(Account(id="a2"))
        with pytest.raises(IntegrityError):
            await store.put_user(User(id="u1", account_id="a2"))
        with pytest.raises(IntegrityError):
            await store.put_workspace(Workspace(id="w1", account_id="a2"))
        user = await store.get_user("u1")
        assert user is not None and user.account_id == "a1"
        assert await store.is_member("u1", "w1")

    async def test_list_users_filters_by_account(self, store: DirectoryStore) -> None:
        await seed_directory(store)
        await store.put_account(Account(id="a2"))
        await store.put_user(User(id="x", account_id="a2"))
        assert [u.id for u in await store.list_users()] == ["u1", "u2", "x"]
        assert [u.id for u in await store.list_users("a2")] == ["x"]
