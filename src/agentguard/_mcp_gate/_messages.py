"""Reading the JSON-RPC messages of one MCP request body, strictly, for the tool gate.

The gate decides on what it reads here and the server acts on what it reads itself, so the two
readings must agree: anything two JSON parsers could read differently is refused (400) rather
than passed on. That covers invalid UTF-8 and byte-order marks; repeated keys (Python keeps the
last, some parsers the first); at the message and ``params`` levels, keys that differ only in
case or are not ASCII (Go's ``encoding/json`` reads ``"Method"`` as ``method``, and ``params``
spelt with a long s, U+017F, as ``params``); ``NaN`` and ``Infinity``; nesting deep enough to
exhaust a parser; a method that differs from ``tools/call`` or ``tools/list`` only in case; and
``Mcp-Method`` / ``Mcp-Name`` routing headers (MCP 2026-07-28) that disagree with the body.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from agentguard.errors import InvalidRequest

__all__ = ["CALL", "LIST", "Exchange", "ToolCall", "parse_exchange", "strict_json"]

CALL = "tools/call"
LIST = "tools/list"
_ROUTING = (b"mcp-method", b"mcp-name")
_B64_SENTINEL = re.compile(r"=\?base64\?(?P<payload>.*)\?=\Z", re.DOTALL)
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One ``tools/call`` request of the body: the tool's name and the JSON-RPC id."""

    name: str
    id: Any = None


@dataclass(slots=True)
class Exchange:
    """What the gate needs from one request body: tool calls and ``tools/list`` request ids."""

    calls: list[ToolCall] = field(default_factory=list)
    listings: list[Any] = field(default_factory=list)
    batch: bool = False


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise ValueError("an object repeats a key")
    return obj


def _constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def strict_json(data: bytes) -> Any:
    """Parse ``data`` as one strict JSON text (RFC 8259, UTF-8); ``ValueError`` otherwise."""
    if data.startswith(b"\xef\xbb\xbf"):
        raise ValueError("a byte-order mark precedes the JSON text")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("the body is not valid UTF-8") from None
    try:
        document = json.loads(text, object_pairs_hook=_pairs, parse_constant=_constant)
    except RecursionError:  # the C decoder counts its depth: a deep text never crashes it
        raise ValueError("the JSON nests too deeply") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"the body is not JSON ({error.msg})") from None
    if _SURROGATE_ESCAPE.search(text) and _has_lone_surrogate(document):
        raise ValueError("a JSON string escapes half a UTF-16 surrogate pair")
    return document


def _has_lone_surrogate(value: Any) -> bool:
    """Whether a string anywhere in ``value`` keeps a lone surrogate (valid pairs are joined)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def _check_keys(obj: dict[str, Any], where: str) -> None:
    folded: set[str] = set()
    for key in obj:
        if not key.isascii():
            raise InvalidRequest(f"a JSON-RPC {where} key is not ASCII")
        lower = key.lower()
        if lower in folded:
            raise InvalidRequest(f"two JSON-RPC {where} keys differ only in case")
        folded.add(lower)


def _message(item: Any, exchange: Exchange) -> None:
    if isinstance(item, list):
        raise InvalidRequest("a JSON-RPC batch holds another batch")
    if not isinstance(item, dict):
        return  # not a request: the server answers it with an error, and nothing runs
    _check_keys(item, "message")
    if "method" not in item:
        return  # a response to a request of the server's
    method = item["method"]
    if not isinstance(method, str):
        raise InvalidRequest("a JSON-RPC method is not a string")
    params = item.get("params")
    if isinstance(params, dict):
        _check_keys(params, "params")
    if method.casefold() in (CALL, LIST) and method not in (CALL, LIST):
        raise InvalidRequest(f"a JSON-RPC method differs from {method.casefold()!r} only in case")
    if method == LIST and "id" in item:
        exchange.listings.append(item["id"])
    elif method == CALL:
        name = params.get("name") if isinstance(params, dict) else None
        if not isinstance(name, str) or not name:
            raise InvalidRequest("a tools/call request names no tool (params.name)")
        exchange.calls.append(ToolCall(name, item.get("id")))


def _routing_value(raw: bytes) -> str | None:
    """A routing header's value as MCP encodes it (plain ASCII or ``=?base64?...?=``)."""
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        return None
    found = _B64_SENTINEL.match(text)
    if found is None:
        return text
    try:
        return base64.b64decode(found["payload"], validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None


def _check_routing(item: Any, headers: Sequence[tuple[bytes, bytes]]) -> None:
    """Refuse routing headers that are repeated or disagree with the body (one message)."""
    values: dict[bytes, list[bytes]] = {}
    for name, value in headers:
        if name.lower() in _ROUTING:
            values.setdefault(name.lower(), []).append(value)
    if not values:
        return
    if any(len(found) > 1 for found in values.values()):
        raise InvalidRequest("an Mcp-Method or Mcp-Name header is repeated")
    method = item.get("method") if isinstance(item, dict) else None
    if b"mcp-method" in values and _routing_value(values[b"mcp-method"][0]) != method:
        raise InvalidRequest("the Mcp-Method header does not match the body's method")
    if method == CALL and b"mcp-name" in values:
        params = item.get("params")
        tool = params.get("name") if isinstance(params, dict) else None
        if _routing_value(values[b"mcp-name"][0]) != tool:
            raise InvalidRequest("the Mcp-Name header does not match the body's tool name")


def parse_exchange(body: bytes, headers: Sequence[tuple[bytes, bytes]] = ()) -> Exchange:
    """The tool calls and listings of an MCP request body (one message or a batch).

    :class:`~agentguard.errors.InvalidRequest` (400) for a body that is not strict JSON or that
    two parsers could read differently (see the module docstring).
    """
    try:
        document = strict_json(body)
    except ValueError as error:
        raise InvalidRequest(f"the MCP request body is refused: {error}") from None
    exchange = Exchange(batch=isinstance(document, list))
    items = document if isinstance(document, list) else [document]
    for item in items:
        _message(item, exchange)
    if exchange.batch:
        if any(name.lower() in _ROUTING for name, _ in headers):
            raise InvalidRequest(
                "Mcp-Method and Mcp-Name headers describe one message, not a batch"
            )
    elif items:
        _check_routing(items[0], headers)
    return exchange
