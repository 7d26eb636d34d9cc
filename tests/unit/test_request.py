from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentguard._request import GuardRequest, parse_authorization
from agentguard.errors import AgentGuardError, InvalidRequest, MissingCredentials, Reason


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


_REFERENCE = re.compile(
    rb"[ \t]*(bearer|dpop) [ \t]*([A-Za-z0-9._~+/-]+=*)[ \t]*", re.IGNORECASE | re.ASCII
)


def reference_authorization(values: list[bytes], schemes: tuple[str, ...]) -> object:
    """RFC 7235 §2.1 credentials (``scheme SP token68``), parsed apart from the library.

    The result: the ``(scheme, key)`` pair, or the error class a client must get.
    """
    if not values:
        return MissingCredentials
    match = _REFERENCE.fullmatch(values[0]) if len(values) == 1 else None
    if match is None or match.group(1).lower().decode() not in schemes:
        return InvalidRequest
    return (match.group(1).lower().decode(), match.group(2).decode())


_header_values = st.one_of(
    st.binary(max_size=200),
    st.builds(
        lambda lead, scheme, gap, key, tail: lead + scheme + gap + key + tail,
        st.sampled_from([b"", b" ", b"\t", b" \t"]),
        st.sampled_from([b"Bearer", b"bearer", b"BEARER", b"DPoP", b"dpop", b"Basic", b""]),
        st.sampled_from([b" ", b"  ", b"\t", b" \t", b""]),
        st.from_regex(rb"[A-Za-z0-9._~+/=,\- \xff]{0,12}", fullmatch=True),
        st.sampled_from([b"", b" ", b"\t ", b"\r"]),
    ),
)


@given(st.lists(_header_values, max_size=3), st.sampled_from([("bearer",), ("bearer", "dpop")]))
def test_parser_agrees_with_a_reference(values: list[bytes], schemes: tuple[str, ...]) -> None:
    expected = reference_authorization(values, schemes)
    if isinstance(expected, tuple):
        assert parse_authorization(request_with(*values), schemes) == expected
        return
    assert expected in (MissingCredentials, InvalidRequest)
    with pytest.raises(AgentGuardError) as refused:
        parse_authorization(request_with(*values), schemes)
    assert type(refused.value) is expected, (values, refused.value)


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
