"""DPoP end to end: bound keys through the guarded app and the token endpoint (RFC 9449)."""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass

import anyio
import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from joserfc import jws
from joserfc.jwk import ECKey

from agentguard import Guard, IssuedKeys, RouteRule
from agentguard.dpop import DPoPKey, DPoPPolicy, access_key_hash
from agentguard.errors import ConfigurationError
from agentguard.storage import MemoryStore
from agentguard.testing import FakeClock, make_user
from tests.asgi.conftest import build_app

pytestmark = pytest.mark.anyio
ORIGIN = "http://testserver"
URL = ORIGIN + "/crm/contacts"


@dataclass
class DPoPSetup:
    clock: FakeClock
    store: MemoryStore
    guard: Guard
    key: DPoPKey
    keys: IssuedKeys
    client: httpx.AsyncClient

    def now(self) -> int:
        return int(self.clock.now().timestamp())

    def headers(
        self,
        *,
        method: str = "GET",
        url: str = URL,
        key: DPoPKey | None = None,
        nonce: str | None = None,
    ) -> dict[str, str]:
        access = self.keys.access_key.reveal()
        proof = (key or self.key).proof(method, url, access_key=access, nonce=nonce, iat=self.now())
        return {"Authorization": f"DPoP {access}", "DPoP": proof}

    async def events(self) -> list[dict[str, object]]:
        return [e.event() for e in await self.store.read()]


def make_guard(store: MemoryStore, clock: FakeClock, policy: DPoPPolicy) -> Guard:
    return Guard(store, rules=[RouteRule("/crm", service="crm")], clock=clock, dpop=policy)


async def start(policy: DPoPPolicy) -> tuple[DPoPSetup, httpx.AsyncClient]:
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    guard = make_guard(store, clock, policy)
    user = await make_user(store, grants="crm:write")
    key = DPoPKey.generate()
    keys = await guard.issuer.issue(user.id, "ws-1", jkt=key.thumbprint)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(guard)), base_url=ORIGIN)
    return DPoPSetup(clock, store, guard, key, keys, client), client


@pytest.fixture
async def setup() -> AsyncIterator[DPoPSetup]:
    dpop_setup, client = await start(DPoPPolicy(public_origin=ORIGIN))
    async with client:
        yield dpop_setup


async def test_7_1_bound_key_with_valid_proof_is_allowed(setup: DPoPSetup) -> None:
    response = await setup.client.get("/crm/contacts", headers=setup.headers())
    assert response.status_code == 200
    assert setup.keys.token_type == "DPoP"


async def test_7_2_bound_key_presented_as_bearer_is_refused(setup: DPoPSetup) -> None:
    response = await setup.client.get(
        "/crm/contacts", headers={"Authorization": f"Bearer {setup.keys.access_key.reveal()}"}
    )
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_token"
    assert response.json()["reason"] == "dpop_binding_mismatch"
    challenges = response.headers.get_list("www-authenticate")
    # DPoP first: a client that reads only the leading challenge still finds the DPoP one.
    assert challenges[0].startswith("DPoP ") and challenges[0].endswith(
        'algs="ES256 EdDSA Ed25519"'
    )
    assert challenges[1].startswith("Bearer ")


async def test_7_1_bound_key_without_proof_is_refused(setup: DPoPSetup) -> None:
    headers = {"Authorization": f"DPoP {setup.keys.access_key.reveal()}"}
    response = await setup.client.get("/crm/contacts", headers=headers)
    assert response.status_code == 401
    assert (response.json()["error"], response.json()["reason"]) == (
        "invalid_dpop_proof",
        "dpop_proof_missing",
    )
    dpop, bearer = response.headers.get_list("www-authenticate")
    assert 'error="invalid_dpop_proof"' in dpop
    assert bearer == 'Bearer realm="agentguard"'  # RFC 9449 §7.1: the error is DPoP's


async def test_4_3_proof_from_another_key_is_refused(setup: DPoPSetup) -> None:
    response = await setup.client.get(
        "/crm/contacts", headers=setup.headers(key=DPoPKey.generate())
    )
    assert response.status_code == 401
    assert response.json()["reason"] == "dpop_binding_mismatch"
    last = (await setup.events())[-1]
    assert (last["decision"], last["reason"]) == ("deny", "dpop_binding_mismatch")
    assert last["actor"]["key_id"] == setup.keys.access.id  # type: ignore[index]


async def test_4_3_htu_and_htm_must_match_the_request(setup: DPoPSetup) -> None:
    wrong_path = await setup.client.get(
        "/crm/contacts", headers=setup.headers(url=ORIGIN + "/crm/other")
    )
    assert wrong_path.json()["reason"] == "dpop_htu_mismatch"
    wrong_host = await setup.client.get(
        "/crm/contacts", headers=setup.headers(url="http://evil.test/crm/contacts")
    )
    assert wrong_host.json()["reason"] == "dpop_htu_mismatch"
    wrong_method = await setup.client.get("/crm/contacts", headers=setup.headers(method="POST"))
    assert wrong_method.json()["reason"] == "dpop_htm_mismatch"
    normalised = await setup.client.get(
        "/crm/contacts", headers=setup.headers(url="HTTP://TESTSERVER:80/crm/contacts?q=1#f")
    )
    assert normalised.status_code == 200


async def test_4_3_ath_binds_proof_to_the_key(setup: DPoPSetup) -> None:
    other = await setup.guard.issuer.issue("user-1", "ws-1", jkt=setup.key.thumbprint)
    proof = setup.key.proof("GET", URL, access_key=other.access_key.reveal(), iat=setup.now())
    headers = {"Authorization": f"DPoP {setup.keys.access_key.reveal()}", "DPoP": proof}
    response = await setup.client.get("/crm/contacts", headers=headers)
    assert response.json()["reason"] == "dpop_ath_mismatch"


async def test_11_1_replayed_proof_is_refused_across_instances(setup: DPoPSetup) -> None:
    headers = setup.headers()
    assert (await setup.client.get("/crm/contacts", headers=headers)).status_code == 200
    twin = make_guard(setup.store, setup.clock, DPoPPolicy(public_origin=ORIGIN))
    transport = httpx.ASGITransport(app=build_app(twin))
    async with httpx.AsyncClient(transport=transport, base_url=ORIGIN) as instance_b:
        replay = await instance_b.get("/crm/contacts", headers=headers)
    assert replay.status_code == 401
    assert replay.json()["reason"] == "dpop_replayed"


async def test_4_3_iat_window(setup: DPoPSetup) -> None:
    headers = setup.headers()
    setup.clock.advance(301)
    response = await setup.client.get("/crm/contacts", headers=headers)
    assert response.json()["reason"] == "dpop_iat_out_of_window"


async def test_unbound_key_with_dpop_scheme_is_refused(setup: DPoPSetup) -> None:
    plain = await setup.guard.issuer.issue("user-1", "ws-1")
    proof = setup.key.proof("GET", URL, access_key=plain.access_key.reveal(), iat=setup.now())
    headers = {"Authorization": f"DPoP {plain.access_key.reveal()}", "DPoP": proof}
    response = await setup.client.get("/crm/contacts", headers=headers)
    assert (response.status_code, response.json()["reason"]) == (401, "dpop_binding_mismatch")
    bearer = {"Authorization": f"Bearer {plain.access_key.reveal()}"}
    assert (await setup.client.get("/crm/contacts", headers=bearer)).status_code == 200


async def test_proof_made_with_joserfc_is_accepted(setup: DPoPSetup) -> None:
    private = ec.generate_private_key(ec.SECP256R1())
    jwk = ECKey.import_key(private)
    public = {k: v for k, v in jwk.as_dict(private=False).items() if k in ("kty", "crv", "x", "y")}
    keys = await setup.guard.issuer.issue("user-1", "ws-1", jkt=jwk.thumbprint())
    access = keys.access_key.reveal()
    claims = {
        "jti": secrets.token_urlsafe(16),
        "htm": "GET",
        "htu": URL,
        "iat": setup.now(),
        "ath": access_key_hash(access),
    }
    proof = jws.serialize_compact(
        {"typ": "dpop+jwt", "alg": "ES256", "jwk": public},
        json.dumps(claims),
        jwk,
        algorithms=["ES256"],
    )
    response = await setup.client.get(
        "/crm/contacts", headers={"Authorization": f"DPoP {access}", "DPoP": proof}
    )
    assert response.status_code == 200


async def token(
    setup: DPoPSetup, proof: str | None, refresh_key: str | None = None
) -> httpx.Response:
    headers = {"DPoP": proof} if proof is not None else {}
    form = {
        "grant_type": "refresh_token",
        "refresh_token": refresh_key or setup.keys.refresh_key.reveal(),
    }
    return await setup.client.post("/oauth/token", data=form, headers=headers)


async def test_5_refresh_with_proof_from_the_bound_key(setup: DPoPSetup) -> None:
    response = await token(setup, setup.key.proof("POST", ORIGIN + "/oauth/token", iat=setup.now()))
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "DPoP"
    access = body["access_token"]
    proof = setup.key.proof("GET", URL, access_key=access, iat=setup.now())
    called = await setup.client.get(
        "/crm/contacts", headers={"Authorization": f"DPoP {access}", "DPoP": proof}
    )
    assert called.status_code == 200


async def test_5_bound_refresh_needs_the_same_key(setup: DPoPSetup) -> None:
    other = await token(
        setup, DPoPKey.generate().proof("POST", ORIGIN + "/oauth/token", iat=setup.now())
    )
    assert (other.status_code, other.json()["error"], other.json()["reason"]) == (
        400,
        "invalid_grant",
        "dpop_binding_mismatch",
    )
    missing = await token(setup, None)
    assert (missing.status_code, missing.json()["reason"]) == (400, "dpop_binding_mismatch")


async def test_5_bad_proof_at_token_endpoint_is_400_invalid_dpop_proof(setup: DPoPSetup) -> None:
    response = await token(setup, setup.key.proof("POST", ORIGIN + "/elsewhere", iat=setup.now()))
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_dpop_proof"
    assert "www-authenticate" not in response.headers
    last = (await setup.events())[-1]
    assert (last["action"], last["reason"]) == ("key.refresh", "dpop_htu_mismatch")
    ok = await token(setup, setup.key.proof("POST", ORIGIN + "/oauth/token", iat=setup.now()))
    assert ok.status_code == 200  # the rejected proof consumed nothing


async def test_5_unbound_family_becomes_bound_on_refresh_with_proof(setup: DPoPSetup) -> None:
    plain = await setup.guard.issuer.issue("user-1", "ws-1")
    response = await token(
        setup,
        setup.key.proof("POST", ORIGIN + "/oauth/token", iat=setup.now()),
        plain.refresh_key.reveal(),
    )
    assert response.json()["token_type"] == "DPoP"


async def test_8_nonces_on_resource_and_token_endpoint() -> None:
    policy = DPoPPolicy(public_origin=ORIGIN, nonce_secret=b"r" * 32, token_nonce_secret=b"t" * 32)
    setup, client = await start(policy)
    async with client:
        first = await client.get("/crm/contacts", headers=setup.headers())
        assert (first.status_code, first.json()["error"]) == (401, "use_dpop_nonce")
        nonce = first.headers["dpop-nonce"]
        retry = await client.get("/crm/contacts", headers=setup.headers(nonce=nonce))
        assert retry.status_code == 200

        refresh = await token(
            setup, setup.key.proof("POST", ORIGIN + "/oauth/token", iat=setup.now())
        )
        assert (refresh.status_code, refresh.json()["error"]) == (400, "use_dpop_nonce")
        token_nonce = refresh.headers["dpop-nonce"]
        assert token_nonce != nonce
        proof = setup.key.proof("POST", ORIGIN + "/oauth/token", iat=setup.now(), nonce=token_nonce)
        assert (await token(setup, proof)).status_code == 200


async def test_required_dpop_refuses_bearer_and_unbound_issuance() -> None:
    setup, client = await start(DPoPPolicy(public_origin=ORIGIN, required=True))
    async with client:
        bearer = {"Authorization": f"Bearer {setup.keys.access_key.reveal()}"}
        response = await client.get("/crm/contacts", headers=bearer)
        assert (response.status_code, response.json()["reason"]) == (401, "dpop_required")
        assert response.headers["www-authenticate"].startswith("DPoP ")
        assert (await client.get("/crm/contacts", headers=setup.headers())).status_code == 200
        from agentguard.errors import IssuanceRefused

        with pytest.raises(IssuanceRefused):
            await setup.guard.issuer.issue("user-1", "ws-1")


async def test_trusted_hosts_build_the_origin_from_host() -> None:
    setup, client = await start(DPoPPolicy(trusted_hosts=("testserver",)))
    async with client:
        assert (await client.get("/crm/contacts", headers=setup.headers())).status_code == 200
        evil = setup.headers(url="http://evil.test/crm/contacts")
        response = await client.get("/crm/contacts", headers={**evil, "Host": "evil.test"})
        assert response.status_code == 400


async def test_forwarded_headers_only_when_trusted() -> None:
    policy = DPoPPolicy(trusted_hosts=("api.example.com",), trust_forwarded=True)
    setup, client = await start(policy)
    async with client:
        public = "https://api.example.com/crm/contacts"
        forwarded = {"X-Forwarded-Host": "evil.test, api.example.com", "X-Forwarded-Proto": "https"}
        ok = await client.get("/crm/contacts", headers={**setup.headers(url=public), **forwarded})
        assert ok.status_code == 200
        spoofed = {"X-Forwarded-Host": "api.example.com, evil.test", "X-Forwarded-Proto": "https"}
        evil = "https://evil.test/crm/contacts"
        refused = await client.get("/crm/contacts", headers={**setup.headers(url=evil), **spoofed})
        assert refused.status_code == 400
    plain, plain_client = await start(DPoPPolicy(trusted_hosts=("testserver",)))
    async with plain_client:
        ignored = {"X-Forwarded-Host": "testserver", "X-Forwarded-Proto": "https"}
        https_proof = plain.headers(url="https://testserver/crm/contacts")
        response = await plain_client.get("/crm/contacts", headers={**https_proof, **ignored})
        assert response.json()["reason"] == "dpop_htu_mismatch"  # not trusted: headers ignored


def test_policy_validation() -> None:
    with pytest.raises(ConfigurationError, match="exactly one"):
        DPoPPolicy()
    with pytest.raises(ConfigurationError, match="trusted_hosts"):
        DPoPPolicy(public_origin="https://a.test", trust_forwarded=True)
    with pytest.raises(ConfigurationError):
        DPoPPolicy(public_origin="https://api.example.com/path")
    with pytest.raises(ConfigurationError):
        DPoPPolicy(public_origin="https://a.test", nonce_secret=b"short")
    with pytest.raises(ConfigurationError):
        DPoPPolicy(
            public_origin="https://a.test", nonce_secret=b"x" * 32, token_nonce_secret=b"x" * 32
        )
    with pytest.raises(ConfigurationError):
        DPoPPolicy(public_origin="https://a.test", algorithms=("HS256",))
    assert DPoPPolicy(public_origin="https://a.test/").public_origin == "https://a.test"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    proof=st.one_of(
        st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=300),
        st.builds(
            lambda h, p, s: f"{_b64(h)}.{_b64(p)}.{_b64(s)}",
            st.binary(max_size=120),
            st.binary(max_size=120),
            st.binary(max_size=80),
        ),
    ),
    scheme=st.sampled_from(["DPoP", "Bearer", "dpop"]),
)
def test_arbitrary_dpop_headers_never_cause_a_500(proof: str, scheme: str) -> None:
    async def call() -> int:
        setup, client = await start(DPoPPolicy(public_origin=ORIGIN))
        async with client:
            headers = {"Authorization": f"{scheme} {setup.keys.access_key.reveal()}", "DPoP": proof}
            response = await client.get("/crm/contacts", headers=headers)
            return response.status_code

    assert anyio.run(call) in (400, 401)


async def test_fractional_iat_is_accepted_over_http(setup: DPoPSetup) -> None:
    """RFC 7519 NumericDate: a runtime that stamps proofs with fractional seconds is served."""
    access = setup.keys.access_key.reveal()
    proof = setup.key.proof("GET", URL, access_key=access, iat=setup.now() + 0.42)
    headers = {"Authorization": f"DPoP {access}", "DPoP": proof}
    response = await setup.client.get("/crm/contacts", headers=headers)
    assert response.status_code == 200
