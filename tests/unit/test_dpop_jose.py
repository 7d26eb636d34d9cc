"""Strict base64url and JSON (RFC 7515, RFC 8259), JWK thumbprints (RFC 7638), ath (RFC 9449)."""

from __future__ import annotations

import re

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given
from hypothesis import strategies as st

from agentguard.dpop import access_key_hash, jwk_thumbprint
from agentguard.dpop._jose import (
    JOSEError,
    b64url_decode,
    b64url_encode,
    compact_parts,
    loads_object,
)
from agentguard.dpop._jwk import JWKError, parse_jwk, public_jwk

RFC_7638_N = (
    "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJ"
    "ECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW"
    "2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQ"
    "Fh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
)


def test_rfc7515_b64url_has_no_padding() -> None:
    assert b64url_encode(b"\xff\xfe") == "__4"
    assert b64url_decode("__4") == b"\xff\xfe"


@pytest.mark.parametrize("bad", ["__4=", "a", "ab+c", "ab/c", "ab c", "__5", "AB", "é"])
def test_rfc7515_b64url_rejects_padding_other_alphabets_and_non_canonical(bad: str) -> None:
    with pytest.raises(JOSEError):
        b64url_decode(bad)


@given(st.binary(max_size=200))
def test_rfc7515_b64url_round_trips(data: bytes) -> None:
    assert b64url_decode(b64url_encode(data)) == data


# The oracle compact_parts replaced: three non-empty base64url parts, matched in full.
_COMPACT_ORACLE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
_NEAR_COMPACT = st.text(
    alphabet=st.sampled_from("AZaz09-_.=+/ \n\t\x00é\u0660\U0001f600"), max_size=40
)


@given(st.one_of(_NEAR_COMPACT, st.text(max_size=40)))
def test_rfc7515_7_1_compact_parts_agrees_with_the_regular_expression(token: str) -> None:
    parts = compact_parts(token)
    if _COMPACT_ORACLE.fullmatch(token):
        assert parts == token.split(".")
    else:
        assert parts is None


@pytest.mark.parametrize(
    "token", ["a.b.c", "a..c", ".b.c", "a.b.", "a.b", "a.b.c.d", "a.b.c\n", "\u0660.b.c"]
)
def test_rfc7515_7_1_compact_parts_examples(token: str) -> None:
    assert (compact_parts(token) is not None) == (token == "a.b.c")


@pytest.mark.parametrize(
    "raw",
    [
        b'{"a":1,"a":2}',
        b'{"a":{"b":1,"b":1}}',
        b'{"a":NaN}',
        b'{"a":Infinity}',
        b'{"a":-Infinity}',
        b'{"a":1e999}',
        b"[1,2]",
        b'"text"',
        b"\xff\xfe{}",
        b"{" * 5000,
        b"[" * 5000 + b"]" * 5000,
        b'{"a":' + b"1" * 5000 + b"}",
    ],
)
def test_rfc8259_strict_json_rejects_duplicates_non_finite_and_non_objects(raw: bytes) -> None:
    with pytest.raises(JOSEError):
        loads_object(raw)


@given(st.binary(max_size=300))
def test_rfc8259_loads_object_only_raises_jose_error(raw: bytes) -> None:
    try:
        assert isinstance(loads_object(raw), dict)
    except JOSEError:
        pass


def test_rfc7638_3_1_rsa_example_thumbprint() -> None:
    jwk = {"kty": "RSA", "n": RFC_7638_N, "e": "AQAB", "alg": "RS256", "kid": "2011-04-29"}
    assert jwk_thumbprint(jwk) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def test_rfc7638_thumbprint_ignores_optional_and_private_members() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    jwk = public_jwk(key.public_key())
    decorated = {**jwk, "kid": "k1", "use": "sig", "d": "AAAA"}
    assert jwk_thumbprint(decorated) == jwk_thumbprint(jwk)


def _key_with_leading_zero_x() -> dict[str, str]:
    while True:
        jwk = public_jwk(ec.generate_private_key(ec.SECP256R1()).public_key())
        if b64url_decode(jwk["x"])[0] == 0:
            return jwk


def test_rfc7638_ec_coordinates_must_be_full_length() -> None:
    jwk = _key_with_leading_zero_x()
    short = {**jwk, "x": b64url_encode(b64url_decode(jwk["x"])[1:])}
    assert len(b64url_decode(jwk["x"])) == 32
    jwk_thumbprint(jwk)
    with pytest.raises(ValueError, match="full length"):
        jwk_thumbprint(short)


def test_rfc7518_6_3_1_rsa_integers_must_be_minimal() -> None:
    padded = {"kty": "RSA", "n": b64url_encode(b"\x00" + b64url_decode(RFC_7638_N)), "e": "AQAB"}
    with pytest.raises(ValueError, match="minimal"):
        jwk_thumbprint(padded)


@pytest.mark.parametrize(
    "jwk",
    [
        {"kty": "oct", "k": "c2VjcmV0"},
        {"kty": "EC", "crv": "P-256", "x": "AAAA"},
        {"kty": "EC", "crv": "secp256k1", "x": "A" * 43, "y": "A" * 43},
        {"kty": "OKP", "crv": "Ed25519", "x": 5},
        {"kty": "OKP", "crv": "Ed25519", "x": "AAAA"},
        {"kty": "RSA", "e": "AQAB"},
        {"crv": "P-256"},
        {"kty": ["EC"]},
    ],
)
def test_rfc7638_invalid_or_symmetric_jwks_raise_value_error(jwk: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        jwk_thumbprint(jwk)


def test_rfc9449_4_3_7_parse_jwk_refuses_private_members_by_default() -> None:
    jwk = public_jwk(ec.generate_private_key(ec.SECP256R1()).public_key())
    for member in ("d", "p", "q", "dp", "dq", "qi", "oth", "k"):
        with pytest.raises(JWKError, match="private"):
            parse_jwk({**jwk, member: "AAAA"})


def test_rfc9449_7_1_ath_example() -> None:
    assert (
        access_key_hash("Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU")
        == "fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEo"
    )


def test_rfc9449_4_2_ath_requires_an_ascii_key() -> None:
    with pytest.raises(ValueError):
        access_key_hash("cl\u00e9")
