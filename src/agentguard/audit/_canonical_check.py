"""Whether a stored audit body is canonical and continues the chain: the verifier's hot path.

:func:`canonical_link` decides for one body; bodies of the current event schema go through a
compiled template (no JSON decode), any other body through a full decode and re-encode. Both
give the same verdict: the template only accepts bytes whose re-encoding is themselves.
:func:`template_leaves` takes a run of entries at once and says yes only when the template
branch accepts every one of them, with their hashes and links.
"""

from __future__ import annotations

import hashlib
import json
import re
from binascii import b2a_base64
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from typing import cast

from agentguard.audit._events import MAX_SAFE_INT, Action, AuditEvent

__all__ = ["canonical_link", "template_leaves"]


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
# A string's characters that encode to themselves: printable ASCII but quote and backslash.
_CHARS = rb"[ !#-\[\]-~]*+"
_STRING = rb'"' + _CHARS + rb'"'


_GROUPS = {"detail": 1, "prev": 2, "seq": 3}  # sorted keys: the order Match.groups() gives


def _schema_template() -> Callable[[bytes], re.Match[bytes] | None]:
    """A matcher for bodies of the current event schema that are canonical by construction.

    The top-level and ``actor`` keys are those :meth:`AuditEvent.body` writes, in sorted order;
    every value is a literal, an int of at most 15 digits (safe, no leading zero, no ``-0``) or
    a string of printable ASCII without quote or backslash (no control byte, no DEL: nothing
    that needs an escape), which all encode to themselves. ``detail`` is captured for a
    round-trip check; ``prev`` and ``seq`` are captured for the chain (``prev`` as any text up
    to the next quote: only the previous hash's base64, which needs no escape, is accepted).
    Strings come first in the alternation and are matched possessively: the common value, and
    no backtracking.
    """
    scalar = rb"(?:" + _STRING + rb"|null|true|false|0|-?[1-9][0-9]{0,14})"
    sample = AuditEvent(action=Action.GENESIS, ts=datetime(2026, 1, 1, tzinfo=timezone.utc))

    def members(body: dict[str, object], top: bool) -> bytes:
        parts = []
        for key in sorted(body):
            value, name = body[key], b'"' + re.escape(key.encode()) + b'":'
            if top and key == "prev":
                # Any quote-free text: it must equal the head's base64 to be accepted.
                parts.append(name + rb'"(?P<prev>[^"]*+)"')
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
    pattern = re.compile(rb"\{" + members(dict(body), True) + rb"\}")
    if pattern.groupindex != _GROUPS:  # pragma: no cover - template_leaves reads groups()
        raise RuntimeError("the template's groups are not detail, prev, seq in that order")
    return pattern.fullmatch


_template = _schema_template()


def _roundtrips(text: bytes) -> object:
    """``text`` decoded if it is exactly its own canonical encoding, else ``None``.

    Never raises: a ``\\ud800`` escape decodes to a lone surrogate, which has no UTF-8
    encoding, so such a body is not canonical (compared as text, the re-encoding differs)."""
    try:
        decoded = text.decode()
        obj = _decode(decoded)
        return obj if type(obj) is dict and _encode(obj) == decoded else None
    except (ValueError, RecursionError):
        return None


def canonical_link(body: bytes, head_b64: bytes, seq: int) -> bool:
    """Whether ``body`` is canonical, says ``seq`` and names ``head_b64`` as its ``prev``.

    Bodies of the current schema are checked by :func:`_schema_template` plus a round trip of
    their (usually empty) ``detail``; any other body by a full decode and re-encode. Both give
    the same verdict: the template only accepts bytes whose re-encoding is themselves.
    """
    if not body.isascii():
        return False
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


_LEAF = hashlib.sha256(b"\x00")  # copied per entry: cheaper than starting a hash afresh


def template_leaves(
    bodies: Sequence[bytes], hashes: Sequence[bytes], first: int, head: bytes
) -> list[bytes] | None:
    """The leaf hashes of a run of entries if every one passes the verifier's fast path.

    The entries are ``(first + i, hashes[i], bodies[i])``, every body ``bytes``, following the
    entry hashed ``head``. Each must hash to its stored hash and be accepted by the template
    branch of :func:`canonical_link` with the previous one's hash as ``prev``: then the run is
    the chain's next entries. ``None`` when any entry fails or is not of the template: check
    them one by one, which gives the verdict (this says yes only where that would). Each step
    runs over the whole run, so the per-entry work is done in C; give it a few hundred entries
    at a time (fewer than the collector's first threshold, 700: the matches are tracked).
    """
    if not bodies:
        return []
    fresh, b64 = _LEAF.copy, b2a_base64
    leaves: list[bytes] = []
    append = leaves.append
    for body in bodies:
        digest = fresh()
        digest.update(body)
        append(digest.digest())
    if leaves != list(hashes):
        return None
    found = list(map(_template, bodies))
    if not all(found):  # a match is always true; None is not
        return None
    matches = cast("list[re.Match[bytes]]", found)
    details, prevs, numbers = zip(*map(re.Match.groups, matches), strict=True)
    del found, matches
    links = [b64(head, newline=False)]
    links += [b64(leaf, newline=False) for leaf in leaves[:-1]]
    if list(prevs) != links or list(map(int, numbers)) != list(range(first, first + len(leaves))):
        return None
    # Outside ``detail`` the template matches ASCII only: canonical_link's isascii() is the
    # same as that of each detail.
    if details.count(b"{}") != len(details) and not all(
        detail == b"{}" or (detail.isascii() and _roundtrips(detail) is not None)
        for detail in details
    ):
        return None
    return leaves
