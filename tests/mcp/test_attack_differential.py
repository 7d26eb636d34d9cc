"""Attack: parser differentials between the tool gate and the MCP SDK's own server-side reading.

For every body the gate accepts, the SDK must see exactly the tool calls the gate authorised:
the handshake-era streamable HTTP transport reads a body with ``pydantic_core.from_json`` and
``jsonrpc_message_adapter`` (no batches), the 2026-07-28 single-exchange entry with
``json.loads`` and ``JSONRPCRequest``; both then take the tool's name from the ``tools/call``
params model. Bodies are generated at the byte level: every string spelt with random
``\\uXXXX`` and ``\\/`` escapes, random JSON whitespace, repeated keys, keys in another case or
with lookalike characters, the name hidden in ``_meta`` or ``arguments``, odd ids, byte-order
marks, trailing data, other encodings, nested batches.
"""

from __future__ import annotations

import json
from typing import Any

import pydantic_core
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mcp_types import JSONRPCRequest, jsonrpc_message_adapter
from mcp_types.methods import parse_client_request
from mcp_types.version import LATEST_HANDSHAKE_VERSION, LATEST_MODERN_VERSION
from pydantic import ValidationError

from agentguard._mcp_gate._messages import parse_exchange
from agentguard.errors import InvalidRequest

CALL = "tools/call"
METHODS = [
    CALL,
    "tools/list",
    "ping",
    "Tools/Call",
    "tools/call ",
    "tools/call\u200b",
    "tools/calL",
]
METHOD_KEYS = ["method", "Method", "METHOD", "method ", "m\u00e9thod", "\u0441method"]
NAMES = ["add_note", "purge", "list_notes", "Purge", "purge ", "pur\u0261e", "a/b", "x:y", "n.a"]
PARAM_KEYS = ["name", "Name", "NAME", "name ", "\u017fname", "_meta", "arguments", "tool"]
IDS: list[Any] = [1, "1", 1.0, -0, 10**30, "", None, True, [1], {"a": 1}]


def _spell(text: str, draw: st.DrawFn) -> str:
    """``text`` as a JSON string literal with random escapes."""
    out = ['"']
    for char in text:
        how = draw(st.integers(0, 3))
        if char in {'"', "\\"} or ord(char) < 0x20:
            out.append(json.dumps(char)[1:-1])
        elif how == 0:
            out.append(f"\\u{ord(char):04x}" if ord(char) < 0x10000 else json.dumps(char)[1:-1])
        elif how == 1 and char == "/":
            out.append("\\/")
        else:
            out.append(char)
    out.append('"')
    return "".join(out)


def _space(draw: st.DrawFn) -> str:
    return draw(st.sampled_from(["", " ", "\n", "\t", "\r\n ", "  "]))


def _render(value: Any, draw: st.DrawFn) -> str:
    """JSON text for ``value``; a dict given as a list of pairs keeps repeated keys."""
    if isinstance(value, list) and value and value[0] == "__pairs__":
        inner = ",".join(
            f"{_space(draw)}{_spell(key, draw)}{_space(draw)}:{_space(draw)}{_render(item, draw)}"
            for key, item in value[1:]
        )
        return "{" + inner + _space(draw) + "}"
    if isinstance(value, dict):
        return _render(["__pairs__", *value.items()], draw)
    if isinstance(value, list):
        return "[" + ",".join(_render(item, draw) for item in value) + "]"
    if isinstance(value, str):
        return _spell(value, draw)
    if isinstance(value, float) and value == 1.0:
        return draw(st.sampled_from(["1.0", "1e0", "10E-1", "1.00"]))
    return json.dumps(value)


@st.composite
def message(draw: st.DrawFn) -> Any:
    """One JSON-RPC-ish message as pairs (so keys may repeat)."""
    params: list[Any] = ["__pairs__"]
    for _ in range(draw(st.integers(0, 4))):
        key = draw(st.sampled_from(PARAM_KEYS))
        if key in ("_meta", "arguments"):
            params.append((key, {"name": draw(st.sampled_from(NAMES))}))
        else:
            params.append((key, draw(st.sampled_from([*NAMES, 7, None]))))
    pairs: list[Any] = ["__pairs__", ("jsonrpc", "2.0")]
    if draw(st.booleans()):
        pairs.append(("id", draw(st.sampled_from(IDS))))
    for _ in range(draw(st.integers(1, 2))):
        pairs.append((draw(st.sampled_from(METHOD_KEYS)), draw(st.sampled_from(METHODS))))
    if draw(st.booleans()):
        pairs.append(("params", params))
    if draw(st.booleans()):
        pairs.append(("result", {}))
    order = draw(st.permutations(pairs[1:]))
    return ["__pairs__", *order]


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    """A request body: one message or a (possibly nested) batch, with byte-level tricks."""
    shape = draw(st.sampled_from(["one", "one", "one", "batch", "nested"]))
    if shape == "one":
        text = _render(draw(message()), draw)
    else:
        items = [_render(draw(message()), draw) for _ in range(draw(st.integers(1, 3)))]
        if shape == "nested":
            items.append("[" + _render(draw(message()), draw) + "]")
        text = "[" + ",".join(items) + "]"
    text = _space(draw) + text + draw(st.sampled_from(["", " ", "\n", " x", "{}", "\x00"]))
    encoding = draw(st.sampled_from(["utf-8", "utf-8", "utf-8", "utf-8-sig", "utf-16", "utf-32"]))
    return text.encode(encoding, "surrogatepass")


def gate_calls(body: bytes) -> list[str] | None:
    """The tool names the gate would check, or ``None`` when it refuses the body (400)."""
    try:
        return sorted(call.name for call in parse_exchange(body).calls)
    except InvalidRequest:
        return None


def _tool_name(method: str, params: Any, version: str) -> str | None:
    if method != CALL:
        return None
    request = parse_client_request(method, version, params)
    return str(request.params.name)


def legacy_sdk_calls(body: bytes) -> list[str] | None:
    """What the handshake-era transport and dispatcher call; ``None`` when they refuse."""
    try:
        message = jsonrpc_message_adapter.validate_python(
            pydantic_core.from_json(body), by_name=False
        )
        if not isinstance(message, JSONRPCRequest):
            return [] if getattr(message, "method", None) != CALL else None
        name = _tool_name(message.method, message.params, LATEST_HANDSHAKE_VERSION)
    except (ValueError, ValidationError, KeyError):
        return None
    return [] if name is None else [name]


def modern_sdk_calls(body: bytes) -> list[str] | None:
    """What the 2026-07-28 single-exchange entry calls; ``None`` when it refuses."""
    try:
        decoded = json.loads(body)
        if isinstance(decoded, dict) and "id" not in decoded:
            return []  # a notification: acknowledged and dropped
        request = JSONRPCRequest.model_validate(decoded)
        params = dict(request.params or {})
        params.setdefault("_meta", {})
        name = _tool_name(request.method, params, LATEST_MODERN_VERSION)
    except (ValueError, ValidationError, KeyError, RecursionError):
        return None
    return [] if name is None else [name]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bodies())
def test_the_sdk_never_calls_a_tool_the_gate_did_not_check(body: bytes) -> None:
    checked = gate_calls(body)
    if checked is None:
        return  # refused with a 400: nothing reaches the server
    for reading in (legacy_sdk_calls(body), modern_sdk_calls(body)):
        if reading is not None:
            assert set(reading) <= set(checked), (body, reading, checked)


@pytest.mark.parametrize(
    "body",
    [
        b'{"jsonrpc":"2.0","id":1,"method":"tools\\u002fcall","params":{"name":"purge"}}',
        b'{"jsonrpc":"2.0","id":1,"method":"tools\\/call","params":{"name":"p\\u0075rge"}}',
        b'{"jsonrpc":"2.0","id":1E0,"method":"tools/call","params":{"name":"purge"}}',
        b'{"jsonrpc":"2.0","id":"1","method":"tools/call","params":{"_meta":{},"name":"purge"}}',
    ],
)
def test_escaped_spellings_are_checked_as_the_sdk_reads_them(body: bytes) -> None:
    assert gate_calls(body) == ["purge"]
    # an id the SDK cannot read makes the message a notification, which runs nothing
    assert legacy_sdk_calls(body) in (["purge"], None)


@pytest.mark.parametrize(
    "body",
    [
        b'{"jsonrpc":"2.0","id":1,"method":"ping","method":"tools/call","params":{"name":"p"}}',
        b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","name":"purge"}}',
        b'{"jsonrpc":"2.0","id":1,"method":"tools/call","Params":{},"params":{"name":"p"}}',
        b'\xef\xbb\xbf{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"p"}}',
        '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"p"}}'.encode("utf-16"),
        b'{"jsonrpc":"2.0","id":NaN,"method":"tools/call","params":{"name":"p"}}',
        b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"\\ud800"}}',
        b'[[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"p"}}]]',
    ],
)
def test_ambiguous_bodies_are_refused(body: bytes) -> None:
    assert gate_calls(body) is None
