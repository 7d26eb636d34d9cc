from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentguard.credentials.placement import (
    attach_credential,
    extract_placeholder,
    upstream_headers,
    upstream_query,
)
from agentguard.errors import AgentGuardError, InvalidRequest, MissingCredentials
from agentguard.request import GuardRequest
from agentguard.secret import Secret
from agentguard.services import Placement, ServiceConfig

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
    assert names == [b"accept"]


def test_attach_in_each_place() -> None:
    secret = Secret("real key/+=")
    headers, _ = attach_credential([], b"", HEADER, secret)
    assert headers == [(b"x-api-key", b"real key/+=")]
    headers, _ = attach_credential([], b"", BEARER, secret)
    assert headers == [(b"authorization", b"Bearer real key/+=")]
    _, query = attach_credential([], b"a=1", QUERY, secret)
    assert query == b"a=1&api_key=real%20key%2F%2B%3D"


@given(
    st.lists(st.tuples(st.binary(max_size=20), st.binary(max_size=60)), max_size=6),
    st.binary(max_size=120),
    st.sampled_from([HEADER, QUERY, BEARER]),
)
def test_extraction_raises_only_library_errors(
    headers: list[tuple[bytes, bytes]], query: bytes, service: ServiceConfig
) -> None:
    request = req([(name.lower(), value) for name, value in headers], query)
    try:
        extract_placeholder(request, service)
    except AgentGuardError:
        pass
    upstream_headers(request, service)
    upstream_query(query, service)
