"""The MCP DPoP server conformance checklist (SEP-1932; modelcontextprotocol/conformance #395),
item by item, against ``AgentGuardMCP`` over a real socket.

Each refusal is a ``401`` whose JSON body is RFC 6749/6750-shaped (``error``,
``error_description``, plus agentguard's ``reason``) and whose ``WWW-Authenticate: DPoP``
challenge carries the same ``error`` and the accepted ``algs`` (RFC 9449 §7.1). Proof problems
are ``invalid_dpop_proof``; a key problem (a bound key sent as Bearer, a proof from another key
than the bound one, a key for another resource) is ``invalid_token``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentguard._audience import WRONG_AUDIENCE
from agentguard.dpop._algorithms import sign
from agentguard.dpop._claims import access_key_hash
from agentguard.dpop._jose import b64url_encode
from agentguard.dpop._jwk import jwk_thumbprint, public_jwk
from tests.mcp.dpop_servers import (  # noqa: F401 - fixtures
    BODY,
    MCP_HEADERS,
    GuardedMCP,
    mcp_fixture,
    optional_mcp_fixture,
    quiet_loggers_fixture,
)

pytestmark = pytest.mark.usefixtures("quiet_loggers")

ALGS = 'algs="ES256 EdDSA Ed25519"'


class Signer:
    """An ES256 key that signs any header and claims, well-formed or not."""

    def __init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.jwk = public_jwk(self.key.public_key())
        self.jkt = jwk_thumbprint(self.jwk)

    def header(self) -> dict[str, Any]:
        return {"typ": "dpop+jwt", "alg": "ES256", "jwk": dict(self.jwk)}

    def jws(self, header: dict[str, Any], claims: dict[str, Any]) -> str:
        signing_input = (
            b64url_encode(json.dumps(header).encode())
            + "."
            + b64url_encode(json.dumps(claims).encode())
        )
        return signing_input + "." + b64url_encode(sign(self.key, signing_input.encode()))


class Case:
    """A bound key on the shared server and the valid proof for one request to it."""

    http = httpx.Client(timeout=10)  # one connection pool for the module: no TLS context per call

    def __init__(self, mcp: GuardedMCP, *, audience: str | None = None) -> None:
        self.mcp = mcp
        self.signer = Signer()
        keys = anyio.run(lambda: mcp.issue(jkt=self.signer.jkt, audience=audience))
        self.key = keys.access_key.reveal()

    def claims(self, **changes: Any) -> dict[str, Any]:
        claims: dict[str, Any] = {
            "jti": secrets.token_urlsafe(16),
            "htm": "POST",
            "htu": self.mcp.resource,
            "iat": self.mcp.clock.timestamp(),
            "ath": access_key_hash(self.key),
        }
        claims.update(changes)
        return claims

    def proof(self, **changes: Any) -> str:
        return self.signer.jws(self.signer.header(), self.claims(**changes))

    def send(
        self,
        proofs: list[str] | None,
        *,
        scheme: str = "DPoP",
        url: str | None = None,
    ) -> httpx.Response:
        headers = [(name, value) for name, value in MCP_HEADERS.items()]
        headers.append(("authorization", f"{scheme} {self.key}"))
        headers += [("dpop", proof) for proof in proofs or ()]
        return self.http.post(url or self.mcp.resource, content=BODY, headers=headers)


def refused(response: httpx.Response, error: str, reason: str | None = None) -> None:
    assert response.status_code == 401, response.text
    body = response.json()
    assert set(body) == {"error", "error_description", "reason"}
    assert body["error"] == error
    assert body["error_description"] and "ag_at_" not in body["error_description"]
    if reason is not None:
        assert body["reason"] == reason
    challenges = response.headers.get_list("www-authenticate")
    dpop = [c for c in challenges if c.startswith("DPoP ")]
    assert len(dpop) == 1, challenges
    assert f'error="{error}"' in dpop[0]
    assert ALGS in dpop[0]
    assert 'resource_metadata="' in dpop[0] and 'scope="notes:read notes:write"' in dpop[0]
    assert response.headers["cache-control"] == "no-store"


def accepted(response: httpx.Response) -> None:
    assert response.status_code == 200, response.text


@pytest.fixture(scope="module", autouse=True)
def _close_client() -> Iterator[None]:
    yield
    Case.http.close()


@pytest.fixture
def case(mcp: GuardedMCP) -> Case:
    return Case(mcp)


def test_a_valid_proof_is_accepted(case: Case) -> None:
    accepted(case.send([case.proof()]))


def test_several_dpop_headers_are_refused(case: Case) -> None:
    refused(case.send([case.proof(), case.proof()]), "invalid_dpop_proof", "dpop_proof_missing")


def test_no_dpop_header_is_refused(case: Case) -> None:
    refused(case.send(None), "invalid_dpop_proof", "dpop_proof_missing")


@pytest.mark.parametrize(
    "make",
    [
        lambda case: "not-a-jwt",
        lambda case: "a.b",
        lambda case: case.proof() + ".extra",
        lambda case: "!!!." + case.proof().split(".", 1)[1],
        lambda case: b64url_encode(b"not json") + "." + case.proof().split(".", 1)[1],
        lambda case: case.proof().rsplit(".", 1)[0] + ".",
        lambda case: case.proof().replace(".", "..", 1),
    ],
    ids=["one-part", "two-parts", "four-parts", "bad-base64", "header-not-json", "no-sig", "gap"],
)
def test_a_proof_that_is_not_one_well_formed_jwt_is_refused(
    case: Case, make: Callable[[Case], str]
) -> None:
    refused(case.send([make(case)]), "invalid_dpop_proof")


def test_a_payload_that_is_not_json_is_refused(case: Case) -> None:
    header = b64url_encode(json.dumps(case.signer.header()).encode())
    signing_input = header + "." + b64url_encode(b"[1, 2")
    proof = signing_input + "." + b64url_encode(sign(case.signer.key, signing_input.encode()))
    refused(case.send([proof]), "invalid_dpop_proof", "dpop_proof_malformed")


@pytest.mark.parametrize("claim", ["jti", "htm", "htu", "iat"])
def test_a_proof_missing_a_required_claim_is_refused(case: Case, claim: str) -> None:
    claims = case.claims()
    del claims[claim]
    refused(case.send([case.signer.jws(case.signer.header(), claims)]), "invalid_dpop_proof")


@pytest.mark.parametrize("typ", ["JWT", "at+jwt", "dpop", None])
def test_a_wrong_typ_is_refused(case: Case, typ: str | None) -> None:
    header = case.signer.header()
    if typ is None:
        del header["typ"]
    else:
        header["typ"] = typ
    proof = case.signer.jws(header, case.claims())
    refused(case.send([proof]), "invalid_dpop_proof", "dpop_proof_malformed")


def test_alg_none_is_refused(case: Case) -> None:
    header = {**case.signer.header(), "alg": "none"}
    unsigned = case.signer.jws(header, case.claims()).rsplit(".", 1)[0] + "."
    refused(case.send([unsigned]), "invalid_dpop_proof")
    signed = case.signer.jws(header, case.claims())
    refused(case.send([signed]), "invalid_dpop_proof", "dpop_alg_not_allowed")


@pytest.mark.parametrize("alg", ["HS256", "HS512"])
def test_a_symmetric_alg_is_refused(case: Case, alg: str) -> None:
    secret = secrets.token_bytes(32)
    header = {"typ": "dpop+jwt", "alg": alg, "jwk": {"kty": "oct", "k": b64url_encode(secret)}}
    signing_input = (
        b64url_encode(json.dumps(header).encode())
        + "."
        + b64url_encode(json.dumps(case.claims()).encode())
    )
    digest = hashlib.sha256 if alg == "HS256" else hashlib.sha512
    mac = hmac.new(secret, signing_input.encode(), digest).digest()
    refused(case.send([signing_input + "." + b64url_encode(mac)]), "invalid_dpop_proof")


def test_a_bad_signature_is_refused(case: Case) -> None:
    proof = case.proof()
    signing_input, signature = proof.rsplit(".", 1)
    other = Signer()  # a valid signature, by another key than the header's jwk
    forged = signing_input + "." + b64url_encode(sign(other.key, signing_input.encode()))
    refused(case.send([forged]), "invalid_dpop_proof", "dpop_bad_signature")
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    refused(case.send([signing_input + "." + flipped]), "invalid_dpop_proof")


def test_a_private_jwk_is_refused(case: Case) -> None:
    header = case.signer.header()
    private = case.signer.key.private_numbers().private_value.to_bytes(32, "big")
    header["jwk"] = {**header["jwk"], "d": b64url_encode(private)}
    proof = case.signer.jws(header, case.claims())
    refused(case.send([proof]), "invalid_dpop_proof", "dpop_bad_key")


@pytest.mark.parametrize("htm", ["GET", "post", "PUT"])
def test_an_htm_other_than_the_method_is_refused(case: Case, htm: str) -> None:
    refused(case.send([case.proof(htm=htm)]), "invalid_dpop_proof", "dpop_htm_mismatch")


@pytest.mark.parametrize(
    "htu",
    [
        "{origin}/other",
        "{origin}/mcp/extra",
        "{https}/mcp",
        "http://127.0.0.2:{port}/mcp",
        "http://127.0.0.1:1/mcp",
        "not a url",
    ],
)
def test_an_htu_other_than_the_url_is_refused(case: Case, htu: str) -> None:
    origin = case.mcp.origin
    value = htu.format(
        origin=origin, https=origin.replace("http:", "https:"), port=origin.rsplit(":", 1)[1]
    )
    refused(case.send([case.proof(htu=value)]), "invalid_dpop_proof", "dpop_htu_mismatch")


def test_htu_comparison_ignores_query_and_fragment(case: Case) -> None:
    resource = case.mcp.resource
    accepted(case.send([case.proof(htu=resource + "?a=1#frag")]))
    accepted(case.send([case.proof()], url=resource + "?x=2"))
    accepted(case.send([case.proof(htu=resource.replace("http://", "HTTP://"))]))


@pytest.mark.parametrize("offset", [-301, 301, -(10**6), 10**6])
def test_a_stale_or_future_iat_is_refused(case: Case, offset: int) -> None:
    iat = case.mcp.clock.timestamp() + offset
    refused(case.send([case.proof(iat=iat)]), "invalid_dpop_proof", "dpop_iat_out_of_window")


@pytest.mark.parametrize("offset", [-290, 290])
def test_an_iat_inside_the_five_minute_window_is_accepted(case: Case, offset: int) -> None:
    accepted(case.send([case.proof(iat=case.mcp.clock.timestamp() + offset)]))


def test_a_missing_or_wrong_ath_is_refused(case: Case) -> None:
    claims = case.claims()
    del claims["ath"]
    missing = case.signer.jws(case.signer.header(), claims)
    refused(case.send([missing]), "invalid_dpop_proof", "dpop_ath_mismatch")
    wrong = case.proof(ath=access_key_hash("ag_at_someone_elses_key"))
    refused(case.send([wrong]), "invalid_dpop_proof", "dpop_ath_mismatch")


def test_a_replayed_proof_is_refused(case: Case) -> None:
    proof = case.proof()
    accepted(case.send([proof]))
    refused(case.send([proof]), "invalid_dpop_proof", "dpop_replayed")


def test_a_proof_by_another_key_than_the_bound_one_is_invalid_token(case: Case) -> None:
    other = Signer()
    proof = other.jws(other.header(), case.claims())
    refused(case.send([proof]), "invalid_token", "dpop_binding_mismatch")


def test_a_proof_by_another_key_than_the_bound_one_is_refused(case: Case) -> None:
    other = Signer()
    response = case.send([other.jws(other.header(), case.claims())])
    assert response.status_code == 401
    assert response.json()["reason"] == "dpop_binding_mismatch"


def test_a_bound_key_under_bearer_is_refused(case: Case) -> None:
    refused(case.send(None, scheme="Bearer"), "invalid_token", "dpop_required")
    refused(case.send([case.proof()], scheme="Bearer"), "invalid_token", "dpop_required")


def test_a_bound_key_under_bearer_is_refused_where_dpop_is_optional(
    optional_mcp: GuardedMCP,
) -> None:
    bound = Case(optional_mcp)
    response = bound.send(None, scheme="Bearer")
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_token"
    assert response.json()["reason"] == "dpop_binding_mismatch"
    challenges = response.headers.get_list("www-authenticate")
    assert [c.split()[0] for c in challenges] == ["DPoP", "Bearer"]
    assert all('error="invalid_token"' in c for c in challenges)
    accepted(bound.send([bound.proof()]))


def test_a_key_for_another_resource_is_refused(mcp: GuardedMCP) -> None:
    elsewhere = Case(mcp, audience="https://other.example/mcp")
    refused(elsewhere.send([elsewhere.proof()]), "invalid_token", WRONG_AUDIENCE.value)


def test_a_key_for_this_resource_is_accepted(mcp: GuardedMCP) -> None:
    here = Case(mcp, audience=mcp.resource)
    accepted(here.send([here.proof()]))


# Generated malformed proofs: every mutation below makes the proof invalid, so each example must
# be refused with a 401 and a well-formed body, never accepted and never a 5xx.

_JSON_JUNK = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.text(max_size=20),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)


def _mutations(case: Case) -> st.SearchStrategy[str]:
    def claims_without(name: str) -> str:
        claims = case.claims()
        del claims[name]
        return case.signer.jws(case.signer.header(), claims)

    def claims_with(name: str, value: object) -> str:
        return case.signer.jws(case.signer.header(), case.claims(**{name: value}))

    def header_with(name: str, value: object) -> str:
        return case.signer.jws({**case.signer.header(), name: value}, case.claims())

    def corrupted(data: bytes) -> str:
        head = case.proof().rpartition(".")[0]
        return head + "." + b64url_encode(data)

    def iat_junk(value: object) -> str:
        return claims_with("iat", value)

    def string_claim_junk(name: str, value: object) -> str:
        return claims_with(name, value)

    return st.one_of(
        st.sampled_from(["jti", "htm", "htu", "iat", "ath"]).map(claims_without),
        st.builds(
            string_claim_junk,
            st.sampled_from(["jti", "htm", "htu", "ath"]),
            _JSON_JUNK.filter(lambda value: not isinstance(value, str)),
        ),
        st.builds(iat_junk, st.one_of(st.text(max_size=10), st.none(), st.lists(st.integers()))),
        st.builds(
            iat_junk,
            st.integers(min_value=301, max_value=10**9).map(
                lambda delta: case.mcp.clock.timestamp() + delta
            ),
        ),
        st.builds(header_with, st.just("typ"), _JSON_JUNK.filter(lambda v: v != "dpop+jwt")),
        st.builds(
            header_with,
            st.just("alg"),
            st.one_of(
                _JSON_JUNK, st.sampled_from(["none", "HS256", "RS256", "ES384", "EdDSA", "es256"])
            ),
        ),
        st.builds(header_with, st.sampled_from(["jku", "x5u", "kid", "crit", "b64"]), _JSON_JUNK),
        st.builds(header_with, st.just("jwk"), _JSON_JUNK),
        st.binary(max_size=80).map(corrupted),
        st.text(alphabet="abcXYZ019-_.=+/", max_size=120),
    )


@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_generated_malformed_proofs_are_refused_never_500(mcp: GuardedMCP, data: Any) -> None:
    case = _CASES.setdefault(id(mcp), Case(mcp))
    proof = data.draw(_mutations(case))
    response = case.send([proof])
    assert response.status_code == 401, (proof, response.status_code, response.text)
    body = response.json()
    assert body["error"] in ("invalid_dpop_proof", "invalid_token")
    assert set(body) == {"error", "error_description", "reason"}
    assert response.headers["www-authenticate"].startswith("DPoP ")


_CASES: dict[int, Case] = {}
