"""Known JOSE and DPoP attacks, one test each, and fuzzing: only InvalidDPoPProof ever escapes.

RFC 9449 §11 (security considerations) and RFC 8725 (JWT best current practices) list these.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections.abc import Mapping
from typing import Any

import anyio
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentguard.dpop import DPoPVerifier, NonceSource
from agentguard.dpop.jose import b64url_decode, b64url_encode
from agentguard.dpop.jwk import public_jwk
from agentguard.errors import InvalidDPoPProof, Reason, UseDPoPNonce
from agentguard.storage.memory import MemoryStore
from agentguard.testing import FakeClock

URL = "https://api.example.test/crm/items"
MARKER = "ATTACKER-MARKER-7f3a"
DROP = object()
KEY = ec.generate_private_key(ec.SECP256R1())


NOW = int(FakeClock().now().timestamp())


def es256_sign(key: ec.EllipticCurvePrivateKey, message: bytes) -> bytes:
    r, s = decode_dss_signature(key.sign(message, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def _merge(base: dict[str, Any], changes: Mapping[str, Any] | None) -> dict[str, Any]:
    merged = dict(base)
    for name, value in (changes or {}).items():
        if value is DROP:
            merged.pop(name, None)
        else:
            merged[name] = value
    return merged


def forge(
    *,
    key: ec.EllipticCurvePrivateKey = KEY,
    header: Mapping[str, Any] | None = None,
    payload: Mapping[str, Any] | None = None,
    header_json: bytes | None = None,
    payload_json: bytes | None = None,
    signature: bytes | None = None,
) -> str:
    """An ES256-signed compact JWS, a valid proof unless told otherwise."""
    base_header = {"typ": "dpop+jwt", "alg": "ES256", "jwk": public_jwk(key.public_key())}
    base_payload = {"jti": secrets.token_urlsafe(12), "htm": "POST", "htu": URL, "iat": NOW}
    header_bytes = header_json or json.dumps(_merge(base_header, header)).encode()
    payload_bytes = payload_json or json.dumps(_merge(base_payload, payload)).encode()
    signing_input = f"{b64url_encode(header_bytes)}.{b64url_encode(payload_bytes)}"
    if signature is None:
        signature = es256_sign(key, signing_input.encode())
    return f"{signing_input}.{b64url_encode(signature)}"


def new_verifier(*, nonces: bool = False, **kwargs: Any) -> DPoPVerifier:
    clock = FakeClock()
    source = NonceSource(b"s" * 32, clock) if nonces else None
    return DPoPVerifier(MemoryStore(clock=clock), clock, nonces=source, **kwargs)


async def reason_for(proof: object, verifier: DPoPVerifier | None = None) -> Reason:
    verifier = verifier or new_verifier()
    with pytest.raises(InvalidDPoPProof) as caught:
        await verifier.verify([proof], method="POST", url=URL)  # type: ignore[list-item]
    assert MARKER not in str(caught.value)
    assert MARKER not in repr(caught.value)
    return caught.value.reason


@pytest.mark.anyio
async def test_attack_alg_none_unsigned() -> None:
    header = b64url_encode(json.dumps({"typ": "dpop+jwt", "alg": "none"}).encode())
    payload = b64url_encode(
        json.dumps({"jti": "x", "htm": "POST", "htu": URL, "iat": NOW}).encode()
    )
    assert await reason_for(f"{header}.{payload}.") is Reason.DPOP_PROOF_MALFORMED
    assert await reason_for(forge(header={"alg": "none"})) is Reason.DPOP_ALG_NOT_ALLOWED


@pytest.mark.anyio
async def test_attack_hs256_signed_with_the_public_key_as_secret() -> None:
    jwk = public_jwk(KEY.public_key())
    pem = KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    for secret in (pem, json.dumps(jwk).encode(), b64url_decode(jwk["x"])):
        header = b64url_encode(json.dumps({"typ": "dpop+jwt", "alg": "HS256", "jwk": jwk}).encode())
        payload = b64url_encode(
            json.dumps({"jti": "x", "htm": "POST", "htu": URL, "iat": NOW}).encode()
        )
        mac = hmac.new(secret, f"{header}.{payload}".encode(), hashlib.sha256).digest()
        proof = f"{header}.{payload}.{b64url_encode(mac)}"
        rsa_too = new_verifier(algorithms=["ES256", "RS256", "PS256"])
        assert await reason_for(proof) is Reason.DPOP_ALG_NOT_ALLOWED
        assert await reason_for(proof, rsa_too) is Reason.DPOP_ALG_NOT_ALLOWED


@pytest.mark.anyio
async def test_attack_symmetric_oct_jwk() -> None:
    oct_jwk = {"kty": "oct", "k": b64url_encode(b"secret" * 6)}
    assert await reason_for(forge(header={"jwk": oct_jwk})) is Reason.DPOP_BAD_KEY
    assert await reason_for(forge(header={"alg": "HS256", "jwk": oct_jwk})) is (
        Reason.DPOP_ALG_NOT_ALLOWED
    )


@pytest.mark.anyio
async def test_attack_jwk_with_private_d() -> None:
    d = KEY.private_numbers().private_value.to_bytes(32, "big")
    jwk = {**public_jwk(KEY.public_key()), "d": b64url_encode(d)}
    assert await reason_for(forge(header={"jwk": jwk})) is Reason.DPOP_BAD_KEY


@pytest.mark.anyio
@pytest.mark.parametrize(
    "reference",
    [
        {"jku": "https://evil.test/jwks.json"},
        {"x5u": "https://evil.test/cert.pem"},
        {"x5c": ["MIIB"]},
        {"x5t#S256": "abc"},
        {"kid": "key-1"},
    ],
)
async def test_attack_key_by_reference_instead_of_jwk(reference: dict[str, object]) -> None:
    assert await reason_for(forge(header={"jwk": DROP, **reference})) is Reason.DPOP_BAD_KEY
    assert await reason_for(forge(header=reference)) is Reason.DPOP_BAD_KEY


@pytest.mark.anyio
async def test_attack_missing_jwk() -> None:
    assert await reason_for(forge(header={"jwk": DROP})) is Reason.DPOP_BAD_KEY


@pytest.mark.anyio
@pytest.mark.parametrize("jwk", ["a-string", ["list"], 5, None, {}])
async def test_attack_jwk_not_an_object(jwk: object) -> None:
    assert await reason_for(forge(header={"jwk": jwk})) is Reason.DPOP_BAD_KEY


@pytest.mark.anyio
@pytest.mark.parametrize(
    "extra", [{"crit": ["exp"]}, {"b64": False}, {"crit": ["b64"], "b64": False}, {"zip": "DEF"}]
)
async def test_attack_crit_b64_and_unknown_header_parameters(extra: dict[str, object]) -> None:
    assert await reason_for(forge(header=extra)) is Reason.DPOP_PROOF_MALFORMED


@pytest.mark.anyio
@pytest.mark.parametrize(
    "payload_json", [b"[]", b'"claims"', b"42", b"null", b"{", b"", b'{"iat": NaN}', b"\xff"]
)
async def test_attack_payload_not_a_json_object(payload_json: bytes) -> None:
    proof = forge(payload_json=payload_json or b" ")
    assert await reason_for(proof) is Reason.DPOP_PROOF_MALFORMED


@pytest.mark.anyio
async def test_attack_duplicate_member_names_in_header() -> None:
    jwk = json.dumps(public_jwk(KEY.public_key()))
    header_json = f'{{"typ":"dpop+jwt","alg":"none","alg":"ES256","jwk":{jwk}}}'.encode()
    assert await reason_for(forge(header_json=header_json)) is Reason.DPOP_PROOF_MALFORMED


@pytest.mark.anyio
async def test_attack_duplicate_member_names_in_payload() -> None:
    payload_json = (
        f'{{"jti":"d1","htm":"POST","htu":"https://evil.test/","htu":"{URL}","iat":{NOW}}}'
    ).encode()
    assert await reason_for(forge(payload_json=payload_json)) is Reason.DPOP_PROOF_MALFORMED


@pytest.mark.anyio
async def test_attack_duplicate_member_names_in_jwk() -> None:
    jwk = public_jwk(KEY.public_key())
    decoy = "A" * 43
    header_json = (
        '{"typ":"dpop+jwt","alg":"ES256","jwk":{"kty":"EC","crv":"P-256",'
        f'"x":"{decoy}","x":"{jwk["x"]}","y":"{jwk["y"]}"}}}}'
    ).encode()
    assert await reason_for(forge(header_json=header_json)) is Reason.DPOP_PROOF_MALFORMED


@pytest.mark.anyio
async def test_attack_oversized_proof() -> None:
    proof = forge(payload={"pad": MARKER * 1000})
    assert len(proof) > 8192
    assert await reason_for(proof) is Reason.DPOP_PROOF_MALFORMED
    assert await reason_for("A" * 10_000_000) is Reason.DPOP_PROOF_MALFORMED


@pytest.mark.anyio
async def test_attack_short_ec_coordinate_gives_no_second_thumbprint() -> None:
    while True:
        key = ec.generate_private_key(ec.SECP256R1())
        jwk = public_jwk(key.public_key())
        if b64url_decode(jwk["x"])[0] == 0:
            break
    short = {**jwk, "x": b64url_encode(b64url_decode(jwk["x"])[1:])}
    assert await reason_for(forge(key=key, header={"jwk": short})) is Reason.DPOP_BAD_KEY


@pytest.mark.anyio
async def test_attack_point_not_on_the_curve() -> None:
    jwk = {**public_jwk(KEY.public_key()), "y": b64url_encode(b"\x01" * 32)}
    assert await reason_for(forge(header={"jwk": jwk})) is Reason.DPOP_BAD_KEY


@pytest.mark.anyio
@pytest.mark.parametrize("iat", [str(NOW), True, 10**100, -(10**100), 1e300, MARKER])
async def test_attack_iat_of_the_wrong_type_or_size(iat: object) -> None:
    assert await reason_for(forge(payload={"iat": iat})) in {
        Reason.DPOP_PROOF_MALFORMED,
        Reason.DPOP_IAT_OUT_OF_WINDOW,
    }


@pytest.mark.anyio
@pytest.mark.parametrize("htu", [5, None, [URL], {"href": URL}, True])
async def test_attack_non_string_htu(htu: object) -> None:
    assert await reason_for(forge(payload={"htu": htu})) is Reason.DPOP_PROOF_MALFORMED


@pytest.mark.anyio
async def test_attack_header_value_that_is_not_text() -> None:
    assert await reason_for(forge().encode()) is Reason.DPOP_PROOF_MALFORMED


@pytest.mark.anyio
async def test_attack_marker_in_every_field_is_never_echoed() -> None:
    for payload in ({"htu": MARKER}, {"htm": MARKER}, {"jti": MARKER, "htm": "GET"}):
        await reason_for(forge(payload=payload))
    await reason_for(forge(header={"alg": MARKER}))
    await reason_for(forge(header={MARKER: 1}))


# Fuzzing: for any input, only InvalidDPoPProof (or UseDPoPNonce) escapes.

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
_header_changes = st.dictionaries(
    st.sampled_from(["typ", "alg", "jwk", "kid", "crit", "jku", "x"]) | st.text(max_size=5),
    _json | st.just(DROP),
    max_size=3,
)
_payload_changes = st.dictionaries(
    st.sampled_from(["jti", "htm", "htu", "iat", "ath", "nonce"]) | st.text(max_size=5),
    _json | st.just(DROP),
    max_size=4,
)
_FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def only_refusals(
    proofs: list[Any], *, method: str = "POST", url: str = URL, nonces: bool = False, **kw: Any
) -> None:
    verifier = new_verifier(nonces=nonces)

    async def run() -> None:
        try:
            await verifier.verify(proofs, method=method, url=url, **kw)
        except (InvalidDPoPProof, UseDPoPNonce):
            pass

    anyio.run(run)


@_FUZZ
@given(st.lists(st.text(max_size=300), max_size=3))
def test_fuzz_arbitrary_text_only_raises_invalid_dpop_proof(proofs: list[str]) -> None:
    only_refusals(proofs)


@_FUZZ
@given(st.lists(st.from_regex(r"[A-Za-z0-9_.-]{0,200}", fullmatch=True), min_size=1, max_size=1))
def test_fuzz_base64url_shaped_text_only_raises_invalid_dpop_proof(proofs: list[str]) -> None:
    only_refusals(proofs)


@_FUZZ
@given(st.binary(max_size=200), st.binary(max_size=200), st.binary(max_size=80))
def test_fuzz_arbitrary_bytes_in_each_part(header: bytes, payload: bytes, signature: bytes) -> None:
    only_refusals([".".join(b64url_encode(part) or "A" for part in (header, payload, signature))])
    only_refusals([forge(header_json=header or b" ", payload_json=payload or b" ")])


@_FUZZ
@given(_header_changes, _payload_changes, st.booleans(), st.one_of(st.none(), st.text(max_size=10)))
def test_fuzz_signed_proofs_with_arbitrary_header_and_payload(
    header: dict[str, Any], payload: dict[str, Any], nonces: bool, access_key: str | None
) -> None:
    proof = forge(header=header, payload=payload)
    only_refusals([proof], nonces=nonces, access_key=access_key, expected_jkt=access_key)


@_FUZZ
@given(st.text(max_size=40), st.text(max_size=80))
def test_fuzz_arbitrary_method_and_url(method: str, url: str) -> None:
    only_refusals([forge(payload={"htm": method, "htu": url})], method=method, url=url)
