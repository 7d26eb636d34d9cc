"""Catching a real credential that an upstream echoes back, before the agent reads it.

Vendors echo keys ("Incorrect API key provided: sk-...") and refreshed tokens flow back in
bodies. The scanner looks for every secret of the call in every form
:func:`agentguard._secret.encoded_forms` lists (raw; base64 and base64url at each alignment,
padded or not; hex; percent-encoded; JSON-escaped; leading and trailing fragments of long
secrets) and in every view :mod:`agentguard._secret_views` makes (JSON escapes and
percent-encoding undone in either order, interleaved NULs and whitespace removed), all forms in
one Aho-Corasick pass per view: in header names and values, and in a body, whole or streamed.

Bytes are read as UTF-8 (undecodable bytes kept as they are); the relay has already turned a
body in another charset into UTF-8. A streamed body is scanned window by window: each window is
what the previous one held back plus the new chunk, and only the bytes that can no longer be
the start of a match are released (:meth:`SecretMatcher.holdback`), so a form split across
chunks, however escaped, is seen whole before any of it is sent.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterable

from agentguard._secret import encoded_forms
from agentguard._secret_match import Pause, SecretMatcher
from agentguard.errors import AgentGuardError

__all__ = ["EchoScanner", "SecretEchoed", "StreamScanner", "secret_forms"]


class SecretEchoed(AgentGuardError):
    """A secret was found where it must not be; the message never includes it."""


def secret_forms(secret: str) -> set[bytes]:
    """The byte strings whose presence reveals ``secret`` (see ``agentguard._secret``)."""
    return {form.encode("utf-8", "surrogateescape") for form in encoded_forms(secret)}


def _text(data: bytes | str) -> str:
    return data if isinstance(data, str) else data.decode("utf-8", "surrogateescape")


class EchoScanner:
    """Finds any form of any of ``secrets`` in bytes (or text).

    ``longest`` is the longest form searched, ``span`` the most characters one match can cover
    in any view (a bound for a caller's own windows).
    """

    def __init__(self, secrets: Iterable[str]) -> None:
        self.matcher = SecretMatcher(secrets)
        self.longest = self.matcher.longest
        self.span = self.matcher.span

    def __repr__(self) -> str:
        return f"EchoScanner({self.matcher!r})"

    @property
    def forms(self) -> tuple[bytes, ...]:
        """Every form of every secret, longest first."""
        return tuple(
            sorted(
                (form.encode("utf-8", "surrogateescape") for form in self.matcher.forms),
                key=len,
                reverse=True,
            )
        )

    def found_in(self, data: bytes | str) -> bool:
        """Whether ``data`` contains a form of a secret, in any view."""
        return self.matcher.find(_text(data)) is not None

    def check_headers(self, headers: Iterable[tuple[bytes, bytes]]) -> None:
        """Raise :class:`SecretEchoed` if a header's name (in any case: names are lower-cased
        on the way) or value contains a secret."""
        for name, value in headers:
            if self.matcher.find(_text(name), fold_case=True) is not None or self.found_in(value):
                raise SecretEchoed("a response header carries a credential")

    def check_body(self, body: bytes) -> None:
        """Raise :class:`SecretEchoed` if a whole body contains a secret."""
        if self.found_in(body):
            raise SecretEchoed("the response body carries a credential")

    async def check_body_stepwise(self, body: bytes, pause: Pause) -> None:
        """:meth:`check_body` in bounded steps, awaiting ``pause()`` between them (pass
        ``anyio.lowlevel.checkpoint`` so a large body does not hold up the event loop)."""
        if await self.matcher.find_stepwise(_text(body), pause) is not None:
            raise SecretEchoed("the response body carries a credential")

    def stream(self) -> StreamScanner:
        """A scanner for one streamed body."""
        return StreamScanner(self)


class StreamScanner:
    """Scans a body chunk by chunk and releases only bytes that can no longer start a match."""

    def __init__(self, scanner: EchoScanner) -> None:
        self.scanner = scanner
        self._decoder = codecs.getincrementaldecoder("utf-8")("surrogateescape")
        self._held_text = ""
        self._held = b""

    def feed(self, chunk: bytes) -> bytes:
        """Scan ``chunk``; return the bytes safe to send now (raises :class:`SecretEchoed`)."""
        return self._scan(chunk, final=False)

    def finish(self) -> bytes:
        """The held-back tail, once the body has ended (raises :class:`SecretEchoed`)."""
        return self._scan(b"", final=True)

    def _scan(self, chunk: bytes, *, final: bool) -> bytes:
        matcher = self.scanner.matcher
        window = self._held_text + self._decoder.decode(chunk, final)
        if matcher.find(window) is not None:
            raise SecretEchoed("the response body carries a credential")
        data = self._held + chunk
        if final:
            self._held_text, self._held = "", b""
            return data
        keep = matcher.holdback(window)
        self._held_text = window[len(window) - keep :]
        pending = len(self._decoder.getstate()[0])  # a character cut at the chunk's end
        held = len(self._held_text.encode("utf-8", "surrogateescape")) + pending
        cut = len(data) - held
        self._held = data[cut:]
        return data[:cut]
