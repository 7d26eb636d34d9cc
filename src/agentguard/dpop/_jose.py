"""Strict JOSE encodings: base64url without padding and JSON objects without surprises.

Two parsers that disagree about one input are how JOSE gets attacked, so these refuse anything a
stricter implementation could read differently: padded or non-canonical base64url, duplicate
member names (``json.loads`` keeps the last one silently), ``NaN``/``Infinity`` and floats that
overflow to infinity, invalid UTF-8, and top-level values that are not objects.

Errors are :class:`JOSEError` (an :class:`~agentguard.errors.AgentGuardError` and a
``ValueError``) with fixed messages that never quote the input.
"""

from __future__ import annotations

import binascii
import json
import math
import re
from collections.abc import Callable
from typing import Any, NoReturn

from agentguard.errors import AgentGuardError

__all__ = [
    "JOSEError",
    "b64url_decode",
    "b64url_encode",
    "compact_parts",
    "dumps_compact",
    "loads_object",
]

_B64URL = re.compile(r"[A-Za-z0-9_-]*")
_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_ALPHABET_BYTES = _ALPHABET.encode("ascii")
_VALUES = {char: index for index, char in enumerate(_ALPHABET)}
# Unused low bits of the last character, by length % 4: one byte leaves 4, two bytes leave 2.
_SPARE_BITS = {2: 0x0F, 3: 0x03}
_FROM_URLSAFE = bytes.maketrans(b"-_", b"+/")
_TO_URLSAFE = bytes.maketrans(b"+/", b"-_")


class JOSEError(AgentGuardError, ValueError):
    """A JOSE value is malformed; the message is fixed text, safe to show."""


def b64url_encode(data: bytes) -> str:
    """base64url of ``data`` without padding (RFC 7515 §2)."""
    return binascii.b2a_base64(data, newline=False).translate(_TO_URLSAFE).rstrip(b"=").decode()


def compact_parts(token: str) -> list[str] | None:
    """The three parts of a compact JWS (``header.payload.signature``), or ``None``.

    Each part must be non-empty base64url alphabet text (what the regular expression
    ``[A-Za-z0-9_-]+\\.[A-Za-z0-9_-]+\\.[A-Za-z0-9_-]+`` matches in full); the parts then go to
    :func:`b64url_decode` with ``alphabet_checked=True``. Deleting the alphabet's bytes and
    finding exactly two dots left costs half the regular expression's scan.
    """
    if not token.isascii() or token.encode("ascii").translate(None, _ALPHABET_BYTES) != b"..":
        return None
    parts = token.split(".")
    return parts if parts[0] and parts[1] and parts[2] else None


def b64url_decode(data: str, *, alphabet_checked: bool = False) -> bytes:
    """Decode unpadded, canonical base64url; anything else raises :class:`JOSEError`.

    Canonical means re-encoding gives back ``data``: the unused low bits of the last character
    are zero, so one byte string has exactly one encoding. ``alphabet_checked`` skips the
    character check when the caller already matched ``data`` against the base64url alphabet.
    """
    remainder = len(data) % 4
    if remainder == 1 or not (alphabet_checked or _B64URL.fullmatch(data)):
        raise JOSEError("not unpadded base64url")
    if remainder and _VALUES[data[-1]] & _SPARE_BITS[remainder]:
        raise JOSEError("non-canonical base64url")
    padded = data.encode("ascii").translate(_FROM_URLSAFE) + b"=" * (-remainder % 4)
    try:
        return binascii.a2b_base64(padded)
    except binascii.Error:
        raise JOSEError("not unpadded base64url") from None


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise JOSEError("duplicate member name")
    return obj


def _reject_constant(name: str) -> NoReturn:
    raise JOSEError("NaN and Infinity are not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise JOSEError("number out of range")
    return value


# One decoder, built once: json.loads(..., object_pairs_hook=...) builds a new one per call.
_DECODER = json.JSONDecoder(
    object_pairs_hook=_reject_duplicates,
    parse_constant=_reject_constant,
    parse_float=_finite_float,
)


# What _DECODER.decode runs, without its wrapping; JSONDecoder sets it in __init__ (typeshed
# does not declare it).
_scan: Callable[[str, int], tuple[Any, int]] = _DECODER.scan_once  # type: ignore[attr-defined]


def loads_object(raw: bytes) -> dict[str, Any]:
    """Parse UTF-8 JSON text that must be one object; raise :class:`JOSEError` otherwise."""
    try:
        text = raw.decode("utf-8")
        if text[:1] == "{" and text[-1:] == "}":
            # No whitespace around it: the scanner alone decides, without decode()'s two
            # whitespace matches. Same decoder and hooks, so the same verdict.
            value, end = _scan(text, 0)
            if end != len(text):
                raise JOSEError("not a JSON object")  # decode() calls this "Extra data"
        else:
            value = _DECODER.decode(text)
    except JOSEError:
        raise
    except (ValueError, RecursionError, StopIteration):
        # UnicodeDecodeError and JSONDecodeError are ValueErrors; deep nesting recurses; the
        # scanner raises StopIteration when no value starts where it looks.
        raise JOSEError("not a JSON object") from None
    if not isinstance(value, dict):
        raise JOSEError("not a JSON object")
    return value


def dumps_compact(value: object) -> bytes:
    """Compact, ASCII-only JSON, as DPoP proofs are signed and thumbprints are hashed."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()
