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
import bisect
import json
from collections.abc import Callable, Iterator
from typing import NamedTuple

from agentguard._keys._format import looks_like_key
from agentguard.review._base import fingerprint
from agentguard.review._budget import checkpoint
from agentguard.review._linear import SPACE, LinearPattern, Subject

__all__ = [
    "ANCHORS",
    "SHAPES",
    "SHAPE_OVERLAP",
    "ShapeMatch",
    "compile_shapes",
    "find_shapes",
    "find_shapes_stepwise",
    "github_checksum_ok",
    "jwt_ok",
    "redact_shapes",
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


# RE2 has no lookarounds: the character before a credential is consumed (or is the start of
# the text), the credential is the group ``key``, and the character after it is consumed too
# (or is the end); the next search resumes where ``key`` ended, so that character is seen again.
_B = r"(?:\A|[^0-9A-Za-z_])"  # not inside a longer token
_E = r"(?:[^0-9A-Za-z]|\z)"
_PEM_BODY = r"A-Za-z0-9+/=\\:,.\-" + SPACE
PEM_MAX_BODY = 16384
"""Characters between a PEM header and its footer for the pair to count as one key."""

SHAPES: dict[str, tuple[str, Callable[[str], bool]]] = {
    "agentguard_key": (_B + r"(?P<key>ag_[ar]t_[0-9A-Za-z]{49})" + _E, looks_like_key),
    "github_token": (_B + r"(?P<key>gh[pousr]_[0-9A-Za-z]{36})" + _E, github_checksum_ok),
    "github_pat": (_B + r"(?P<key>github_pat_[0-9A-Za-z]{22}_[0-9A-Za-z]{59})" + _E, _always),
    "aws_access_key": (r"(?:\A|[^0-9A-Z])(?P<key>(?:AKIA|ASIA)[0-9A-Z]{16})" + _E, _always),
    "google_api_key": (
        r"(?:\A|[^0-9A-Za-z_-])(?P<key>AIza[0-9A-Za-z_-]{35})(?:[^0-9A-Za-z_-]|\z)",
        _always,
    ),
    "stripe_live_key": (_B + r"(?P<key>[sr]k_live_[0-9A-Za-z]{24,99})" + _E, _always),
    "private_key": (r"-----BEGIN (?P<pem_label>(?:[A-Z0-9]+ )*)PRIVATE KEY-----", _always),
    "jwt": (
        r"(?:\A|[^0-9A-Za-z_-])"
        r"(?P<key>eyJ[0-9A-Za-z_-]{6,}\.eyJ[0-9A-Za-z_-]{6,}\.[0-9A-Za-z_-]{16,})",
        jwt_ok,
    ),
}  # fmt: skip
"""Shape name to (RE2 regular expression, validator). Pass a subset (or your own) to
:class:`~agentguard.review.SecretLeakReviewer` with ``shapes=``.

A pattern's group ``key``, when it has one, is the credential (the rest of the match is the
boundary characters around it). A pattern with a group ``pem_label`` is a PEM header: the key
extends to the first ``-----END <label>PRIVATE KEY-----`` footer within
:data:`PEM_MAX_BODY` characters of base64 and armour, and is ``complete`` only then."""

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


Compiled = tuple[tuple[str, LinearPattern, Callable[[str], bool], tuple[str, ...]], ...]


def compile_shapes(shapes: dict[str, tuple[str, Callable[[str], bool]]]) -> Compiled:
    """Each shape's expression compiled (RE2, linear-time), with its validator and anchors.

    Raises :class:`~agentguard.review._linear.PatternError` for a pattern RE2 cannot run.
    """
    return tuple(
        (name, LinearPattern(pattern), check, ANCHORS.get(name, ()))
        for name, (pattern, check) in shapes.items()
    )


_DEFAULT = compile_shapes(SHAPES)
_PEM_FOOTER = LinearPattern(r"END (?P<label>(?:[A-Z0-9]+ )*)PRIVATE KEY-----")
_PEM_OUTSIDE = LinearPattern(f"[^{_PEM_BODY}]")


class _PemFooters:
    """Where each PEM footer is, found in one pass; and where the armour stops, cached."""

    def __init__(self, subject: Subject) -> None:
        self.subject = subject
        self.by_label: dict[str, list[int]] = {}
        text = subject.text
        if "-----END " in text:
            # A footer may share its dashes with the end of the one before, so the pattern
            # starts after the dashes and the dashes are checked here.
            for hit in _PEM_FOOTER.finditer(subject):
                begin = hit.start() - 5
                if begin >= 0 and text.startswith("-----", begin):
                    self.by_label.setdefault(hit.group("label") or "", []).append(begin)
        self._from = 0
        self._outside = -1

    def _armour_end(self, position: int) -> int:
        """The first character at or after ``position`` that cannot be in a PEM body."""
        if not self._from <= position <= self._outside:
            found = _PEM_OUTSIDE.search(self.subject, position)
            self._from = position
            self._outside = len(self.subject) if found is None else found.start()
        return self._outside

    def end(self, header_end: int, label: str) -> int | None:
        """Where the key whose header ends at ``header_end`` ends, if its footer is there."""
        places = self.by_label.get(label)
        if not places:
            return None
        index = bisect.bisect_left(places, header_end)
        if index == len(places):
            return None
        begin = places[index]
        if begin > min(self._armour_end(header_end), header_end + PEM_MAX_BODY):
            return None
        return begin + len(f"-----END {label}PRIVATE KEY-----")


def _pem_keys(subject: Subject, pattern: LinearPattern) -> Iterator[tuple[int, int, bool]]:
    footers: _PemFooters | None = None
    label_group = pattern.groupindex["pem_label"]
    text = subject.text
    position = 0
    while (spans := pattern.search_spans(subject, position)) is not None:
        if footers is None:
            footers = _PemFooters(subject)
        start, header_end = spans[0]
        label_start, label_end = spans[label_group]
        end = footers.end(header_end, text[label_start:label_end] if label_start >= 0 else "")
        yield start, header_end if end is None else end, end is not None
        position = header_end if end is None else end


def _spans(subject: Subject, pattern: LinearPattern) -> Iterator[tuple[int, int, bool]]:
    if "pem_label" in pattern.groupindex:
        return _pem_keys(subject, pattern)
    key = "key" if "key" in pattern.groupindex else 0
    return ((start, end, True) for start, end in pattern.spans(subject, key))


def _shape_hits(
    subject: Subject, name: str, pattern: LinearPattern, check: Callable[[str], bool]
) -> Iterator[ShapeMatch]:
    text = subject.text
    for start, end, complete in _spans(subject, pattern):
        if check(text[start:end]):
            yield ShapeMatch(name, start, end, complete)
        else:
            yield _REJECTED


_REJECTED = ShapeMatch("", -1, -1, False)
MATCHES_PER_STEP = 512
"""Candidate matches validated between two checkpoints of :func:`find_shapes_stepwise`."""


def _in_order(found: list[list[ShapeMatch]]) -> list[ShapeMatch]:
    """Each shape's matches (already in order of position) merged into one ordered list."""
    lists = [hits for hits in found if hits]
    if len(lists) == 1:
        return lists[0]
    merged = [hit for hits in lists for hit in hits]
    merged.sort(key=lambda m: (m.start, -m.end))
    return merged


def _without_overlaps(found: list[ShapeMatch]) -> list[ShapeMatch]:
    kept: list[ShapeMatch] = []
    for shape in found:
        if not kept or shape.start >= kept[-1].end:
            kept.append(shape)
    return kept


def find_shapes(
    text: str,
    shapes: dict[str, tuple[str, Callable[[str], bool]]] = SHAPES,
    compiled: Compiled | None = None,
) -> list[ShapeMatch]:
    """Every validated credential shape in ``text``, in order, without overlaps."""
    if compiled is None:
        compiled = _DEFAULT if shapes is SHAPES else compile_shapes(shapes)
    subject = Subject(text)
    found: list[list[ShapeMatch]] = []
    for name, pattern, check, anchors in compiled:
        if anchors and not any(anchor in text for anchor in anchors):
            continue
        found.append([hit for hit in _shape_hits(subject, name, pattern, check) if hit.start >= 0])
    return _without_overlaps(_in_order(found))


async def find_shapes_stepwise(
    text: str,
    shapes: dict[str, tuple[str, Callable[[str], bool]]] = SHAPES,
    compiled: Compiled | None = None,
) -> list[ShapeMatch]:
    """:func:`find_shapes` with a :func:`~agentguard.review.checkpoint` before each
    shape and every :data:`MATCHES_PER_STEP` candidates, so other requests run and the
    reviewer's deadline can fire."""
    if compiled is None:
        compiled = _DEFAULT if shapes is SHAPES else compile_shapes(shapes)
    subject = Subject(text)
    found: list[list[ShapeMatch]] = []
    for name, pattern, check, anchors in compiled:
        await checkpoint()
        if anchors and not any(anchor in text for anchor in anchors):
            continue
        hits: list[ShapeMatch] = []
        for count, hit in enumerate(_shape_hits(subject, name, pattern, check), 1):
            if hit.start >= 0:
                hits.append(hit)
            if count % MATCHES_PER_STEP == 0:
                await checkpoint()
        found.append(hits)
    await checkpoint()
    ordered = _in_order(found)
    if len(ordered) > MATCHES_PER_STEP:
        await checkpoint()
    return _without_overlaps(ordered)


def redact_shapes(text: str, shapes: list[ShapeMatch], marks: list[str]) -> str:
    """``text`` with each of ``shapes`` (ordered, without overlaps) replaced by
    ``[redacted:<shape>]``; appends their fingerprints to ``marks``, last shape first.

    One pass that joins the pieces, so many shapes cost time linear in the text.
    """
    pieces: list[str] = []
    position = 0
    for shape in shapes:
        pieces.append(text[position : shape.start])
        pieces.append(f"[redacted:{shape.shape}]")
        position = shape.end
    pieces.append(text[position:])
    marks.extend(fingerprint(text[shape.start : shape.end]) for shape in reversed(shapes))
    return "".join(pieces)
