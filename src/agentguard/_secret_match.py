"""Finding any form of known secrets in text: the matcher the echo scanner and the secret-leak
reviewer share.

:func:`agentguard.secret.encoded_forms` says which strings reveal a secret. A reader can undo
more than those forms, so each is also looked for in the *views* of the text:

- the text with NUL characters removed: UTF-16 or UTF-32 text read as UTF-8 (an ASCII key at
  any alignment), or a key interleaved with NULs;
- the text with line breaks removed (``\\n``, ``\\r``, and their JSON escapes): base64 wrapped
  at 76 characters (MIME, ``base64.encodebytes``) or 64 (PEM), a key wrapped by a terminal;
- each of those with JSON string escapes undone (``\\u0073`` for every character, surrogate
  pairs, ``\\/``), then percent-encoding undone too, then JSON escapes once more where the
  percent-decoding made new ones: both layers, in either order.

A view is made only when its marker (a NUL, a line break, a backslash, a percent sign) is in
the text, so a single line of plain text costs one pass per form. Text that is mostly not UTF-8
(more than one byte in eight invalid: an image, an archive) gets the NUL view only: escapes,
percent signs and line breaks in binary data are noise, and undoing them cost 0.2 s per MiB.
Of a secret's forms only those that contain no other form of the same secret are searched (a
prefix fragment is inside the raw value, a base64 core inside the whole base64): finding any
form is finding the secret.

Streaming: :meth:`SecretMatcher.holdback` says how many trailing characters of a window could
still be the start of a match that the next chunk completes. An unescaped form needs its own
length; each escape introducer (backslash, percent sign) in the tail can stretch a match by at
most 11 characters (``\\ud83d\\ude00`` is 12 characters for one), each NUL or line break by
one. The count is taken over the tail itself until it settles, so a JSON stream with an
occasional ``\\n`` holds back little more than the longest form, and one that escapes every
character holds back enough to see a whole escaped form.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from urllib.parse import unquote_to_bytes

from agentguard.secret import encoded_forms

__all__ = ["SPAN_PER_CHARACTER", "SecretMatcher", "text_views", "unescape_json", "unwrap"]

SPAN_PER_CHARACTER = 48
"""Most characters one character of a form takes in the deepest view searched (a percent-encoded
JSON escape of a surrogate pair, as UTF-32 read as UTF-8); bounds a streamed window."""

_ESCAPE_STRETCH = 11  # an escape is at most 12 characters for one (a \uXXXX\uXXXX pair)
_SLACK = 12  # an escape cut at the end of a window is still held back whole

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


def unescape_json(text: str) -> str:
    """``text`` with JSON string escapes undone, surrogate pairs joined; anything else kept.

    Splits on backslashes (so the cost is in the number of escapes, not of characters) and
    reads each escape as a JSON parser would: ``\\\\`` is one backslash, so the escape after
    it starts afresh.
    """
    if "\\" not in text:
        return text
    parts = text.split("\\")
    out = [parts[0]]
    surrogates = False
    index, count = 1, len(parts)
    while index < count:
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
    plain = "".join(out)
    if surrogates:  # \ud83d\ude00 is one character
        plain = plain.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "surrogatepass")
    return plain


def unwrap(text: str) -> str:
    """``text`` without line breaks, raw or JSON-escaped."""
    for line_break in ("\r", "\n", "\\r", "\\n"):
        text = text.replace(line_break, "")
    return text


def _bytes(text: str) -> bytes:
    """``text`` as the bytes it was decoded from (a lone surrogate that no byte made, say from
    a ``\\ud800`` escape cut at a window's edge, is kept as its own three bytes)."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass")


def _unquote(text: str) -> str:
    # Through bytes: urllib's str unquote splits the text at every non-ASCII run, which is slow
    # on text that is mostly not ASCII; this costs one step per percent sign.
    return unquote_to_bytes(_bytes(text)).decode("utf-8", "surrogateescape")


def _mostly_binary(text: str) -> bool:
    """Whether more than one byte in eight of ``text`` was not UTF-8 (kept as surrogates)."""
    if text.isascii():
        return False
    invalid = len(_bytes(text)) - len(text.encode("utf-8", "ignore"))
    return invalid * 8 > len(text)


def text_views(text: str) -> Iterator[str]:
    """``text`` and each distinct view of it (see the module docstring), ``text`` first.

    Per base text (the text, without NULs, and each of those without line breaks; for mostly
    binary text only the first two, as they are): JSON
    escapes undone when there is a ``\\u`` or ``\\/`` (other escapes make control characters,
    which no form holds); then percent-encoding undone (which also decodes a ``%`` that a
    ``\\u0025`` made); then JSON escapes once more if percent-decoding made new ones
    (``%5Cu0073``).
    """
    bases = [text]
    if "\x00" in text:
        bases.append(text.replace("\x00", ""))
    if _mostly_binary(text):  # an image or an archive: nobody unescapes it
        yield from bases
        return
    if "\n" in text or "\r" in text or "\\n" in text or "\\r" in text:
        bases.extend([unwrap(base) for base in bases])
    for base in bases:
        yield base
        current = base
        if "\\u" in base or "\\/" in base:
            current = unescape_json(base)
            if current != base:
                yield current
        if "%" in current:
            unquoted = _unquote(current)
            if unquoted != current:
                yield unquoted
                if unquoted.count("\\") > current.count("\\"):
                    yield unescape_json(unquoted)


class SecretMatcher:
    """Finds any form of any of ``secrets`` in text, in any of its views.

    Args:
        secrets: the secrets to look for (more with :meth:`add`).
        min_length: secrets shorter than this are ignored, and so are forms shorter than it
            (the secret-leak reviewer's ``min_length``); by default every secret counts.
    """

    def __init__(self, secrets: Iterable[str] = (), *, min_length: int = 1) -> None:
        self.min_length = max(1, min_length)
        self.forms: dict[str, str] = {}  # every form -> the secret it reveals
        self._search: dict[str, str] = {}  # the forms looked for -> the secret
        self._folded: dict[str, str] | None = None  # the same, lower case (made when needed)
        self._secrets: set[str] = set()
        self.longest = 0
        for secret in secrets:
            self.add(secret)

    def __repr__(self) -> str:
        return f"SecretMatcher(secrets={len(self._secrets)}, forms={len(self._search)})"

    def __bool__(self) -> bool:
        return bool(self._search)

    def add(self, secret: str) -> bool:
        """Look for ``secret`` from now on; ``False`` if it is too short or already known."""
        if len(secret) < self.min_length or secret in self._secrets:
            return False
        forms = {form for form in encoded_forms(secret) if len(form) >= self.min_length}
        forms.add(secret)
        for form in forms:
            self.forms.setdefault(form, secret)
        for form in forms:
            if not any(other != form and other in form for other in forms):
                self._search.setdefault(form, secret)
                self.longest = max(self.longest, len(form))
        self._secrets.add(secret)
        self._folded = None
        return True

    def find(self, text: str, *, fold_case: bool = False) -> str | None:
        """The secret that a form in ``text`` (or in a view of it) reveals, or ``None``.

        ``fold_case`` matches regardless of case (for header names, which HTTP lower-cases
        on the way: a key in a name still reaches the agent, in lower case).
        """
        search = self._search
        if fold_case:
            if self._folded is None:
                self._folded = {form.lower(): secret for form, secret in search.items()}
            search, text = self._folded, text.lower()
        if not search:
            return None
        for view in text_views(text):
            for form, secret in search.items():
                if form in view:
                    return secret
        return None

    def forms_in(self, text: str) -> list[str]:
        """Every form present in ``text`` itself (no view), longest first: what to redact."""
        found = [form for form in self.forms if form in text]
        return sorted(found, key=len, reverse=True)

    @property
    def span(self) -> int:
        """The most characters of text one match can cover, in any view."""
        return SPAN_PER_CHARACTER * self.longest + _SLACK if self.longest else 0

    def holdback(self, text: str) -> int:
        """How many trailing characters of ``text`` could begin a match not yet complete.

        A streamed scanner keeps them and scans them again with the next chunk; everything
        before them can be released.
        """
        if not self.longest or not text:
            return 0
        base = self.longest - 1 + _SLACK
        keep = base
        cap = self.span
        while True:
            tail = text[-keep:]
            escapes = tail.count("\\") + tail.count("%")
            removed = tail.count("\x00") + tail.count("\n") + tail.count("\r")
            needed = base + _ESCAPE_STRETCH * escapes + removed
            if needed <= keep or keep >= cap or keep >= len(text):
                return min(keep, len(text))
            keep = min(needed, cap)
