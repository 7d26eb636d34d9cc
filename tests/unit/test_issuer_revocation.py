"""KeyIssuer when a revocation lands between a refresh's lookup and its rotation.

The store is wrapped so that something happens exactly between the two calls a refresh makes:
the deterministic version of the race the backend race tests run for real.
"""

from __future__ import annotations

from typing import Any

import pytest

from agentguard import KeyIssuer, KeyResolver
from agentguard.audit import AuditWriter
from agentguard.errors import InvalidGrant, InvalidToken, Reason
from agentguard.storage import MemoryStore
from agentguard.testing import FakeClock, make_user
from tests.support.issuer_events import Interleaved

pytestmark = pytest.mark.anyio


@pytest.fixture
def wrapped(store: MemoryStore) -> Interleaved:
    return Interleaved(store)


@pytest.fixture
def issuer(wrapped: Interleaved, store: MemoryStore, clock: FakeClock) -> KeyIssuer:
    return KeyIssuer(wrapped, clock=clock, audit=AuditWriter(store))


async def actions(store: MemoryStore) -> list[tuple[object, object]]:
    return [(e.event()["action"], e.event().get("reason")) for e in await store.read()]


@pytest.mark.parametrize("selector", ["family_id", "user_id"])
async def test_a_refresh_that_loses_to_revocation_is_refused_as_revoked(
    store: MemoryStore, wrapped: Interleaved, issuer: KeyIssuer, clock: FakeClock, selector: str
) -> None:
    user = await make_user(store)
    keys = await issuer.issue(user.id, "ws-1")
    target = keys.access.family_id if selector == "family_id" else user.id
    wrapped.meanwhile = lambda: issuer.revoke(**{selector: target})
    with pytest.raises(InvalidGrant) as refused:
        await issuer.refresh(keys.refresh_key.reveal())
    assert refused.value.reason is Reason.REVOKED
    logged = await actions(store)
    assert ("key.reuse_detected", "refresh_reused") not in logged  # no false theft alarm
    assert logged[-1] == ("key.refresh", "revoked")
    with pytest.raises(InvalidToken):
        await KeyResolver(store, clock).resolve(keys.access_key.reveal())


async def test_a_refresh_that_loses_to_another_refresh_is_still_reuse(
    store: MemoryStore, wrapped: Interleaved, issuer: KeyIssuer
) -> None:
    user = await make_user(store)
    keys = await issuer.issue(user.id, "ws-1")
    other = KeyIssuer(store, clock=issuer.clock)
    winner: list[Any] = []

    async def compete() -> None:
        winner.append(await other.refresh(keys.refresh_key.reveal()))

    wrapped.meanwhile = compete
    with pytest.raises(InvalidGrant) as refused:
        await issuer.refresh(keys.refresh_key.reveal())
    assert refused.value.reason is Reason.REFRESH_REUSED
    found = await store.lookup(winner[0].access.key_hash)
    assert found is not None and found.key.revoked_reason == "refresh_reused"


async def test_keys_issued_after_a_user_revocation_are_a_new_family(
    store: MemoryStore, issuer: KeyIssuer, clock: FakeClock
) -> None:
    user = await make_user(store)
    old = await issuer.issue(user.id, "ws-1")
    assert await issuer.revoke(user_id=user.id) == 2
    fresh = await issuer.issue(user.id, "ws-1")
    resolver = KeyResolver(store, clock)
    assert (await resolver.resolve(fresh.access_key.reveal())).user_id == user.id
    rotated = await issuer.refresh(fresh.refresh_key.reveal())
    await resolver.resolve(rotated.access_key.reveal())
    with pytest.raises(InvalidToken):
        await resolver.resolve(old.access_key.reveal())
