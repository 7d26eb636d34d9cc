"""Issuance, rotation, reuse detection and revocation, with their audit events."""

from __future__ import annotations

import json
from datetime import timedelta

import anyio
import pytest

from agentguard import AccountStatus, Grants, KeyIssuer, KeyKind
from agentguard.audit import AuditWriter, verify_chain
from agentguard.errors import InvalidGrant, IssuanceRefused, Reason
from agentguard.storage import MemoryStore
from agentguard.testing import FakeClock, make_user

pytestmark = pytest.mark.anyio


@pytest.fixture
def issuer(store: MemoryStore, clock: FakeClock) -> KeyIssuer:
    return KeyIssuer(store, clock=clock, audit=AuditWriter(store))


async def events(store: MemoryStore) -> list[dict[str, object]]:
    return [entry.event() for entry in await store.read()]


async def test_issue_stores_only_hashes(
    store: MemoryStore, issuer: KeyIssuer, clock: FakeClock
) -> None:
    keys = await issuer.issue((await make_user(store)).id, "ws-1")
    assert keys.access.kind is KeyKind.ACCESS and keys.refresh.kind is KeyKind.REFRESH
    assert keys.access.family_id == keys.refresh.family_id
    assert keys.access.expires_at - clock.now() == timedelta(hours=1)
    assert keys.refresh.expires_at - clock.now() == timedelta(days=30)
    dump = repr(await store.list_keys()) + repr(keys)
    assert keys.access_key.reveal() not in dump
    assert keys.refresh_key.reveal() not in dump
    assert keys.token_type == "Bearer"


async def test_lifetimes_are_configurable(store: MemoryStore, clock: FakeClock) -> None:
    issuer = KeyIssuer(
        store, clock=clock, access_ttl=timedelta(minutes=5), refresh_ttl=timedelta(days=1)
    )
    keys = await issuer.issue((await make_user(store)).id, "ws-1")
    assert keys.expires_in(clock.now()) == 300
    assert keys.refresh.expires_at - clock.now() == timedelta(days=1)
    with pytest.raises(ValueError):
        KeyIssuer(store, clock=clock, access_ttl=timedelta(0))


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ("unknown_user", Reason.UNKNOWN_USER),
        ("unknown_workspace", Reason.UNKNOWN_WORKSPACE),
        ("disabled", Reason.USER_DISABLED),
        ("not_member", Reason.NOT_A_MEMBER),
        ("closed", Reason.ACCOUNT_CLOSED),
    ],
)
async def test_issue_refused(
    store: MemoryStore, issuer: KeyIssuer, change: str, reason: Reason
) -> None:
    user = await make_user(store)
    user_id, workspace_id = user.id, "ws-1"
    if change == "unknown_user":
        user_id = "ghost"
    elif change == "unknown_workspace":
        workspace_id = "ghost"
    elif change == "disabled":
        await store.put_user(user.model_copy(update={"enabled": False}))
    elif change == "not_member":
        await store.set_membership(user.id, "ws-1", member=False)
    else:
        account = await store.get_account("acct-1")
        assert account is not None
        await store.put_account(account.model_copy(update={"status": AccountStatus.CLOSED}))
    with pytest.raises(IssuanceRefused) as info:
        await issuer.issue(user_id, workspace_id)
    assert info.value.reason is reason


async def test_refresh_rotates(store: MemoryStore, issuer: KeyIssuer, clock: FakeClock) -> None:
    first = await issuer.issue((await make_user(store)).id, "ws-1")
    clock.advance(3000)
    second = await issuer.refresh(first.refresh_key.reveal())
    assert second.access.family_id == first.access.family_id
    assert second.access_key != first.access_key and second.refresh_key != first.refresh_key
    assert second.access.expires_at == clock.now() + timedelta(hours=1)
    used = await store.lookup(first.refresh.key_hash)
    assert used is not None and used.key.used_at == clock.now()
    actions = [e["action"] for e in await events(store)]
    assert actions == ["key.issue", "key.refresh"]


async def test_refresh_reuse_revokes_family(store: MemoryStore, issuer: KeyIssuer) -> None:
    first = await issuer.issue((await make_user(store)).id, "ws-1")
    second = await issuer.refresh(first.refresh_key.reveal())
    with pytest.raises(InvalidGrant) as info:
        await issuer.refresh(first.refresh_key.reveal())
    assert info.value.reason is Reason.REFRESH_REUSED
    for record in (first.access, second.access, second.refresh):
        found = await store.lookup(record.key_hash)
        assert found is not None and found.key.revoked_reason == "refresh_reused"
    with pytest.raises(InvalidGrant) as again:
        await issuer.refresh(second.refresh_key.reveal())
    assert again.value.reason is Reason.REVOKED
    logged = await events(store)
    reuse = [e for e in logged if e["action"] == "key.reuse_detected"]
    assert len(reuse) == 1
    assert reuse[0]["detail"] == {"revoked_keys": 4}  # both pairs, the used refresh key too
    assert reuse[0]["actor"]["family"] == first.access.family_id  # type: ignore[index]
    assert verify_chain(await store.read()) is None


async def test_concurrent_refresh_has_exactly_one_winner(
    store: MemoryStore, issuer: KeyIssuer
) -> None:
    first = await issuer.issue((await make_user(store)).id, "ws-1")
    outcomes: list[object] = []

    async def attempt() -> None:
        try:
            outcomes.append(await issuer.refresh(first.refresh_key.reveal()))
        except InvalidGrant as error:
            outcomes.append(error.reason)

    async with anyio.create_task_group() as group:
        for _ in range(10):
            group.start_soon(attempt)
    winners = [o for o in outcomes if not isinstance(o, Reason)]
    assert len(winners) == 1
    assert outcomes.count(Reason.REFRESH_REUSED) == 9


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ("disabled", Reason.USER_DISABLED),
        ("not_member", Reason.NOT_A_MEMBER),
        ("closed", Reason.ACCOUNT_CLOSED),
        ("revoked", Reason.REVOKED),
        ("expired", Reason.EXPIRED),
    ],
)
async def test_refresh_checks_owner_live(
    store: MemoryStore, issuer: KeyIssuer, clock: FakeClock, change: str, reason: Reason
) -> None:
    user = await make_user(store)
    keys = await issuer.issue(user.id, "ws-1")
    if change == "disabled":
        await store.put_user(user.model_copy(update={"enabled": False}))
    elif change == "not_member":
        await store.set_membership(user.id, "ws-1", member=False)
    elif change == "closed":
        account = await store.get_account("acct-1")
        assert account is not None
        await store.put_account(account.model_copy(update={"status": AccountStatus.CLOSED}))
    elif change == "revoked":
        await issuer.revoke(family_id=keys.access.family_id)
    else:
        clock.advance(timedelta(days=30))
    with pytest.raises(InvalidGrant) as info:
        await issuer.refresh(keys.refresh_key.reveal())
    assert info.value.reason is reason
    denied = [e for e in await events(store) if e["decision"] == "deny"]
    assert denied[-1]["reason"] == reason.value


@pytest.mark.parametrize("bad", ["", "ag_rt_nope", "x" * 55])
async def test_refresh_with_malformed_key(issuer: KeyIssuer, bad: str) -> None:
    with pytest.raises(InvalidGrant) as info:
        await issuer.refresh(bad)
    assert info.value.reason is Reason.MALFORMED_KEY


async def test_access_key_cannot_refresh(store: MemoryStore, issuer: KeyIssuer) -> None:
    keys = await issuer.issue((await make_user(store)).id, "ws-1")
    with pytest.raises(InvalidGrant) as info:
        await issuer.refresh(keys.access_key.reveal())
    assert info.value.reason is Reason.WRONG_KEY_KIND


async def test_refresh_may_narrow_scope_but_never_widen(
    store: MemoryStore, issuer: KeyIssuer
) -> None:
    user = await make_user(store, grants="crm:write projects:write")
    keys = await issuer.issue(user.id, "ws-1", scope=Grants({"crm": "write"}))
    narrowed = await issuer.refresh(
        keys.refresh_key.reveal(), scope=Grants({"crm": "read", "projects": "write"})
    )
    assert narrowed.access.scope == Grants({"crm": "read"})


async def test_dpop_bound_refresh_needs_same_key(store: MemoryStore, issuer: KeyIssuer) -> None:
    keys = await issuer.issue((await make_user(store)).id, "ws-1", jkt="thumb-1")
    assert keys.token_type == "DPoP"
    with pytest.raises(InvalidGrant) as info:
        await issuer.refresh(keys.refresh_key.reveal(), jkt="thumb-2")
    assert info.value.reason is Reason.DPOP_BINDING_MISMATCH
    with pytest.raises(InvalidGrant):
        await issuer.refresh(keys.refresh_key.reveal())
    rotated = await issuer.refresh(keys.refresh_key.reveal(), jkt="thumb-1")
    assert rotated.access.jkt == rotated.refresh.jkt == "thumb-1"


async def test_revoke_presented(store: MemoryStore, issuer: KeyIssuer) -> None:
    keys = await issuer.issue((await make_user(store)).id, "ws-1")
    assert await issuer.revoke_presented("garbage") is False
    assert await issuer.revoke_presented(keys.access_key.reveal()) is True
    found = await store.lookup(keys.refresh.key_hash)
    assert found is not None and found.key.revoked_at is None
    assert await issuer.revoke_presented(keys.refresh_key.reveal()) is True
    found = await store.lookup(keys.refresh.key_hash)
    assert found is not None and found.key.revoked_at is not None


async def test_revoke_by_user_counts_and_audits(store: MemoryStore, issuer: KeyIssuer) -> None:
    user = await make_user(store)
    await issuer.issue(user.id, "ws-1")
    await issuer.issue(user.id, "ws-1")
    assert await issuer.revoke(user_id=user.id, reason="offboarded") == 4
    last = (await events(store))[-1]
    assert (last["action"], last["reason"], last["detail"]) == (
        "key.revoke",
        "offboarded",
        {"revoked_keys": 4},
    )


async def test_no_secret_in_audit_log(store: MemoryStore, issuer: KeyIssuer) -> None:
    first = await issuer.issue((await make_user(store)).id, "ws-1")
    second = await issuer.refresh(first.refresh_key.reveal())
    with pytest.raises(InvalidGrant):
        await issuer.refresh(first.refresh_key.reveal())
    log = b"".join(entry.body for entry in await store.read()).decode()
    for secret in (first.access_key, first.refresh_key, second.access_key, second.refresh_key):
        assert secret.reveal() not in log
    assert "ag_at_" not in log and "ag_rt_" not in log
    json.loads("[" + ",".join(e.body.decode() for e in await store.read()) + "]")
