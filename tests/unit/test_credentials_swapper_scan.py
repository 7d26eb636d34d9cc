"""Issue 14, item 7: the swapper names every secret of a call, so the relay scans them all."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from agentguard import CredentialOwner, CredentialScope, Grants, Principal, Secret, ServiceConfig
from agentguard.credentials import CallableMinter, CredentialSwapper, CredentialVault, KeyRing
from agentguard.credentials._swapper import Outgoing
from agentguard.storage import MemoryStore
from agentguard.testing import FakeClock

pytestmark = pytest.mark.anyio
ADMIN = "projects-admin-0123456789abcdefghij"
USER_KEY = "crm-user-0123456789abcdefghijkl"


async def _setup() -> tuple[CredentialSwapper, Principal, ServiceConfig, ServiceConfig]:
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    vault = CredentialVault(store, KeyRing.generate(), clock=clock)
    await vault.put("crm", CredentialOwner.USER, "u1", USER_KEY, scope=CredentialScope.USER)
    await vault.put("projects", CredentialOwner.ACCOUNT, "a1", ADMIN, scope=CredentialScope.ADMIN)

    async def mint(
        admin: Secret, principal: Principal, service: ServiceConfig
    ) -> tuple[str, datetime]:
        assert admin.reveal() == ADMIN
        return f"minted-for-{principal.user_id}", clock.now() + timedelta(minutes=5)

    swapper = CredentialSwapper(vault, minters={"projects": CallableMinter(mint)}, clock=clock)
    principal = Principal(
        user_id="u1",
        workspace_id="w1",
        account_id="a1",
        key_id="key_1",
        family_id="fam_1",
        grants=Grants.from_scope("crm:write projects:write"),
        expires_at=clock.now() + timedelta(hours=1),
    )
    crm = ServiceConfig(name="crm", base_url="https://crm.example")
    projects = ServiceConfig(name="projects", base_url="https://projects.example")
    return swapper, principal, crm, projects


async def test_a_minted_call_involves_the_token_and_the_admin_credential() -> None:
    swapper, principal, _, projects = await _setup()
    outgoing = await swapper.outgoing(principal, projects)
    assert isinstance(outgoing, Outgoing)
    assert outgoing.credential.reveal() == f"minted-for-{principal.user_id}"
    assert [s.reveal() for s in outgoing.involved] == [outgoing.credential.reveal(), ADMIN]
    cached = await swapper.outgoing(principal, projects)  # from the mint cache
    assert [s.reveal() for s in cached.involved] == [cached.credential.reveal(), ADMIN]


async def test_a_user_credential_involves_itself_only() -> None:
    swapper, principal, crm, _ = await _setup()
    outgoing = await swapper.outgoing(principal, crm)
    assert [s.reveal() for s in outgoing.involved] == [USER_KEY]


async def test_credential_for_is_the_outgoing_credential() -> None:
    swapper, principal, crm, projects = await _setup()
    assert (await swapper.credential_for(principal, crm)).reveal() == USER_KEY
    token = await swapper.credential_for(principal, projects)
    assert token.reveal() == f"minted-for-{principal.user_id}"
    assert ADMIN not in repr(await swapper.outgoing(principal, projects))
