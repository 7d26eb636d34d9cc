"""Known JOSE and DPoP attacks, one test each, and fuzzing against a reference judgement.

The fuzz tests accept exactly what :func:`should_accept` (RFC 9449 §4.3, written apart from the
verifier) accepts, and refuse everything else with ``InvalidDPoPProof`` alone.

RFC 9449 §11 (security considerations) and RFC 8725 (JWT best current practices) list these.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import secrets
from collections.abc import Mapping
from typing import Any

import anyio
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentguard.dpop import DPoPVerifier, NonceSource, access_key_hash, normalize_htu
from agentguard.dpop._algorithms import ALGORITHMS
from agentguard.dpop._claims import MAX_JTI_LENGTH
from agentguard.dpop._jose import b64url_decode, b64url_encode
from agentguard.dpop._jwk import jwk_thumbprint, public_jwk
from agentguard.errors import InvalidDPoPProof, InvalidToken, Reason, UseDPoPNonce
from agentguard.storage import MemoryStore
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


def test_attack_es256_verify_refuses_another_key_type_before_and_after_an_ec_key() -> None:
    """The ES256 check refuses (never raises on) a key of another type, also once it has
    remembered the EC key class it saw (its cache of checked classes is per class)."""
    es256 = ALGORITHMS["ES256"]
    edward = ed25519.Ed25519PrivateKey.generate()
    signature = edward.sign(b"message")  # 64 bytes: the length an ES256 signature has
    assert es256.verify(edward.public_key(), b"message", signature) is False
    r, s = decode_dss_signature(KEY.sign(b"message", ec.ECDSA(hashes.SHA256())))
    raw = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    assert es256.verify(KEY.public_key(), b"message", raw) is True
    assert es256.verify(KEY.public_key(), b"messagf", raw) is False
    assert es256.verify(edward.public_key(), b"message", signature) is False


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


# Fuzzing: for any input, the verifier accepts exactly what the reference accepts, and refuses
# with InvalidDPoPProof (or UseDPoPNonce) and nothing else.

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


REAL_JWK = public_jwk(KEY.public_key())
THUMBPRINT = jwk_thumbprint(REAL_JWK)
WINDOW = 300  # the verifier's default iat window


def _strict_json(raw: bytes) -> object:
    def no_constant(name: str) -> float:
        raise ValueError(name)

    def finite(text: str) -> float:
        value = float(text)
        if not math.isfinite(value):
            raise ValueError(text)
        return value

    return json.loads(raw.decode("utf-8"), parse_constant=no_constant, parse_float=finite)


def _part(text: str) -> object:
    return _strict_json(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))


def _same_url(htu: str, url: str) -> bool:
    try:
        target = normalize_htu(url)
        return htu == url or normalize_htu(htu) == target
    except ValueError:
        return False


def should_accept(
    proof: str,
    *,
    signed: bool,
    method: str,
    url: str,
    nonces: bool,
    access_key: str | None,
    expected_jkt: str | None,
) -> bool:
    """The reference judgement, written from RFC 9449 §4.3 apart from the verifier's code.

    ``signed``: the proof's signature was made by ``KEY`` over its first two parts (``forge``).
    A fresh verifier sees each proof once, so replay never decides here; a nonce the fuzzer
    makes up is never one the server issued.
    """
    if not signed or nonces:
        return False
    try:
        head, body, _ = proof.split(".")
        header, payload = _part(head), _part(body)
    except (ValueError, RecursionError):
        return False
    if header != {"typ": "dpop+jwt", "alg": "ES256", "jwk": REAL_JWK}:
        return False
    if not isinstance(payload, dict):
        return False
    jti, htm, htu, iat = (payload.get(name) for name in ("jti", "htm", "htu", "iat"))
    if not isinstance(jti, str) or not 1 <= len(jti) <= MAX_JTI_LENGTH:
        return False
    if not isinstance(htm, str) or htm != method:
        return False
    if not isinstance(htu, str) or not _same_url(htu, url):
        return False
    if isinstance(iat, bool) or not isinstance(iat, (int, float)):
        return False
    if not NOW - WINDOW <= iat <= NOW + WINDOW:
        return False
    if any(
        payload.get(name) is not None and not isinstance(payload.get(name), str)
        for name in ("ath", "nonce")
    ):
        return False
    if access_key is not None and (
        not access_key.isascii() or payload.get("ath") != access_key_hash(access_key)
    ):
        return False
    return expected_jkt is None or expected_jkt == THUMBPRINT


def judge(
    proofs: list[Any],
    *,
    signed: bool,
    method: str = "POST",
    url: str = URL,
    nonces: bool = False,
    access_key: str | None = None,
    expected_jkt: str | None = None,
) -> bool:
    """Verify ``proofs`` and check the outcome against :func:`should_accept`; True if accepted.

    A refusal must be ``InvalidDPoPProof`` with a ``Reason`` (``InvalidToken`` for a proof by
    another key than the bound one, ``UseDPoPNonce`` when nonces are on); an acceptance must be
    one the reference accepts too, and report the proof's own key, ``jti`` and ``iat``.
    """
    verifier = new_verifier(nonces=nonces)

    async def run() -> Any:
        try:
            return await verifier.verify(
                proofs, method=method, url=url, access_key=access_key, expected_jkt=expected_jkt
            )
        except (InvalidDPoPProof, InvalidToken, UseDPoPNonce) as refused:
            return refused

    outcome = anyio.run(run)
    expected = (
        len(proofs) == 1
        and isinstance(proofs[0], str)
        and should_accept(
            proofs[0],
            signed=signed,
            method=method,
            url=url,
            nonces=nonces,
            access_key=access_key,
            expected_jkt=expected_jkt,
        )
    )
    if isinstance(outcome, UseDPoPNonce):
        assert nonces, "a nonce was asked for with no nonce source"
        assert not expected
        return False
    if isinstance(outcome, InvalidToken):  # RFC 9449 §7.1: only the key binding fails so
        assert outcome.reason is Reason.DPOP_BINDING_MISMATCH, outcome.reason
        assert not expected, "a valid proof was refused for its key binding"
        return False
    if isinstance(outcome, InvalidDPoPProof):
        assert isinstance(outcome.reason, Reason)
        assert not expected, f"a valid proof was refused: {outcome.reason}"
        return False
    assert expected, f"an invalid proof was accepted: {proofs!r}"
    payload = _part(proofs[0].split(".")[1])
    assert isinstance(payload, dict)
    assert (outcome.jkt, outcome.jti, outcome.iat) == (
        THUMBPRINT,
        payload["jti"],
        payload["iat"],
    )
    return True


def test_judge_accepts_a_valid_proof_and_refuses_its_tampered_copies() -> None:
    # The oracle must be able to say yes, or every fuzz test below would pass vacuously.
    proof = forge()
    assert judge([proof], signed=True)
    assert not judge([proof, proof], signed=True)
    assert not judge([forge(payload={"htm": "GET"})], signed=True)
    head, body, signature = proof.split(".")
    assert not judge([f"{head}.{body}x.{signature}"], signed=False)
    assert judge([forge(payload={"ath": access_key_hash("k")})], signed=True, access_key="k")
    assert judge([proof], signed=True, expected_jkt=THUMBPRINT)
    assert not judge([proof], signed=True, expected_jkt="other")


@_FUZZ
@given(st.lists(st.text(max_size=300), max_size=3))
def test_fuzz_arbitrary_text_is_refused(proofs: list[str]) -> None:
    assert not judge(proofs, signed=False)


@_FUZZ
@given(st.lists(st.from_regex(r"[A-Za-z0-9_.-]{0,200}", fullmatch=True), min_size=1, max_size=1))
def test_fuzz_base64url_shaped_text_is_refused(proofs: list[str]) -> None:
    assert not judge(proofs, signed=False)


@_FUZZ
@given(st.binary(max_size=200), st.binary(max_size=200), st.binary(max_size=80))
def test_fuzz_arbitrary_bytes_in_each_part(header: bytes, payload: bytes, signature: bytes) -> None:
    unsigned = ".".join(b64url_encode(part) or "A" for part in (header, payload, signature))
    assert not judge([unsigned], signed=False)
    judge([forge(header_json=header or b" ", payload_json=payload or b" ")], signed=True)


@_FUZZ
@given(_header_changes, _payload_changes, st.booleans(), st.one_of(st.none(), st.text(max_size=10)))
def test_fuzz_signed_proofs_with_arbitrary_header_and_payload(
    header: dict[str, Any], payload: dict[str, Any], nonces: bool, access_key: str | None
) -> None:
    proof = forge(header=header, payload=payload)
    accepted = judge(
        [proof], signed=True, nonces=nonces, access_key=access_key, expected_jkt=access_key
    )
    if not header and not payload and not nonces and access_key is None:
        assert accepted  # an untouched proof is valid


_urls = st.text(max_size=80) | st.builds(
    lambda origin, rest: origin + rest,
    st.sampled_from(["https://api.example.test", "http://h.test:8080", "wss://w.test"]),
    st.text(st.characters(codec="ascii"), max_size=30),
)


@_FUZZ
@given(st.text(max_size=40), _urls)
def test_fuzz_arbitrary_method_and_url(method: str, url: str) -> None:
    # htm and htu match the request, so this is accepted exactly when ``url`` is a valid URL
    judge([forge(payload={"htm": method, "htu": url})], signed=True, method=method, url=url)
