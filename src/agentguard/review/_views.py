"""Other readings of a body that a consumer may see, checked besides the plain one.

A reviewer reads text decoded as UTF-8; the app, the upstream or the model may read the same
bytes differently: a JSON parser decodes ``\\u0045`` and ``\\t`` escapes whatever the declared
content type (and inside an SSE stream), and auto-detects UTF-16 or UTF-32 from the first bytes
(RFC 8259's detection, which ``json.loads`` applies to bytes). Each such reading is reviewed
too; what a reviewer flags there (a block, or a redaction it cannot apply to the original
bytes) blocks the body. All linear in the text: string methods and one regex without
repetition inside repetition.
"""

from __future__ import annotations

import codecs
import json
import re

__all__ = ["byte_readings", "text_readings", "wide_codec"]

_ESCAPE = re.compile(r"\\(?:u([0-9A-Fa-f]{4})|([\"\\/bfnrt]))")
_SIMPLE = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)


def _unescaped(match: re.Match[str]) -> str:
    code, simple = match.group(1), match.group(2)
    return chr(int(code, 16)) if code is not None else _SIMPLE[simple]


def text_readings(text: str) -> list[str]:
    """``text`` with JSON escapes decoded, and with NULs removed (ASCII in UTF-16/32), when
    either differs from it."""
    readings: list[str] = []
    if "\\" in text:
        unescaped = _ESCAPE.sub(_unescaped, text)
        if unescaped != text:
            readings.append(unescaped)
    if "\x00" in text:
        stripped = text.replace("\x00", "")
        readings.append(stripped)
        if "\\" in stripped:  # escapes inside UTF-16/32 text read as UTF-8
            unescaped = _ESCAPE.sub(_unescaped, stripped)
            if unescaped != stripped:
                readings.append(unescaped)
    return readings


def wide_codec(head: bytes) -> str | None:
    """The UTF-16/32 codec ``head`` (a body's first bytes) announces by byte-order mark or by
    the NUL pattern JSON parsers detect; ``None`` for a body that reads as UTF-8."""
    codec = next((name for mark, name in _BOMS if head.startswith(mark)), None)
    if codec is None and len(head) >= 2:
        detected = json.detect_encoding(head[:4])
        codec = None if detected in ("utf-8", "utf-8-sig") else detected
    return codec


def byte_readings(body: bytes) -> list[str]:
    """``body`` decoded as UTF-16 or UTF-32 when its first bytes say so (a byte-order mark, or
    the NUL pattern JSON parsers detect); empty for a body that reads as UTF-8."""
    codec = wide_codec(body[:4])
    if codec is None:
        return []
    text = body.decode(codec, "replace").lstrip("\ufeff")
    return [text, *text_readings(text)]
