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
the start of a match are released (:meth:`EchoScanner.holdback`), so a form split across
chunks, however escaped, is seen whole before any of it is sent.

What is held back is the shortest tail that could still begin a match:

- within the bound :meth:`SecretMatcher.holdback` gives (how far back a match not yet complete
  can start, escapes and removed characters counted), the first character from which the text
  read in a view is the beginning of a form; in plain text that is at most the longest form
  minus one character, and usually nothing (a server-sent event ending in ``}`` and a blank
  line is released whole);
- an escape that may be incomplete at the end (from a backslash or percent sign, followed only
  by characters an escape can hold: ``\\u00``, ``%E2%8``, ``%5Cu``) is held whole;
- where the text before it holds escapes that a view undoes, and that view's end begins a form,
  the whole bound is held (the view's characters cannot be traced back to the text's exactly).
"""

from __future__ import annotations

import bisect
import codecs
import re
from collections import OrderedDict
from collections.abc import Iterable

from agentguard._secret import encoded_forms
from agentguard._secret_match import Pause, SecretMatcher, text_views, unwrap
from agentguard.errors import AgentGuardError

__all__ = ["EchoScanner", "EchoScanners", "SecretEchoed", "StreamScanner", "secret_forms"]


class SecretEchoed(AgentGuardError):
    """A secret was found where it must not be; the message never includes it."""


def secret_forms(secret: str) -> set[bytes]:
    """The byte strings whose presence reveals ``secret`` (see ``agentguard._secret``)."""
    return {form.encode("utf-8", "surrogateescape") for form in encoded_forms(secret)}


def _text(data: bytes | str) -> str:
    return data if isinstance(data, str) else data.decode("utf-8", "surrogateescape")


_INTRODUCERS = frozenset("\\%")
# What an escape not yet complete can hold: JSON's \uXXXX, percent-encoding (also of UTF-8
# sequences and of escapes: %5Cu00), nested, and NULs (UTF-16 read as UTF-8 is decoded
# without them).
_ESCAPE_CHARACTERS = _INTRODUCERS | frozenset("uU0123456789abcdefABCDEF\x00")
_REMOVED_ESCAPES = frozenset("nrt")  # \n \r \t: removed with whitespace in that view
# Characters a decoding may consume or change: a character outside them is in every view as is.
_ESCAPE_BODY = _ESCAPE_CHARACTERS | frozenset('"/bfnrt')


def _open_escape(text: str, start: int) -> int:
    """Where an escape that may still be incomplete at the end of ``text`` begins (not before
    ``start``): the first introducer of the trailing run of escape characters; ``len(text)``
    when there is none."""
    index = opened = len(text)
    while index > start and text[index - 1] in _ESCAPE_CHARACTERS:
        index -= 1
        if text[index] in _INTRODUCERS:
            opened = index
    return opened


def _plain_start(text: str, count: int) -> int:
    """Where the last ``count`` characters of ``text`` without NULs and whitespace begin in
    ``text`` (never after it: every character that a plain view may remove is skipped)."""
    index = len(text)
    while index > 0:
        index -= 1
        character = text[index]
        if character.isspace() or character == "\x00":
            continue
        if character in _REMOVED_ESCAPES and index and text[index - 1] == "\\":
            index -= 1
            continue
        count -= 1
        if count == 0:
            return index
    return 0


class EchoScanner:
    """Finds any form of any of ``secrets`` in bytes (or text).

    ``longest`` is the longest form searched, ``span`` the most characters one match can cover
    in any view (a bound for a caller's own windows).
    """

    def __init__(self, secrets: Iterable[str]) -> None:
        self.matcher = SecretMatcher(secrets)
        self.longest = self.matcher.longest
        self.span = self.matcher.span
        self._sorted = tuple(sorted(self.matcher.forms))  # every form, for prefix look-ups
        self._initials = frozenset(form[0] for form in self._sorted)
        self._characters = frozenset("".join(self._sorted))

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

    def holdback(self, text: str) -> int:
        """How many trailing characters of a streamed window (in which no form was found) to
        hold back: those from the first one that could begin a match the next chunk completes
        (see the module docstring). At most :meth:`SecretMatcher.holdback`; in text without
        whitespace, NULs, backslashes and percent signs, at most :attr:`longest` minus one."""
        bound = self.matcher.holdback(text)
        if not bound:
            return 0
        start = len(text) - bound
        cut = _open_escape(text, start)
        tail = text[start:cut]
        if not tail or self._ends_outside_forms(tail):
            return len(text) - cut
        plain: set[str] | None = None
        for view in text_views(tail):
            found = self._beginning(view)
            if not found:
                continue
            if view is tail:
                begins = cut - found
            else:
                if plain is None:
                    bare = tail.replace("\x00", "")
                    plain = {bare, unwrap(tail), unwrap(bare)}
                begins = start + _plain_start(tail, found) if view in plain else start
            cut = min(cut, begins)
            if cut == start:
                break
        return len(text) - cut

    def _ends_outside_forms(self, tail: str) -> bool:
        """Whether no view of ``tail`` can end inside a form: its last character other than
        whitespace and NULs is one no decoding touches, and neither it nor what follows it
        occurs in any form (so every view ends with a character no form holds).

        The common case of a streamed event (``}`` and a blank line) is decided here, without
        building the views."""
        index = len(tail) - 1
        while index >= 0 and (tail[index].isspace() or tail[index] == "\x00"):
            index -= 1
        if index < 0 or tail[index] in _ESCAPE_BODY:
            return False
        return self._characters.isdisjoint(tail[index:])

    def _beginning(self, view: str) -> int:
        """The length of the longest end of ``view`` that begins a form (0: none)."""
        forms = self._sorted
        for size in range(min(len(view), self.longest - 1), 0, -1):
            if view[-size] not in self._initials:
                continue
            piece = view[-size:]
            index = bisect.bisect_left(forms, piece)
            if index < len(forms) and forms[index].startswith(piece):
                return size
        return 0


class EchoScanners:
    """Compiled echo scanners for the secret sets of recent calls, least recently used dropped.

    Compiling a scanner (every encoded form of every secret, and their automaton) costs more
    than scanning a small response, and a service's calls mostly carry the same few credentials.
    Only the compiled matcher is kept: every response is still scanned in full, and which
    credential a call carries is decided live for each call. A rotated credential's scanner
    stays in memory until ``size`` other secret sets have been used since.
    """

    def __init__(self, size: int = 128) -> None:
        if size < 1:
            raise ValueError("size is at least 1")
        self.size = size
        self._compiled: OrderedDict[frozenset[str], EchoScanner] = OrderedDict()

    def __repr__(self) -> str:
        return f"EchoScanners(size={self.size}, held={len(self._compiled)})"

    def get(self, secrets: frozenset[str]) -> EchoScanner:
        """The scanner for exactly ``secrets`` (compiled now if it is not held)."""
        scanner = self._compiled.get(secrets)
        if scanner is not None:
            self._compiled.move_to_end(secrets)
            return scanner
        scanner = EchoScanner(secrets)
        self._compiled[secrets] = scanner
        if len(self._compiled) > self.size:
            self._compiled.popitem(last=False)
        return scanner


#: What the whitespace view drops: whitespace, NULs and the JSON escapes of line breaks and tabs.
_SQUEEZED = re.compile(r"\s|\x00|\\[nrt]")


class StreamScanner:
    """Scans a body chunk by chunk and releases only bytes that can no longer start a match
    (:meth:`EchoScanner.holdback`); :attr:`held` is how many bytes it holds back now.

    The hold-back is bounded, so a form spread by more whitespace than it holds (a character of
    the key, then 400 spaces, chunk after chunk) would leave before its end arrived. A second
    window keeps the stream *squeezed* (what the whitespace view drops, removed) for the last
    :attr:`EchoScanner.span` characters: such a form is found whole when its last piece comes,
    and that piece is never released.
    """

    def __init__(self, scanner: EchoScanner) -> None:
        self.scanner = scanner
        self._decoder = codecs.getincrementaldecoder("utf-8")("surrogateescape")
        self._held_text = ""
        self._held = b""
        self._squeezed = ""

    @property
    def held(self) -> int:
        """Bytes received but not yet released (a match may begin in them)."""
        return len(self._held)

    def feed(self, chunk: bytes) -> bytes:
        """Scan ``chunk``; return the bytes safe to send now (raises :class:`SecretEchoed`)."""
        return self._scan(chunk, final=False)

    def finish(self) -> bytes:
        """The held-back tail, once the body has ended (raises :class:`SecretEchoed`)."""
        return self._scan(b"", final=True)

    def _scan(self, chunk: bytes, *, final: bool) -> bytes:
        matcher = self.scanner.matcher
        text = self._decoder.decode(chunk, final)
        window = self._held_text + text
        if matcher.find(window) is not None:
            raise SecretEchoed("the response body carries a credential")
        squeezed = self._squeezed + _SQUEEZED.sub("", text)
        if squeezed != self._squeezed and matcher.find(squeezed) is not None:
            raise SecretEchoed("the response body carries a credential")
        self._squeezed = squeezed[-self.scanner.span :]
        data = self._held + chunk
        if final:
            self._held_text, self._held = "", b""
            return data
        keep = self.scanner.holdback(window)
        self._held_text = window[len(window) - keep :]
        pending = len(self._decoder.getstate()[0])  # a character cut at the chunk's end
        held = len(self._held_text.encode("utf-8", "surrogateescape")) + pending
        cut = len(data) - held
        self._held = data[cut:]
        return data[:cut]
