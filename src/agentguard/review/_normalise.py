"""How reviewers see text: normalised, and split into the fields a structured body holds.

Injection rules match the *normalised* text, so look-alike characters do not slip past them:
NFKC (fullwidth and mathematical letters become ASCII), zero-width and bidi controls removed,
Unicode tag characters (U+E0020-U+E007E, used to smuggle invisible ASCII) turned back into the
ASCII they encode, common Cyrillic and Greek homoglyphs folded to Latin, then lower case.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Callable, Iterator
from urllib.parse import parse_qsl, urlencode

from agentguard.review._budget import checkpoint
from agentguard.review._linear import LinearPattern, Subject

__all__ = [
    "HIDDEN_CHARACTERS",
    "normalise",
    "normalise_stepwise",
    "rewrite_fields",
    "text_fields",
    "unescape_json_text",
]

HIDDEN_CHARACTERS = frozenset(
    [chr(c) for c in range(0x200B, 0x2010)]
    + [chr(c) for c in range(0x202A, 0x202F)]
    + [chr(c) for c in range(0x2060, 0x2065)]
    + [chr(c) for c in range(0x2066, 0x206A)]
    + ["\ufeff", "\u00ad", "\u180e", "\u034f"]
    + [chr(c) for c in range(0xE0000, 0xE0080)]
)
"""Characters that render as nothing: zero-width, bidi controls, soft hyphen, tag characters."""

# Cyrillic and Greek letters that look Latin, and Latin look-alikes that NFKC keeps (escaped
# so the source shows what they are).
_LOOKALIKES = (
    "\u0430\u0432\u0435\u043a\u043c\u043d\u043e\u0440\u0441\u0442\u0443\u0445"
    "\u0456\u0458\u0455\u0501\u04cf\u051b\u051d\u0410\u0412\u0415\u041a\u041c"
    "\u041d\u041e\u0420\u0421\u0422\u0425\u0406\u0408\u0405\u03b1\u03b5\u03b9"
    "\u03ba\u03bd\u03bf\u03c1\u03c4\u03c5\u03c7\u0391\u0392\u0395\u0397\u0399"
    "\u039a\u039c\u039d\u039f\u03a1\u03a4\u03a5\u03a7\u0396\u0261\u0131\u0237"
    "\u2113"
)
_LATIN = "abekmhopctyxijsdlqwabekmhopctxijsaeikvoptuxabehikmnoptyxzgijl"
_HOMOGLYPHS = dict(zip(_LOOKALIKES, _LATIN, strict=True))
_TRANSLATE: dict[int, str | None] = {ord(k): v for k, v in _HOMOGLYPHS.items()}
for _hidden in HIDDEN_CHARACTERS:
    _code = ord(_hidden)
    _TRANSLATE[_code] = chr(_code - 0xE0000) if 0xE0020 <= _code <= 0xE007E else None
# The same mapping as a list indexed by code point for the Basic Multilingual Plane: str.translate
# looks a list up about twice as fast as a dict (characters past its end are left as they are).
_BMP: list[int | str | None] = list(range(0x10000))
for _code, _value in _TRANSLATE.items():
    if _code < 0x10000:
        _BMP[_code] = _value


def _class(codes: list[int]) -> str:
    return "[" + "".join(f"\\x{{{code:x}}}" for code in sorted(codes)) + "]"


_MAPPED = LinearPattern(_class(list(_TRANSLATE)))


def _fold(text: str) -> str:
    if text.isascii() or _MAPPED.search(text) is None:
        return text
    if len(text.encode("utf-16-le", "surrogatepass")) > 2 * len(text):  # beyond the BMP
        return text.translate(_TRANSLATE)
    return text.translate(_BMP)


def normalise(text: str) -> str:
    """The text injection rules match: NFKC, hidden characters handled, homoglyphs folded."""
    if text.isascii():
        return text.lower()
    # Tag characters first, so NFKC cannot touch them; then NFKC; then fold again (NFKC can
    # produce a homoglyph, e.g. a fullwidth Cyrillic letter).
    folded = unicodedata.normalize("NFKC", _fold(text))
    return _fold(folded).lower()


_ASCII = LinearPattern(r"[\x00-\x7f]")


def _fold_in_steps(text: str, size: int) -> Iterator[str]:
    # Folding maps each character on its own: any cut is safe.
    for start in range(0, len(text), size):
        yield _fold(text[start : start + size])


def _nfkc_in_steps(text: str, size: int) -> Iterator[str]:
    # NFKC never composes or reorders across an ASCII character (a starter that nothing
    # combines with), so the text is cut just before one; a run without ASCII is one piece.
    subject = Subject(text)
    start = 0
    while len(text) - start > size:
        found = _ASCII.search(subject, start + size)
        if found is None:
            break
        yield unicodedata.normalize("NFKC", text[start : found.start()])
        start = found.start()
    yield unicodedata.normalize("NFKC", text[start:])


async def normalise_stepwise(text: str, size: int = 64 * 1024) -> str:
    """:func:`normalise`, in steps of about ``size`` characters with a
    :func:`~agentguard.review.checkpoint` between them, so other requests run and the
    reviewer's deadline can fire. The result is exactly ``normalise(text)``."""
    if text.isascii():
        return text.lower()
    pieces: list[str] = []
    for piece in _fold_in_steps(text, size):
        pieces.append(piece)
        await checkpoint()
    folded = "".join(pieces)
    if not folded.isascii():
        pieces = []
        for piece in _nfkc_in_steps(folded, size):
            pieces.append(piece)
            await checkpoint()
        composed = "".join(pieces)
        pieces = []
        for piece in _fold_in_steps(composed, size):
            pieces.append(piece)
            await checkpoint()
        folded = "".join(pieces)
    return folded.lower()


_Json = None | bool | int | float | str | list["_Json"] | dict[str, "_Json"]


def _strings(node: _Json, out: list[str], keys: bool) -> None:
    if isinstance(node, str):
        out.append(node)
    elif isinstance(node, dict):
        for key, value in node.items():
            if keys:
                out.append(key)
            _strings(value, out, keys)
    elif isinstance(node, list):
        for item in node:
            _strings(item, out, keys)


def _parse_json(content: str) -> _Json:
    try:
        document: _Json = json.loads(content)
    except (ValueError, RecursionError):
        return None
    return document


def text_fields(content_type: str, content: str, *, keys: bool = True) -> list[str] | None:
    """The strings of a JSON or form body in document order; ``None`` for other bodies.

    ``keys=False`` leaves out object keys and form field names (the values only).

    JSON escapes are decoded (so ``\\u003cscript`` is seen as ``<script``), as is form
    encoding. A body that does not parse as its declared type gives ``None``: the caller then
    scans the raw text.
    """
    if content_type == "application/json" or content_type.endswith("+json"):
        if not content.lstrip().startswith(("{", "[", '"')):
            return None
        document = _parse_json(content)
        if document is None:
            return None
        out: list[str] = []
        _strings(document, out, keys)
        return out
    if content_type == "application/x-www-form-urlencoded":
        pairs = parse_qsl(content, keep_blank_values=True)
        return [piece for pair in pairs for piece in (pair if keys else pair[1:])]
    return None


def _rewrite(node: _Json, edit: Callable[[str], str]) -> _Json:
    if isinstance(node, str):
        return edit(node)
    if isinstance(node, dict):
        return {edit(key): _rewrite(value, edit) for key, value in node.items()}
    if isinstance(node, list):
        return [_rewrite(item, edit) for item in node]
    return node


def rewrite_fields(content_type: str, content: str, edit: Callable[[str], str]) -> str | None:
    """The body with ``edit`` applied to every string of a JSON or form body; else ``None``.

    A rewritten JSON body is re-serialised compactly (the document is the same, the
    formatting is not).
    """
    if content_type == "application/json" or content_type.endswith("+json"):
        document = _parse_json(content)
        if document is None and content.strip() != "null":
            return None
        return json.dumps(_rewrite(document, edit), ensure_ascii=False, separators=(",", ":"))
    if content_type == "application/x-www-form-urlencoded":
        pairs = parse_qsl(content, keep_blank_values=True)
        return urlencode([(edit(key), edit(value)) for key, value in pairs])
    return None


_HEX = frozenset("0123456789abcdefABCDEF")


def unescape_json_text(text: str) -> str:
    """Decode ``\\uXXXX`` escapes in text that failed to parse as JSON (a partial stream).

    A split on the escape's prefix and a look at the next four characters: one pass, no
    regular expression, so the cost is linear in the text.
    """
    if "\\u" not in text:
        return text
    first, *rest = text.split("\\u")
    out = [first]
    for part in rest:
        code = part[:4]
        if len(code) == 4 and all(char in _HEX for char in code):
            out.append(chr(int(code, 16)))
            out.append(part[4:])
        else:
            out.append("\\u")
            out.append(part)
    return "".join(out)
