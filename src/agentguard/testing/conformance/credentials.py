"""CredentialStoreContract: ciphertext by (service, owner)."""

from __future__ import annotations

from typing import Any

from agentguard.model import CredentialOwner, CredentialScope, StoredCredential
from agentguard.testing.conformance._base import ContractBase
from agentguard.testing.fakes import FakeClock

__all__ = ["CredentialStoreContract"]


def _credential(clock: FakeClock, *, cid: str, service: str, owner: str) -> StoredCredential:
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

    async def test_put_get_replace_delete(self, store: Any, clock: FakeClock) -> None:
        first = _credential(clock, cid="c1", service="crm", owner="u1")
        await store.put_credential(first)
        assert await store.get_credential("crm", CredentialOwner.USER, "u1") == first
        assert await store.get_credential("crm", CredentialOwner.ACCOUNT, "u1") is None
        second = first.model_copy(update={"id": "c2", "ciphertext": b"other"})
        await store.put_credential(second)
        assert await store.get_credential("crm", CredentialOwner.USER, "u1") == second
        assert await store.delete_credential("crm", CredentialOwner.USER, "u1") is True
        assert await store.delete_credential("crm", CredentialOwner.USER, "u1") is False
        assert await store.get_credential("crm", CredentialOwner.USER, "u1") is None

    async def test_list_by_service(self, store: Any, clock: FakeClock) -> None:
        await store.put_credential(_credential(clock, cid="c1", service="crm", owner="u1"))
        await store.put_credential(_credential(clock, cid="c2", service="projects", owner="u1"))
        assert [c.id for c in await store.list_credentials()] == ["c1", "c2"]
        assert [c.id for c in await store.list_credentials("projects")] == ["c2"]
