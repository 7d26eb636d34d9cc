"""CredentialStoreContract: ciphertext by (service, owner)."""

from __future__ import annotations

from typing import ClassVar

from agentguard._model import CredentialOwner, CredentialScope, StoredCredential
from agentguard.storage._protocols import CredentialStore
from agentguard.testing._fakes import FakeClock
from agentguard.testing.conformance._base import ContractBase, assert_store_type

__all__ = ["CredentialStoreContract", "credential"]


def credential(clock: FakeClock, *, cid: str, service: str, owner: str) -> StoredCredential:
    """A user credential with opaque ciphertext, for store tests."""
    return StoredCredential(
        id=cid,
        service=service,
        owner_kind=CredentialOwner.USER,
        owner_id=owner,
        scope=CredentialScope.USER,
        ciphertext=b"\x00opaque-ciphertext",
        key_id="kek-1",
        created_at=clock.now(),
    )


class CredentialStoreContract(ContractBase):
    """Subclass with a ``store`` fixture returning a fresh store."""

    store_type: ClassVar[type[CredentialStore]]
    """Set it to your backend's class: ``mypy --strict`` checks it against ``CredentialStore``."""

    async def test_store_implements_credential_store(self, store: CredentialStore) -> None:
        assert_store_type(self, store, CredentialStore)

    async def test_put_get_replace_delete(self, store: CredentialStore, clock: FakeClock) -> None:
        first = credential(clock, cid="c1", service="crm", owner="u1")
        await store.put_credential(first)
        assert await store.get_credential("crm", CredentialOwner.USER, "u1") == first
        assert await store.get_credential("crm", CredentialOwner.ACCOUNT, "u1") is None
        second = first.model_copy(update={"id": "c2", "ciphertext": b"other"})
        await store.put_credential(second)
        assert await store.get_credential("crm", CredentialOwner.USER, "u1") == second
        assert await store.delete_credential("crm", CredentialOwner.USER, "u1") is True
        assert await store.delete_credential("crm", CredentialOwner.USER, "u1") is False
        assert await store.get_credential("crm", CredentialOwner.USER, "u1") is None

    async def test_list_by_service(self, store: CredentialStore, clock: FakeClock) -> None:
        await store.put_credential(credential(clock, cid="c1", service="crm", owner="u1"))
        await store.put_credential(credential(clock, cid="c2", service="projects", owner="u1"))
        assert [c.id for c in await store.list_credentials()] == ["c1", "c2"]
        assert [c.id for c in await store.list_credentials("projects")] == ["c2"]
