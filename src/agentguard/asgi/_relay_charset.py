"""Re-encoding a response body as UTF-8 as it is relayed, and checking its declarations.

The relay (:mod:`agentguard.asgi._relay`) chooses one reading of a body
(:func:`~agentguard._body_charset.body_encoding`); these helpers turn the body into that
reading's UTF-8, whole or chunk by chunk, and refuse a text body that still declares another
charset anywhere (:class:`Declarations`, across chunk boundaries too).
"""

from __future__ import annotations

import codecs

from agentguard._body_charset import check_declarations, declare_utf8_in_body
from agentguard._content_type import ContentType

__all__ = ["Declarations", "ToUtf8", "as_is", "declare_utf8"]

_OVERLAP = 2048  # bytes of the previous chunk re-checked for a declaration cut in two


def declare_utf8(
    headers: list[tuple[bytes, bytes]], content_type: ContentType
) -> list[tuple[bytes, bytes]]:
    """``headers`` with the one Content-Type replaced by its canonical UTF-8 form."""
    result = [(name, value) for name, value in headers if name != b"content-type"]
    result.append((b"content-type", content_type.as_utf8().encode("latin-1")))
    return result


class ToUtf8:
    """Decodes a body from its charset as it arrives and re-encodes it as UTF-8; the body's own
    charset declaration at its start is rewritten to UTF-8."""

    def __init__(self, encoding: str) -> None:
        self._decoder = codecs.getincrementaldecoder(encoding)("replace")
        self._first = True

    def __call__(self, chunk: bytes, final: bool = False) -> bytes:
        converted = self._decoder.decode(chunk, final).encode("utf-8", "replace")
        if self._first and converted:
            self._first = False
            converted = declare_utf8_in_body(converted)
        return converted


def as_is(chunk: bytes, final: bool = False) -> bytes:
    return chunk


class Declarations:
    """Checks each piece of a text body for a charset declaration other than UTF-8."""

    def __init__(self, active: bool) -> None:
        self.active = active
        self._tail = b""

    def check(self, piece: bytes) -> None:
        if self.active and piece:
            window = self._tail + piece
            check_declarations(window)
            self._tail = window[-_OVERLAP:]
