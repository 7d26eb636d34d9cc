"""The views of a text in which :class:`~agentguard._secret_match.SecretMatcher` looks for a
secret's forms: what a reader who undoes escapes, percent-encoding, NULs or whitespace sees.

- the text with NUL characters removed: UTF-16 or UTF-32 text read as UTF-8 (an ASCII key at
  any alignment), or a key interleaved with NULs;
- the text with all whitespace removed (ASCII and Unicode, and the JSON escapes ``\\n``,
  ``\\r``, ``\\t``): base64 wrapped at any width, with or without indentation after each line
  break (YAML block scalars, pretty-printed XML, folded headers), or in groups separated by
  spaces (Python's ``base64.b64decode`` skips every character outside the alphabet); a key
  wrapped by a terminal;
- each of those with JSON string escapes undone (``\\u0073`` for every character, surrogate
  pairs, ``\\/``) and percent-encoding undone, in both orders and repeated up to
  :data:`ROUNDS` times until nothing changes (``\\u0025\\u0034\\u0031`` is ``%41`` is ``A``;
  ``%5Cu0041`` is ``\\u0041`` is ``A``); whitespace that the decoding revealed (``%0A``
  between base64 lines) is removed from the last of them.

A view is made only when its marker (a NUL, whitespace, a backslash, a percent sign) is in the
text, so a single line of plain text costs one pass. Text that is mostly not UTF-8 (more than
one byte in eight invalid: an image, an archive) gets the NUL view only: escapes, percent
signs and whitespace in binary data are noise.

False positives: removing whitespace joins words, so a form (16 characters or more of base64,
hex, or 8 or more of a secret's first or last characters) could appear across a word boundary
by chance; for random keys of the lengths vendors use this does not happen in practice.

:func:`view_steps` is the one definition: it yields each view and, between bounded pieces of
work (at most :data:`STEP` characters or :data:`BATCH` escapes), ``None``, where an
asynchronous caller hands the event loop back. :func:`text_views` is the same without pauses.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator

__all__ = ["BATCH", "ROUNDS", "STEP", "text_views", "unescape_json", "unwrap", "view_steps"]

STEP = 64 * 1024
"""Characters of view building or matching between two pauses."""

BATCH = 2048
"""Escapes (backslashes or percent signs) decoded between two pauses."""

ROUNDS = 3
"""How many times each decoding (JSON escapes, percent-encoding) is applied, at most."""

_SIMPLE_ESCAPES = {
    '"': '"',
    "/": "/",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
}
_HEX = frozenset("0123456789abcdefABCDEF")
_HEX_TO_BYTE = {
    (a + b).encode(): bytes([int(a + b, 16)]) for a in "0123456789abcdefABCDEF" for b in _HEX
}
_WHITESPACE = (" ", "\t", "\n", "\r", "\x0b", "\x0c", "\\n", "\\r", "\\t")

Steps = Generator[None, None, str]


def _unescape_steps(text: str) -> Steps:
    parts = text.split("\\")
    out = [parts[0]]
    surrogates = False
    index, count = 1, len(parts)
    while index < count:
        if index % BATCH == 0:
            yield
        part = parts[index]
        index += 1
        if not part:  # "\\\\": an escaped backslash; the text after the second one is plain
            out.append("\\")
            if index < count:
                out.append(parts[index])
                index += 1
            continue
        first = part[0]
        if first == "u" and len(part) >= 5 and _HEX.issuperset(part[1:5]):
            code = int(part[1:5], 16)
            surrogates = surrogates or 0xD800 <= code < 0xE000
            out.extend((chr(code), part[5:]))
        elif first in _SIMPLE_ESCAPES:
            out.extend((_SIMPLE_ESCAPES[first], part[1:]))
        else:  # not an escape a JSON parser accepts: keep it as it was
            out.extend(("\\", part))
    yield
    plain = "".join(out)
    if surrogates:  # \ud83d\ude00 is one character
        plain = plain.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "surrogatepass")
    return plain


def _drain(steps: Steps) -> str:
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return str(done.value)


def unescape_json(text: str) -> str:
    """``text`` with JSON string escapes undone, surrogate pairs joined; anything else kept.

    Splits on backslashes (so the cost is in the number of escapes, not of characters) and
    reads each escape as a JSON parser would: ``\\\\`` is one backslash, so the escape after
    it starts afresh.
    """
    return _drain(_unescape_steps(text)) if "\\" in text else text


def _bytes(text: str) -> bytes:
    """``text`` as the bytes it was decoded from (a lone surrogate that no byte made, say from
    a ``\\ud800`` escape cut at a window's edge, is kept as its own three bytes)."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass")


def _unquote_steps(text: str) -> Steps:
    # urllib's unquote_to_bytes, in batches: one step per percent sign, through bytes (its str
    # version splits the text at every non-ASCII run, which is slow on text mostly not ASCII).
    parts = _bytes(text).split(b"%")
    yield
    out = [parts[0]]
    for index in range(1, len(parts)):
        if index % BATCH == 0:
            yield
        part = parts[index]
        byte = _HEX_TO_BYTE.get(part[:2])
        out.append(b"%" + part if byte is None else byte + part[2:])
    yield
    return b"".join(out).decode("utf-8", "surrogateescape")


def _strip_steps(text: str) -> Steps:
    for escaped in ("\\n", "\\r", "\\t"):
        text = text.replace(escaped, "")
    pieces = []
    for start in range(0, len(text), STEP):
        if start:
            yield
        pieces.append("".join(text[start : start + STEP].split()))
    return "".join(pieces)


def unwrap(text: str) -> str:
    """``text`` without whitespace (ASCII and Unicode) and without JSON-escaped line breaks
    and tabs."""
    return _drain(_strip_steps(text))


def _has_whitespace(text: str) -> bool:
    return any(mark in text for mark in _WHITESPACE)


def _mostly_binary(text: str) -> bool:
    """Whether more than one byte in eight of ``text`` was not UTF-8 (kept as surrogates)."""
    if text.isascii():
        return False
    invalid = len(_bytes(text)) - len(text.encode("utf-8", "ignore"))
    return invalid * 8 > len(text)


def _json_marked(text: str) -> bool:
    # \b \f \n \r \t make control characters, which no form holds; \" and \\ make characters
    # a form of a secret holding them has (escaped once more in a JSON document in a string).
    return any(mark in text for mark in ("\\u", "\\/", '\\"', "\\\\"))


def _percent_marked(text: str) -> bool:
    return "%" in text


def _decode_once(
    kind: int, decode: Callable[[str], Steps], text: str, cache: dict[tuple[int, str], str]
) -> Steps:
    """``decode(text)``, remembered: the chains and :func:`_layered` share their first steps."""
    found = cache.get((kind, text))
    if found is None:
        found = yield from decode(text)
        cache[(kind, text)] = found
    return found


def _layered(base: str, seen: set[str], cache: dict[tuple[int, str], str]) -> Iterator[str | None]:
    """Every view reached by up to :data:`ROUNDS` decodings in any sequence (``J J P`` too).

    Alternating chains (below) miss a sequence that repeats one decoding before the other: a
    backslash before a JSON-escaped, percent-encoded secret pairs with the first escape, so it
    takes JSON, JSON, then percent. Texts already expanded are not expanded again, and a
    decoding that changes nothing or whose marker is absent is not taken: a body with one kind
    of marker costs what it did.
    """
    steps = ((_json_marked, _unescape_steps), (_percent_marked, _unquote_steps))
    level = [base]
    expanded = {base}
    for _ in range(ROUNDS):
        following: list[str] = []
        for text in level:
            for kind, (marked, decode) in enumerate(steps):
                if not marked(text):
                    continue
                decoded = yield from _decode_once(kind, decode, text, cache)
                yield None
                if decoded == text or decoded in expanded:
                    continue
                expanded.add(decoded)
                following.append(decoded)
                if decoded not in seen:
                    seen.add(decoded)
                    yield decoded
        level = following


def _decoded(base: str, seen: set[str]) -> Iterator[str | None]:
    """The views of ``base`` with escapes and percent-encoding undone, in every order.

    Each decoding is repeated while its marker is still there and it changes the text (a
    JSON document inside a JSON string is escaped twice), alternating with the other, at most
    :data:`ROUNDS` times each per order: the usual body costs one pass of each. Mixed bodies
    also get every sequence of up to :data:`ROUNDS` decodings (:func:`_layered`).
    """
    steps = ((_json_marked, _unescape_steps), (_percent_marked, _unquote_steps))
    cache: dict[tuple[int, str], str] = {}
    orders = [steps, steps[::-1]] if all(marked(base) for marked, _ in steps) else [steps]
    for order in orders:
        current = base
        fixed: dict[int, str] = {}  # decoding -> a text it left unchanged
        for index, (marked, decode) in enumerate(order * ROUNDS):
            kind = index % 2
            if fixed.get(kind) is current or not marked(current):
                continue
            decoded = yield from _decode_once(steps.index((marked, decode)), decode, current, cache)
            yield None
            if decoded == current:
                fixed[kind] = current
                continue
            current = decoded
            if decoded not in seen:
                seen.add(decoded)
                yield decoded
        if current is not base and _has_whitespace(current):  # %0A between base64 lines
            stripped = yield from _strip_steps(current)
            if stripped not in seen:
                seen.add(stripped)
                yield stripped
    if _json_marked(base):  # JSON escapes may hide a layer under them, or pair with a backslash
        yield from _layered(base, seen, cache)


def view_steps(text: str) -> Iterator[str | None]:
    """``text`` and each distinct view of it, ``text`` first, with ``None`` between bounded
    pieces of work (see the module docstring).

    Decoding starts from the text without NULs (a form holds none, so removing them first
    loses nothing and finds escapes interleaved with NULs); whitespace is removed from the
    text (and without NULs) as it is and from the last view of each decoding.
    """
    yield text
    seen = {text}
    bare = text.replace("\x00", "") if "\x00" in text else text
    if bare is not text:
        seen.add(bare)
        yield bare
    if _mostly_binary(text):  # an image or an archive: nobody unescapes it
        return
    if _has_whitespace(text):
        for base in dict.fromkeys((text, bare)):
            stripped = yield from _strip_steps(base)
            if stripped not in seen:
                seen.add(stripped)
                yield stripped
    yield None
    yield from _decoded(bare, seen)


def text_views(text: str) -> Iterator[str]:
    """``text`` and each distinct view of it (see the module docstring), ``text`` first."""
    return (view for view in view_steps(text) if view is not None)
