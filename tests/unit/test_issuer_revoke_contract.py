"""KeyIssuer's contract for reuse detection and revocation (RFC 9700 §4.14.2, RFC 7009).

Reuse of a refresh key revokes its whole family and is audited as ``key.reuse_detected``; a
refresh that loses its rotation to a revocation is ``revoked``, not reuse. Revocation selects by
key, family or user, records the reason on every key and audits the selector and the count.
"""

from __future__ import annotations

import pytest

from agentguard import KeyIssuer, KeyKind, generate_key
from agentguard.audit import AuditWriter
from agentguard.audit._events import rfc3339
from agentguard.errors import InvalidGrant, Reason
from agentguard.storage import MemoryStore
from agentguard.testing import FakeClock, make_user
from tests.support.issuer_events import (
    NO_ACTOR,
    Interleaved,
    actor,
    events,
    ids,
    last_event,
    stored,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
def issuer(store: MemoryStore, clock: FakeClock) -> KeyIssuer:
    return KeyIssuer(store, clock=clock, audit=AuditWriter(store))


# Reuse


async def test_reuse_revokes_the_whole_family_and_only_it(
    store: MemoryStore, issuer: KeyIssuer, clock: FakeClock
) -> None:
    user = await make_user(store)
    first = await issuer.issue(user.id, "ws-1")
    other = await issuer.issue(user.id, "ws-1")
    second = await issuer.refresh(first.refresh_key.reveal())
    clock.advance(60)
    with pytest.raises(InvalidGrant) as refused:
        await issuer.refresh(first.refresh_key.reveal())
    assert (refused.value.reason, refused.value.audit_context) == (
        Reason.REFRESH_REUSED,
        ids(first.refresh),
    )
    assert await last_event(store) == (
        "key.reuse_detected",
        "deny",
        "refresh_reused",
        actor(first.refresh),
        {"revoked_keys": 4},
        rfc3339(clock.now()),
    )
    for record in (first.access, first.refresh, second.access, second.refresh):
        revoked = await stored(store, record)
        assert (revoked.revoked_at, revoked.revoked_reason) == (clock.now(), "refresh_reused")
    for record in (other.access, other.refresh):
        assert (await stored(store, record)).revoked_at is None
    await issuer.refresh(other.refresh_key.reveal())


@pytest.mark.parametrize("then_revoke", [False, True])
async def test_losing_the_rotation_to_another_refresh_is_reuse(
    store: MemoryStore, clock: FakeClock, then_revoke: bool
) -> None:
    # Even if the family was revoked afterwards: the key was used, so someone else holds it.
    wrapped = Interleaved(store)
    issuer = KeyIssuer(wrapped, clock=clock, audit=AuditWriter(store))
    keys = await issuer.issue((await make_user(store)).id, "ws-1")

    async def compete() -> None:
        await KeyIssuer(store, clock=clock).refresh(keys.refresh_key.reveal())
        if then_revoke:
            await store.revoke(family_id=keys.refresh.family_id, reason="ops", now=clock.now())

    wrapped.meanwhile = compete
    with pytest.raises(InvalidGrant) as refused:
        await issuer.refresh(keys.refresh_key.reveal())
    assert (refused.value.reason, refused.value.audit_context) == (
        Reason.REFRESH_REUSED,
        ids(keys.refresh),
    )
    assert (await last_event(store))[:4] == (
        "key.reuse_detected",
        "deny",
        "refresh_reused",
        actor(keys.refresh),
    )


async def test_losing_the_rotation_to_a_revocation_is_revoked_not_reuse(
    store: MemoryStore, clock: FakeClock
) -> None:
    wrapped = Interleaved(store)
    issuer = KeyIssuer(wrapped, clock=clock, audit=AuditWriter(store))
    keys = await issuer.issue((await make_user(store)).id, "ws-1")
    wrapped.meanwhile = lambda: issuer.revoke(family_id=keys.refresh.family_id)
    with pytest.raises(InvalidGrant) as refused:
        await issuer.refresh(keys.refresh_key.reveal())
    assert (refused.value.reason, refused.value.audit_context) == (
        Reason.REVOKED,
        ids(keys.refresh),
    )
    assert await last_event(store) == (
        "key.refresh",
        "deny",
        "revoked",
        actor(keys.refresh),
        {},
        rfc3339(clock.now()),
    )
    assert "key.reuse_detected" not in [e["action"] for e in await events(store)]


# Revocation


@pytest.mark.parametrize("presented", ["garbage", "unknown"])
async def test_revoking_an_unknown_key_is_a_quiet_no(
    store: MemoryStore, issuer: KeyIssuer, presented: str
) -> None:
    await issuer.issue((await make_user(store)).id, "ws-1")
    value = "ag_at_garbage" if presented == "garbage" else generate_key(KeyKind.REFRESH).reveal()
    assert await issuer.revoke_presented(value) is False
    assert [e["action"] for e in await events(store)] == ["key.issue"]
    assert all(r.revoked_at is None for r in (await store.list_keys()))


@pytest.mark.parametrize(("kind", "selector"), [("access", "key_id"), ("refresh", "family_id")])
async def test_revoking_a_presented_key(
    store: MemoryStore, issuer: KeyIssuer, clock: FakeClock, kind: str, selector: str
) -> None:
    # RFC 7009 §2.1: revoking a refresh key revokes its family; an access key only itself.
    keys = await issuer.issue((await make_user(store)).id, "ws-1")
    secret = keys.access_key if kind == "access" else keys.refresh_key
    assert await issuer.revoke_presented(secret.reveal()) is True
    chosen = [keys.access] if kind == "access" else [keys.access, keys.refresh]
    for record in (keys.access, keys.refresh):
        now = await stored(store, record)
        expected = (clock.now(), "revoked_by_client") if record in chosen else (None, None)
        assert (now.revoked_at, now.revoked_reason) == expected
    value = keys.access.id if selector == "key_id" else keys.access.family_id
    event = (await events(store))[-1]
    assert (event["action"], event["reason"], event["detail"]) == (
        "key.revoke",
        "revoked_by_client",
        {"revoked_keys": len(chosen)},
    )
    assert event["actor"][{"key_id": "key_id", "family_id": "family"}[selector]] == value
    assert await issuer.revoke_presented(secret.reveal()) is False  # nothing left to revoke


@pytest.mark.parametrize("selector", ["key_id", "family_id", "user_id"])
@pytest.mark.parametrize("reason", [None, "offboarded"])
async def test_revoke_by_selector(
    store: MemoryStore, issuer: KeyIssuer, clock: FakeClock, selector: str, reason: str | None
) -> None:
    user = await make_user(store)
    await make_user(store, user_id="user-2")
    first, second = [await issuer.issue(user.id, "ws-1") for _ in range(2)]
    bystander = await issuer.issue("user-2", "ws-1")
    value, chosen = {
        "key_id": (first.access.id, [first.access]),
        "family_id": (first.access.family_id, [first.access, first.refresh]),
        "user_id": (user.id, [first.access, first.refresh, second.access, second.refresh]),
    }[selector]
    clock.advance(5)
    extra = {} if reason is None else {"reason": reason}
    assert await issuer.revoke(**{selector: value}, **extra) == len(chosen)
    expected_reason = reason or "revoked"
    everyone = [first.access, first.refresh, second.access, second.refresh]
    for record in [*everyone, bystander.access, bystander.refresh]:
        now = await stored(store, record)
        revoked = (clock.now(), expected_reason) if record in chosen else (None, None)
        assert (now.revoked_at, now.revoked_reason) == revoked
    expected_actor: dict[str, str | None] = dict(NO_ACTOR)
    expected_actor[{"key_id": "key_id", "family_id": "family", "user_id": "user"}[selector]] = value
    assert await last_event(store) == (
        "key.revoke",
        "allow",
        expected_reason,
        expected_actor,
        {"revoked_keys": len(chosen)},
        rfc3339(clock.now()),
    )


@pytest.mark.parametrize("selectors", [{}, {"key_id": "k", "family_id": "f"}])
async def test_revoke_names_exactly_one_selector(
    store: MemoryStore, issuer: KeyIssuer, selectors: dict[str, str]
) -> None:
    # A caller's mistake, reported as such: not a 503 "store unavailable", and not audited.
    with pytest.raises(ValueError, match="exactly one of key_id, family_id, user_id"):
        await issuer.revoke(**selectors)
    assert await store.read() == []
