"""JWTAccessTokenResolver against a JWKS served over a real socket."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st

from agentguard import Grants, Guard, RouteRule
from agentguard.asgi import AgentGuardMiddleware
from agentguard.dpop._jose import b64url_encode, dumps_compact
from agentguard.errors import ConfigurationError, InvalidToken, Reason, ServiceUnavailable
from agentguard.resolvers import JWTAccessTokenResolver
from agentguard.storage import MemoryStore
from agentguard.testing import make_user
from tests.resolvers.conftest import AUDIENCE, ISSUER, Issuer, sign_jwt

pytestmark = pytest.mark.anyio


@pytest.fixture
async def store(issuer: Issuer) -> MemoryStore:
    store = MemoryStore(clock=issuer.clock)
    await make_user(store, grants="crm:write notes:read")
    return store


@pytest.fixture
async def resolver(issuer: Issuer, store: MemoryStore) -> AsyncIterator[JWTAccessTokenResolver]:
    resolver = JWTAccessTokenResolver(
        issuer=ISSUER,
        audience=AUDIENCE,
        jwks_url=issuer.jwks_url,
        directory=store,
        clock=issuer.clock,
        algorithms=("RS256", "ES256"),
    )
    yield resolver
    await resolver.aclose()


async def refused(resolver: JWTAccessTokenResolver, token: str) -> InvalidToken:
    with pytest.raises(InvalidToken) as caught:
        await resolver.resolve(token)
    return caught.value


async def test_valid_token_resolves_to_the_live_user(
    issuer: Issuer, resolver: JWTAccessTokenResolver
) -> None:
    token = issuer.token()
    assert resolver.accepts(token)
    principal = await resolver.resolve(token)
    assert (principal.user_id, principal.workspace_id, principal.account_id) == (
        "user-1",
        "ws-1",
        "acct-1",
    )
    assert principal.grants == Grants.from_scope("crm:write notes:read")
    assert principal.key_id.startswith("jwt:")
    assert len(principal.key_id) == 4 + 16
    assert principal.jkt is None
    assert int(principal.expires_at.timestamp()) == issuer.clock.timestamp() + 300
    assert await resolver.resolve(token) == principal  # stable key id
    assert issuer.fetches == 1  # cached


async def test_ec_keys_and_audience_lists(issuer: Issuer, resolver: JWTAccessTokenResolver) -> None:
    issuer.add_key("ec", ec.generate_private_key(ec.SECP256R1()))
    token = issuer.token("ec", aud=["https://other.test", AUDIENCE])
    assert (await resolver.resolve(token)).user_id == "user-1"


async def test_rotation_new_kid_triggers_one_refetch(
    issuer: Issuer, resolver: JWTAccessTokenResolver
) -> None:
    await resolver.resolve(issuer.token())
    issuer.clock.advance(60)  # well inside the 600 s cache lifetime, past the 30 s refetch limit
    issuer.add_key("k2")
    principal = await resolver.resolve(issuer.token("k2"))
    assert principal.user_id == "user-1"
    assert issuer.fetches == 2
    issuer.published.remove("k1")  # the old key is retired at the issuer
    issuer.clock.advance(601)  # the cached set expires
    await refused(resolver, issuer.token("k1"))
    assert (await refused(resolver, issuer.token("k1"))).reason is Reason.UNKNOWN_KEY


async def test_forged_token_signed_by_an_unknown_key_is_refused(
    issuer: Issuer, resolver: JWTAccessTokenResolver
) -> None:
    issuer.add_key("attacker", publish=False)
    forged_same_kid = sign_jwt(
        issuer.keys["attacker"], {"alg": "RS256", "typ": "at+jwt", "kid": "k1"}, issuer.claims()
    )
    error = await refused(resolver, forged_same_kid)
    assert error.reason is Reason.UNKNOWN_KEY
    assert "signature" in error.description
    error = await refused(resolver, issuer.token("attacker"))
    assert error.reason is Reason.UNKNOWN_KEY


async def test_a_flood_of_unknown_kids_refetches_at_most_once_per_interval(
    issuer: Issuer, resolver: JWTAccessTokenResolver
) -> None:
    await resolver.resolve(issuer.token())
    issuer.clock.advance(31)
    issuer.add_key("attacker", publish=False)
    for index in range(25):
        token = sign_jwt(
            issuer.keys["attacker"],
            {"alg": "RS256", "typ": "at+jwt", "kid": f"random-{index}"},
            issuer.claims(),
        )
        await refused(resolver, token)
    assert issuer.fetches == 2
    issuer.clock.advance(31)
    await refused(resolver, issuer.token("attacker"))
    assert issuer.fetches == 3


@pytest.mark.parametrize(
    ("claims", "reason", "text"),
    [
        ({"iss": "https://evil.test"}, Reason.UNKNOWN_KEY, "another authorization server"),
        ({"aud": "https://other.test"}, Reason.UNKNOWN_KEY, "another resource"),
        ({"aud": None}, Reason.UNKNOWN_KEY, "another resource"),
        ({"exp": None}, Reason.MALFORMED_KEY, "no exp"),
        ({"exp": "soon"}, Reason.MALFORMED_KEY, "not a NumericDate"),
        ({"exp": 1e300}, Reason.MALFORMED_KEY, "not a NumericDate"),
        ({"exp": 10**400}, Reason.MALFORMED_KEY, "not a NumericDate"),
        ({"exp": True}, Reason.MALFORMED_KEY, "not a NumericDate"),
        ({"nbf": 1e300}, Reason.MALFORMED_KEY, "not a NumericDate"),
        ({"iat": -(10**400)}, Reason.MALFORMED_KEY, "not a NumericDate"),
        ({"typ": "Refresh"}, Reason.WRONG_KEY_KIND, "another kind"),
        ({"token_use": "refresh"}, Reason.WRONG_KEY_KIND, "another kind"),
        ({"typ": ["Bearer"]}, Reason.MALFORMED_KEY, "not a string"),
        ({"sub": None}, Reason.UNKNOWN_USER, "no subject"),
        ({"sub": "nobody"}, Reason.UNKNOWN_USER, "no such user"),
        ({"workspace": "ws-2"}, Reason.NOT_A_MEMBER, "no longer a member"),
        ({"cnf": {"x5t#S256": "abc"}}, Reason.MALFORMED_KEY, "cannot check"),
        ({"scope": 7}, Reason.MALFORMED_KEY, "scope"),
    ],
)
async def test_claims_are_checked(
    issuer: Issuer,
    resolver: JWTAccessTokenResolver,
    claims: dict[str, Any],
    reason: Reason,
    text: str,
) -> None:
    error = await refused(resolver, issuer.token(**claims))
    assert error.reason is reason
    assert text in error.description


async def test_time_claims_use_the_clock_and_leeway(
    issuer: Issuer, resolver: JWTAccessTokenResolver
) -> None:
    now = issuer.clock.timestamp()
    assert await resolver.resolve(issuer.token(exp=now - 10))  # within 30 s leeway
    assert (await refused(resolver, issuer.token(exp=now - 31))).reason is Reason.EXPIRED
    assert "nbf" in (await refused(resolver, issuer.token(nbf=now + 60))).description
    assert "iat" in (await refused(resolver, issuer.token(iat=now + 60))).description
    token = issuer.token()
    issuer.clock.advance(331)
    assert (await refused(resolver, token)).reason is Reason.EXPIRED


@pytest.mark.parametrize(
    "header",
    [
        {"typ": "JWT"},
        {"typ": None},
        {"alg": "none"},
        {"alg": "HS256"},
        {"alg": "PS256"},  # not in this resolver's allow-list
        {"jku": "https://evil.test/jwks"},
        {"jwk": {"kty": "oct", "k": "c2VjcmV0"}},
        {"crit": ["exp"]},
        {"kid": 5},
    ],
)
async def test_header_is_strict(
    issuer: Issuer, resolver: JWTAccessTokenResolver, header: dict[str, Any]
) -> None:
    assert (await refused(resolver, issuer.token(header=header))).reason is Reason.MALFORMED_KEY


async def test_hs256_with_the_public_key_as_secret_is_refused(
    issuer: Issuer, resolver: JWTAccessTokenResolver
) -> None:
    import hashlib
    import hmac

    header = b64url_encode(dumps_compact({"alg": "HS256", "typ": "at+jwt", "kid": "k1"}))
    payload = b64url_encode(dumps_compact(issuer.claims()))
    secret = issuer.jwks()
    mac = hmac.new(secret, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    assert (await refused(resolver, f"{header}.{payload}.{b64url_encode(mac)}")).reason is (
        Reason.MALFORMED_KEY
    )


async def test_scope_only_narrows_the_users_live_grants(
    issuer: Issuer, resolver: JWTAccessTokenResolver
) -> None:
    narrowed = await resolver.resolve(issuer.token(scope="openid crm:read admin:write"))
    assert narrowed.grants == Grants.from_scope("crm:read")
    nothing = await resolver.resolve(issuer.token(scope="openid profile"))
    assert nothing.grants == Grants()


async def test_disabled_user_is_refused_live(
    issuer: Issuer, resolver: JWTAccessTokenResolver, store: MemoryStore
) -> None:
    token = issuer.token()
    await resolver.resolve(token)
    user = await store.get_user("user-1")
    assert user is not None
    await store.put_user(user.model_copy(update={"enabled": False}))
    assert (await refused(resolver, token)).reason is Reason.USER_DISABLED


async def test_cnf_jkt_binds_the_token_to_dpop(
    issuer: Issuer, resolver: JWTAccessTokenResolver, store: MemoryStore
) -> None:
    jkt = b64url_encode(b"\x01" * 32)
    token = issuer.token(cnf={"jkt": jkt})
    assert (await resolver.resolve(token)).jkt == jkt
    guard = Guard(
        store,
        clock=issuer.clock,
        rules=[RouteRule("/crm", service="crm")],
        token_resolvers=[resolver],
    )
    app = AgentGuardMiddleware(_ok, guard)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        response = await c.get("/crm/x", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401
    assert response.json()["reason"] == "dpop_binding_mismatch"


async def _ok(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


async def test_guard_accepts_jwts_next_to_agentguard_keys_and_audits_them(
    issuer: Issuer, resolver: JWTAccessTokenResolver, store: MemoryStore
) -> None:
    guard = Guard(
        store,
        clock=issuer.clock,
        rules=[RouteRule("/crm", service="crm")],
        token_resolvers=[resolver],
    )
    keys = await guard.issuer.issue("user-1", "ws-1")
    app = AgentGuardMiddleware(_ok, guard)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        jwt_call = await c.post("/crm/x", headers={"Authorization": f"Bearer {issuer.token()}"})
        key_call = await c.get(
            "/crm/x", headers={"Authorization": f"Bearer {keys.access_key.reveal()}"}
        )
        narrowed = await c.post(
            "/crm/x", headers={"Authorization": f"Bearer {issuer.token(scope='crm:read')}"}
        )
    assert (jwt_call.status_code, key_call.status_code, narrowed.status_code) == (200, 200, 403)
    events = [entry.event() for entry in await store.read()]
    actors = [e["actor"]["key_id"] for e in events if e["action"] == "guard.decision"]  # type: ignore[index]
    assert actors[0].startswith("jwt:")
    assert actors[1] == keys.access.id


async def test_unreachable_jwks_fails_closed_with_503(
    issuer: Issuer, resolver: JWTAccessTokenResolver
) -> None:
    issuer.failing = True
    with pytest.raises(ServiceUnavailable):
        await resolver.resolve(issuer.token())
    with pytest.raises(ServiceUnavailable):
        await resolver.resolve(issuer.token())
    assert issuer.fetches == 1  # failures are rate-limited too
    issuer.failing = False
    issuer.clock.advance(31)
    assert await resolver.resolve(issuer.token())


def test_accepts_routes_by_issuer(issuer: Issuer) -> None:
    store = MemoryStore()
    resolver = JWTAccessTokenResolver(
        issuer=ISSUER, audience=AUDIENCE, jwks_url=issuer.jwks_url, directory=store
    )
    assert resolver.accepts(issuer.token())
    assert not resolver.accepts(issuer.token(iss="https://other-idp.test"))
    assert not resolver.accepts("ag_at_abc.def.ghi")
    assert not resolver.accepts("not-a-jwt")


@pytest.mark.parametrize("algorithms", [("HS256",), ("none",), (), "RS256"])
def test_only_asymmetric_algorithms_can_be_configured(algorithms: Any) -> None:
    with pytest.raises(ConfigurationError):
        JWTAccessTokenResolver(
            issuer=ISSUER,
            audience=AUDIENCE,
            jwks_url="https://login.example.test/jwks",
            directory=MemoryStore(),
            algorithms=algorithms,
        )


JWT_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_."


@settings(max_examples=300)
@given(
    token=st.one_of(
        st.text(max_size=200),
        st.text(alphabet=JWT_ALPHABET, max_size=200),
        st.builds(
            lambda h, p, s: f"{b64url_encode(h)}.{b64url_encode(p)}.{b64url_encode(s)}",
            st.binary(max_size=60),
            st.binary(max_size=60),
            st.binary(max_size=70),
        ),
        st.builds(
            lambda h, p: f"{b64url_encode(dumps_compact(h))}.{b64url_encode(dumps_compact(p))}.AA",
            st.dictionaries(st.sampled_from(["alg", "typ", "kid", "crit"]), st.text(max_size=8)),
            st.dictionaries(st.sampled_from(["iss", "aud", "exp", "sub"]), st.integers()),
        ),
    )
)
def test_arbitrary_strings_only_raise_invalid_token(token: str) -> None:
    import anyio

    store = MemoryStore()
    jwks = httpx.MockTransport(lambda request: httpx.Response(200, json={"keys": []}))
    resolver = JWTAccessTokenResolver(
        issuer=ISSUER,
        audience=AUDIENCE,
        jwks_url="https://login.example.test/jwks",
        directory=store,
        transport=jwks,
    )

    async def attempt() -> None:
        with pytest.raises(InvalidToken):
            await resolver.resolve(token)

    anyio.run(attempt)


def test_jwt_resolver_has_no_audience_opt_out(issuer: Issuer) -> None:
    from agentguard.resolvers import ANY_AUDIENCE

    with pytest.raises(ConfigurationError, match="audience is required"):
        JWTAccessTokenResolver(
            issuer=ISSUER,
            audience=ANY_AUDIENCE,  # type: ignore[arg-type]
            jwks_url=issuer.jwks_url,
            directory=MemoryStore(),
        )


@pytest.mark.parametrize(
    "claims",
    [
        {"aud": "https://another.example"},
        {"exp": None},
        {"token_use": "refresh"},
        {"sub": "nobody"},
        {"cnf": {"x5t#S256": "abc"}},
        {"scope": 7},
    ],
)
async def test_a_refused_token_the_issuer_signed_names_its_key(
    issuer: Issuer, resolver: JWTAccessTokenResolver, claims: dict[str, Any]
) -> None:
    # Signed by the issuer: the refusal is about someone's token, audited as its own event
    # with the token's id (a hash), never counted with the anonymous refusals.
    token = issuer.token(**claims)
    error = await refused(resolver, token)
    key_id = error.audit_context.get("key_id")
    assert key_id is not None and key_id.startswith("jwt:") and token not in key_id


async def test_a_token_the_issuer_did_not_sign_names_no_one(
    issuer: Issuer, resolver: JWTAccessTokenResolver
) -> None:
    issuer.add_key("attacker", publish=False)
    error = await refused(resolver, issuer.token("attacker", aud="https://another.example"))
    assert error.reason is Reason.UNKNOWN_KEY and error.audit_context == {}
