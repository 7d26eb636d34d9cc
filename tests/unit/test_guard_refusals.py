"""Refusals an adapter makes, and misbehaving backends, always end as one audited response."""

from __future__ import annotations

import pytest

from agentguard import Guard, GuardRequest, Level, Requirement, RouteRule
from agentguard.asgi._middleware import _carries_no_key
from agentguard.errors import AuditUnavailable, InsufficientScope, ServiceUnavailable, UsageError
from agentguard.storage import MemoryStore
from agentguard.testing import FaultyStore, make_user

pytestmark = pytest.mark.anyio


async def test_refuse_returns_the_error_when_it_was_recorded() -> None:
    store = MemoryStore()
    guard = Guard(store, anonymous_refusals=None)
    error = InsufficientScope(required="crm:write")
    sent = await guard.refuse(
        GuardRequest("GET", "/crm"), error, requirement=Requirement("crm", Level.WRITE)
    )
    assert sent is error
    [entry] = await store.read()
    assert entry.event()["reason"] == error.reason.value


async def test_refuse_returns_audit_unavailable_when_the_audit_store_fails() -> None:
    faulty = FaultyStore(MemoryStore())
    guard = Guard(faulty, anonymous_refusals=None)
    faulty.fail("append")
    sent = await guard.refuse(GuardRequest("GET", "/crm"), InsufficientScope(required="crm:write"))
    assert isinstance(sent, AuditUnavailable)


async def test_a_store_raising_a_usage_error_is_a_503_and_audited() -> None:
    backing = MemoryStore()
    faulty = FaultyStore(backing)
    guard = Guard(faulty, rules=[RouteRule("/crm", service="crm")])
    user = await make_user(backing, grants="crm:read")
    keys = await guard.issuer.issue(user.id, "ws-1")
    faulty.fail("lookup", lambda: UsageError("a broken third-party backend"))
    request = GuardRequest(
        "GET", "/crm", headers=((b"authorization", b"Bearer " + keys.access_key.reveal().encode()),)
    )
    with pytest.raises(ServiceUnavailable) as caught:
        await guard.authenticate(request)
    assert caught.value.reason.value == "internal_error"
    assert any(entry.event().get("reason") == "internal_error" for entry in await backing.read())


@pytest.mark.parametrize(
    ("value", "passed"),
    [
        (b"Basic dXNlcjpwYXNz", True),
        (b"Digest username=x", True),
        (b"Bearer abc", False),
        (b"bearer abc", False),
        (b"Bearer\tabc", False),
        (b"Bearer\xa0abc", False),
        (b"Bearer\x85abc", False),
        (b"\x1fBasic x", False),
        (b"Basic x\x00y", False),
        (b"", False),
    ],
)
def test_pass_on_only_for_a_plainly_named_other_scheme(value: bytes, passed: bool) -> None:
    request = GuardRequest("GET", "/app", headers=((b"authorization", value),))
    assert _carries_no_key(request, ("bearer",)) is passed
