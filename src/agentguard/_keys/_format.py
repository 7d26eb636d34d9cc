"""The key format: ``ag_at_`` / ``ag_rt_`` + 256 random bits in base62 + a CRC32 checksum.

    ag_at_ 4Qh1...(43 base62 characters = 256 bits)... 0bX9Zq
    prefix  body                                        checksum (CRC32 of prefix+body, 6 base62)

The prefix lets secret scanners (and our own output reviewer) recognise a leaked key; the
checksum lets a typo or a truncated paste fail fast, before any storage lookup. The server
stores only :func:`hash_key` of a key.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import zlib
from typing import NamedTuple

from agentguard._model._keys import KeyKind
from agentguard._secret import Secret
from agentguard.errors import MalformedKey

__all__ = [
    "KEY_LENGTH",
    "PREFIXES",
    "ParsedKey",
    "generate_key",
    "hash_key",
    "looks_like_key",
    "new_id",
    "parse_key",
]

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
PREFIXES: dict[KeyKind, str] = {KeyKind.ACCESS: "ag_at_", KeyKind.REFRESH: "ag_rt_"}
_KINDS = {prefix: kind for kind, prefix in PREFIXES.items()}
PREFIX_LENGTH = 6
BODY_LENGTH = 43  # 62**43 > 2**256, so 32 random bytes always fit
CHECKSUM_LENGTH = 6  # 62**6 > 2**32
KEY_LENGTH = PREFIX_LENGTH + BODY_LENGTH + CHECKSUM_LENGTH


def _base62(number: int, width: int) -> str:
    digits = []
    for _ in range(width):
        number, remainder = divmod(number, 62)
        digits.append(ALPHABET[remainder])
    return "".join(reversed(digits))


_MAX_BODY = _base62(2**256 - 1, BODY_LENGTH)


# Every two-digit base62 string, by value: the checksum (a CRC32, below 62**6) is three of
# them, read with two divisions instead of six (parse_key runs on every request).
_PAIRS = tuple(first + second for first in ALPHABET for second in ALPHABET)
_PAIR = 62 * 62


def _checksum_digits(crc: int) -> str:
    """``_base62(crc, CHECKSUM_LENGTH)`` for a CRC32 (``0 <= crc < 2**32``)."""
    high, low = divmod(crc, _PAIR)
    high, middle = divmod(high, _PAIR)
    return _PAIRS[high] + _PAIRS[middle] + _PAIRS[low]


def _checksum(prefix_and_body: str) -> str:
    return _checksum_digits(zlib.crc32(prefix_and_body.encode("ascii")))


class ParsedKey(NamedTuple):
    """A syntactically valid key: its kind and the full key string."""

    kind: KeyKind
    value: str


def generate_key(kind: KeyKind) -> Secret:
    """A new random key of ``kind`` (256 bits from :mod:`secrets`)."""
    head = PREFIXES[kind] + _base62(secrets.randbits(256), BODY_LENGTH)
    return Secret(head + _checksum(head))


def parse_key(value: object) -> ParsedKey:
    """Check a presented key's syntax and checksum; raise :class:`MalformedKey` if wrong.

    Never raises anything else, whatever ``value`` is, and never echoes the value.
    """
    if not isinstance(value, str):
        raise MalformedKey("the key must be a string")
    if len(value) != KEY_LENGTH:
        raise MalformedKey(f"an agentguard key is exactly {KEY_LENGTH} characters long")
    kind = _KINDS.get(value[:PREFIX_LENGTH])
    if kind is None:
        raise MalformedKey("an agentguard key starts with 'ag_at_' or 'ag_rt_'")
    tail = value[PREFIX_LENGTH:]
    if not (tail.isascii() and tail.isalnum()):  # ASCII alphanumerics are exactly base62
        raise MalformedKey("an agentguard key contains only base62 characters after its prefix")
    head, checksum = value[:-CHECKSUM_LENGTH], value[-CHECKSUM_LENGTH:]
    # ALPHABET is in code-point order, so comparing the text compares the numbers.
    if tail[:BODY_LENGTH] > _MAX_BODY:
        raise MalformedKey("the key's random part is out of range")
    if not hmac.compare_digest(_checksum(head), checksum):
        raise MalformedKey("the key's checksum does not match; it was mistyped or truncated")
    return ParsedKey(kind, value)


def looks_like_key(text: str) -> bool:
    """Whether ``text`` is a checksum-valid agentguard key (for scanners; no exceptions)."""
    try:
        parse_key(text)
    except MalformedKey:
        return False
    return True


def hash_key(key: str) -> bytes:
    """SHA-256 of the key string: the only form of a key the server stores."""
    return hashlib.sha256(key.encode("ascii")).digest()


def new_id(prefix: str) -> str:
    """A random public identifier such as ``key_5fQ2...``: 16 base62 characters (95 bits)."""
    return prefix + "_" + "".join(secrets.choice(ALPHABET) for _ in range(16))
