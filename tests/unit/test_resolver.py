"""Every denial reason of live key resolution, and instant effect of each state change."""

from __future__ import annotations

import pytest

from agentguard import AccountStatus, Grants, KeyIssuer, KeyKind, KeyResolver, Level, generate_key
from agentguard.errors import InvalidToken, Reason
from agentguard.storage import MemoryStore
from agentguard.testing import FakeClock, make_user

pytestmark = pytest.mark.anyio


@pytest.fixture
def issuer(store: MemoryStore, clock: FakeClock) -> KeyIssuer:
    return KeyIssuer(store, clock=clock)


@pytest.fixture
def resolver(store: MemoryStore, clock: FakeClock) -> KeyResolver:
    return KeyResolver(store, clock)


async def deny_reason(resolver: KeyResolver, key: str) -> Reason:
    with pytest.raises(InvalidToken) as info:
        await resolver.resolve(key)
    return info.value.reason


async def test_live_key_resolves_to_principal(
    store: MemoryStore, issuer: KeyIssuer, resolver: KeyResolver
) -> None:
    user = await make_user(store, grants="crm:write projects:read")
    keys = await issuer.issue(user.id, "ws-1", scope=Grants({"crm": "read", "projects": "write"}))
    principal = await resolver.resolve(keys.access_key.reveal())
    assert (principal.user_id, principal.workspace_id, principal.account_id) == (
        "user-1",
        "ws-1",
        "acct-1",
    )
    assert principal.key_id == keys.access.id
    assert principal.grants == Grants({"crm": "read", "projects": "read"})


async def test_malformed_key(resolver: KeyResolver) -> None:
    assert await deny_reason(resolver, "ag_at_short") is Reason.MALFORMED_KEY


async def test_unknown_key(resolver: KeyResolver) -> None:
    assert await deny_reason(resolver, generate_key(KeyKind.ACCESS).reveal()) is Reason.UNKNOWN_KEY


async def test_refresh_key_is_wrong_kind(
    store: MemoryStore, issuer: KeyIssuer, resolver: KeyResolver
) -> None:
    keys = await issuer.issue((await make_user(store)).id, "ws-1")
    assert await deny_reason(resolver, keys.refresh_key.reveal()) is Reason.WRONG_KEY_KIND


async def test_expired_at_exactly_the_expiry(
    store: MemoryStore, issuer: KeyIssuer, resolver: KeyResolver, clock: FakeClock
) -> None:
    keys = await issuer.issue((await make_user(store)).id, "ws-1")
    clock.advance(3599)
    await resolver.resolve(keys.access_key.reveal())
    clock.advance(1)
    assert await deny_reason(resolver, keys.access_key.reveal()) is Reason.EXPIRED


async def test_revoked(store: MemoryStore, issuer: KeyIssuer, resolver: KeyResolver) -> None:
    keys = await issuer.issue((await make_user(store)).id, "ws-1")
    await issuer.revoke(key_id=keys.access.id)
    assert await deny_reason(resolver, keys.access_key.reveal()) is Reason.REVOKED


async def test_user_disabled_then_enabled(
    store: MemoryStore, issuer: KeyIssuer, resolver: KeyResolver
) -> None:
    user = await make_user(store)
    keys = await issuer.issue(user.id, "ws-1")
    await store.put_user(user.model_copy(update={"enabled": False}))
    assert await deny_reason(resolver, keys.access_key.reveal()) is Reason.USER_DISABLED
    await store.put_user(user)
    await resolver.resolve(keys.access_key.reveal())


async def test_not_a_member(store: MemoryStore, issuer: KeyIssuer, resolver: KeyResolver) -> None:
    keys = await issuer.issue((await make_user(store)).id, "ws-1")
    await store.set_membership("user-1", "ws-1", member=False)
    assert await deny_reason(resolver, keys.access_key.reveal()) is Reason.NOT_A_MEMBER


async def test_account_closed(store: MemoryStore, issuer: KeyIssuer, resolver: KeyResolver) -> None:
    keys = await issuer.issue((await make_user(store)).id, "ws-1")
    account = await store.get_account("acct-1")
    assert account is not None
    await store.put_account(account.model_copy(update={"status": AccountStatus.CLOSED}))
    assert await deny_reason(resolver, keys.access_key.reveal()) is Reason.ACCOUNT_CLOSED


async def test_grant_change_applies_to_the_next_call(
    store: MemoryStore, issuer: KeyIssuer, resolver: KeyResolver
) -> None:
    user = await make_user(store, grants="crm:read")
    keys = await issuer.issue(user.id, "ws-1")
    assert (await resolver.resolve(keys.access_key.reveal())).grants.level("crm") is Level.READ
    await store.put_user(user.model_copy(update={"grants": Grants({"crm": "write"})}))
    assert (await resolver.resolve(keys.access_key.reveal())).grants.level("crm") is Level.WRITE
    await store.put_user(user.model_copy(update={"grants": Grants()}))
    assert (await resolver.resolve(keys.access_key.reveal())).grants == Grants()


async def test_denial_carries_ids_not_secrets(
    store: MemoryStore, issuer: KeyIssuer, resolver: KeyResolver
) -> None:
    keys = await issuer.issue((await make_user(store)).id, "ws-1")
    await issuer.revoke(key_id=keys.access.id)
    with pytest.raises(InvalidToken) as info:
        await resolver.resolve(keys.access_key.reveal())
    assert info.value.audit_context["key_id"] == keys.access.id
    assert keys.access_key.reveal() not in repr(info.value.audit_context)


async def test_store_outage_is_503(
    store: MemoryStore, issuer: KeyIssuer, resolver: KeyResolver, monkeypatch: pytest.MonkeyPatch
) -> None:
    from agentguard.errors import StoreUnavailable

    keys = await issuer.issue((await make_user(store)).id, "ws-1")

    async def broken(key_hash: bytes) -> None:
        raise ConnectionError("db is down: password=hunter2")

    monkeypatch.setattr(store, "lookup", broken)
    with pytest.raises(StoreUnavailable) as info:
        await resolver.resolve(keys.access_key.reveal())
    assert "hunter2" not in str(info.value)


async def test_guard_routes_foreign_tokens_to_token_resolvers(
    store: MemoryStore, clock: FakeClock
) -> None:
    from datetime import datetime, timezone

    from agentguard import Guard, GuardRequest, Principal, RouteRule, TokenResolver

    class JWTish:
        def accepts(self, token: str) -> bool:
            return token.count(".") == 2

        async def resolve(self, token: str) -> Principal:
            if token != "a.b.c":
                raise InvalidToken(reason=Reason.UNKNOWN_KEY)
            return Principal(
                user_id="user-1",
                workspace_id="ws-1",
                account_id="acct-1",
                key_id="jwt:a",
                family_id="jwt:a",
                grants=Grants({"crm": "read"}),
                expires_at=datetime(2030, 1, 1, tzinfo=timezone.utc),
            )

    assert isinstance(JWTish(), TokenResolver)
    guard = Guard(
        store, rules=[RouteRule("/crm", service="crm")], clock=clock, token_resolvers=[JWTish()]
    )

    def request(token: str) -> GuardRequest:
        return GuardRequest(
            "GET", "/crm/x", headers=[(b"authorization", f"Bearer {token}".encode())]
        )

    assert (await guard.authenticate(request("a.b.c"))).key_id == "jwt:a"
    with pytest.raises(InvalidToken) as info:
        await guard.authenticate(request("x.y.z"))
    assert info.value.reason is Reason.UNKNOWN_KEY
    with pytest.raises(InvalidToken) as info:
        await guard.authenticate(request("not-a-jwt"))
    assert info.value.reason is Reason.MALFORMED_KEY

    class Broken(JWTish):
        async def resolve(self, token: str) -> Principal:
            raise RuntimeError("issuer exploded")

    from agentguard.errors import StoreUnavailable

    broken = Guard(
        store, rules=[RouteRule("/crm", service="crm")], clock=clock, token_resolvers=[Broken()]
    )
    with pytest.raises(StoreUnavailable):
        await broken.authenticate(request("a.b.c"))
