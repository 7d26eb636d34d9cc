"""Catching a real credential that an upstream echoes back, before the agent reads it.

Vendors echo keys ("Incorrect API key provided: sk-...") and refreshed tokens flow back in
bodies. The scanner looks for each secret in its raw, base64, base64url, hex, URL-encoded and
JSON-escaped forms, and for its first and last 12 characters when it is long enough, in headers
and in a streamed body (a form split across two chunks is still found: the stream scanner holds
back enough bytes to see across the boundary).
"""

from __future__ import annotations

from collections.abc import Iterable

from agentguard.secret import encoded_forms

__all__ = ["EchoScanner", "SecretEchoed", "StreamScanner", "secret_forms"]


class SecretEchoed(Exception):
    """A secret was found where it must not be; the message never includes it."""


def secret_forms(secret: str) -> set[bytes]:
    """The byte strings whose presence reveals ``secret`` (see ``agentguard.secret``)."""
    return {form.encode("utf-8", "surrogateescape") for form in encoded_forms(secret)}


class EchoScanner:
    """Finds any form of any of ``secrets`` in bytes."""

    def __init__(self, secrets: Iterable[str]) -> None:
        forms: set[bytes] = set()
        for secret in secrets:
            forms |= secret_forms(secret)
        self.forms = tuple(sorted(forms, key=len, reverse=True))
        self.longest = max((len(form) for form in self.forms), default=0)

    def found_in(self, data: bytes) -> bool:
        """Whether ``data`` contains a form of a secret."""
        return any(form in data for form in self.forms)

    def check_headers(self, headers: Iterable[tuple[bytes, bytes]]) -> None:
        """Raise :class:`SecretEchoed` if a header value contains a secret."""
        for _, value in headers:
            if self.found_in(value):
                raise SecretEchoed("a response header carries a credential")

    def stream(self) -> StreamScanner:
        """A scanner for one streamed body."""
        return StreamScanner(self)


class StreamScanner:
    """Scans a body chunk by chunk and releases only bytes that can no longer start a match."""

    def __init__(self, scanner: EchoScanner) -> None:
        self.scanner = scanner
        self._held = b""

    def feed(self, chunk: bytes) -> bytes:
        """Scan ``chunk``; return the bytes safe to send now (raises :class:`SecretEchoed`)."""
        data = self._held + chunk
        if self.scanner.found_in(data):
            raise SecretEchoed("the response body carries a credential")
        keep = self.scanner.longest - 1
        if keep <= 0:
            self._held = b""
            return data
        self._held = data[-keep:]
        return data[:-keep]

    def finish(self) -> bytes:
        """The held-back tail, once the body has ended (already scanned)."""
        held, self._held = self._held, b""
        return held
