"""Credential shapes worth flagging without knowing the value: only checksummed or fixed ones.

Generic "high-entropy string" rules flag UUIDs, hashes and base64 images all day; these do
not. Each shape is a literal prefix and a fixed length, and where the issuer documents a
checksum it is verified:

==================== ============================================================= ==========
shape                form                                                          check
==================== ============================================================= ==========
``agentguard_key``   ``ag_at_``/``ag_rt_`` + 43 base62 + 6 base62 CRC32            checksum
``github_token``     ``ghp_``/``gho_``/``ghu_``/``ghs_``/``ghr_`` + 30 + 6 CRC32   checksum
``github_pat``       ``github_pat_`` + 22 + ``_`` + 59                              fixed shape
``aws_access_key``   ``AKIA``/``ASIA`` + 16 upper-case base32-ish characters         fixed shape
``google_api_key``   ``AIza`` + 35                                                  fixed shape
``stripe_live_key``  ``sk_live_``/``rk_live_`` + 24-99 alphanumerics                 fixed shape
``private_key``      a PEM ``-----BEGIN ... PRIVATE KEY-----`` header                fixed shape
``jwt``              three base64url parts whose header decodes to JSON with ``alg`` decoded
==================== ============================================================= ==========
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable
from typing import NamedTuple

from agentguard.keys.format import looks_like_key

__all__ = [
    "ANCHORS",
    "SHAPES",
    "SHAPE_OVERLAP",
    "ShapeMatch",
    "compile_shapes",
    "find_shapes",
    "github_checksum_ok",
    "jwt_ok",
]

_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


class ShapeMatch(NamedTuple):
    """A credential shape found at ``text[start:end]``; ``complete`` is ``False`` when only
    its beginning is visible (a PEM header without its footer), which cannot be redacted."""

    shape: str
    start: int
    end: int
    complete: bool = True


def github_checksum_ok(token: str) -> bool:
    """Whether a ``gh?_`` token's last 6 characters are the base62 CRC32 of its random part."""
    body, checksum = token[4:-6], token[-6:]
    value = 0
    for char in checksum:
        value = value * 62 + _BASE62.index(char)
    return binascii.crc32(body.encode("ascii")) == value


def _b64url_json(part: str) -> object:
    padded = part + "=" * (-len(part) % 4)
    return json.loads(base64.urlsafe_b64decode(padded))


def jwt_ok(token: str) -> bool:
    """Whether a JWS compact string has a decodable JSON header naming an ``alg`` and a JSON
    payload."""
    header, payload, _ = token.split(".", 2)
    try:
        head = _b64url_json(header)
        claims = _b64url_json(payload)
    except (ValueError, binascii.Error):
        return False
    return isinstance(head, dict) and isinstance(head.get("alg"), str) and isinstance(claims, dict)


def _always(_: str) -> bool:
    return True


_B = r"(?<![0-9A-Za-z_])"  # not inside a longer token
_E = r"(?![0-9A-Za-z])"

SHAPES: dict[str, tuple[str, Callable[[str], bool]]] = {
    "agentguard_key": (_B + r"ag_[ar]t_[0-9A-Za-z]{49}" + _E, looks_like_key),
    "github_token": (_B + r"gh[pousr]_[0-9A-Za-z]{36}" + _E, github_checksum_ok),
    "github_pat": (_B + r"github_pat_[0-9A-Za-z]{22}_[0-9A-Za-z]{59}" + _E, _always),
    "aws_access_key": (r"(?<![0-9A-Z])(?:AKIA|ASIA)[0-9A-Z]{16}" + _E, _always),
    "google_api_key": (r"(?<![0-9A-Za-z_-])AIza[0-9A-Za-z_-]{35}(?![0-9A-Za-z_-])", _always),
    "stripe_live_key": (_B + r"[sr]k_live_[0-9A-Za-z]{24,99}" + _E, _always),
    "private_key": (
        r"-----BEGIN (?P<pem_label>(?:[A-Z0-9]+ )*)PRIVATE KEY-----"
        r"(?:[A-Za-z0-9+/=\s\\:,.-]{0,16384}?-----END (?P=pem_label)PRIVATE KEY-----)?",
        _always,
    ),
    "jwt": (
        r"(?<![0-9A-Za-z_-])eyJ[0-9A-Za-z_-]{6,}\.eyJ[0-9A-Za-z_-]{6,}\.[0-9A-Za-z_-]{16,}",
        jwt_ok,
    ),
}  # fmt: skip
"""Shape name to (regular expression, validator). Pass a subset (or your own) to
:class:`~agentguard.review.SecretLeakReviewer` with ``shapes=``."""

ANCHORS: dict[str, tuple[str, ...]] = {
    "agentguard_key": ("ag_at_", "ag_rt_"),
    "github_token": ("ghp_", "gho_", "ghu_", "ghs_", "ghr_"),
    "github_pat": ("github_pat_",),
    "aws_access_key": ("AKIA", "ASIA"),
    "google_api_key": ("AIza",),
    "stripe_live_key": ("k_live_",),
    "private_key": ("PRIVATE KEY-----",),
    "jwt": ("eyJ",),
}
"""Literals a shape cannot match without; a body that holds none of them skips its expression."""

SHAPE_OVERLAP = 4096
"""Characters a streaming window repeats so a shape split across chunks is seen whole."""


Compiled = tuple[tuple[str, re.Pattern[str], Callable[[str], bool], tuple[str, ...]], ...]


def compile_shapes(shapes: dict[str, tuple[str, Callable[[str], bool]]]) -> Compiled:
    """Each shape's expression compiled, with its validator and anchors."""
    return tuple(
        (name, re.compile(pattern), check, ANCHORS.get(name, ()))
        for name, (pattern, check) in shapes.items()
    )


_DEFAULT = compile_shapes(SHAPES)


def find_shapes(
    text: str,
    shapes: dict[str, tuple[str, Callable[[str], bool]]] = SHAPES,
    compiled: Compiled | None = None,
) -> list[ShapeMatch]:
    """Every validated credential shape in ``text``, in order, without overlaps."""
    if compiled is None:
        compiled = _DEFAULT if shapes is SHAPES else compile_shapes(shapes)
    found: list[ShapeMatch] = []
    for name, pattern, check, anchors in compiled:
        if anchors and not any(anchor in text for anchor in anchors):
            continue
        for hit in pattern.finditer(text):
            value = hit.group()
            if check(value):
                complete = name != "private_key" or "-----END " in value
                found.append(ShapeMatch(name, hit.start(), hit.end(), complete))
    found.sort(key=lambda m: (m.start, -m.end))
    kept: list[ShapeMatch] = []
    for shape in found:
        if not kept or shape.start >= kept[-1].end:
            kept.append(shape)
    return kept
