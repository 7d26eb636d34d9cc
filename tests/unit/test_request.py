from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentguard.errors import AgentGuardError, InvalidRequest, MissingCredentials, Reason
from agentguard.request import GuardRequest, parse_authorization


def request_with(*values: bytes, path: str = "/crm") -> GuardRequest:
    return GuardRequest("GET", path, headers=[(b"authorization", v) for v in values])


def test_bearer_key_is_extracted() -> None:
    assert parse_authorization(request_with(b"Bearer abc.DEF-1")) == ("bearer", "abc.DEF-1")


def test_scheme_is_case_insensitive_and_spaces_tolerated() -> None:
    assert parse_authorization(request_with(b"bEaReR   key  ")).key == "key"


def test_no_header_is_missing_credentials() -> None:
    with pytest.raises(MissingCredentials):
        parse_authorization(GuardRequest("GET", "/"))


def test_two_headers_are_refused() -> None:
    with pytest.raises(InvalidRequest, match="exactly one"):
        parse_authorization(request_with(b"Bearer a", b"Bearer b"))


@pytest.mark.parametrize("value", [b"Basic dXNlcjpwYXNz", b"Token abc", b"abc"])
def test_unsupported_scheme(value: bytes) -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_authorization(request_with(value))
    assert info.value.reason is Reason.UNSUPPORTED_SCHEME


@pytest.mark.parametrize(
    "value", [b"Bearer", b"Bearer ", b"Bearer a b", b"Bearer a,b", b"Bearer \xff"]
)
def test_bad_syntax(value: bytes) -> None:
    with pytest.raises(InvalidRequest):
        parse_authorization(request_with(value))


def test_dpop_scheme_only_when_accepted() -> None:
    with pytest.raises(InvalidRequest):
        parse_authorization(request_with(b"DPoP abc"))
    assert parse_authorization(request_with(b"DPoP abc"), ("bearer", "dpop")).scheme == "dpop"


@given(st.lists(st.binary(max_size=200), max_size=3))
def test_parser_raises_only_library_errors(values: list[bytes]) -> None:
    try:
        parse_authorization(request_with(*values))
    except AgentGuardError:
        pass


@pytest.mark.parametrize(
    ("path", "dotted"),
    [
        ("/crm/a", False),
        ("/crm/../admin", True),
        ("/crm/./x", True),
        ("/..", True),
        ("/a..b/c", False),
        ("/crm/...", False),
    ],
)
def test_dot_segments(path: str, dotted: bool) -> None:
    assert GuardRequest("GET", path).has_dot_segments() is dotted


def test_request_id_taken_when_plain_else_generated() -> None:
    plain = GuardRequest("GET", "/", headers=[(b"x-request-id", b"abc-123")])
    assert plain.request_id == "abc-123"
    hostile = GuardRequest("GET", "/", headers=[(b"x-request-id", b"a b\r\n")])
    assert hostile.request_id != "a b\r\n" and len(hostile.request_id) == 16
    assert hostile.request_id == hostile.request_id  # fixed for the request, not per access


def test_audit_path_prefers_raw_path_and_drops_query() -> None:
    assert (
        GuardRequest("GET", "/a b", raw_path=b"/a%20b", query_string=b"k=secret").audit_path
        == "/a%20b"
    )
    assert GuardRequest("GET", "/a b").audit_path == "/a%20b"
