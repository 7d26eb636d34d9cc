"""The client side: DPoPKey builds RFC 9449 §4.2 proofs."""

from __future__ import annotations

import json
import pickle
import time

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from agentguard.dpop import DPoPKey, access_key_hash, jwk_thumbprint
from agentguard.dpop._jose import b64url_decode


def _parts(proof: str) -> tuple[dict[str, object], dict[str, object], bytes]:
    header, payload, signature = proof.split(".")
    return (
        json.loads(b64url_decode(header)),
        json.loads(b64url_decode(payload)),
        b64url_decode(signature),
    )


@pytest.mark.parametrize("alg", ["ES256", "EdDSA", "Ed25519"])
def test_4_2_proof_header_has_typ_alg_and_public_jwk_only(alg: str) -> None:
    key = DPoPKey.generate(alg)
    header, _, signature = _parts(key.proof("GET", "https://h.test/a"))
    assert header == {"typ": "dpop+jwt", "alg": alg, "jwk": key.public_jwk}
    assert "d" not in key.public_jwk
    assert len(signature) == 64


def test_4_2_proof_payload_claims() -> None:
    key = DPoPKey.generate()
    before = int(time.time())
    proof = key.proof("POST", "https://h.test/a/b?x=1#frag", access_key="ag_at_k", nonce="n-1")
    _, payload, _ = _parts(proof)
    assert payload["htm"] == "POST"
    assert payload["htu"] == "https://h.test/a/b"
    assert payload["ath"] == access_key_hash("ag_at_k")
    assert payload["nonce"] == "n-1"
    assert isinstance(payload["iat"], int)
    assert before <= payload["iat"] <= int(time.time())
    assert isinstance(payload["jti"], str)
    assert len(payload["jti"]) >= 16


def test_4_2_proof_omits_ath_and_nonce_unless_given() -> None:
    _, payload, _ = _parts(DPoPKey.generate().proof("GET", "https://h.test/"))
    assert set(payload) == {"jti", "htm", "htu", "iat"}


def test_4_2_iat_and_jti_can_be_fixed() -> None:
    _, payload, _ = _parts(DPoPKey.generate().proof("GET", "https://h.test/", iat=5, jti="j"))
    assert (payload["iat"], payload["jti"]) == (5, "j")


def test_11_1_each_proof_has_a_fresh_jti() -> None:
    key = DPoPKey.generate()
    jtis = {_parts(key.proof("GET", "https://h.test/"))[1]["jti"] for _ in range(50)}
    assert len(jtis) == 50


@pytest.mark.parametrize("alg", ["ES256", "EdDSA"])
def test_6_1_pem_round_trip_keeps_the_thumbprint(alg: str) -> None:
    key = DPoPKey.generate(alg)
    pem = key.to_pem()
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    again = DPoPKey.from_pem(pem)
    assert (again.alg, again.thumbprint) == (alg, key.thumbprint)


def test_6_1_thumbprint_is_rfc7638_of_the_public_jwk() -> None:
    key = DPoPKey.generate()
    assert key.thumbprint == jwk_thumbprint(key.public_jwk)


def test_dpop_key_repr_and_pickle_never_show_private_material() -> None:
    key = DPoPKey.generate()
    private = key.to_pem()
    text = repr(key)
    assert key.thumbprint in text
    assert b"PRIVATE" not in text.encode()
    assert private.decode() not in text
    with pytest.raises(TypeError):
        pickle.dumps(key)


def test_dpop_key_refuses_other_algorithms_and_key_types() -> None:
    with pytest.raises(ValueError):
        DPoPKey.generate("RS256")
    rsa_pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(ValueError):
        DPoPKey.from_pem(rsa_pem)
    p384 = ec.generate_private_key(ec.SECP384R1())
    with pytest.raises(ValueError):
        DPoPKey(p384, "ES256")


def test_public_jwk_is_a_copy() -> None:
    key = DPoPKey.generate()
    key.public_jwk["x"] = "tampered"
    assert key.public_jwk["x"] != "tampered"
