"""KeyIssuer's contract: lifetimes, issued records, DPoP binding, denied refreshes, rotation.

Each test states one rule over a table of cases and checks everything the rule promises: the
exact error (type, Reason, OAuth code, status), the stored records, and the audit event (action,
decision, reason, actor ids, detail, time). Reuse and revocation: test_issuer_revoke_contract.py.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentguard import (
    DEFAULT_ACCESS_TTL,
    DEFAULT_REFRESH_TTL,
    AccountStatus,
    Grants,
    KeyIssuer,
    KeyKind,
    Level,
    generate_key,
    hash_key,
)
from agentguard.audit import AuditWriter
from agentguard.audit._events import rfc3339
from agentguard.errors import InvalidGrant, IssuanceRefused, Reason
from agentguard.storage import MemoryStore
from agentguard.testing import FakeClock, make_user
from tests.support.issuer_events import NO_ACTOR, actor, events, ids, last_event, stored

pytestmark = pytest.mark.anyio


@pytest.fixture
def issuer(store: MemoryStore, clock: FakeClock) -> KeyIssuer:
    return KeyIssuer(store, clock=clock, audit=AuditWriter(store))


# Lifetimes


def test_default_lifetimes() -> None:
    issuer = KeyIssuer(MemoryStore(), clock=FakeClock())
    assert (issuer.access_ttl, issuer.refresh_ttl) == (timedelta(hours=1), timedelta(days=30))
    assert (issuer.access_ttl, issuer.refresh_ttl) == (DEFAULT_ACCESS_TTL, DEFAULT_REFRESH_TTL)
    assert issuer.require_binding is False and issuer.audit is None


@pytest.mark.parametrize("which", ["access_ttl", "refresh_ttl"])
@pytest.mark.parametrize("ttl", [timedelta(0), timedelta(microseconds=-1), -DEFAULT_REFRESH_TTL])
def test_lifetimes_must_be_positive(which: str, ttl: timedelta) -> None:
    lifetimes: dict[str, Any] = {which: ttl}
    with pytest.raises(ValueError, match=r"^key lifetimes must be positive$"):
        KeyIssuer(MemoryStore(), clock=FakeClock(), **lifetimes)


lifetimes = st.timedeltas(min_value=timedelta(microseconds=1), max_value=timedelta(days=400))


@given(access_ttl=lifetimes, refresh_ttl=lifetimes, elapsed=st.floats(0, 1))
def test_each_key_expires_exactly_one_lifetime_after_it_was_issued(
    access_ttl: timedelta, refresh_ttl: timedelta, elapsed: float
) -> None:
    async def scenario() -> None:
        clock = FakeClock()
        store = MemoryStore(clock=clock)
        issuer = KeyIssuer(store, clock=clock, access_ttl=access_ttl, refresh_ttl=refresh_ttl)
        first = await issuer.issue((await make_user(store)).id, "ws-1")
        assert first.access.expires_at == clock.now() + access_ttl
        assert first.refresh.expires_at == clock.now() + refresh_ttl
        # Rotation just before the refresh key expires renews both lifetimes from then.
        clock.advance(min(refresh_ttl * elapsed, refresh_ttl - timedelta(microseconds=1)))
        second = await issuer.refresh(first.refresh_key.reveal())
        assert second.access.expires_at == clock.now() + access_ttl
        assert second.refresh.expires_at == clock.now() + refresh_ttl
        assert second.expires_in(clock.now()) == int(access_ttl.total_seconds())

    anyio.run(scenario)


# Issuance


@pytest.mark.parametrize("jkt", [None, "thumb-1"])
@pytest.mark.parametrize("scope", [None, Grants({"crm": "read"})])
async def test_issue_stores_a_new_family_and_audits_it(
    store: MemoryStore, issuer: KeyIssuer, clock: FakeClock, jkt: str | None, scope: Grants | None
) -> None:
    keys = await issuer.issue((await make_user(store)).id, "ws-1", scope=scope, jkt=jkt)
    pair = (keys.access, keys.refresh)
    assert [r.kind for r in pair] == [KeyKind.ACCESS, KeyKind.REFRESH]
    assert all(re.fullmatch(r"key_[0-9A-Za-z]{16}", r.id) for r in pair)
    assert re.fullmatch(r"fam_[0-9A-Za-z]{16}", keys.access.family_id)
    assert keys.access.id != keys.refresh.id
    for record, secret in zip(pair, (keys.access_key, keys.refresh_key), strict=True):
        assert record.key_hash == hash_key(secret.reveal())
        assert (record.user_id, record.workspace_id, record.account_id) == (
            "user-1",
            "ws-1",
            "acct-1",
        )
        assert (record.family_id, record.created_at) == (keys.access.family_id, clock.now())
        assert (record.scope, record.jkt) == (scope, jkt)
        assert (record.used_at, record.revoked_at) == (None, None)
        assert await stored(store, record) == record
    assert keys.token_type == ("Bearer" if jkt is None else "DPoP")
    assert [e["action"] for e in await events(store)] == ["key.issue"]
    assert await last_event(store) == (
        "key.issue",
        "allow",
        None,
        actor(keys.access),
        {"refresh_key_id": keys.refresh.id, "dpop_bound": jkt is not None},
        rfc3339(clock.now()),
    )


async def test_every_issue_starts_a_new_family(store: MemoryStore, issuer: KeyIssuer) -> None:
    user = await make_user(store)
    families = {(await issuer.issue(user.id, "ws-1")).access.family_id for _ in range(5)}
    assert len(families) == 5


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ("unknown_user", Reason.UNKNOWN_USER),
        ("unknown_workspace", Reason.UNKNOWN_WORKSPACE),
        ("foreign_workspace", Reason.UNKNOWN_WORKSPACE),
        ("closed", Reason.ACCOUNT_CLOSED),
        ("disabled", Reason.USER_DISABLED),
        ("not_member", Reason.NOT_A_MEMBER),
        ("unbound", Reason.DPOP_REQUIRED),
    ],
)
async def test_a_refused_issue_stores_and_audits_nothing(
    store: MemoryStore, clock: FakeClock, change: str, reason: Reason
) -> None:
    user = await make_user(store)
    issuer = KeyIssuer(
        store, clock=clock, audit=AuditWriter(store), require_binding=change == "unbound"
    )
    user_id, workspace_id = user.id, "ws-1"
    if change == "unknown_user":
        user_id = "ghost"
    elif change == "unknown_workspace":
        workspace_id = "ghost"
    elif change == "foreign_workspace":
        await make_user(store, user_id="other", account_id="acct-2", workspace_id="ws-2")
        workspace_id = "ws-2"
    elif change == "closed":
        account = await store.get_account("acct-1")
        assert account is not None
        await store.put_account(account.model_copy(update={"status": AccountStatus.CLOSED}))
    elif change == "disabled":
        await store.put_user(user.model_copy(update={"enabled": False}))
    elif change == "not_member":
        await store.set_membership(user.id, "ws-1", member=False)
    with pytest.raises(IssuanceRefused) as refused:
        await issuer.issue(user_id, workspace_id)
    assert (refused.value.reason, refused.value.status, refused.value.code) == (
        reason,
        400,
        "invalid_request",
    )
    if reason is Reason.DPOP_REQUIRED:
        assert refused.value.description == (
            "this server requires DPoP: issue keys bound to the agent's DPoP key (jkt=...)"
        )
    assert await store.list_keys() == [] and await store.read() == []


# DPoP binding on refresh: (require_binding, the key's jkt, the proof's jkt) -> outcome.
BINDING_CASES = [
    (False, None, None, None),  # a bearer pair stays bearer
    (False, None, "t1", "t1"),  # a proof upgrades the new pair to DPoP
    (False, "t1", "t1", "t1"),
    (False, "t1", None, Reason.DPOP_BINDING_MISMATCH),
    (False, "t1", "t2", Reason.DPOP_BINDING_MISMATCH),
    (True, None, None, Reason.DPOP_REQUIRED),  # keys issued before binding was required
    (True, None, "t1", "t1"),
    (True, "t1", "t1", "t1"),
    (True, "t1", None, Reason.DPOP_BINDING_MISMATCH),
]


@pytest.mark.parametrize("case", BINDING_CASES)
async def test_refresh_binding(
    store: MemoryStore,
    clock: FakeClock,
    case: tuple[bool, str | None, str | None, str | Reason | None],
) -> None:
    require, bound, proof, outcome = case
    keys = await KeyIssuer(store, clock=clock).issue((await make_user(store)).id, "ws-1", jkt=bound)
    issuer = KeyIssuer(store, clock=clock, audit=AuditWriter(store), require_binding=require)
    if isinstance(outcome, Reason):
        with pytest.raises(InvalidGrant) as refused:
            await issuer.refresh(keys.refresh_key.reveal(), jkt=proof)
        assert (refused.value.reason, refused.value.audit_context) == (outcome, ids(keys.refresh))
        assert await last_event(store) == (
            "key.refresh",
            "deny",
            outcome.value,
            actor(keys.refresh),
            {},
            rfc3339(clock.now()),
        )
        assert (await stored(store, keys.refresh)).used_at is None  # a refusal does not use it
        return
    rotated = await issuer.refresh(keys.refresh_key.reveal(), jkt=proof)
    assert rotated.access.jkt == rotated.refresh.jkt == outcome
    assert rotated.token_type == ("Bearer" if outcome is None else "DPoP")


# Denied refreshes


DENIALS: dict[str, tuple[Reason, str | None]] = {
    # case: (reason, which record the denial names)
    "malformed": (Reason.MALFORMED_KEY, None),
    "unknown": (Reason.UNKNOWN_KEY, None),
    "access_key": (Reason.WRONG_KEY_KIND, "access"),
    "revoked": (Reason.REVOKED, "refresh"),
    "expired": (Reason.EXPIRED, "refresh"),
    "closed": (Reason.ACCOUNT_CLOSED, "refresh"),
    "disabled": (Reason.USER_DISABLED, "refresh"),
    "not_member": (Reason.NOT_A_MEMBER, "refresh"),
}


@pytest.mark.parametrize("case", sorted(DENIALS))
async def test_a_denied_refresh_names_its_reason_and_key(
    store: MemoryStore, issuer: KeyIssuer, clock: FakeClock, case: str
) -> None:
    user = await make_user(store)
    keys = await issuer.issue(user.id, "ws-1")
    presented = keys.refresh_key.reveal()
    if case == "malformed":
        presented = presented[:-1]
    elif case == "unknown":
        presented = generate_key(KeyKind.REFRESH).reveal()
    elif case == "access_key":
        presented = keys.access_key.reveal()
    elif case == "revoked":
        await store.revoke(key_id=keys.refresh.id, reason="test", now=clock.now())
    elif case == "expired":
        clock.advance(DEFAULT_REFRESH_TTL)  # the expiry instant itself is expired
    elif case == "closed":
        account = await store.get_account("acct-1")
        assert account is not None
        await store.put_account(account.model_copy(update={"status": AccountStatus.CLOSED}))
    elif case == "disabled":
        await store.put_user(user.model_copy(update={"enabled": False}))
    else:
        await store.set_membership(user.id, "ws-1", member=False)
    reason, named = DENIALS[case]
    record = {"access": keys.access, "refresh": keys.refresh}.get(named or "")
    with pytest.raises(InvalidGrant) as refused:
        await issuer.refresh(presented)
    error = refused.value
    assert (error.reason, error.code, error.status) == (reason, "invalid_grant", 400)
    assert error.audit_context == (ids(record) if record else {})
    assert await last_event(store) == (
        "key.refresh",
        "deny",
        reason.value,
        actor(record) if record else NO_ACTOR,
        {},
        rfc3339(clock.now()),
    )


# Rotation


levels = st.sampled_from([Level.READ, Level.WRITE])
grants = st.dictionaries(st.sampled_from(["crm", "mail", "projects"]), levels).map(Grants)


@given(issued=st.none() | grants, requested=st.none() | grants)
def test_rotation_keeps_or_narrows_the_scope_never_widens(
    issued: Grants | None, requested: Grants | None
) -> None:
    async def scenario() -> None:
        clock = FakeClock()
        store = MemoryStore(clock=clock)
        issuer = KeyIssuer(store, clock=clock)
        user = await make_user(store, grants="crm:write mail:write projects:write")
        keys = await issuer.issue(user.id, "ws-1", scope=issued)
        rotated = await issuer.refresh(keys.refresh_key.reveal(), scope=requested)
        expected = issued if requested is None else requested.narrow(issued)
        assert rotated.access.scope == rotated.refresh.scope == expected
        if issued is not None and expected is not None:
            assert all(expected.level(s) <= issued.level(s) for s in ("crm", "mail", "projects"))

    anyio.run(scenario)


async def test_rotation_continues_the_family_and_uses_the_old_key(
    store: MemoryStore, issuer: KeyIssuer, clock: FakeClock
) -> None:
    first = await issuer.issue((await make_user(store)).id, "ws-1", scope=Grants({"crm": "read"}))
    clock.advance(1000)
    second = await issuer.refresh(first.refresh_key.reveal())
    for record in (second.access, second.refresh):
        assert record.id not in (first.access.id, first.refresh.id)
        assert (record.family_id, record.user_id, record.created_at) == (
            first.access.family_id,
            first.access.user_id,
            clock.now(),
        )
        assert await stored(store, record) == record
    assert (await stored(store, first.refresh)).used_at == clock.now()
    assert await last_event(store) == (
        "key.refresh",
        "allow",
        None,
        actor(second.access),
        {"used_key_id": first.refresh.id, "refresh_key_id": second.refresh.id},
        rfc3339(clock.now()),
    )
