"""A caller's mistake is a UsageError, never a storage outage; a backend's failure still is one.

The outage boundaries (``storage.outage``, ``audit.writer``) must let refusals and usage errors
through and turn everything else, the library's own ``StorageError`` included, into 503.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import product

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentguard import KeyIssuer
from agentguard.audit import Action, AuditEntry, AuditEvent, AuditWriter
from agentguard.errors import AuditUnavailable, StoreUnavailable, UsageError
from agentguard.storage import MemoryStore
from agentguard.storage._outage import shield_store, store_outage
from agentguard.storage._protocols import RevokeSelector, StorageError, revoke_selector
from agentguard.testing import FakeClock, make_user

pytestmark = pytest.mark.anyio

SELECTORS = ("key_id", "family_id", "user_id")


@given(chosen=st.sets(st.sampled_from(SELECTORS)), value=st.text(min_size=1, max_size=8))
def test_revoke_selector_takes_exactly_one(chosen: set[str], value: str) -> None:
    given_ = {name: (value if name in chosen else None) for name in SELECTORS}
    if len(chosen) == 1:
        (name,) = chosen
        assert revoke_selector(**given_) == RevokeSelector(name, value)  # type: ignore[arg-type]
        return
    with pytest.raises(UsageError, match="exactly one of key_id, family_id, user_id") as misuse:
        revoke_selector(**given_)
    assert isinstance(misuse.value, ValueError)
    assert not isinstance(misuse.value, (StorageError, StoreUnavailable))


@pytest.mark.parametrize(
    "selectors",
    [{}, *({a: "x", b: "y"} for a, b in product(SELECTORS, SELECTORS) if a < b)],
    ids=lambda selectors: "+".join(selectors) or "none",
)
async def test_issuer_revoke_misuse_is_a_usage_error_not_an_outage(
    store: MemoryStore, clock: FakeClock, selectors: dict[str, str]
) -> None:
    user = await make_user(store)
    issued = await KeyIssuer(store, clock=clock).issue(user.id, "ws-1")
    issuer = KeyIssuer(shield_store(store, "key store"), clock=clock, audit=AuditWriter(store))
    with pytest.raises(UsageError) as misuse:
        await issuer.revoke(**selectors)
    assert not isinstance(misuse.value, StoreUnavailable)
    assert await store.read() == []  # not audited
    assert all(not key.revoked for key in await store.list_keys(family_id=issued.access.family_id))


async def test_a_shielded_store_reports_revoke_misuse_as_usage(store: MemoryStore) -> None:
    shielded = shield_store(store, "key store")
    with pytest.raises(UsageError):
        await shielded.revoke(key_id="k", user_id="u", reason="x", now=FakeClock().now())


def test_a_usage_error_passes_the_outage_boundary() -> None:
    misuse = UsageError("revoke takes exactly one of key_id, family_id, user_id")
    with pytest.raises(UsageError) as raised, store_outage("key store", "revoke"):
        raise misuse
    assert raised.value is misuse


def test_key_lifetimes_must_be_positive(store: MemoryStore, clock: FakeClock) -> None:
    from datetime import timedelta

    with pytest.raises(UsageError, match="positive"):
        KeyIssuer(store, clock=clock, access_ttl=timedelta(0))


def test_a_backend_storage_error_is_an_outage_at_the_boundary() -> None:
    failure = StorageError("the backend failed")
    with pytest.raises(StoreUnavailable) as refused, store_outage("key store", "lookup"):
        raise failure
    assert refused.value.__cause__ is failure


class _FailingAudit(MemoryStore):
    async def append(self, events: Sequence[AuditEvent]) -> list[AuditEntry]:
        raise StorageError("the backend failed")


async def test_a_storage_error_on_append_is_audit_unavailable(clock: FakeClock) -> None:
    writer = AuditWriter(_FailingAudit(clock=clock))
    with pytest.raises(AuditUnavailable):
        await writer.record(AuditEvent(action=Action.KEY_ISSUE, ts=clock.now()))


async def test_a_buffering_writer_buffers_through_a_storage_error(clock: FakeClock) -> None:
    writer = AuditWriter(_FailingAudit(clock=clock), on_failure="buffer")
    assert await writer.record(AuditEvent(action=Action.KEY_ISSUE, ts=clock.now())) is None
