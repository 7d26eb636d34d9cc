"""Reading MCP request bodies for the tool gate: strict JSON, every call found, anything two
parsers could read differently refused (400), and never an exception of another kind."""

from __future__ import annotations

import base64
import json
from typing import Any

import pydantic_core
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentguard._mcp_gate._messages import ToolCall, parse_exchange, strict_json
from agentguard.errors import InvalidRequest

names = st.from_regex(r"[A-Za-z0-9_.-]{1,20}", fullmatch=True)
ids = st.one_of(st.integers(-(2**31), 2**31), st.text(max_size=8))


@st.composite
def messages(draw: st.DrawFn) -> tuple[dict[str, Any], ToolCall | None, Any]:
    """A JSON-RPC message, with the call or listing id the gate must find in it."""
    kind = draw(st.sampled_from(["call", "list", "other", "notification", "response"]))
    number = draw(ids)
    if kind == "call":
        name = draw(names)
        message = {"jsonrpc": "2.0", "id": number, "method": "tools/call",
                   "params": {"name": name, "arguments": {"a": draw(st.integers())}}}  # fmt: skip
        return message, ToolCall(name, number), None
    if kind == "list":
        return {"jsonrpc": "2.0", "id": number, "method": "tools/list"}, None, number
    if kind == "other":
        return {"jsonrpc": "2.0", "id": number, "method": "ping"}, None, None
    if kind == "notification":
        return {"jsonrpc": "2.0", "method": "notifications/initialized"}, None, None
    return {"jsonrpc": "2.0", "id": number, "result": {}}, None, None


@given(st.lists(messages(), max_size=6), st.booleans())
def test_every_call_and_listing_is_found(drawn: list[Any], batch: bool) -> None:
    if not batch and len(drawn) != 1:
        batch = True
    document = [message for message, _, _ in drawn] if batch else drawn[0][0]
    exchange = parse_exchange(json.dumps(document).encode())
    assert exchange.calls == [call for _, call, _ in drawn if call is not None]
    assert exchange.listings == [number for _, _, number in drawn if number is not None]
    assert exchange.batch is batch


@settings(max_examples=400)
@given(st.binary(max_size=200))
def test_any_bytes_give_an_exchange_or_a_400(data: bytes) -> None:
    status = 200
    try:
        parse_exchange(data)
    except InvalidRequest as refusal:
        status = refusal.status
    assert status in (200, 400)


_TOKENS = ['{"method":', '"tools/call"', '"params":', '{"name":', '"a"', '"b"', "}", "]", "[",
           ",", "1", "1.0", "-0", "1e400", "NaN", "true", "null", '"\\u0000"', '"\\ud800"',
           " ", '"method"', ":"]  # fmt: skip


@settings(max_examples=600)
@given(st.lists(st.sampled_from(_TOKENS), max_size=14))
def test_what_the_gate_accepts_pydantic_reads_the_same(tokens: list[str]) -> None:
    """The SDK parses bodies with pydantic_core: whenever the gate accepts a text, pydantic must
    read the very same value (else the gate would decide on one body and the SDK run another)."""
    data = "".join(tokens).encode()
    try:
        ours = strict_json(data)
    except ValueError:
        return
    assert pydantic_core.from_json(data) == ours


def _raw(text: str) -> bytes:
    return text.encode()


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (_raw('{"method":"tools/call","params":{"name":"a","name":"b"}}'), "repeats a key"),
        (_raw('{"method":"tools/list","METHOD":"tools/call"}'), "only in case"),
        (_raw('{"method":"tools/call","params":{"name":"a","Name":"b"}}'), "only in case"),
        ('{"method":"tools/call","params":{"name":"a"},"param\u017f":{}}'.encode(), "not ASCII"),
        (_raw('{"method":"TOOLS/CALL","params":{"name":"a"}}'), "only in case"),
        ('{"method":"tool\u017f/call","params":{"name":"a"}}'.encode(), "only in case"),
        (_raw('{"method":1}'), "not a string"),
        (_raw('{"method":"tools/call","params":{}}'), "names no tool"),
        (_raw('{"method":"tools/call","params":{"name":""}}'), "names no tool"),
        (_raw('{"method":"tools/call","params":["a"]}'), "names no tool"),
        (_raw('{"id":Infinity}'), "not JSON"),
        (b'\xef\xbb\xbf{"method":"ping"}', "byte-order mark"),
        (b'{"method":"\xff"}', "UTF-8"),
        (b"[" * 100_000 + b"]" * 100_000, "too deeply"),
        (_raw("[[]]"), "another batch"),
        (_raw('{"a":1} {"b":2}'), "not JSON"),
    ],
)
def test_ambiguous_bodies_are_refused_with_a_reason(body: bytes, why: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        parse_exchange(body)
    assert why in refused.value.description
    assert refused.value.status == 400


def test_ordinary_nesting_is_read() -> None:
    deep = b'{"jsonrpc":"2.0","id":1,"method":"ping","params":{"x":' + b"[" * 150 + b"]" * 150
    assert parse_exchange(deep + b"}}").calls == []


def _call(name: str) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                       "params": {"name": name}}).encode()  # fmt: skip


def test_routing_headers_must_agree_with_the_body() -> None:
    body = _call("caf\u00e9")
    encoded = b"=?base64?" + base64.b64encode("caf\u00e9".encode()) + b"?="
    agreed = parse_exchange(body, [(b"mcp-method", b"tools/call"), (b"mcp-name", encoded)])
    assert agreed.calls == [ToolCall("caf\u00e9", 1)]
    refusals = {
        "Mcp-Name header does not match": [(b"mcp-name", b"other")],
        "Mcp-Method header does not match": [(b"mcp-method", b"tools/list")],
        "is repeated": [(b"mcp-name", b"x"), (b"mcp-name", b"y")],
    }
    for why, headers in refusals.items():
        with pytest.raises(InvalidRequest, match=why):
            parse_exchange(body, headers)
    with pytest.raises(InvalidRequest, match="not a batch"):
        parse_exchange(b"[" + body + b"]", [(b"mcp-method", b"tools/call")])
    with pytest.raises(InvalidRequest, match="Mcp-Name"):
        parse_exchange(body, [(b"mcp-name", b"=?base64?!!?=")])
