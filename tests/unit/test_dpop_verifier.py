"""DPoPVerifier against RFC 9449 §4.3, one test per check, positive and negative.

Proofs are forged by hand with ``cryptography`` (so each test controls every byte) or made by
joserfc (an independent JOSE implementation) and by :class:`DPoPKey`.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from datetime import datetime
from functools import partial
from typing import Any

import anyio
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from hypothesis import given, settings
from hypothesis import strategies as st
from joserfc import jws
from joserfc.jwk import ECKey, OKPKey

from agentguard.dpop import (
    DPoPKey,
    DPoPVerifier,
    NonceSource,
    VerifiedProof,
    access_key_hash,
    jwk_thumbprint,
)
from agentguard.dpop._jose import b64url_encode
from agentguard.dpop._jwk import public_jwk
from agentguard.dpop._verifier import REPLAY_SKEW_SECONDS
from agentguard.errors import InvalidDPoPProof, InvalidToken, Reason, StoreUnavailable, UseDPoPNonce
from agentguard.storage import MemoryStore
from agentguard.testing import FakeClock

URL = "https://api.example.test/crm/items"
ACCESS_KEY = "ag_at_" + "k" * 49
DROP = object()

SigningKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey


def sign_raw(key: SigningKey, alg: str, message: bytes) -> bytes:
    """A JWS signature over ``message`` (raw r||s for ES256)."""
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(message)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        r, s = decode_dss_signature(key.sign(message, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")
    if alg.startswith("PS"):
        pss = padding.PSS(padding.MGF1(hashes.SHA256()), 32)
        return key.sign(message, pss, hashes.SHA256())
    return key.sign(message, padding.PKCS1v15(), hashes.SHA256())


def _merge(base: dict[str, Any], changes: Mapping[str, Any] | None) -> dict[str, Any]:
    merged = dict(base)
    for name, value in (changes or {}).items():
        if value is DROP:
            merged.pop(name, None)
        else:
            merged[name] = value
    return merged


def forge(
    key: SigningKey,
    *,
    alg: str = "ES256",
    now: int,
    header: Mapping[str, Any] | None = None,
    payload: Mapping[str, Any] | None = None,
    header_json: bytes | None = None,
    payload_json: bytes | None = None,
) -> str:
    """A compact JWS: a valid DPoP proof unless ``header``/``payload`` change it."""
    base_header = {"typ": "dpop+jwt", "alg": alg, "jwk": public_jwk(key.public_key())}
    base_payload = {"jti": secrets.token_urlsafe(12), "htm": "POST", "htu": URL, "iat": now}
    header_bytes = header_json or json.dumps(_merge(base_header, header)).encode()
    payload_bytes = payload_json or json.dumps(_merge(base_payload, payload)).encode()
    signing_input = f"{b64url_encode(header_bytes)}.{b64url_encode(payload_bytes)}"
    signature = sign_raw(key, alg, signing_input.encode())
    return f"{signing_input}.{b64url_encode(signature)}"


@pytest.fixture
def verifier(store: MemoryStore, clock: FakeClock) -> DPoPVerifier:
    return DPoPVerifier(store, clock)


@pytest.fixture
def es256() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


async def refused(
    verifier: DPoPVerifier, proofs: list[str], **kwargs: Any
) -> InvalidDPoPProof | InvalidToken:
    kwargs = {"method": "POST", "url": URL, **kwargs}
    with pytest.raises((InvalidDPoPProof, InvalidToken)) as caught:
        await verifier.verify(proofs, **kwargs)
    error = caught.value
    assert isinstance(error, (InvalidDPoPProof, InvalidToken))
    return error


# §4.3 check 1: exactly one DPoP header


@pytest.mark.anyio
async def test_4_3_1_valid_proof_is_accepted(
    verifier: DPoPVerifier, clock: FakeClock, es256: ec.EllipticCurvePrivateKey
) -> None:
    proof = forge(es256, now=clock.timestamp(), payload={"jti": "one"})
    result = await verifier.verify([proof], method="POST", url=URL)
    expected = VerifiedProof(
        jkt=jwk_thumbprint(public_jwk(es256.public_key())),
        jti="one",
        iat=clock.timestamp(),
        alg="ES256",
    )
    assert result == expected


@pytest.mark.anyio
async def test_4_3_1_missing_dpop_header_is_refused(verifier: DPoPVerifier) -> None:
    assert (await refused(verifier, [])).reason is Reason.DPOP_PROOF_MISSING


@pytest.mark.anyio
async def test_4_3_1_two_dpop_headers_are_refused(
    verifier: DPoPVerifier, clock: FakeClock, es256: ec.EllipticCurvePrivateKey
) -> None:
    proof = forge(es256, now=clock.timestamp())
    error = await refused(verifier, [proof, forge(es256, now=clock.timestamp())])
    assert error.reason is Reason.DPOP_PROOF_MISSING
    assert "exactly one" in error.description


# §4.3 check 2: a single well-formed JWT


@pytest.mark.anyio
@pytest.mark.parametrize(
    "bad", ["", "a.b", "a.b.c.d", "a..c", "eyJ.e30.", "not a jwt", "a.b.c ", "é.é.é", "a.b.c,a.b.c"]
)
async def test_4_3_2_proof_must_be_a_compact_jws(verifier: DPoPVerifier, bad: str) -> None:
    assert (await refused(verifier, [bad])).reason is Reason.DPOP_PROOF_MALFORMED


@pytest.mark.anyio
async def test_4_3_2_oversized_proof_is_refused_before_parsing(
    store: MemoryStore, clock: FakeClock, es256: ec.EllipticCurvePrivateKey
) -> None:
    verifier = DPoPVerifier(store, clock, max_proof_bytes=1024)
    proof = forge(es256, now=clock.timestamp(), payload={"pad": "x" * 2000})
    error = await refused(verifier, [proof])
    assert error.reason is Reason.DPOP_PROOF_MALFORMED
    assert "longer" in error.description


@pytest.mark.anyio
async def test_4_3_2_header_must_be_a_json_object(
    verifier: DPoPVerifier, clock: FakeClock, es256: ec.EllipticCurvePrivateKey
) -> None:
    proof = forge(es256, now=clock.timestamp(), header_json=b'["dpop+jwt"]')
    assert (await refused(verifier, [proof])).reason is Reason.DPOP_PROOF_MALFORMED


@pytest.mark.anyio
async def test_4_3_2_signature_must_be_base64url(
    verifier: DPoPVerifier, clock: FakeClock, es256: ec.EllipticCurvePrivateKey
) -> None:
    proof = forge(es256, now=clock.timestamp())
    assert (await refused(verifier, [proof + "AAA"])).reason is Reason.DPOP_PROOF_MALFORMED


# §4.3 check 3: required claims, with the right types


@pytest.mark.anyio
@pytest.mark.parametrize("claim", ["jti", "htm", "htu", "iat"])
async def test_4_3_3_each_required_claim_must_be_present(
    verifier: DPoPVerifier, clock: FakeClock, es256: ec.EllipticCurvePrivateKey, claim: str
) -> None:
    proof = forge(es256, now=clock.timestamp(), payload={claim: DROP})
    assert (await refused(verifier, [proof])).reason is Reason.DPOP_PROOF_MALFORMED


@pytest.mark.anyio
@pytest.mark.parametrize("jti", ["", "j" * 257, 5, None, ["a"]])
async def test_4_3_3_jti_must_be_a_string_of_1_to_256_characters(
    verifier: DPoPVerifier, clock: FakeClock, es256: ec.EllipticCurvePrivateKey, jti: object
) -> None:
    proof = forge(es256, now=clock.timestamp(), payload={"jti": jti})
    assert (await refused(verifier, [proof])).reason is Reason.DPOP_PROOF_MALFORMED


@pytest.mark.anyio
async def test_4_3_3_jti_of_256_characters_is_accepted(
    verifier: DPoPVerifier, clock: FakeClock, es256: ec.EllipticCurvePrivateKey
) -> None:
    proof = forge(es256, now=clock.timestamp(), payload={"jti": "j" * 256})
    assert (await verifier.verify([proof], method="POST", url=URL)).jti == "j" * 256


@pytest.mark.anyio
@pytest.mark.parametrize("htu", [5, None, ["https://api.example.test/crm/items"], {"u": 1}])
async def test_4_3_3_non_string_htu_is_malformed(
    verifier: DPoPVerifier, clock: FakeClock, es256: ec.EllipticCurvePrivateKey, htu: object
) -> None:
    proof = forge(es256, now=clock.timestamp(), payload={"htu": htu})
    assert (await refused(verifier, [proof])).reason is Reason.DPOP_PROOF_MALFORMED


@pytest.mark.anyio
@pytest.mark.parametrize("htm", [1, None, ["POST"]])
async def test_4_3_3_non_string_htm_is_malformed(
    verifier: DPoPVerifier, clock: FakeClock, es256: ec.EllipticCurvePrivateKey, htm: object
) -> None:
    proof = forge(es256, now=clock.timestamp(), payload={"htm": htm})
    assert (await refused(verifier, [proof])).reason is Reason.DPOP_PROOF_MALFORMED


@pytest.mark.anyio
async def test_4_3_3_iat_as_string_is_malformed(
    verifier: DPoPVerifier, clock: FakeClock, es256: ec.EllipticCurvePrivateKey
) -> None:
    proof = forge(es256, now=clock.timestamp(), payload={"iat": str(clock.timestamp())})
    assert (await refused(verifier, [proof])).reason is Reason.DPOP_PROOF_MALFORMED


@settings(max_examples=50, deadline=None)
@given(offset=st.floats(min_value=-299.5, max_value=299.5, allow_nan=False))
def test_4_3_3_fractional_iat_is_a_numeric_date(offset: float) -> None:
    """RFC 7519 NumericDate may be non-integer: a fractional iat inside the window verifies."""
    clock = FakeClock()
    verifier = DPoPVerifier(MemoryStore(clock=clock), clock)
    iat = clock.timestamp() + offset
    proof = forge(
        ec.generate_private_key(ec.SECP256R1()), now=clock.timestamp(), payload={"iat": iat}
    )
    verified = anyio.run(partial(verifier.verify, [proof], method="POST", url=URL))
    assert verified.iat == iat


@pytest.mark.anyio
@pytest.mark.parametrize("offset", [-300.001, 300.001, 1e300, -1e300])
async def test_4_3_3_fractional_iat_outside_the_window_is_refused(
    verifier: DPoPVerifier, clock: FakeClock, es256: ec.EllipticCurvePrivateKey, offset: float
) -> None:
    proof = forge(es256, now=clock.timestamp(), payload={"iat": clock.timestamp() + offset})
    assert (await refused(verifier, [proof])).reason is Reason.DPOP_IAT_OUT_OF_WINDOW


@pytest.mark.anyio
async def test_4_3_3_iat_as_bool_is_malformed(
    verifier: DPoPVerifier, clock: FakeClock, es256: ec.EllipticCurvePrivateKey
) -> None:
    proof = forge(es256, now=clock.timestamp(), payload={"iat": True})
    assert (await refused(verifier, [proof])).reason is Reason.DPOP_PROOF_MALFORMED


@pytest.mark.anyio
@pytest.mark.parametrize("iat", [10**30, -(10**30), 10**400])
async def test_4_3_3_huge_iat_is_out_of_window_not_a_crash(
    verifier: DPoPVerifier, clock: FakeClock, es256: ec.EllipticCurvePrivateKey, iat: int
) -> None:
    proof = forge(es256, now=clock.timestamp(), payload={"iat": iat})
    assert (await refused(verifier, [proof])).reason is Reason.DPOP_IAT_OUT_OF_WINDOW


@pytest.mark.anyio
async def test_4_3_3_extra_claims_are_ignored(
    verifier: DPoPVerifier, clock: FakeClock, es256: ec.EllipticCurvePrivateKey
) -> None:
    proof = forge(es256, now=clock.timestamp(), payload={"ext": {"a": [1, 2]}, "exp": 1})
    assert await verifier.verify([proof], method="POST", url=URL)


# §4.3 check 4: typ


@pytest.mark.anyio
@pytest.mark.parametrize("typ", [DROP, "JWT", "at+jwt", "application/jwt", "DPOP+JWT", 1])
async def test_4_3_4_typ_must_be_dpop_jwt(
    verifier: DPoPVerifier, clock: FakeClock, es256: ec.EllipticCurvePrivateKey, typ: object
) -> None:
    proof = forge(es256, now=clock.timestamp(), header={"typ": typ})
    error = await refused(verifier, [proof])
    assert error.reason is Reason.DPOP_PROOF_MALFORMED
    assert "typ" in error.description


# §4.3 check 5: alg


@pytest.mark.anyio
@pytest.mark.parametrize("alg", [DROP, "none", "HS256", "RS256", "ES384", "ES256K", "Ed448", 7])
async def test_4_3_5_alg_must_be_in_the_allow_list(
    verifier: DPoPVerifier, clock: FakeClock, es256: ec.EllipticCurvePrivateKey, alg: object
) -> None:
    proof = forge(es256, now=clock.timestamp(), header={"alg": alg})
    assert (await refused(verifier, [proof])).reason is Reason.DPOP_ALG_NOT_ALLOWED


def test_4_3_5_symmetric_and_none_algorithms_cannot_be_configured(
    store: MemoryStore, clock: FakeClock
) -> None:
    for algorithms in (["none"], ["HS256"], ["ES256", "HS512"], [], "ES256"):
        with pytest.raises(ValueError):
            DPoPVerifier(store, clock, algorithms=algorithms)


@pytest.mark.anyio
async def test_4_3_5_key_type_must_fit_the_alg(verifier: DPoPVerifier, clock: FakeClock) -> None:
    ed_key = ed25519.Ed25519PrivateKey.generate()
    # An Ed25519 key under alg ES256: refused before any signature check.
    header = {"alg": "ES256", "jwk": public_jwk(ed_key.public_key())}
    proof = forge(ec.generate_private_key(ec.SECP256R1()), now=clock.timestamp(), header=header)
    assert (await refused(verifier, [proof])).reason is Reason.DPOP_BAD_KEY


@pytest.mark.anyio
async def test_4_3_5_p384_key_under_es256_is_refused(
    verifier: DPoPVerifier, clock: FakeClock, es256: ec.EllipticCurvePrivateKey
) -> None:
    p384 = public_jwk(ec.generate_private_key(ec.SECP384R1()).public_key())
    proof = forge(es256, now=clock.timestamp(), header={"jwk": p384})
    assert (await refused(verifier, [proof])).reason is Reason.DPOP_BAD_KEY


# §4.3 check 6: signature


@pytest.mark.anyio
async def test_4_3_6_signature_must_verify_with_the_header_jwk(
    verifier: DPoPVerifier, clock: FakeClock, es256: ec.EllipticCurvePrivateKey
) -> None:
    other = public_jwk(ec.generate_private_key(ec.SECP256R1()).public_key())
    proof = forge(es256, now=clock.timestamp(), header={"jwk": other})
    assert (await refused(verifier, [proof])).reason is Reason.DPOP_BAD_SIGNATURE


@pytest.mark.anyio
async def test_4_3_6_tampered_payload_fails_the_signature(
    verifier: DPoPVerifier, clock: FakeClock, es256: ec.EllipticCurvePrivateKey
) -> None:
    header, _, signature = forge(es256, now=clock.timestamp()).split(".")
    other_payload = forge(es256, now=clock.timestamp(), payload={"htm": "GET"}).split(".")[1]
    proof = f"{header}.{other_payload}.{signature}"
    assert (await refused(verifier, [proof], method="GET")).reason is Reason.DPOP_BAD_SIGNATURE


@pytest.mark.anyio
@pytest.mark.parametrize("length", [0, 63, 65, 72])
async def test_4_3_6_es256_signature_must_be_64_raw_bytes(
    verifier: DPoPVerifier, clock: FakeClock, es256: ec.EllipticCurvePrivateKey, length: int
) -> None:
    signing_input = forge(es256, now=clock.timestamp()).rpartition(".")[0]
    proof = f"{signing_input}.{b64url_encode(b'x' * length)}" if length else signing_input + ".A"
    assert (await refused(verifier, [proof])).reason in {
        Reason.DPOP_BAD_SIGNATURE,
        Reason.DPOP_PROOF_MALFORMED,
    }


@pytest.mark.anyio
async def test_4_3_6_der_encoded_es256_signature_is_refused(
    verifier: DPoPVerifier, clock: FakeClock, es256: ec.EllipticCurvePrivateKey
) -> None:
    signing_input = forge(es256, now=clock.timestamp()).rpartition(".")[0]
    der = es256.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
    proof = f"{signing_input}.{b64url_encode(der)}"
    assert (await refused(verifier, [proof])).reason is Reason.DPOP_BAD_SIGNATURE


# §4.3 check 7: no private key in the jwk


@pytest.mark.anyio
@pytest.mark.parametrize("member", ["d", "p", "q", "dp", "dq", "qi", "oth", "k"])
async def test_4_3_7_jwk_with_private_members_is_refused(
    verifier: DPoPVerifier, clock: FakeClock, es256: ec.EllipticCurvePrivateKey, member: str
) -> None:
    jwk = {**public_jwk(es256.public_key()), member: "AAAA"}
    error = await refused(verifier, [forge(es256, now=clock.timestamp(), header={"jwk": jwk})])
    assert error.reason is Reason.DPOP_BAD_KEY
    assert "AAAA" not in error.description


# §4.3 check 8: htm


@pytest.mark.anyio
@pytest.mark.parametrize("htm", ["GET", "post", "POST ", ""])
async def test_4_3_8_htm_must_equal_the_request_method(
    verifier: DPoPVerifier, clock: FakeClock, es256: ec.EllipticCurvePrivateKey, htm: str
) -> None:
    proof = forge(es256, now=clock.timestamp(), payload={"htm": htm})
    assert (await refused(verifier, [proof])).reason is Reason.DPOP_HTM_MISMATCH


# §4.3 check 9: htu


@pytest.mark.anyio
@pytest.mark.parametrize(
    "htu",
    [
        "HTTPS://API.EXAMPLE.TEST:443/crm/items",
        "https://api.example.test/crm/./items",
        "https://api.example.test/crm/x/../items",
        "https://api.example.test/%63rm/items",
        "https://api.example.test/crm/items?page=2",
        "https://api.example.test/crm/items#top",
    ],
)
async def test_4_3_9_htu_matches_after_normalisation_ignoring_query_and_fragment(
    verifier: DPoPVerifier, clock: FakeClock, es256: ec.EllipticCurvePrivateKey, htu: str
) -> None:
    proof = forge(es256, now=clock.timestamp(), payload={"htu": htu})
    assert await verifier.verify([proof], method="POST", url=URL)


@pytest.mark.anyio
async def test_4_3_9_htu_tilde_and_encoded_tilde_match(
    verifier: DPoPVerifier, clock: FakeClock, es256: ec.EllipticCurvePrivateKey
) -> None:
    proof = forge(es256, now=clock.timestamp(), payload={"htu": "https://h.test/a%7eb%2fc"})
    assert await verifier.verify([proof], method="POST", url="https://h.test/a~b%2Fc")


@pytest.mark.anyio
@pytest.mark.parametrize(
    "htu",
    [
        "https://api.example.test/crm/other",
        "https://api.example.test/crm/items/",
        "https://api.example.test/crm%2Fitems",
        "https://evil.example.test/crm/items",
        "http://api.example.test/crm/items",
        "https://api.example.test:8443/crm/items",
        "/crm/items",
        "not a url",
    ],
)
async def test_4_3_9_htu_mismatch_is_refused(
    verifier: DPoPVerifier, clock: FakeClock, es256: ec.EllipticCurvePrivateKey, htu: str
) -> None:
    proof = forge(es256, now=clock.timestamp(), payload={"htu": htu})
    assert (await refused(verifier, [proof])).reason is Reason.DPOP_HTU_MISMATCH


@pytest.mark.anyio
async def test_4_3_9_invalid_request_url_is_refused_not_raised(
    verifier: DPoPVerifier, clock: FakeClock, es256: ec.EllipticCurvePrivateKey
) -> None:
    bad_url = "https://api.example.test/%zz"
    proof = forge(es256, now=clock.timestamp(), payload={"htu": bad_url})
    error = await refused(verifier, [proof], url=bad_url)
    assert error.reason is Reason.DPOP_HTU_MISMATCH


# §4.3 checks 10 and §8/§9: server nonces


@pytest.fixture
def nonces(clock: FakeClock) -> NonceSource:
    return NonceSource(b"s" * 32, clock)


@pytest.fixture
def nonce_verifier(store: MemoryStore, clock: FakeClock, nonces: NonceSource) -> DPoPVerifier:
    return DPoPVerifier(store, clock, nonces=nonces)


@pytest.mark.anyio
async def test_4_3_10_nonce_required_when_configured(
    nonce_verifier: DPoPVerifier,
    nonces: NonceSource,
    clock: FakeClock,
    es256: ec.EllipticCurvePrivateKey,
) -> None:
    with pytest.raises(UseDPoPNonce) as caught:
        await nonce_verifier.verify([forge(es256, now=clock.timestamp())], method="POST", url=URL)
    assert caught.value.nonce == nonces.current()
    assert ("dpop-nonce", nonces.current()) in caught.value.response_headers()


@pytest.mark.anyio
async def test_4_3_10_valid_nonce_is_accepted(
    nonce_verifier: DPoPVerifier,
    nonces: NonceSource,
    clock: FakeClock,
    es256: ec.EllipticCurvePrivateKey,
) -> None:
    proof = forge(es256, now=clock.timestamp(), payload={"nonce": nonces.current()})
    assert await nonce_verifier.verify([proof], method="POST", url=URL)


@pytest.mark.anyio
async def test_4_3_10_stale_nonce_gets_a_fresh_one(
    nonce_verifier: DPoPVerifier,
    nonces: NonceSource,
    clock: FakeClock,
    es256: ec.EllipticCurvePrivateKey,
) -> None:
    stale = nonces.current()
    clock.advance(600)
    proof = forge(es256, now=clock.timestamp(), payload={"nonce": stale})
    with pytest.raises(UseDPoPNonce) as caught:
        await nonce_verifier.verify([proof], method="POST", url=URL)
    assert caught.value.nonce != stale
    assert caught.value.nonce == nonces.current()


@pytest.mark.anyio
async def test_4_3_10_nonce_refusal_does_not_burn_the_jti(
    store: MemoryStore, clock: FakeClock, nonces: NonceSource, es256: ec.EllipticCurvePrivateKey
) -> None:
    strict = DPoPVerifier(store, clock, nonces=nonces)
    proof = forge(es256, now=clock.timestamp(), payload={"jti": "same"})
    with pytest.raises(UseDPoPNonce):
        await strict.verify([proof], method="POST", url=URL)
    assert await DPoPVerifier(store, clock).verify([proof], method="POST", url=URL)


# §4.3 check 11: iat window


@pytest.mark.anyio
@pytest.mark.parametrize("offset", [-300, -1, 0, 1, 300])
async def test_4_3_11_iat_within_window_is_accepted(
    verifier: DPoPVerifier, clock: FakeClock, es256: ec.EllipticCurvePrivateKey, offset: int
) -> None:
    proof = forge(es256, now=clock.timestamp() + offset)
    assert await verifier.verify([proof], method="POST", url=URL)


@pytest.mark.anyio
@pytest.mark.parametrize("offset", [-301, 301, -86400])
async def test_4_3_11_iat_outside_window_is_refused(
    verifier: DPoPVerifier, clock: FakeClock, es256: ec.EllipticCurvePrivateKey, offset: int
) -> None:
    proof = forge(es256, now=clock.timestamp() + offset)
    assert (await refused(verifier, [proof])).reason is Reason.DPOP_IAT_OUT_OF_WINDOW


@pytest.mark.anyio
async def test_4_3_11_iat_window_is_configurable(
    store: MemoryStore, clock: FakeClock, es256: ec.EllipticCurvePrivateKey
) -> None:
    narrow = DPoPVerifier(store, clock, iat_window=30)
    assert (await refused(narrow, [forge(es256, now=clock.timestamp() - 31)])).reason is (
        Reason.DPOP_IAT_OUT_OF_WINDOW
    )


# §4.3 check 12: ath and the bound key (jkt)


@pytest.mark.anyio
async def test_4_3_12_ath_must_match_the_access_key(
    verifier: DPoPVerifier, clock: FakeClock, es256: ec.EllipticCurvePrivateKey
) -> None:
    proof = forge(es256, now=clock.timestamp(), payload={"ath": access_key_hash(ACCESS_KEY)})
    assert await verifier.verify([proof], method="POST", url=URL, access_key=ACCESS_KEY)


@pytest.mark.anyio
@pytest.mark.parametrize("ath", [DROP, access_key_hash("ag_at_other"), "", 5])
async def test_4_3_12_ath_mismatch_is_refused(
    verifier: DPoPVerifier, clock: FakeClock, es256: ec.EllipticCurvePrivateKey, ath: object
) -> None:
    proof = forge(es256, now=clock.timestamp(), payload={"ath": ath})
    error = await refused(verifier, [proof], access_key=ACCESS_KEY)
    assert error.reason in {Reason.DPOP_ATH_MISMATCH, Reason.DPOP_PROOF_MALFORMED}
    assert ACCESS_KEY not in error.description


@pytest.mark.anyio
async def test_4_3_12_non_ascii_ath_is_a_mismatch_not_a_crash(
    verifier: DPoPVerifier, clock: FakeClock, es256: ec.EllipticCurvePrivateKey
) -> None:
    proof = forge(es256, now=clock.timestamp(), payload={"ath": "\u00e9\ud800"})
    error = await refused(verifier, [proof], access_key=ACCESS_KEY)
    assert error.reason is Reason.DPOP_ATH_MISMATCH


@pytest.mark.anyio
async def test_4_3_12_jkt_must_match_the_bound_key(
    verifier: DPoPVerifier, clock: FakeClock, es256: ec.EllipticCurvePrivateKey
) -> None:
    jkt = jwk_thumbprint(public_jwk(es256.public_key()))
    assert (
        await verifier.verify([forge(es256, now=clock.timestamp())], **_post(expected_jkt=jkt))
    ).jkt == jkt


@pytest.mark.anyio
async def test_4_3_12_jkt_mismatch_is_refused(
    verifier: DPoPVerifier, clock: FakeClock, es256: ec.EllipticCurvePrivateKey
) -> None:
    bound = jwk_thumbprint(public_jwk(ec.generate_private_key(ec.SECP256R1()).public_key()))
    error = await refused(verifier, [forge(es256, now=clock.timestamp())], expected_jkt=bound)
    assert isinstance(error, InvalidToken)  # RFC 9449 §7.1: the binding failed, not the proof
    assert error.reason is Reason.DPOP_BINDING_MISMATCH
    assert bound not in error.description


def _post(**kwargs: Any) -> dict[str, Any]:
    return {"method": "POST", "url": URL, **kwargs}


# §11.1: replay


@pytest.mark.anyio
async def test_11_1_replayed_jti_is_refused_across_two_verifiers_sharing_a_store(
    store: MemoryStore, clock: FakeClock, es256: ec.EllipticCurvePrivateKey
) -> None:
    first, second = DPoPVerifier(store, clock), DPoPVerifier(store, clock)
    proof = forge(es256, now=clock.timestamp())
    assert await first.verify([proof], method="POST", url=URL)
    assert (await refused(second, [proof])).reason is Reason.DPOP_REPLAYED
    assert (await refused(first, [proof])).reason is Reason.DPOP_REPLAYED


@pytest.mark.anyio
async def test_11_1_same_jti_from_another_key_is_not_a_replay(
    verifier: DPoPVerifier, clock: FakeClock, es256: ec.EllipticCurvePrivateKey
) -> None:
    other = ec.generate_private_key(ec.SECP256R1())
    assert await verifier.verify(
        [forge(es256, now=clock.timestamp(), payload={"jti": "j"})], **_post()
    )
    assert await verifier.verify(
        [forge(other, now=clock.timestamp(), payload={"jti": "j"})], **_post()
    )


class RecordingCache:
    """A ReplayCache that records what it is asked to store, or fails."""

    def __init__(self, error: Exception | None = None) -> None:
        self.calls: list[tuple[bytes, datetime]] = []
        self.error = error

    async def check_and_store(self, key: bytes, expires_at: datetime) -> bool:
        if self.error is not None:
            raise self.error
        self.calls.append((key, expires_at))
        return True


@pytest.mark.anyio
async def test_11_1_replay_entry_lives_until_iat_plus_window_plus_skew(
    clock: FakeClock, es256: ec.EllipticCurvePrivateKey
) -> None:
    cache = RecordingCache()
    verifier = DPoPVerifier(cache, clock, iat_window=300)
    future_iat = clock.timestamp() + 250
    await verifier.verify([forge(es256, now=future_iat)], **_post())
    (_, expires_at), *_ = cache.calls
    assert expires_at.timestamp() == future_iat + 300 + REPLAY_SKEW_SECONDS


@pytest.mark.anyio
async def test_11_1_jti_is_burnt_only_after_every_other_check(
    clock: FakeClock, es256: ec.EllipticCurvePrivateKey
) -> None:
    cache = RecordingCache()
    verifier = DPoPVerifier(cache, clock)
    for payload in ({"htm": "GET"}, {"htu": "https://x.test/"}, {"iat": 0}, {"ath": DROP}):
        await refused(
            verifier, [forge(es256, now=clock.timestamp(), payload=payload)], access_key="k"
        )
    assert cache.calls == []


@pytest.mark.anyio
async def test_11_1_replay_cache_failure_is_store_unavailable(
    clock: FakeClock, es256: ec.EllipticCurvePrivateKey
) -> None:
    verifier = DPoPVerifier(RecordingCache(ConnectionError("down")), clock)
    with pytest.raises(StoreUnavailable) as refused:  # 503, never the driver's error (a 500)
        await verifier.verify([forge(es256, now=clock.timestamp())], **_post())
    assert isinstance(refused.value.__cause__, ConnectionError)


# Key cache: keys, not verdicts


@pytest.mark.anyio
async def test_key_cache_holds_one_entry_per_header_and_still_checks_every_proof(
    store: MemoryStore, clock: FakeClock, es256: ec.EllipticCurvePrivateKey
) -> None:
    verifier = DPoPVerifier(store, clock, key_cache_size=2)
    for _ in range(3):
        assert await verifier.verify([forge(es256, now=clock.timestamp())], **_post())
    assert len(verifier._keys) == 1
    tampered = (
        forge(es256, now=clock.timestamp()).rpartition(".")[0] + "." + b64url_encode(bytes(64))
    )
    assert (await refused(verifier, [tampered])).reason is Reason.DPOP_BAD_SIGNATURE


# Interoperability: joserfc and DPoPKey


# joserfc warns that RFC 9864 deprecates "EdDSA"; clients still send it.
@pytest.mark.filterwarnings("ignore::joserfc.errors.SecurityWarning")
@pytest.mark.anyio
@pytest.mark.parametrize("alg", ["ES256", "EdDSA", "Ed25519"])
async def test_4_2_proof_made_by_joserfc_verifies(
    verifier: DPoPVerifier, clock: FakeClock, alg: str
) -> None:
    key = ECKey.generate_key("P-256") if alg == "ES256" else OKPKey.generate_key("Ed25519")
    header = {"typ": "dpop+jwt", "alg": alg, "jwk": key.as_dict(private=False)}
    payload = {"jti": "jose-1", "htm": "POST", "htu": URL, "iat": clock.timestamp()}
    proof = jws.serialize_compact(header, json.dumps(payload), key, algorithms=[alg])
    result = await verifier.verify([proof], **_post())
    assert result.alg == alg
    assert result.jkt == key.thumbprint()


# joserfc warns that RFC 9864 deprecates "EdDSA"; clients still send it.
@pytest.mark.filterwarnings("ignore::joserfc.errors.SecurityWarning")
@pytest.mark.anyio
@pytest.mark.parametrize("alg", ["ES256", "EdDSA", "Ed25519"])
async def test_4_2_proof_made_by_dpop_key_verifies_here_and_with_joserfc(
    verifier: DPoPVerifier, clock: FakeClock, alg: str
) -> None:
    key = DPoPKey.generate(alg)
    proof = key.proof("POST", URL + "?q=1", access_key=ACCESS_KEY, iat=clock.timestamp())
    result = await verifier.verify(
        [proof], **_post(access_key=ACCESS_KEY, expected_jkt=key.thumbprint)
    )
    assert (result.alg, result.jkt) == (alg, key.thumbprint)
    jwk: dict[str, str | list[str]] = dict(key.public_jwk)
    public = ECKey.import_key(jwk) if alg == "ES256" else OKPKey.import_key(jwk)
    decoded = jws.deserialize_compact(proof, public, algorithms=[alg])
    assert json.loads(decoded.payload)["htu"] == URL
    assert decoded.protected["typ"] == "dpop+jwt"
    assert public.thumbprint() == key.thumbprint


@pytest.mark.anyio
async def test_4_3_5_ed25519_is_accepted_under_both_alg_names(
    verifier: DPoPVerifier, clock: FakeClock
) -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    for alg in ("EdDSA", "Ed25519"):
        assert (
            await verifier.verify([forge(key, alg=alg, now=clock.timestamp())], **_post())
        ).alg == alg


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.mark.anyio
async def test_4_3_5_rs256_is_refused_by_default(
    verifier: DPoPVerifier, clock: FakeClock, rsa_key: rsa.RSAPrivateKey
) -> None:
    proof = forge(rsa_key, alg="RS256", now=clock.timestamp())
    assert (await refused(verifier, [proof])).reason is Reason.DPOP_ALG_NOT_ALLOWED


@pytest.mark.anyio
@pytest.mark.parametrize("alg", ["RS256", "PS256"])
async def test_4_3_5_rsa_2048_is_accepted_when_opted_in(
    store: MemoryStore, clock: FakeClock, rsa_key: rsa.RSAPrivateKey, alg: str
) -> None:
    verifier = DPoPVerifier(store, clock, algorithms=["ES256", alg])
    proof = forge(rsa_key, alg=alg, now=clock.timestamp())
    header_bytes = len(proof.split(".")[0])  # joserfc caps this at 512 by default
    assert header_bytes > 512
    assert (await verifier.verify([proof], **_post())).alg == alg


@pytest.mark.anyio
async def test_4_3_5_rsa_below_2048_bits_is_refused(store: MemoryStore, clock: FakeClock) -> None:
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505
    verifier = DPoPVerifier(store, clock, algorithms=["RS256"])
    assert (await refused(verifier, [forge(small, alg="RS256", now=clock.timestamp())])).reason is (
        Reason.DPOP_BAD_KEY
    )


def test_verifier_repr_and_algorithms(store: MemoryStore, clock: FakeClock) -> None:
    verifier = DPoPVerifier(store, clock)
    assert verifier.algorithms == ("ES256", "EdDSA", "Ed25519")
    assert "ES256" in repr(verifier)
