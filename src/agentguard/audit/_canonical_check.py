"""Whether a stored audit body is canonical and continues the chain: the verifier's hot path.

:func:`canonical_link` decides for one body; bodies of the current event schema go through a
compiled template (no JSON decode), any other body through a full decode and re-encode. Both
give the same verdict: the template only accepts bytes whose re-encoding is themselves.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import datetime, timezone

from agentguard.audit._events import MAX_SAFE_INT, Action, AuditEvent

__all__ = ["canonical_link"]


class _NotCanonical(ValueError):
    pass


def _reject(_: str) -> object:
    raise _NotCanonical


def _safe_int(text: str) -> int:
    value = int(text)
    if not -MAX_SAFE_INT <= value <= MAX_SAFE_INT:
        raise _NotCanonical
    return value


# Canonical bodies hold no floats, no NaN/Infinity and only safe ints; anything else takes the
# slow path, where canonical_json gives the verdict.
_decode = json.JSONDecoder(parse_float=_reject, parse_int=_safe_int, parse_constant=_reject).decode
_encode = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, check_circular=False
).encode
# Bytes that never appear unescaped in a canonical body's strings, or that need an escape.
_UNSAFE = bytes(range(0x20)) + b"\\\x7f"


def _schema_template() -> Callable[[bytes], re.Match[bytes] | None]:
    """A matcher for bodies of the current event schema that are canonical by construction.

    The top-level and ``actor`` keys are those :meth:`AuditEvent.body` writes, in sorted order;
    every value is a literal, an int of at most 15 digits (safe, no leading zero, no ``-0``) or
    a string of printable ASCII without quote or backslash (the caller rejects bodies holding a
    control byte, DEL or a backslash first), which all encode to themselves. ``detail`` is
    captured for a round-trip check; ``prev`` and ``seq`` are captured for the chain.
    """
    scalar = rb'(?:null|true|false|0|-?[1-9][0-9]{0,14}|"[^"]*")'
    sample = AuditEvent(action=Action.GENESIS, ts=datetime(2026, 1, 1, tzinfo=timezone.utc))

    def members(body: dict[str, object], top: bool) -> bytes:
        parts = []
        for key in sorted(body):
            value, name = body[key], b'"' + re.escape(key.encode()) + b'":'
            if top and key == "prev":
                parts.append(name + rb'"(?P<prev>[^"]*)"')
            elif top and key == "seq":
                parts.append(name + rb"(?P<seq>0|[1-9][0-9]{0,14})")
            elif top and key == "detail":
                parts.append(name + rb"(?P<detail>\{[^{}]*\})")
            elif isinstance(value, dict):
                parts.append(name + rb"\{" + members(value, False) + rb"\}")
            else:
                parts.append(name + scalar)
        return b",".join(parts)

    body = sample.body(0, "")
    if not {"prev", "seq", "detail"} <= body.keys():  # pragma: no cover - schema guard
        raise RuntimeError("the event schema lost a field the verifier's fast path reads")
    return re.compile(rb"\{" + members(dict(body), True) + rb"\}").fullmatch


_template = _schema_template()


def _roundtrips(text: bytes) -> object:
    """``text`` decoded if it is exactly its own canonical encoding, else ``None``."""
    try:
        obj = _decode(text.decode())
    except (ValueError, RecursionError):
        return None
    return obj if type(obj) is dict and _encode(obj).encode() == text else None


def canonical_link(body: bytes, head_b64: bytes, seq: int) -> bool:
    """Whether ``body`` is canonical, says ``seq`` and names ``head_b64`` as its ``prev``.

    Bodies of the current schema are checked by :func:`_schema_template` plus a round trip of
    their (usually empty) ``detail``; any other body by a full decode and re-encode. Both give
    the same verdict: the template only accepts bytes whose re-encoding is themselves.
    """
    if not body.isascii():
        return False
    if len(body.translate(None, _UNSAFE)) == len(body):
        match = _template(body)
        if match is not None:
            prev, number, detail = match.group("prev", "seq", "detail")
            return (
                prev == head_b64
                and int(number) == seq
                and (detail == b"{}" or _roundtrips(detail) is not None)
            )
    obj = _roundtrips(body)
    return (
        isinstance(obj, dict)
        and obj.get("prev") == head_b64.decode()
        and obj.get("seq") == seq
        and type(obj["seq"]) is int
    )
