"""DPoPVerifier's contract, check by check: which refusal, which Reason, which description.

Clients read the refusal's ``error_description``; operators read its :class:`Reason` in the
audit log. So each RFC 9449 §4.3 check is pinned here to the exact outcome it produces, with its
boundaries (inclusive or not) and its precedence when a proof breaks more than one rule.
Thumbprints and replay keys are computed independently (joserfc, hashlib), not by the verifier's
own helpers.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import partial
from typing import Any

import anyio
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from hypothesis import given, settings
from hypothesis import strategies as st
from joserfc.jwk import ECKey

from agentguard.dpop import DPoPVerifier, NonceSource, VerifiedProof
from agentguard.dpop._jose import b64url_encode
from agentguard.dpop._jwk import public_jwk
from agentguard.dpop._verifier import REPLAY_SKEW_SECONDS
from agentguard.errors import InvalidDPoPProof, InvalidToken, Reason, StoreUnavailable, UseDPoPNonce
from agentguard.storage import MemoryStore
from agentguard.testing import FakeClock

URL = "https://api.example.test/crm/items"
ACCESS_KEY = "ag_at_" + "r" * 49
DROP = object()
KEY = ec.generate_private_key(ec.SECP256R1())
OTHER_KEY = ec.generate_private_key(ec.SECP256R1())
JWK = public_jwk(KEY.public_key())
#: The RFC 7638 thumbprint of KEY, computed by joserfc (not by agentguard).
JKT = ECKey.import_key(dict(JWK)).thumbprint()
NOW = FakeClock().timestamp()

# The descriptions a client receives, one per check (RFC 9449 §4.3 order).
NOT_TEXT = "the DPoP header is not text"
TOO_LONG = "the DPoP proof is longer than this server accepts"
NOT_COMPACT = "the DPoP proof is not a compact JWS of three base64url parts"
HEADER_NOT_JSON = "the DPoP proof's header is not a JSON object"
BAD_TYP = "the DPoP proof's typ must be dpop+jwt"
BAD_ALG = "the DPoP proof's alg is not allowed here"
KEY_REFERENCE = "the DPoP proof must carry its public key as jwk; key references are refused"
EXTRA_HEADER = "the DPoP proof's header has parameters this server does not accept"
NO_JWK = "the DPoP proof's header lacks its jwk"
PRIVATE_JWK = "the jwk contains private key members"
OCT_JWK = "symmetric (oct) keys are not accepted"
JWK_MISFIT = "the DPoP proof's jwk does not fit its alg"
JWK_INVALID = "the jwk is not a valid public key"
SIGNATURE_NOT_B64 = "the DPoP proof's signature is not base64url"
BAD_SIGNATURE = "the DPoP proof's signature does not verify"
PAYLOAD_NOT_JSON = "the DPoP proof's payload is not a JSON object"
HTM = "the DPoP proof's htm is not the request method"
URL_INVALID = "the request URL is not a valid URL"
HTU_NOT_URL = "the DPoP proof's htu is not a URL"
HTU = "the DPoP proof's htu is not the request URL"
KEY_NOT_ASCII = "the access key is not ASCII"
NO_ATH = "the DPoP proof lacks the ath claim"
ATH = "the DPoP proof's ath is not the key's"
JKT_MISMATCH = "the DPoP proof is signed by another key than bound"
REPLAYED = "this DPoP proof's jti was already used"


def iat_text(window: int) -> str:
    return f"the DPoP proof's iat must be within {window} seconds of now"


def es256(key: ec.EllipticCurvePrivateKey, message: bytes) -> bytes:
    r, s = decode_dss_signature(key.sign(message, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def _merge(base: dict[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for name, value in changes.items():
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
    header_part: str | None = None,
    payload_part: str | None = None,
    signature_part: str | None = None,
) -> str:
    """An ES256 compact JWS, a valid proof unless a part or a member is replaced.

    A replaced header or payload part is still signed, so only that part is at fault.
    """
    base_header = {"typ": "dpop+jwt", "alg": "ES256", "jwk": public_jwk(key.public_key())}
    base_payload = {"jti": secrets.token_urlsafe(12), "htm": "POST", "htu": URL, "iat": NOW}
    if header_part is None:
        header_part = b64url_encode(json.dumps(_merge(base_header, header or {})).encode())
    if payload_part is None:
        payload_part = b64url_encode(json.dumps(_merge(base_payload, payload or {})).encode())
    signing_input = f"{header_part}.{payload_part}"
    if signature_part is None:
        signature_part = b64url_encode(es256(key, signing_input.encode()))
    return f"{signing_input}.{signature_part}"


def new_verifier(**kwargs: Any) -> DPoPVerifier:
    clock = FakeClock()
    return DPoPVerifier(MemoryStore(clock=clock), clock, **kwargs)


def request(**changes: Any) -> dict[str, Any]:
    return {"method": "POST", "url": URL, **changes}


def run_verify(verifier: DPoPVerifier, proofs: object, **kwargs: Any) -> VerifiedProof:
    call = partial(verifier.verify, proofs, **request(**kwargs))  # type: ignore[arg-type]
    return anyio.run(call)


def refusal(
    verifier: DPoPVerifier, proofs: object, **kwargs: Any
) -> InvalidDPoPProof | InvalidToken:
    """The refusal: ``InvalidToken`` only for a proof by another key than the bound one."""
    with pytest.raises((InvalidDPoPProof, InvalidToken)) as caught:
        run_verify(verifier, proofs, **kwargs)
    error = caught.value
    assert isinstance(error, (InvalidDPoPProof, InvalidToken))
    return error


def b64json(value: object) -> str:
    return b64url_encode(json.dumps(value).encode())


def off_curve_jwk() -> dict[str, str]:
    """A P-256 jwk of the right shape whose point is not on the curve."""
    return {**JWK, "y": b64url_encode(bytes(31) + b"\x01")}


@dataclass(frozen=True)
class Case:
    """One way to break a proof, and the one refusal it must get."""

    reason: Reason
    description: str
    proofs: tuple[object, ...] = ()
    header: Mapping[str, Any] = field(default_factory=dict)
    payload: Mapping[str, Any] = field(default_factory=dict)
    parts: Mapping[str, str] = field(default_factory=dict)
    request: Mapping[str, Any] = field(default_factory=dict)

    def build(self) -> list[object]:
        if self.proofs:
            return list(self.proofs)
        return [
            forge(
                header=self.header,
                payload=self.payload,
                header_part=self.parts.get("header_part"),
                payload_part=self.parts.get("payload_part"),
                signature_part=self.parts.get("signature_part"),
            )
        ]


MALFORMED = Reason.DPOP_PROOF_MALFORMED
BAD_KEY = Reason.DPOP_BAD_KEY
ED25519_JWK = public_jwk(ed25519.Ed25519PrivateKey.generate().public_key())

CASES: dict[str, Case] = {
    "not text": Case(MALFORMED, NOT_TEXT, proofs=(forge().encode(),)),
    "not compact": Case(MALFORMED, NOT_COMPACT, proofs=("a.b",)),
    "four parts": Case(MALFORMED, NOT_COMPACT, proofs=(forge() + ".e30",)),
    "header not base64url": Case(MALFORMED, HEADER_NOT_JSON, parts={"header_part": "eyJ"}),
    "header non-canonical": Case(MALFORMED, HEADER_NOT_JSON, parts={"header_part": "e31"}),
    "header not an object": Case(MALFORMED, HEADER_NOT_JSON, parts={"header_part": b64json([])}),
    "typ missing": Case(MALFORMED, BAD_TYP, header={"typ": DROP}),
    "typ JWT": Case(MALFORMED, BAD_TYP, header={"typ": "JWT"}),
    "typ upper case": Case(MALFORMED, BAD_TYP, header={"typ": "DPOP+JWT"}),
    "alg missing": Case(Reason.DPOP_ALG_NOT_ALLOWED, BAD_ALG, header={"alg": DROP}),
    "alg none": Case(Reason.DPOP_ALG_NOT_ALLOWED, BAD_ALG, header={"alg": "none"}),
    "alg HS256": Case(Reason.DPOP_ALG_NOT_ALLOWED, BAD_ALG, header={"alg": "HS256"}),
    "alg not enabled": Case(Reason.DPOP_ALG_NOT_ALLOWED, BAD_ALG, header={"alg": "ES384"}),
    "alg a number": Case(Reason.DPOP_ALG_NOT_ALLOWED, BAD_ALG, header={"alg": 7}),
    "alg a list": Case(Reason.DPOP_ALG_NOT_ALLOWED, BAD_ALG, header={"alg": ["ES256"]}),
    "alg an object": Case(Reason.DPOP_ALG_NOT_ALLOWED, BAD_ALG, header={"alg": {"ES256": 1}}),
    **{
        f"key reference {name}": Case(BAD_KEY, KEY_REFERENCE, header={name: "ref"})
        for name in ("jku", "x5u", "x5c", "x5t", "x5t#S256", "kid")
    },
    "key reference beats unknown": Case(BAD_KEY, KEY_REFERENCE, header={"kid": "k", "zz": 1}),
    "crit": Case(MALFORMED, EXTRA_HEADER, header={"crit": ["b64"]}),
    "b64": Case(MALFORMED, EXTRA_HEADER, header={"b64": False}),
    "unknown header member": Case(MALFORMED, EXTRA_HEADER, header={"zz": 1}),
    "jwk missing": Case(BAD_KEY, NO_JWK, header={"jwk": DROP}),
    "jwk null": Case(BAD_KEY, NO_JWK, header={"jwk": None}),
    "jwk private": Case(BAD_KEY, PRIVATE_JWK, header={"jwk": {**JWK, "d": "AAAA"}}),
    "jwk oct": Case(BAD_KEY, OCT_JWK, header={"jwk": {"kty": "oct"}}),
    "jwk of another type": Case(BAD_KEY, JWK_MISFIT, header={"jwk": ED25519_JWK}),
    "jwk off the curve": Case(BAD_KEY, JWK_INVALID, header={"jwk": off_curve_jwk()}),
    "signature length 1 mod 4": Case(MALFORMED, SIGNATURE_NOT_B64, parts={"signature_part": "A"}),
    "signature non-canonical": Case(MALFORMED, SIGNATURE_NOT_B64, parts={"signature_part": "AB"}),
    "signature of zeros": Case(
        Reason.DPOP_BAD_SIGNATURE, BAD_SIGNATURE, parts={"signature_part": "A" * 86}
    ),
    "signed by another key": Case(
        Reason.DPOP_BAD_SIGNATURE, BAD_SIGNATURE, header={"jwk": public_jwk(OTHER_KEY.public_key())}
    ),
    "payload not an object": Case(MALFORMED, PAYLOAD_NOT_JSON, parts={"payload_part": b64json(1)}),
    "payload non-canonical": Case(MALFORMED, PAYLOAD_NOT_JSON, parts={"payload_part": "e31"}),
    "htm": Case(Reason.DPOP_HTM_MISMATCH, HTM, payload={"htm": "GET"}),
    "htm lower case": Case(Reason.DPOP_HTM_MISMATCH, HTM, payload={"htm": "post"}),
    "request URL invalid": Case(
        Reason.DPOP_HTU_MISMATCH, URL_INVALID, request={"url": "https://api.example.test/%zz"}
    ),
    "request URL invalid, htu equal": Case(
        Reason.DPOP_HTU_MISMATCH,
        URL_INVALID,
        payload={"htu": "https://api.example.test/%zz"},
        request={"url": "https://api.example.test/%zz"},
    ),
    "htu relative": Case(Reason.DPOP_HTU_MISMATCH, HTU_NOT_URL, payload={"htu": "/crm/items"}),
    "htu not a URL": Case(Reason.DPOP_HTU_MISMATCH, HTU_NOT_URL, payload={"htu": "not a url"}),
    "htu other path": Case(Reason.DPOP_HTU_MISMATCH, HTU, payload={"htu": URL + "/x"}),
    "htu other host": Case(
        Reason.DPOP_HTU_MISMATCH, HTU, payload={"htu": "https://evil.example.test/crm/items"}
    ),
    "iat too old": Case(Reason.DPOP_IAT_OUT_OF_WINDOW, iat_text(300), payload={"iat": NOW - 301}),
    "iat too new": Case(Reason.DPOP_IAT_OUT_OF_WINDOW, iat_text(300), payload={"iat": NOW + 301}),
    "access key not ASCII": Case(
        Reason.DPOP_ATH_MISMATCH, KEY_NOT_ASCII, request={"access_key": "ag_at_é"}
    ),
    "ath missing": Case(Reason.DPOP_ATH_MISMATCH, NO_ATH, request={"access_key": ACCESS_KEY}),
    "ath of another key": Case(
        Reason.DPOP_ATH_MISMATCH,
        ATH,
        payload={"ath": hashlib.sha256(b"ag_at_other").hexdigest()},
        request={"access_key": ACCESS_KEY},
    ),
    "ath not ASCII": Case(
        Reason.DPOP_ATH_MISMATCH, ATH, payload={"ath": "é"}, request={"access_key": ACCESS_KEY}
    ),
    "ath a lone surrogate": Case(
        Reason.DPOP_ATH_MISMATCH, ATH, payload={"ath": "\ud800"}, request={"access_key": "k"}
    ),
}

#: A valid proof by another key than the token is bound to: the binding failed, not the proof.
BINDING_CASES = {
    "jkt of another key": {"expected_jkt": "A" * 43},
    "jkt not ASCII": {"expected_jkt": "é"},
    "jkt a lone surrogate": {"expected_jkt": "\ud800"},
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_each_check_gives_its_own_reason_and_description(case: Case) -> None:
    error = refusal(new_verifier(), case.build(), **case.request)
    assert (error.reason, error.description) == (case.reason, case.description)
    assert type(error) is InvalidDPoPProof
    assert (error.status, error.code) == (401, "invalid_dpop_proof")


@pytest.mark.parametrize("request_args", BINDING_CASES.values(), ids=BINDING_CASES.keys())
def test_a_proof_by_another_key_is_the_tokens_failure(request_args: dict[str, str]) -> None:
    """RFC 9449 §7.1: 401 ``invalid_token`` (not ``invalid_dpop_proof``), reason kept."""
    with pytest.raises(InvalidToken) as caught:
        run_verify(
            new_verifier(), Case(Reason.DPOP_BINDING_MISMATCH, JKT_MISMATCH).build(), **request_args
        )
    error = caught.value
    assert (error.reason, error.description) == (Reason.DPOP_BINDING_MISMATCH, JKT_MISMATCH)
    assert (error.status, error.code) == (401, "invalid_token")


@pytest.mark.parametrize("proofs", [[], ()], ids=["list", "tuple"])
def test_no_proof_asks_for_one(proofs: list[str]) -> None:
    error = refusal(new_verifier(), proofs)
    assert error.reason is Reason.DPOP_PROOF_MISSING
    assert error.description == "this request needs a DPoP proof in a DPoP header"


@pytest.mark.parametrize("count", [2, 3])
def test_more_than_one_proof_is_refused_even_if_each_is_valid(count: int) -> None:
    error = refusal(new_verifier(), [forge() for _ in range(count)])
    assert error.reason is Reason.DPOP_PROOF_MISSING
    assert error.description == "send exactly one DPoP header"


def test_a_single_proof_string_counts_as_one_header() -> None:
    proof = forge(payload={"jti": "as-a-string"})
    assert run_verify(new_verifier(), proof).jti == "as-a-string"
    assert run_verify(new_verifier(), (proof,)).jti == "as-a-string"


def shaped(length: int) -> str:
    """Compact-JWS-shaped text of exactly ``length`` characters (its header is not JSON)."""
    return "A" * (length - 4) + ".A.A"


@settings(max_examples=10, deadline=None)
@given(limit=st.integers(min_value=256, max_value=20_000))
def test_max_proof_bytes_is_checked_first_and_is_inclusive(limit: int) -> None:
    """Longer than the limit: refused as too long before parsing; exactly the limit: parsed."""
    verifier = new_verifier(max_proof_bytes=limit)
    assert refusal(verifier, [shaped(limit)]).description == HEADER_NOT_JSON
    error = refusal(verifier, [shaped(limit + 1)])
    assert (error.reason, error.description) == (MALFORMED, TOO_LONG)


def test_max_proof_bytes_defaults_to_8192() -> None:
    assert refusal(new_verifier(), [shaped(8192)]).description == HEADER_NOT_JSON
    assert refusal(new_verifier(), [shaped(8193)]).description == TOO_LONG
    padded = forge(payload={"pad": "x" * 5000})
    assert run_verify(new_verifier(max_proof_bytes=len(padded)), [padded])


# Precedence: a proof that breaks several rules is refused for the first, in RFC 9449 §4.3 order.

#: Each fault, in the order the checks run; applying any subset must report the first.
FAULTS = (
    "typ",
    "alg",
    "key reference",
    "unknown header",
    "jwk",
    "signature",
    "htm",
    "htu",
    "iat",
    "ath",
    "jkt",
    "nonce",
    "replay",
)
EXPECTED: dict[str, tuple[Reason, str]] = {
    "typ": (MALFORMED, BAD_TYP),
    "alg": (Reason.DPOP_ALG_NOT_ALLOWED, BAD_ALG),
    "key reference": (BAD_KEY, KEY_REFERENCE),
    "unknown header": (MALFORMED, EXTRA_HEADER),
    "jwk": (BAD_KEY, JWK_INVALID),
    "signature": (Reason.DPOP_BAD_SIGNATURE, BAD_SIGNATURE),
    "htm": (Reason.DPOP_HTM_MISMATCH, HTM),
    "htu": (Reason.DPOP_HTU_MISMATCH, HTU),
    "iat": (Reason.DPOP_IAT_OUT_OF_WINDOW, iat_text(300)),
    "ath": (Reason.DPOP_ATH_MISMATCH, NO_ATH),
    "jkt": (Reason.DPOP_BINDING_MISMATCH, JKT_MISMATCH),
    "replay": (Reason.DPOP_REPLAYED, REPLAYED),
}


def faulty_request(faults: frozenset[str]) -> tuple[DPoPVerifier, NonceSource, str, dict[str, Any]]:
    clock = FakeClock()
    nonces = NonceSource(b"n" * 32, clock)
    verifier = DPoPVerifier(MemoryStore(clock=clock), clock, nonces=nonces)
    header: dict[str, Any] = {}
    payload: dict[str, Any] = {"jti": "burnt" if "replay" in faults else secrets.token_hex(8)}
    kwargs: dict[str, Any] = {"access_key": ACCESS_KEY, "expected_jkt": JKT}
    payload["ath"] = b64url_encode(hashlib.sha256(ACCESS_KEY.encode()).digest())
    if "nonce" not in faults:
        payload["nonce"] = nonces.current()
    header_changes = {
        "typ": ("typ", "JWT"),
        "alg": ("alg", "ES384"),
        "key reference": ("kid", "k1"),
        "unknown header": ("zz", 1),
        "jwk": ("jwk", off_curve_jwk()),
    }
    payload_changes = {"htm": ("htm", "PUT"), "htu": ("htu", URL + "/x"), "iat": ("iat", NOW - 301)}
    for fault in faults:
        if fault in header_changes:
            name, value = header_changes[fault]
            header[name] = value
        elif fault in payload_changes:
            name, value = payload_changes[fault]
            payload[name] = value
    if "ath" in faults:
        payload["ath"] = DROP
    if "jkt" in faults:
        kwargs["expected_jkt"] = ECKey.generate_key("P-256").thumbprint()
    signature = "A" * 86 if "signature" in faults else None
    if "replay" in faults:
        burn = forge(payload={"jti": "burnt", "nonce": nonces.current()})
        assert run_verify(verifier, [burn]).jti == "burnt"
    return verifier, nonces, forge(header=header, payload=payload, signature_part=signature), kwargs


def check_faults(faults: frozenset[str]) -> None:
    verifier, nonces, proof, kwargs = faulty_request(faults)
    first = next((fault for fault in FAULTS if fault in faults), None)
    if first is None:
        verified = run_verify(verifier, [proof], **kwargs)
        assert (verified.jkt, verified.alg, verified.iat) == (JKT, "ES256", NOW)
    elif first == "nonce":
        with pytest.raises(UseDPoPNonce) as asked:
            run_verify(verifier, [proof], **kwargs)
        assert asked.value.nonce == nonces.current()
        assert asked.value.reason is Reason.DPOP_NONCE_REQUIRED
    else:
        error = refusal(verifier, [proof], **kwargs)
        assert (error.reason, error.description) == EXPECTED[first]


@settings(max_examples=40, deadline=None)
@given(faults=st.frozensets(st.sampled_from(FAULTS), min_size=2))
def test_the_first_failing_check_decides_the_refusal(faults: frozenset[str]) -> None:
    check_faults(faults)


@pytest.mark.parametrize("fault", [*FAULTS, None])
def test_each_fault_alone_is_refused_for_itself(fault: str | None) -> None:
    """With every binding requested (ath, jkt, nonce), a proof with no fault is accepted."""
    check_faults(frozenset({fault} if fault else ()))


@pytest.mark.parametrize("index", range(len(FAULTS) - 1))
def test_each_check_runs_before_the_next(index: int) -> None:
    check_faults(frozenset(FAULTS[index : index + 2]))


# iat: the window is inclusive at both ends and sized by iat_window.


@settings(max_examples=40, deadline=None)
@given(
    window=st.integers(min_value=1, max_value=900),
    offset=st.one_of(
        st.integers(min_value=-1000, max_value=1000),
        st.floats(min_value=-1000, max_value=1000, allow_nan=False),
    ),
)
def test_iat_is_accepted_exactly_within_the_window(window: int, offset: float) -> None:
    verifier = new_verifier(iat_window=window)
    iat: float = NOW + offset
    proof = forge(payload={"iat": iat})
    if NOW - window <= iat <= NOW + window:
        assert run_verify(verifier, [proof]).iat == iat
    else:
        error = refusal(verifier, [proof])
        assert (error.reason, error.description) == (
            Reason.DPOP_IAT_OUT_OF_WINDOW,
            iat_text(window),
        )


@pytest.mark.parametrize("window", [1, 300])
def test_iat_window_edges(window: int) -> None:
    verifier = new_verifier(iat_window=window)
    for iat in (NOW - window, NOW, NOW + window):
        assert run_verify(verifier, [forge(payload={"iat": iat})]).iat == iat
    for late in (NOW - window - 1, NOW + window + 1, NOW + window + 0.5):
        assert refusal(verifier, [forge(payload={"iat": late})]).description == iat_text(window)


# ath and jkt: equal strings pass, anything else is refused.


@settings(max_examples=25, deadline=None)
@given(
    access_key=st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1),
    flip=st.booleans(),
)
def test_ath_must_be_the_base64url_sha256_of_the_access_key(access_key: str, flip: bool) -> None:
    ath = b64url_encode(hashlib.sha256(access_key.encode("ascii")).digest())
    sent = ath[::-1] if flip else ath
    proof = forge(payload={"ath": sent})
    if sent == ath:
        assert run_verify(new_verifier(), [proof], access_key=access_key).jkt == JKT
    else:
        error = refusal(new_verifier(), [proof], access_key=access_key)
        assert (error.reason, error.description) == (Reason.DPOP_ATH_MISMATCH, ATH)


def test_ath_is_not_checked_without_an_access_key() -> None:
    proof = forge(payload={"ath": "not-the-hash"})
    assert run_verify(new_verifier(), [proof]).jkt == JKT


@settings(max_examples=25, deadline=None)
@given(expected=st.one_of(st.just(JKT), st.text(max_size=50)))
def test_the_proof_key_must_have_the_bound_thumbprint(expected: str) -> None:
    proof = forge()
    if expected == JKT:
        assert run_verify(new_verifier(), [proof], expected_jkt=expected).jkt == JKT
    else:
        error = refusal(new_verifier(), [proof], expected_jkt=expected)
        assert (error.reason, error.description) == (Reason.DPOP_BINDING_MISMATCH, JKT_MISMATCH)


# Nonces (RFC 9449 §8): asked for when missing or stale, never before the other checks.


@pytest.mark.parametrize(
    "nonce", [DROP, "", "junk", "\ud800"], ids=["missing", "empty", "junk", "surrogate"]
)
def test_a_missing_or_unknown_nonce_gets_the_current_one(nonce: object) -> None:
    clock = FakeClock()
    nonces = NonceSource(b"n" * 32, clock)
    store = MemoryStore(clock=clock)
    verifier = DPoPVerifier(store, clock, nonces=nonces)
    proof = forge(payload={"jti": "kept", "nonce": nonce})
    with pytest.raises(UseDPoPNonce) as asked:
        run_verify(verifier, [proof])
    assert (asked.value.nonce, asked.value.reason) == (nonces.current(), Reason.DPOP_NONCE_REQUIRED)
    assert (asked.value.status, asked.value.code) == (401, "use_dpop_nonce")
    # The jti was not burnt: the same proof is accepted where no nonce is required.
    assert run_verify(DPoPVerifier(store, clock), [proof]).jti == "kept"


def test_the_previous_steps_nonce_is_still_accepted() -> None:
    clock = FakeClock()
    nonces = NonceSource(b"n" * 32, clock, step=60)
    verifier = DPoPVerifier(MemoryStore(clock=clock), clock, nonces=nonces)
    previous = nonces.current()
    clock.advance(60)
    assert run_verify(verifier, [forge(payload={"nonce": previous, "iat": NOW + 60})])


def test_a_nonce_claim_is_ignored_when_nonces_are_off() -> None:
    assert run_verify(new_verifier(), [forge(payload={"nonce": "anything"})]).jkt == JKT


# Replay (RFC 9449 §11.1): one use per (key, jti), remembered until the proof expires.


class RecordingCache:
    """A ReplayCache that records each claim and answers from a set, or fails."""

    def __init__(self, error: Exception | None = None) -> None:
        self.calls: list[tuple[bytes, datetime]] = []
        self.seen: set[bytes] = set()
        self.error = error

    async def check_and_store(self, key: bytes, expires_at: datetime) -> bool:
        if self.error is not None:
            raise self.error
        self.calls.append((key, expires_at))
        fresh = key not in self.seen
        self.seen.add(key)
        return fresh


def test_a_proof_is_accepted_once_then_refused_as_replayed() -> None:
    verifier = new_verifier()
    proof = forge(payload={"jti": "once"})
    assert run_verify(verifier, [proof]) == VerifiedProof(jkt=JKT, jti="once", iat=NOW, alg="ES256")
    error = refusal(verifier, [proof])
    assert (error.reason, error.description) == (Reason.DPOP_REPLAYED, REPLAYED)
    # Another proof with the same jti from the same key is the same replay...
    error = refusal(verifier, [forge(payload={"jti": "once", "htm": "POST", "iat": NOW + 1})])
    assert error.reason is Reason.DPOP_REPLAYED
    # ...but another key may use that jti: the replay key is (jkt, jti).
    assert run_verify(verifier, [forge(key=OTHER_KEY, payload={"jti": "once"})]).jti == "once"


@pytest.mark.parametrize(
    "jti", ["j", "a:b", "é", "\ud800"], ids=["plain", "colon", "utf8", "surrogate"]
)
@pytest.mark.parametrize("window", [1, 300])
def test_the_replay_entry_is_sha256_of_jkt_and_jti_kept_until_the_proof_expires(
    jti: str, window: int
) -> None:
    clock = FakeClock()
    cache = RecordingCache()
    verifier = DPoPVerifier(cache, clock, iat_window=window)
    iat = NOW + window  # stamped in the future: the entry must outlive now + window
    assert run_verify(verifier, [forge(payload={"jti": jti, "iat": iat})]).jti == jti
    [(key, expires_at)] = cache.calls
    assert key == hashlib.sha256(f"{JKT}:{jti}".encode("utf-8", "surrogatepass")).digest()
    expected = datetime.fromtimestamp(iat + window + REPLAY_SKEW_SECONDS, tz=timezone.utc)
    assert expires_at == expected
    assert expires_at.utcoffset() is not None
    assert REPLAY_SKEW_SECONDS == 60


def test_the_cache_saying_seen_is_a_replay() -> None:
    cache = RecordingCache()
    cache.seen.add(hashlib.sha256(f"{JKT}:seen".encode()).digest())
    error = refusal(DPoPVerifier(cache, FakeClock()), [forge(payload={"jti": "seen"})])
    assert (error.reason, error.description) == (Reason.DPOP_REPLAYED, REPLAYED)


def test_a_failing_replay_cache_is_a_503_naming_the_call(caplog: pytest.LogCaptureFixture) -> None:
    verifier = DPoPVerifier(RecordingCache(ConnectionError("db://secret@host")), FakeClock())
    with (
        caplog.at_level(logging.ERROR, "agentguard.storage"),
        pytest.raises(StoreUnavailable) as unavailable,
    ):
        run_verify(verifier, [forge()])
    assert unavailable.value.status == 503
    logged = [record.getMessage() for record in caplog.records]
    assert logged == ["storage call failed: replay cache.check_and_store: ConnectionError"]


# Configuration: refused early, with a message naming the setting.


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"algorithms": "ES256"}, "algorithms must be a non-empty sequence of JWS algorithm names"),
        ({"algorithms": []}, "algorithms must be a non-empty sequence of JWS algorithm names"),
        ({"algorithms": ()}, "algorithms must be a non-empty sequence of JWS algorithm names"),
        ({"iat_window": 0}, "iat_window must be at least one second"),
        ({"iat_window": -5}, "iat_window must be at least one second"),
        ({"max_proof_bytes": 255}, "max_proof_bytes must be at least 256"),
        ({"key_cache_size": 0}, "the key cache needs room for at least one key"),
    ],
)
def test_bad_settings_are_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError) as refused:
        new_verifier(**kwargs)
    assert str(refused.value) == message


def test_unknown_algorithms_are_named_with_the_choices() -> None:
    from agentguard.dpop._algorithms import ALGORITHMS

    with pytest.raises(ValueError) as refused:
        new_verifier(algorithms=["ES256", "none", "HS256"])
    assert str(refused.value) == (
        f"unsupported DPoP algorithms ['HS256', 'none']; choose from {sorted(ALGORITHMS)}"
    )


def test_the_smallest_settings_are_allowed() -> None:
    verifier = new_verifier(iat_window=1, max_proof_bytes=256, key_cache_size=1)
    assert (
        repr(verifier)
        == "DPoPVerifier(algorithms=['ES256', 'EdDSA', 'Ed25519'], iat_window=1, nonces=False)"
    )
    assert refusal(verifier, [forge()]).description == TOO_LONG


@pytest.mark.parametrize("algorithms", [("Ed25519", "ES256"), ("ES384",), ("ES256", "RS256")])
def test_only_the_configured_algorithms_are_accepted_in_that_order(
    algorithms: tuple[str, ...],
) -> None:
    verifier = new_verifier(algorithms=algorithms)
    assert verifier.algorithms == algorithms
    if "ES256" in algorithms:
        assert run_verify(verifier, [forge()]).alg == "ES256"
    else:
        assert refusal(verifier, [forge()]).reason is Reason.DPOP_ALG_NOT_ALLOWED


def test_repr_shows_settings_and_no_secret() -> None:
    clock = FakeClock()
    nonces = NonceSource(b"n" * 32, clock)
    verifier = DPoPVerifier(MemoryStore(clock=clock), clock, algorithms=["EdDSA"], nonces=nonces)
    assert repr(verifier) == "DPoPVerifier(algorithms=['EdDSA'], iat_window=300, nonces=True)"


# The key cache: one parse per distinct header, never a cached verdict.


def test_a_header_is_parsed_once_and_a_failing_one_every_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from agentguard.dpop._jwk import parse_jwk

    parsed: list[object] = []
    real = parse_jwk

    def counting(jwk: object) -> Any:
        parsed.append(jwk)
        return real(jwk)

    monkeypatch.setattr("agentguard.dpop._verifier.parse_jwk", counting)
    verifier = new_verifier(key_cache_size=1)
    for _ in range(3):
        assert run_verify(verifier, [forge()]).jkt == JKT
    assert len(parsed) == 1
    other = forge(key=OTHER_KEY)
    assert run_verify(verifier, [other]).jkt != JKT
    assert run_verify(verifier, [forge()]).jkt == JKT  # evicted by the size-1 cache: parsed again
    assert len(parsed) == 3
    bad = {"jwk": {**JWK, "d": "AAAA"}}
    for _ in range(2):
        assert refusal(verifier, [forge(header=bad)]).description == PRIVATE_JWK
    assert len(parsed) == 5
