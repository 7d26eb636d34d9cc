"""Finding an agentguard key anywhere in a request that is about to go upstream.

The proxy takes our placeholder out of the vendor-native credential position and puts the real
credential there. An agentguard key anywhere else (the path, the query, another header's name or
value, the body) would hand the vendor a live gateway key, so the proxy refuses such a request
before anything goes upstream. :class:`KeyScanner` looks for:

- every form of the key the agent presented (:func:`agentguard._secret.encoded_forms`: raw,
  base64/base64url at each alignment, hex, percent-encoded, JSON-escaped, long fragments). For a
  well-formed key only its fragments are searched as strings: each whole encoding of it decodes
  to a key shape, which the scans below find (``tests/unit/test_credentials_keyscan.py`` checks
  every form in any bytes around it), and computing its forms cost about 50 µs per request;
  anything else the agent presented is searched in its every form, via
  :func:`~agentguard.credentials.secret_forms`;
- any key-shaped string (``ag_at_``/``ag_rt_`` + 49 base62 characters: a refresh key in another
  header is as bad as the access key), raw or inside up to three layers of percent-encoding
  and JSON ``\\u`` escapes in any order, base64/base64url runs (at every alignment, wrapped or
  grouped with any whitespace) and hex runs.

Every part is also read with its NUL bytes removed (UTF-16 or UTF-32 text, a key interleaved
with NULs). A body is read, besides as bytes, the way the vendor will read it: decoded from the
charset :func:`agentguard._body_charset.body_encoding` chooses (a byte-order mark, the declared
``charset``, an XML or HTML declaration, JSON's NUL sniffing) and re-encoded as UTF-8, so a key in
UTF-16, UTF-32, EBCDIC or UTF-7 is found too.

A streamed body is scanned chunk by chunk with the hold-back technique of
:class:`~agentguard.credentials.StreamScanner`: enough trailing bytes are kept to see a form
split across two chunks (four times as many when the body is decoded: a UTF-32 character is four
bytes).
"""

from __future__ import annotations

import base64
import binascii
import codecs
import re
from collections.abc import Iterable, Iterator
from urllib.parse import unquote_to_bytes

from agentguard._secret import fragment_length
from agentguard.credentials._echo import secret_forms
from agentguard.errors import InvalidRequest, Reason

__all__ = ["KEY_SHAPE", "KeyInRequest", "KeyScanner", "KeyStream"]

KEY_SHAPE = re.compile(rb"ag_(?:at|rt)_[0-9A-Za-z]{49}")
"""A well-formed agentguard key: prefix, 43 body and 6 checksum characters (base62)."""

_KEY_BYTES = 55
# Inside decoded base64 a key may have lost up to two bytes at each end (an aligned substring of
# a longer encoding, with the quanta it shared with its neighbours cut off): "at_" + 47 of it.
_DECODED_SHAPE = re.compile(rb"(?:at|rt)_[0-9A-Za-z]{47}")
# Hex of 55 bytes needs 110 characters.
_BASE64_RUN = re.compile(rb"[A-Za-z0-9+/_-]{16,}(?:\r?\n[A-Za-z0-9+/_-]+)*")
_HEX_RUN = re.compile(rb"[0-9A-Fa-f]{110,}")
_JSON_ESCAPE = re.compile(rb"\\u([0-9A-Fa-f]{4})|\\/")
_URLSAFE = bytes.maketrans(b"-_", b"+/")
# The longest encoding of one key that is still found: eighteen characters per byte (each byte
# percent-encoded, and each character of that JSON-escaped as \u00XX).
_WINDOW = 18 * _KEY_BYTES + 64
_WIDEST = 4  # the most bytes one character takes in a charset a body is decoded from (UTF-32)


class KeyInRequest(InvalidRequest):
    """A request carries an agentguard key outside the credential position (400).

    The message never includes the key, nor says where it was found beyond the part's kind.
    """

    default_reason = Reason.KEY_OUTSIDE_CREDENTIAL_POSITION


def _json_unescape(data: bytes) -> bytes:
    def one(match: re.Match[bytes]) -> bytes:
        if match.group(1) is None:
            return b"/"
        code = int(match.group(1), 16)
        return bytes([code]) if code < 0x80 else b"?"

    return _JSON_ESCAPE.sub(one, data)


_WHITESPACE = re.compile(rb"(?:=\r?\n|\s)+")  # whitespace, and quoted-printable soft breaks
_LAYERS = 3  # percent-encoding and JSON escaping undone up to three layers, in any order


def _views(data: bytes) -> Iterator[bytes]:
    """``data`` with up to three layers of percent-encoding and JSON escaping undone, in any
    order, each view also with every whitespace byte removed (base64 or hex wrapped with
    indentation, grouped with spaces)."""
    seen = {data}
    layer = [data]
    for depth in range(_LAYERS + 1):
        following: list[bytes] = []
        for view in layer:
            yield view
            if _WHITESPACE.search(view):
                yield _WHITESPACE.sub(b"", view)
            if depth == _LAYERS:
                continue
            for decoded in (
                unquote_to_bytes(view) if b"%" in view else view,
                _json_unescape(view) if b"\\" in view else view,
            ):
                if decoded not in seen:
                    seen.add(decoded)
                    following.append(decoded)
        layer = following


def _decoded_runs(view: bytes) -> Iterator[bytes]:
    for match in _BASE64_RUN.finditer(view):
        run = match.group().replace(b"\r", b"").replace(b"\n", b"").translate(_URLSAFE)
        if len(run) < 66:  # 50 bytes ("at_" + 47) need at least 67 characters
            continue
        for offset in range(4):
            piece = run[offset:]
            rest = len(piece) % 4  # a last partial quantum still holds whole bytes: pad it
            piece = piece[:-1] if rest == 1 else piece + b"=" * ((4 - rest) % 4)
            yield base64.b64decode(piece)
    for match in _HEX_RUN.finditer(view):
        run = match.group()
        for offset in range(2):
            usable = len(run) - offset
            try:
                yield binascii.unhexlify(run[offset : offset + usable - usable % 2])
            except binascii.Error:  # pragma: no cover - the regex admits only hex digits
                continue


def _forms_beyond_shapes(key: str) -> set[bytes]:
    """The forms of a presented ``key`` that the key-shape scans may miss.

    A well-formed key's raw, base64, hex, percent and JSON forms all show a key shape once
    decoded, so only its first and last fragments remain; any other string keeps every form.
    """
    raw = key.encode("utf-8", "surrogateescape")
    size = fragment_length(len(key))
    if size is not None and KEY_SHAPE.fullmatch(raw):
        return {raw[:size], raw[-size:]}
    return secret_forms(key)


class KeyScanner:
    """Finds agentguard keys in request parts (see the module docstring).

    Args:
        presented: the key(s) the agent presented; their every encoded form is searched.
    """

    def __init__(self, presented: Iterable[str] = ()) -> None:
        forms: set[bytes] = set()
        for key in presented:
            if key:
                forms |= _forms_beyond_shapes(key)
        self._forms = tuple(sorted(forms, key=len, reverse=True))
        self.window = max([_WINDOW, *(len(form) for form in self._forms)])

    def found_in(self, data: bytes) -> bool:
        """Whether ``data`` contains a key, raw or encoded, also once its NULs are removed."""
        if self._found(data):
            return True
        return b"\0" in data and self._found(data.replace(b"\0", b""))

    def _found(self, data: bytes) -> bool:
        for view in _views(data):
            if KEY_SHAPE.search(view) or any(form in view for form in self._forms):
                return True
            for decoded in _decoded_runs(view):  # the presented key is a key shape too
                if _DECODED_SHAPE.search(decoded):
                    return True
                if b"\0" in decoded and _DECODED_SHAPE.search(decoded.replace(b"\0", b"")):
                    return True  # base64 of UTF-16 or UTF-32 text
        return False

    def check(self, data: bytes, where: str) -> None:
        """Raise :class:`KeyInRequest` if ``data`` (the request's ``where``) carries a key."""
        if self.found_in(data):
            raise KeyInRequest(
                f"the request carries an agentguard key outside the credential position"
                f" (in the {where}); send it only where the vendor expects its key"
            )

    def check_request(self, target: bytes, headers: Iterable[tuple[bytes, bytes]]) -> None:
        """Check the request target and every header name and value that would go upstream.

        One scan of all the parts joined by ``\\n`` finds whatever a scan of each part finds: a
        line feed is never inside a percent or JSON escape, so every view of a part is a
        substring of the same view of the joined parts, and base64 and hex runs that merge
        across parts are decoded at every alignment (the first two bytes of a base64 quantum
        depend on its first three characters only, so a key at the end of a merged run decodes
        as it does alone). Only when it finds a key are the parts scanned one by one, to name
        where; a key only the joined scan sees (split across parts) is refused as well.
        """
        pairs = list(headers)
        parts = [target]
        for name, value in pairs:
            parts += (name, value)
        joined = b"\n".join(parts)
        if not self.found_in(joined):
            return
        self.check(target, "URL")
        for name, value in pairs:
            self.check(name, "header names")
            self.check(value, "headers")
        self.check(joined, "headers")

    def check_body(self, body: bytes, encoding: str | None = None) -> None:
        """Check a whole body as bytes and, when ``encoding`` is given, decoded from it."""
        self.check(body, "body")
        if encoding is not None:
            self.check(body.decode(encoding, "replace").encode("utf-8", "replace"), "body")

    def stream(self, encoding: str | None = None) -> KeyStream:
        """A scanner for one streamed body (also read decoded from ``encoding``, if given)."""
        return KeyStream(self, encoding)


class KeyStream:
    """Scans a body chunk by chunk, holding back enough bytes to see across chunk boundaries.

    With an ``encoding``, each chunk is also decoded and the decoded text scanned with its own
    window; the raw hold-back then covers the widest character, so no byte of a key is
    released before the decoded view has seen the key whole.
    """

    def __init__(self, scanner: KeyScanner, encoding: str | None = None) -> None:
        self.scanner = scanner
        self._held = b""
        self._keep = scanner.window - 1
        self._decoder: codecs.IncrementalDecoder | None = None
        self._text = b""
        if encoding is not None:
            self._decoder = codecs.getincrementaldecoder(encoding)("replace")
            self._keep = _WIDEST * scanner.window

    def feed(self, chunk: bytes) -> bytes:
        """Scan ``chunk``; return the bytes safe to send now (raises :class:`KeyInRequest`)."""
        self._decoded(chunk, final=False)
        data = self._held + chunk
        self.scanner.check(data, "body")
        keep = self._keep
        self._held = data[-keep:]
        return data[:-keep] if len(data) > keep else b""

    def finish(self) -> bytes:
        """The held-back tail, once the body has ended (raises :class:`KeyInRequest`)."""
        self._decoded(b"", final=True)
        held, self._held = self._held, b""
        return held

    def _decoded(self, chunk: bytes, *, final: bool) -> None:
        if self._decoder is None:
            return
        text = self._text + self._decoder.decode(chunk, final).encode("utf-8", "replace")
        self.scanner.check(text, "body")
        self._text = text[-(self.scanner.window - 1) :]
