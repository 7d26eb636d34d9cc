"""The Guard's public surface: read-only collaborators, admit/authenticate, record_refusal."""

from __future__ import annotations

import pytest

from agentguard import (
    Guard,
    GuardRequest,
    IssuedKeys,
    Level,
    Passage,
    Requirement,
    Reviews,
    RouteRule,
)
from agentguard.errors import InsufficientScope, MissingCredentials, RequestRefused
from agentguard.review import ReviewChain, ReviewContext, Verdict
from agentguard.storage import MemoryStore
from agentguard.testing import FakeClock, make_user

pytestmark = pytest.mark.anyio
COLLABORATORS = (
    "store", "clock", "audit", "issuer", "challenge", "dpop", "replay_cache", "permissions",
    "services", "schemes", "swapper",
)  # fmt: skip


def allow_all(context: ReviewContext, content: str) -> Verdict:
    return Verdict.allow("allow_all")


@pytest.fixture
def request_chain() -> ReviewChain:
    return ReviewChain([allow_all])


@pytest.fixture
def response_chain() -> ReviewChain:
    return ReviewChain([allow_all], max_bytes=10)


@pytest.fixture
def guard(
    store: MemoryStore, clock: FakeClock, request_chain: ReviewChain, response_chain: ReviewChain
) -> Guard:
    return Guard(
        store,
        rules=[RouteRule("/crm", service="crm")],
        clock=clock,
        request_reviewers=request_chain,
        response_reviewers=response_chain,
    )


@pytest.fixture
async def keys(store: MemoryStore, guard: Guard) -> IssuedKeys:
    user = await make_user(store, grants="crm:read")
    return await guard.issuer.issue(user.id, "ws-1")


def request(
    keys: IssuedKeys | None, method: str = "GET", path: str = "/crm/contacts"
) -> GuardRequest:
    headers = (
        [] if keys is None else [(b"authorization", b"Bearer " + keys.access_key.reveal().encode())]
    )
    return GuardRequest(method=method, path=path, headers=headers)


async def events(store: MemoryStore) -> list[dict[str, object]]:
    return [entry.event() for entry in await store.read()]


@pytest.mark.parametrize("name", COLLABORATORS)
def test_collaborators_are_read_only(guard: Guard, name: str) -> None:
    before = getattr(guard, name)
    with pytest.raises(AttributeError):
        setattr(guard, name, object())
    assert getattr(guard, name) is before


def test_services_cannot_be_changed_through_the_mapping(guard: Guard) -> None:
    with pytest.raises(TypeError):
        guard.services["crm"] = object()  # type: ignore[index]


async def test_admit_returns_a_passage_with_the_guards_own_reviews(
    guard: Guard, keys: IssuedKeys, request_chain: ReviewChain, response_chain: ReviewChain
) -> None:
    passage = await guard.admit(request(keys))
    assert isinstance(passage, Passage)
    assert isinstance(passage.reviews, Reviews)
    assert passage.reviews.request_chain is request_chain
    assert passage.reviews.response_chain is response_chain
    assert passage.requirement == Requirement("crm", Level.READ)
    assert passage.service == "crm"
    assert (passage.principal.key_id, passage.principal.user_id) == (keys.access.id, "user-1")
    assert passage.reviews_request and passage.reviews_response
    assert passage.request_cap == request_chain.max_bytes


async def test_admit_uses_the_reviews_and_service_it_is_given(
    guard: Guard, keys: IssuedKeys, response_chain: ReviewChain
) -> None:
    other = ReviewChain([allow_all])
    reviews = guard.reviews([], None)  # request review off here; the guard's response chain
    assert reviews.request_chain is None and reviews.response_chain is response_chain
    passage = await guard.admit(request(keys), reviews=reviews, service="billing")
    assert passage.reviews is reviews
    assert not passage.reviews_request and passage.request_cap == 0
    assert passage.service == "billing"
    replaced = guard.reviews(other, [])
    assert (replaced.request_chain, replaced.response_chain) == (other, None)
    assert not guard.reviews([], [])


async def test_reviews_and_passages_are_immutable(guard: Guard, keys: IssuedKeys) -> None:
    passage = await guard.admit(request(keys))
    with pytest.raises(AttributeError):
        passage.reviews.request_chain = None
    with pytest.raises(AttributeError):
        passage.principal = passage.principal  # type: ignore[misc]


async def test_authenticate_is_admits_principal(
    guard: Guard, keys: IssuedKeys, store: MemoryStore
) -> None:
    principal = await guard.authenticate(request(keys))
    passage = await guard.admit(request(keys))
    assert principal == passage.principal
    decisions = [e for e in await events(store) if e["action"] == "guard.decision"]
    assert [(e["decision"], e["service"]) for e in decisions] == [("allow", "crm")] * 2


@pytest.mark.parametrize("use_admit", [False, True], ids=["authenticate", "admit"])
async def test_authenticate_and_admit_refuse_alike(
    guard: Guard, keys: IssuedKeys, store: MemoryStore, use_admit: bool
) -> None:
    call = guard.admit if use_admit else guard.authenticate
    with pytest.raises(InsufficientScope):
        await call(request(keys, "POST"))
    with pytest.raises(MissingCredentials):
        await call(request(None))
    last = (await events(store))[-1]  # the refusal about the key has its own event
    assert (last["decision"], last["reason"], last["service"]) == (
        "deny", "insufficient_scope", "crm",
    )  # fmt: skip


async def test_an_explicit_requirement_replaces_the_rules(guard: Guard, keys: IssuedKeys) -> None:
    any_key = Requirement(None, Level.READ)
    passage = await guard.admit(request(keys, path="/elsewhere"), requirement=any_key)
    assert passage.requirement == any_key and passage.service is None
    with pytest.raises(InsufficientScope):
        await guard.admit(request(keys), requirement=Requirement("billing", Level.READ))
    with pytest.raises(InsufficientScope) as uncovered:  # None: no rule covers it, so denied
        await guard.admit(request(keys), requirement=None)
    assert uncovered.value.reason.value == "no_route_rule"


async def test_record_refusal_audits_a_deny_with_the_principals_ids(
    guard: Guard, keys: IssuedKeys, store: MemoryStore
) -> None:
    passage = await guard.admit(request(keys))
    needed = Requirement("billing", Level.WRITE)
    refusal: RequestRefused = InsufficientScope(required=needed.scope)
    await guard.record_refusal(
        passage.request, refusal, principal=passage.principal, requirement=needed
    )
    last = (await events(store))[-1]
    assert (last["action"], last["decision"], last["reason"], last["status"]) == (
        "guard.decision", "deny", "insufficient_scope", 403,
    )  # fmt: skip
    assert last["service"] == "billing"
    assert last["request_id"] == passage.request.request_id
    assert last["actor"] == {
        "user": "user-1",
        "workspace": "ws-1",
        "account": "acct-1",
        "key_id": keys.access.id,
        "family": keys.access.family_id,
    }
    assert keys.access_key.reveal() not in str(last)
