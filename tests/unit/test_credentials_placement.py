from __future__ import annotations

from urllib.parse import unquote_plus

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from agentguard import Credentials, GuardRequest, Placement, Secret, ServiceConfig
from agentguard.credentials._placement import (
    UPSTREAM_ACCEPT_ENCODING,
    attach_credential,
    extract_placeholder,
    is_method_override,
    override_methods,
    upstream_headers,
    upstream_query,
)
from agentguard.errors import InvalidRequest, MissingCredentials

HEADER = ServiceConfig(
    name="crm", base_url="https://crm.example", placement=Placement.HEADER, parameter="X-Api-Key"
)
QUERY = ServiceConfig(
    name="auto", base_url="https://auto.example", placement=Placement.QUERY, parameter="api_key"
)
BEARER = ServiceConfig(name="proj", base_url="https://proj.example")


def req(headers: list[tuple[bytes, bytes]] = (), query: bytes = b"") -> GuardRequest:  # type: ignore[assignment]
    return GuardRequest("GET", "/x", headers=list(headers), query_string=query)


def test_header_placement() -> None:
    creds = extract_placeholder(req([(b"x-api-key", b"ag_at_key")]), HEADER)
    assert creds == ("bearer", "ag_at_key")
    with_proof = extract_placeholder(req([(b"x-api-key", b"ag_at_key"), (b"dpop", b"p")]), HEADER)
    assert with_proof.scheme == "dpop"
    with pytest.raises(MissingCredentials, match="X-Api-Key"):
        extract_placeholder(req([(b"authorization", b"Bearer ag_at_key")]), HEADER)
    with pytest.raises(InvalidRequest):
        extract_placeholder(req([(b"x-api-key", b"a"), (b"x-api-key", b"b")]), HEADER)


def test_query_placement() -> None:
    assert extract_placeholder(req(query=b"a=1&api_key=ag_at_key"), QUERY).key == "ag_at_key"
    with pytest.raises(InvalidRequest):
        extract_placeholder(req(query=b"api_key=a&api_key=b"), QUERY)
    assert upstream_query(b"a=1&api_key=ag_at_key&api%5Fkey=x&b=2", QUERY) == b"a=1&b=2"


def test_bearer_placement() -> None:
    assert extract_placeholder(req([(b"authorization", b"Bearer k1")]), BEARER).key == "k1"


def test_upstream_headers_strip_credentials_and_hops() -> None:
    request = req(
        [
            (b"authorization", b"DPoP k"),
            (b"dpop", b"proof"),
            (b"x-api-key", b"placeholder"),
            (b"connection", b"close, x-hop"),
            (b"x-hop", b"1"),
            (b"transfer-encoding", b"chunked"),
            (b"host", b"gw"),
            (b"accept", b"application/json"),
        ]
    )
    names = [name for name, _ in upstream_headers(request, HEADER)]
    assert names == [b"accept", b"accept-encoding"]


def test_attach_in_each_place() -> None:
    secret = Secret("real key/+=")
    headers, _ = attach_credential([], b"", HEADER, secret)
    assert headers == [(b"x-api-key", b"real key/+=")]
    headers, _ = attach_credential([], b"", BEARER, secret)
    assert headers == [(b"authorization", b"Bearer real key/+=")]
    _, query = attach_credential([], b"a=1", QUERY, secret)
    assert query == b"a=1&api_key=real%20key%2F%2B%3D"


#: Headers that must never reach the vendor (RFC 9110 §7.6.1 hop-by-hop, and the agent's own
#: credentials), written out here apart from the module's tables.
NEVER_FORWARDED = {
    b"authorization",
    b"dpop",
    b"connection",
    b"keep-alive",
    b"proxy-authorization",
    b"te",
    b"transfer-encoding",
    b"upgrade",
    b"x-http-method-override",
}
_names = st.sampled_from(
    [*NEVER_FORWARDED, b"x-api-key", b"accept", b"accept-encoding", b"x-other"]
) | st.binary(max_size=20)
_query_pieces = st.sampled_from(
    [b"api_key=k", b"api%5Fkey=k", b"api+key=k", b"_method=DELETE", b"a=1", b"q=x;y", b""]
) | st.binary(max_size=20)


@given(
    st.lists(st.tuples(_names, st.binary(max_size=60)), max_size=6),
    st.lists(_query_pieces, max_size=4).map(b"&".join),
    st.sampled_from([HEADER, QUERY, BEARER]),
)
@example(headers=[(b"x-api-key", b"+\x85")], query=b"", service=HEADER)  # NEL is not OWS (CI)
@example(headers=[], query=b"api_key=+k", service=QUERY)  # a query value is taken as sent
def test_extraction_and_forwarding_keep_their_promises(
    headers: list[tuple[bytes, bytes]], query: bytes, service: ServiceConfig
) -> None:
    headers = [(name.lower(), value) for name, value in headers]
    request = req(headers, query)
    found: Credentials | None
    try:
        found = extract_placeholder(request, service)
    except (InvalidRequest, MissingCredentials):  # any other error fails the test
        found = None
    if found is not None:  # the key returned is one the agent sent, where the vendor expects it
        if service is HEADER:
            assert found.key.encode("latin-1") in [
                v.strip(b" \t") for n, v in headers if n == b"x-api-key"
            ]
        elif service is QUERY:
            pieces = query.decode("latin-1").replace(";", "&").split("&")
            values = [
                unquote_plus(value)
                for name, _, value in (piece.partition("=") for piece in pieces)
                if unquote_plus(name) == "api_key"
            ]
            assert found.key in values, (found, query)
        else:
            assert any(found.key.encode() in v for n, v in headers if n == b"authorization")
    forwarded = upstream_headers(request, service)
    names = [name for name, _ in forwarded]
    assert not NEVER_FORWARDED & set(names), names
    assert service is not HEADER or b"x-api-key" not in names
    sent = {name for name, _ in headers}
    assert set(names) <= sent | {b"accept-encoding"}, names
    kept = upstream_query(query, service)
    for raw in kept.replace(b";", b"&").split(b"&"):
        parameter = unquote_plus(raw.decode("latin-1").partition("=")[0])
        assert service is not QUERY or parameter != "api_key", kept
        assert parameter.lower() != "_method", kept
        assert raw in query, (raw, query)


OVERRIDE_NAMES = ["x-http-method-override", "x-method-override", "x-http-method", "_method"]


@st.composite
def spelled(draw: st.DrawFn, names: list[str]) -> str:
    """One override name in random case, with ``-`` and ``_`` swapped at random."""
    name = draw(st.sampled_from(names))
    flips = draw(st.lists(st.booleans(), min_size=len(name), max_size=len(name)))
    swaps = draw(st.lists(st.booleans(), min_size=len(name), max_size=len(name)))
    out = []
    for char, flip, swap in zip(name, flips, swaps, strict=True):
        swapped = {"-": "_", "_": "-"}.get(char, char) if swap else char
        out.append(swapped.upper() if flip else swapped)
    return "".join(out)


def _percent(name: str, every: list[bool]) -> str:
    return "".join(
        f"%{ord(c):02X}" if flag else c
        for c, flag in zip(name, every + [False] * len(name), strict=False)
    )


@given(
    headers=st.lists(
        st.tuples(spelled(OVERRIDE_NAMES[:3]), st.sampled_from(["DELETE", "put", "x y", ""])),
        min_size=1,
        max_size=4,
    ),
    others=st.lists(st.tuples(st.sampled_from(["accept", "x-trace"]), st.just("1")), max_size=2),
    agent_encoding=st.sampled_from(["", "br", "gzip, deflate, br, zstd", "identity", "*"]),
)
def test_override_headers_and_accept_encoding_never_go_upstream(
    headers: list[tuple[str, str]], others: list[tuple[str, str]], agent_encoding: str
) -> None:
    raw = [(name.lower().encode(), value.encode()) for name, value in headers + others]
    if agent_encoding:
        raw.append((b"accept-encoding", agent_encoding.encode()))
    request = req(raw)
    forwarded = upstream_headers(request, BEARER)
    assert not any(is_method_override(name) for name, _ in forwarded)
    assert [v for n, v in forwarded if n == b"accept-encoding"] == [UPSTREAM_ACCEPT_ENCODING]
    found = set(override_methods(request))  # each distinct method once
    for _, value in headers:  # a method token as itself, anything else as the unknown method
        assert (value.upper() if value.isalpha() else "OVERRIDE") in found, (value, found)
    for name, _ in headers:
        assert is_method_override(name)


@given(
    name=spelled(OVERRIDE_NAMES),
    encode=st.lists(st.booleans(), max_size=30),
    method=st.sampled_from(["DELETE", "delete", "PATCH", "%44ELETE", "a+b"]),
    other=st.sampled_from([b"", b"page=2", b"method=x"]),
)
def test_override_query_parameters_are_found_and_stripped(
    name: str, encode: list[bool], method: str, other: bytes
) -> None:
    piece = f"{_percent(name, encode)}={method}".encode()
    query = b"&".join(part for part in (other, piece, other) if part)
    request = req(query=query)
    assert override_methods(request), query
    assert upstream_query(query, BEARER) == b"&".join(part for part in (other, other) if part)
    assert upstream_query(query, QUERY) == upstream_query(query, BEARER)


def test_a_form_body_override_counts_in_any_body_a_framework_may_read_as_a_form() -> None:
    form = [(b"content-type", b"application/x-www-form-urlencoded; charset=utf-8")]
    assert override_methods(req(form), b"a=1&_method=delete") == ["DELETE"]
    assert override_methods(req(), b"a=1&_method=delete") == ["DELETE"]  # Rack: no type, a form
    binary = [(b"content-type", b"application/octet-stream")]
    assert override_methods(req(binary), b"a=1&_method=delete") == []
    assert override_methods(req(form)) == []


def test_override_values_become_methods_or_the_unknown_method() -> None:
    request = req([(b"x-http-method", b"delete, GET"), (b"x-method-override", b"no such")])
    assert override_methods(request) == ["DELETE", "GET", "OVERRIDE"]
    assert override_methods(req(query=b"method=DELETE&_methods=PUT")) == []


@pytest.mark.parametrize("around", ["\x85", "\xa0", "\x0b", "\x0c", "\x1c", "\u2028"])
def test_a_header_key_is_trimmed_of_spaces_and_tabs_only(around: str) -> None:
    key = "ag_at_" + "k" * 49
    spaced = req([(b"x-api-key", f" \t{key}\t ".encode("latin-1"))])
    assert extract_placeholder(spaced, HEADER).key == key
    sent = f"{key}{around}".encode("utf-8" if around > "\xff" else "latin-1")
    with pytest.raises(InvalidRequest, match="not a well-formed token"):
        extract_placeholder(req([(b"x-api-key", sent)]), HEADER)


@pytest.mark.parametrize("value", ["+k", "k+", "%20k", "k%09", "k%C2%85"])
def test_a_query_key_is_taken_exactly_as_sent(value: str) -> None:
    with pytest.raises(InvalidRequest, match="not a well-formed token"):
        extract_placeholder(req(query=f"api_key={value}".encode()), QUERY)
    assert extract_placeholder(req(query=b"api_key=k"), QUERY).key == "k"
