"""Which charset a body is read in, and checking that a re-encoded body has one reading only.

Readers of a body pick its charset from several places: a byte-order mark, the
``Content-Type`` charset, an XML declaration (``<?xml ... encoding="cp500"?>``, read by XML
parsers given bytes, also in EBCDIC or UTF-16 without a BOM), an HTML ``<meta charset>``
(read by browsers without a header charset and by HTML parsers given bytes), and for JSON the
``json.loads`` sniffing of NUL bytes. :func:`body_encoding` chooses one reading, in that order
(the mark first, as browsers and XML parsers do), and refuses a body whose own declaration
disagrees with it: :class:`ConflictingCharsets`.

The gateway then re-encodes the body as UTF-8, declares ``charset=utf-8`` and rewrites the
body's own declaration at its start to UTF-8 (:func:`declare_utf8_in_body`);
:func:`check_declarations` refuses a re-encoded body that still declares (anywhere in the text
checked) a charset whose reading of the bytes could differ in ASCII characters from UTF-8's.
"""

from __future__ import annotations

import json
import re

from agentguard._content_type import AmbiguousContentType, ContentType, text_codec

__all__ = [
    "HEAD_BYTES",
    "ConflictingCharsets",
    "body_encoding",
    "check_declarations",
    "declare_utf8_in_body",
    "textual",
]

HEAD_BYTES = 1024
"""How much of a body's start is read for a byte-order mark or a declaration (WHATWG's prescan
length)."""

_BOMS = (
    (b"\xef\xbb\xbf", "utf-8"),
    (b"\xff\xfe\x00\x00", "utf-32"),
    (b"\x00\x00\xfe\xff", "utf-32"),
    (b"\xff\xfe", "utf-16"),
    (b"\xfe\xff", "utf-16"),
)
# XML 1.0 Appendix F: the first four bytes of "<?xml" without a mark.
_XML_FAMILIES = (
    (b"\x00\x00\x00\x3c", "utf-32-be"),
    (b"\x3c\x00\x00\x00", "utf-32-le"),
    (b"\x00\x3c\x00\x3f", "utf-16-be"),
    (b"\x3c\x00\x3f\x00", "utf-16-le"),
    (b"\x4c\x6f\xa7\x94", "cp037"),
)
_XML_DECLARATION = re.compile(
    r"""(<\?xml\b[^>]{0,256}?\bencoding[ \t\r\n]*=[ \t\r\n]*["'])([^"']*)(["'])""", re.IGNORECASE
)
_META_CHARSET = re.compile(
    r"""(<meta\b[^>]{0,1024}?\bcharset[ \t\r\n]*=[ \t\r\n]*\\?["']?)([^"'\\\s;/>]*)""",
    re.IGNORECASE,
)
_TEXT_SUFFIXES = (
    "/json",
    "+json",
    "/xml",
    "+xml",
    "/html",
    "/javascript",
    "/ecmascript",
    "/x-www-form-urlencoded",
    "/x-ndjson",
    "/jsonl",
    "/yaml",
    "/x-yaml",
)
# Codecs that turn ASCII bytes into the same characters and never make an ASCII character out
# of other bytes: reading such a body as UTF-8 shows every ASCII secret it holds.
_ASCII_TRANSPARENT = frozenset(
    {"utf-8", "utf-8-sig", "ascii", "cp1252", "cp1250", "cp1251", "cp1253"}
    | {"cp1254", "cp1255", "cp1256", "cp1257", "cp1258", "koi8-r", "koi8-u", "mac-roman"}
    | {f"iso8859-{n}" for n in (*range(1, 12), *range(13, 17))}
)


class ConflictingCharsets(AmbiguousContentType):
    """A body whose own charset declaration disagrees with the reading the gateway chose."""


def textual(media: str) -> bool:
    """Whether ``media`` (lower-cased ``type/subtype``, ``""`` if absent) is read as text."""
    return not media or media.startswith("text/") or media.endswith(_TEXT_SUFFIXES)


def _same(first: str, second: str) -> bool:
    def family(name: str) -> str:
        name = text_codec(name) or name
        return name.removesuffix("-le").removesuffix("-be").removesuffix("-sig")

    a, b = family(first), family(second)
    return a == b or (a in _ASCII_TRANSPARENT and b in _ASCII_TRANSPARENT)


def _declared(head: bytes) -> str | None:
    """The charset the body declares itself (XML declaration or HTML meta), as a codec name."""
    family = next((name for start, name in _XML_FAMILIES if head.startswith(start)), None)
    text = head.decode(family or "latin-1", "replace")
    found = _XML_DECLARATION.search(text) or _META_CHARSET.search(text)
    if found is None:
        return family if family not in (None, "cp037") else None
    # A label no codec knows is ignored by browsers and HTML parsers, as here.
    return text_codec(found.group(2).strip()) or (family if family != "cp037" else None)


def body_encoding(content_type: ContentType, head: bytes) -> str | None:
    """The codec to re-encode a body from before the scan, or ``None`` when it is read as is.

    ``head`` is the body's first :data:`HEAD_BYTES` (or all of it). Raises
    :class:`ConflictingCharsets` when the body's own declaration disagrees with the chosen one.
    """
    media = content_type.media
    bom = next((name for mark, name in _BOMS if head.startswith(mark)), None)
    is_text = textual(media) or content_type.charset is not None
    declared = _declared(head[len(b"" if bom is None else _bom_of(head)) :]) if is_text else None
    sniffed = None
    if media == "application/json" or media.endswith("+json"):
        sniffed = json.detect_encoding(head[:4]) if len(head) >= 2 else None
        sniffed = None if sniffed in ("utf-8", "utf-8-sig") else sniffed
    chosen = (bom if is_text else None) or content_type.charset or declared or sniffed
    for other in (declared, sniffed if content_type.charset is not None else None):
        if chosen is not None and other is not None and not _same(chosen, other):
            raise ConflictingCharsets("the body declares a charset other than its header's")
    if chosen is None or text_codec(chosen) in ("utf-8", "ascii"):
        return None
    return chosen


def _bom_of(head: bytes) -> bytes:
    return next(mark for mark, _ in _BOMS if head.startswith(mark))


def declare_utf8_in_body(head: bytes) -> bytes:
    """``head`` (re-encoded as UTF-8) with its XML declaration's or meta's charset set to UTF-8."""
    text = head.decode("utf-8", "surrogateescape")
    limit = min(len(text), HEAD_BYTES)
    start, rest = text[:limit], text[limit:]
    start = _XML_DECLARATION.sub(r"\g<1>utf-8\g<3>", start, count=1)
    start = _META_CHARSET.sub(r"\g<1>utf-8", start)
    return (start + rest).encode("utf-8", "surrogateescape")


def check_declarations(text: bytes) -> None:
    """Refuse (:class:`ConflictingCharsets`) UTF-8 ``text`` that declares another reading."""
    decoded = text.decode("utf-8", "replace")
    for pattern, group in ((_XML_DECLARATION, 2), (_META_CHARSET, 2)):
        for found in pattern.finditer(decoded):
            codec = text_codec(found.group(group).strip())
            if codec is not None and not _same(codec, "utf-8"):
                raise ConflictingCharsets("the body declares a charset other than UTF-8")
