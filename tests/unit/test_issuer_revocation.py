"""KeyIssuer when a revocation lands between a refresh's lookup and its rotation.

The store is wrapped so that something happens exactly between the two calls a refresh makes:
the deterministic version of the race the backend race tests run for real.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any

import pytest

from agentguard.audit import AuditWriter
from agentguard.errors import InvalidGrant, InvalidToken, Reason
from agentguard.keys import KeyIssuer
from agentguard.model import KeyRecord
from agentguard.resolver import KeyResolver
from agentguard.storage import MemoryStore
from agentguard.testing import FakeClock, make_user

pytestmark = pytest.mark.anyio


class BeforeRotate:
    """A MemoryStore that runs ``meanwhile`` once, just before the next rotation."""

    def __init__(self, store: MemoryStore) -> None:
        self._store = store
        self.meanwhile: Callable[[], Awaitable[Any]] | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def rotate(self, used_id: str, new: Sequence[KeyRecord], *, now: datetime) -> bool:
        if self.meanwhile is not None:
            step, self.meanwhile = self.meanwhile, None
            await step()
        return await self._store.rotate(used_id, new, now=now)


@pytest.fixture
def wrapped(store: MemoryStore) -> BeforeRotate:
    return BeforeRotate(store)


@pytest.fixture
def issuer(wrapped: BeforeRotate, store: MemoryStore, clock: FakeClock) -> KeyIssuer:
    return KeyIssuer(wrapped, clock=clock, audit=AuditWriter(store))


async def actions(store: MemoryStore) -> list[tuple[object, object]]:
    return [(e.event()["action"], e.event().get("reason")) for e in await store.read()]


@pytest.mark.parametrize("selector", ["family_id", "user_id"])
async def test_a_refresh_that_loses_to_revocation_is_refused_as_revoked(
    store: MemoryStore, wrapped: BeforeRotate, issuer: KeyIssuer, clock: FakeClock, selector: str
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
    store: MemoryStore, wrapped: BeforeRotate, issuer: KeyIssuer
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
