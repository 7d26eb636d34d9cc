"""The token response parser: the one place a vendor's bytes become tokens, so every shape of
answer either yields well-formed tokens or a VendorRefused/VendorUnavailable that shows none."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from agentguard.connect import VendorRefused, VendorTokens, VendorUnavailable
from agentguard.connect._token_response import (
    INVALID_RESPONSE,
    MAX_LIFETIME,
    error_code,
    parse_json_object,
    parse_token_response,
)

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
ACCESS = "vat_Q2xKj0Rz-7bX1sYp4LmN9wEe"
REFRESH = "vrt_Zp3Wq8Tn-5cV2hGd6KfJ0uBy"
SENT = "vrt_sent-M4rT9xQw2LpZ7vKc"


def parse(document: Any, status: int = 200, **kwargs: Any) -> VendorTokens:
    body = document if isinstance(document, bytes) else json.dumps(document).encode()
    kwargs.setdefault("now", NOW)
    return parse_token_response("crm", status, body, **kwargs)


def good(**changes: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "access_token": ACCESS,
        "token_type": "Bearer",
        "expires_in": 3600,
        "refresh_token": REFRESH,
        "scope": "contacts.read contacts.write",
    }
    for name, value in changes.items():
        if value is ...:
            document.pop(name)
        else:
            document[name] = value
    return document


def refused(document: Any, status: int = 200, **kwargs: Any) -> VendorRefused:
    with pytest.raises(VendorRefused) as caught:
        parse(document, status, **kwargs)
    return caught.value


def test_a_good_answer_gives_its_tokens_expiry_and_scopes() -> None:
    tokens = parse(good())
    assert tokens.access_token.reveal() == ACCESS
    assert tokens.refresh_token is not None and tokens.refresh_token.reveal() == REFRESH
    assert tokens.expires_at == NOW + timedelta(seconds=3600)
    assert tokens.scopes == ("contacts.read", "contacts.write")


@pytest.mark.parametrize("token_type", ["bearer", "BEARER", "Bearer", "bEaReR"])
def test_the_bearer_type_is_read_case_insensitively(token_type: str) -> None:
    assert parse(good(token_type=token_type)).access_token.reveal() == ACCESS


@pytest.mark.parametrize("token_type", ["DPoP", "N_A", "mac", "Bearer ", "Basic"])
def test_another_token_type_is_unsupported(token_type: str) -> None:
    assert refused(good(token_type=token_type)).error == "unsupported_token_type"


def test_no_token_type_is_an_invalid_response() -> None:
    error = refused(good(token_type=...))
    assert error.error == INVALID_RESPONSE
    assert "token_type" in str(error)


def test_the_lifetime_may_be_a_numeric_string() -> None:
    assert parse(good(expires_in="120")).expires_at == NOW + timedelta(seconds=120)


@pytest.mark.parametrize("missing", [..., None])
def test_no_lifetime_means_no_expiry(missing: Any) -> None:
    assert parse(good(expires_in=missing)).expires_at is None


@pytest.mark.parametrize(
    "lifetime",
    [
        0,
        -1,
        True,
        False,
        3600.0,
        1.5,
        "3600.0",
        "-5",
        " 60",
        "0x10",
        "",
        [60],
        {"s": 1},
        MAX_LIFETIME + 1,
        "99999999999",
        10**30,
    ],
)
def test_a_bad_lifetime_is_an_invalid_response(lifetime: Any) -> None:
    error = refused(good(expires_in=lifetime))
    assert error.error == INVALID_RESPONSE
    assert "expires_in" in str(error)
    assert ACCESS not in str(error) and REFRESH not in str(error)


def test_the_longest_lifetime_is_accepted() -> None:
    assert parse(good(expires_in=MAX_LIFETIME)).expires_at == NOW + timedelta(seconds=MAX_LIFETIME)


@pytest.mark.parametrize(
    "token",
    [
        ...,
        None,
        "",
        " ",
        "has space",
        "tab\there",
        "new\nline",
        "caf\u00e9",
        "\x00nul",
        12,
        ["x"],
        "x" * 8193,
    ],
)
def test_a_bad_access_token_is_an_invalid_response(token: Any) -> None:
    error = refused(good(access_token=token))
    assert error.error == INVALID_RESPONSE
    assert "access_token" in str(error)


@pytest.mark.parametrize("token", ["", "two words", "crlf\r\n", 7, {"t": 1}])
def test_a_bad_refresh_token_is_an_invalid_response(token: Any) -> None:
    error = refused(good(refresh_token=token))
    assert error.error == INVALID_RESPONSE
    assert "refresh_token" in str(error)
    assert ACCESS not in str(error)


@pytest.mark.parametrize("missing", [..., None])
def test_the_refresh_token_is_optional(missing: Any) -> None:
    assert parse(good(refresh_token=missing)).refresh_token is None


@pytest.mark.parametrize("omitted", [..., None])
def test_an_omitted_scope_is_the_requested_one_and_says_so(omitted: Any) -> None:
    tokens = parse(good(scope=omitted), requested_scopes=("a", "b"))
    assert tokens.scopes == ("a", "b")
    assert tokens.scope_given is False


def test_scopes_are_split_on_spaces_and_deduplicated() -> None:
    spaced = parse(good(scope="  a b  a c "), requested_scopes=("z",))
    assert (spaced.scopes, spaced.scope_given) == (("a", "b", "c"), True)
    empty = parse(good(scope=""), requested_scopes=("z",))
    assert (empty.scopes, empty.scope_given) == ((), True)


@pytest.mark.parametrize("scope", [["a", "b"], 5, 'quo"te', "back\\slash", "tab\tsep"])
def test_a_bad_scope_is_an_invalid_response(scope: Any) -> None:
    assert refused(good(scope=scope)).error == INVALID_RESPONSE


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"[]",
        b'"string"',
        b"null",
        b'{"access_token": "a", "access_token": "b", "token_type": "Bearer"}',
        b'{"access_token": "a", "token_type": "Bearer", "expires_in": NaN}',
        b"[" * 100_000 + b"]" * 100_000,
        b"\xff\xfe\x00garbage",
        b'{"access_token": "a", "token_type": "Bearer", "expires_in": ' + b"9" * 5000 + b"}",
    ],
)
def test_a_body_that_is_not_one_plain_json_object_is_an_invalid_response(body: bytes) -> None:
    assert refused(body).error == INVALID_RESPONSE


def test_duplicate_members_are_refused_not_resolved() -> None:
    assert parse_json_object(b'{"a": 1, "a": 2}') is None
    assert parse_json_object(b'{"a": {"b": 1, "b": 1}}') is None
    assert parse_json_object(b'{"a": 1}') == {"a": 1}


@pytest.mark.parametrize("status", [400, 401, 403])
def test_an_error_answer_gives_its_code(status: int) -> None:
    error = refused({"error": "invalid_grant", "error_description": "grant revoked"}, status)
    assert error.error == "invalid_grant"
    assert error.permanent
    assert "grant revoked" not in str(error)


def test_only_invalid_grant_is_permanent() -> None:
    assert not refused({"error": "invalid_client"}, 401).permanent
    assert not refused(b"", 400).permanent


@pytest.mark.parametrize(
    "document",
    [
        {},
        {"error": ""},
        {"error": 400},
        {"error": "x" * 65},
        {"error": "two words"},
        {"error": 'quo"te'},
        {"error": "caf\u00e9"},
        {"error": ["invalid_grant"]},
        None,
    ],
)
def test_a_malformed_error_answer_is_an_invalid_response(document: Any) -> None:
    assert refused(document, 400).error == INVALID_RESPONSE


def test_an_error_code_that_echoes_a_sent_secret_is_not_shown() -> None:
    assert error_code({"error": SENT}, [SENT]) == INVALID_RESPONSE
    assert error_code({"error": "bad:" + SENT[:12]}, [SENT]) == INVALID_RESPONSE  # a fragment
    assert error_code({"error": "invalid_grant"}, [SENT]) == "invalid_grant"
    error = refused({"error": SENT}, 400, sent=[SENT])
    assert SENT not in str(error) and SENT[:12] not in str(error)


@pytest.mark.parametrize("status", [500, 502, 503, 504, 599, 408, 425, 429])
def test_server_errors_and_come_back_later_are_unavailable(status: int) -> None:
    with pytest.raises(VendorUnavailable) as caught:
        parse({"error": "invalid_grant"}, status)
    assert str(status) in str(caught.value)


@pytest.mark.parametrize("status", [201, 204, 301, 302, 304, 100])
def test_any_other_status_is_an_invalid_response(status: int) -> None:
    error = refused(good(), status)
    assert error.error == INVALID_RESPONSE
    assert ACCESS not in str(error)


# -- properties ---------------------------------------------------------------------------

_json_values = st.recursive(
    # Short texts: a 16-character value would become a watched Secret (tests/canary.py).
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=15),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
_field_values = {
    "access_token": st.sampled_from([ACCESS, "", " ", "a b", "\u00e9"]) | _json_values,
    "token_type": st.sampled_from(["Bearer", "bearer", "DPoP", "N_A", ""]) | _json_values,
    "expires_in": st.integers(-5, MAX_LIFETIME + 5)
    | st.from_regex(r"-?[0-9]{0,12}", fullmatch=True)
    | _json_values,
    "refresh_token": st.sampled_from([REFRESH, "", "x y"]) | _json_values,
    "scope": st.sampled_from(["a b", "", 'q"']) | _json_values,
    "error": st.sampled_from(["invalid_grant", SENT, "x" * 70]) | _json_values,
}
_documents = st.fixed_dictionaries({}, optional=_field_values).flatmap(
    lambda fields: st.dictionaries(st.text(max_size=8), _json_values, max_size=3).map(
        lambda extra: {**extra, **fields}
    )
)
_statuses = st.sampled_from([200, 200, 200, 201, 302, 400, 401, 403, 404, 429, 500, 503])


def _check_outcome(result: VendorTokens | Exception, document: object = None) -> None:
    if isinstance(result, VendorTokens):
        if isinstance(document, dict):
            assert result.scope_given == (document.get("scope") is not None)
        token = result.access_token.reveal()
        assert token and all("\x21" <= ch <= "\x7e" for ch in token)
        if result.expires_at is not None:
            assert NOW < result.expires_at <= NOW + timedelta(seconds=MAX_LIFETIME)
        return
    assert isinstance(result, VendorRefused | VendorUnavailable)
    text = f"{result} {result!r}"
    for secret in (ACCESS, REFRESH, SENT):
        assert secret not in text and secret[:12] not in text
    if isinstance(result, VendorRefused):
        assert result.error == INVALID_RESPONSE or len(result.error) <= 64


def _outcome(status: int, body: bytes) -> VendorTokens | Exception:
    try:
        return parse_token_response("crm", status, body, now=NOW, sent=[SENT])
    except (VendorRefused, VendorUnavailable) as error:
        return error


@given(status=_statuses, document=_documents)
@example(status=200, document=good())
@example(status=400, document={"error": SENT})
def test_any_json_answer_gives_tokens_or_a_refusal_that_shows_no_token(
    status: int, document: dict[str, Any]
) -> None:
    _check_outcome(_outcome(status, json.dumps(document).encode()), document)


@given(status=st.integers(100, 599), body=st.binary(max_size=300))
def test_any_bytes_give_tokens_or_a_refusal(status: int, body: bytes) -> None:
    _check_outcome(_outcome(status, body))


@given(
    tail=st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=40),
    lifetime=st.integers(1, MAX_LIFETIME),
)
def test_every_well_formed_answer_is_taken(tail: str, lifetime: int) -> None:
    token = "tok:" + tail  # a prefix keeps the canary's watched value unique
    tokens = parse(good(access_token=token, expires_in=lifetime))
    assert tokens.access_token.reveal() == token
    assert tokens.expires_at == NOW + timedelta(seconds=lifetime)
