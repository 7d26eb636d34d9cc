"""IntrospectionResolver with an RFC 7662 endpoint behind httpx's mock transport."""

from __future__ import annotations

from typing import Any

import anyio
import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentguard import Grants
from agentguard.errors import ConfigurationError, InvalidToken, Reason, ServiceUnavailable
from agentguard.resolvers import ANY_AUDIENCE, IntrospectionResolver
from agentguard.storage import MemoryStore
from agentguard.testing import FakeClock, make_user

pytestmark = pytest.mark.anyio


class Endpoint:
    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.answer: dict[str, Any] = {}
        self.status = 200
        self.seen: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        return httpx.Response(self.status, json=self.answer)

    def active(self, **overrides: Any) -> None:
        now = self.clock.timestamp()
        self.answer = {
            "active": True,
            "sub": "user-1",
            "workspace": "ws-1",
            "iss": "https://as.test",
            "aud": "https://api.test",
            "exp": now + 600,
            "scope": "crm:read",
            "token_type": "Bearer",
            **overrides,
        }


async def make_setup(
    **options: Any,
) -> tuple[IntrospectionResolver, Endpoint, FakeClock, MemoryStore]:
    """A resolver in front of a fake endpoint; ``options`` override the resolver's arguments."""
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    await make_user(store, grants="crm:write")
    endpoint = Endpoint(clock)
    arguments: dict[str, Any] = {
        "endpoint": "https://as.test/introspect",
        "directory": store,
        "client_id": "rs",
        "client_secret": "rs-secret",
        "issuer": "https://as.test",
        "audience": "https://api.test",
        "clock": clock,
        "transport": httpx.MockTransport(endpoint),
        **options,
    }
    return IntrospectionResolver(**arguments), endpoint, clock, store


@pytest.fixture
async def setup() -> tuple[IntrospectionResolver, Endpoint, FakeClock, MemoryStore]:
    return await make_setup()


Setup = tuple[IntrospectionResolver, Endpoint, FakeClock, MemoryStore]


async def test_active_token_resolves_live_and_is_cached_briefly(setup: Setup) -> None:
    resolver, endpoint, clock, store = setup
    endpoint.active()
    principal = await resolver.resolve("opaque-token")
    assert principal.grants == Grants.from_scope("crm:read")  # narrowed by scope
    assert principal.key_id.startswith("jwt:")
    request = endpoint.seen[0]
    assert request.headers["authorization"].startswith("Basic ")
    assert b"token=opaque-token" in request.content
    await resolver.resolve("opaque-token")
    assert len(endpoint.seen) == 1  # cached
    user = await store.get_user("user-1")
    assert user is not None
    await store.put_user(user.model_copy(update={"enabled": False}))
    with pytest.raises(InvalidToken) as caught:
        await resolver.resolve("opaque-token")  # the directory is still read live
    assert caught.value.reason is Reason.USER_DISABLED
    clock.advance(31)
    endpoint.answer = {"active": False}
    with pytest.raises(InvalidToken):
        await resolver.resolve("opaque-token")
    assert len(endpoint.seen) == 2


async def test_cache_never_outlives_the_tokens_exp(setup: Setup) -> None:
    resolver, endpoint, clock, _ = setup
    endpoint.active(exp=clock.timestamp() + 10)
    await resolver.resolve("short-lived")
    clock.advance(11)
    with pytest.raises(InvalidToken) as caught:
        await resolver.resolve("short-lived")
    assert caught.value.reason is Reason.EXPIRED
    assert len(endpoint.seen) == 2


@pytest.mark.parametrize(
    "answer",
    [
        {"active": False},
        {"active": "true"},
        {"iss": "https://evil.test"},
        {"aud": "https://other.test"},
        {"token_type": "refresh_token"},
        {"token_type": "Refresh_Token"},
        {"token_type": None},  # RFC 7662 lets a server omit it, for a refresh token too
        {"token_type": "N_A"},
        {"token_type": 1},
        {"typ": "Refresh"},  # Keycloak's marker for refresh tokens
        {"typ": "Offline"},  # Keycloak's offline (refresh) token
        {"typ": "refresh "},
        {"typ": ["refresh_token"]},
        {"token_use": "id"},  # Cognito ID token
        {"token_type": "urn:ietf:params:oauth:token-type:id_token"},
        {"token_type": "refresh-token"},
        {"iat": 1e300},
        {"iat": -1e300},
        {"iss": None},
        {"aud": None},
        {"aud": ["https://other.test", "https://also-not.test"]},
        {"exp": 1e300},
        {"exp": 10**400},
        {"exp": -1},
        {"exp": True},
        {"exp": "soon"},
        {"nbf": 1e300},
        {"nbf": 2**40},
    ],
)
async def test_answers_are_checked(setup: Setup, answer: dict[str, Any]) -> None:
    resolver, endpoint, _, _ = setup
    endpoint.active(**answer)
    with pytest.raises(InvalidToken):
        await resolver.resolve("tok")
    assert len(endpoint.seen) == 1


async def test_failing_endpoint_is_503(setup: Setup) -> None:
    resolver, endpoint, _, _ = setup
    endpoint.status = 500
    with pytest.raises(ServiceUnavailable):
        await resolver.resolve("tok")


def test_configuration_is_checked() -> None:
    with pytest.raises(ConfigurationError):
        IntrospectionResolver(
            endpoint="https://as.test/i", directory=MemoryStore(), audience="https://api.test"
        )
    resolver = IntrospectionResolver(
        endpoint="https://as.test/i",
        directory=MemoryStore(),
        client_id="a",
        client_secret="b",
        audience="https://api.test",
        accepts=lambda token: token.startswith("op_"),
    )
    assert resolver.accepts("op_123")
    assert not resolver.accepts("ag_at_123")
    assert not resolver.accepts("other")


@pytest.mark.parametrize("audience", ["", [], [""]])
def test_an_audience_is_required(audience: Any) -> None:
    with pytest.raises(ConfigurationError, match="audience is required"):
        IntrospectionResolver(
            endpoint="https://as.test/i",
            directory=MemoryStore(),
            client_id="a",
            client_secret="b",
            audience=audience,
        )


async def test_any_audience_is_an_explicit_opt_out() -> None:
    resolver, endpoint, _, _ = await make_setup(audience=ANY_AUDIENCE, issuer=None)
    endpoint.active(aud="https://elsewhere.test")
    assert (await resolver.resolve("tok")).user_id == "user-1"
    endpoint.active(token_type="refresh_token")
    with pytest.raises(InvalidToken):
        await resolver.resolve("tok-2")  # refresh tokens are refused even then


async def test_untyped_answers_are_accepted_only_when_configured() -> None:
    resolver, endpoint, _, _ = await make_setup(require_token_type=False)
    endpoint.active()
    del endpoint.answer["token_type"]
    assert (await resolver.resolve("tok")).user_id == "user-1"
    endpoint.active(typ="Refresh")
    with pytest.raises(InvalidToken) as caught:
        await resolver.resolve("tok-2")
    assert caught.value.reason is Reason.WRONG_KEY_KIND


KIND_VALUES = st.one_of(
    st.sampled_from(
        [
            "Bearer",
            "DPoP",
            "access_token",
            "refresh_token",
            "Refresh",
            "Offline",
            "ID",
            "id_token",
            "N_A",
            "urn:ietf:params:oauth:token-type:refresh_token",
            "urn:ietf:params:oauth:token-type:access_token",
            "at+jwt",
            "access",
            "mac",
            "",
        ]
    ),
    st.text(max_size=12),
)
ACCESS = {"bearer", "dpop", "access", "access_token", "at+jwt", "application/at+jwt",
          "urn:ietf:params:oauth:token-type:access_token"}  # fmt: skip


def _names_access(value: object) -> bool:
    """The oracle, written independently: whitespace and case ignored, '-' read as '_'."""
    return isinstance(value, str) and value.strip().lower().replace("-", "_") in ACCESS


@settings(max_examples=200, deadline=None)
@given(
    kinds=st.fixed_dictionaries(
        {},
        optional={
            "token_type": st.one_of(KIND_VALUES, st.integers(), st.none()),
            "typ": st.one_of(KIND_VALUES, st.lists(KIND_VALUES, max_size=1)),
            "token_use": KIND_VALUES,
        },
    ),
    required=st.booleans(),
)
def test_only_answers_naming_an_access_token_resolve(kinds: dict[str, Any], required: bool) -> None:
    async def attempt() -> bool:
        resolver, endpoint, _, _ = await make_setup(require_token_type=required, cache_ttl=0)
        endpoint.active()
        del endpoint.answer["token_type"]
        endpoint.answer.update({k: v for k, v in kinds.items() if v is not None})
        try:
            await resolver.resolve("tok")
        except InvalidToken:
            return False
        return True

    present = {k: v for k, v in kinds.items() if v is not None}
    expected = all(_names_access(v) for v in present.values()) and (
        "token_type" in present or not required
    )
    assert anyio.run(attempt) is expected
