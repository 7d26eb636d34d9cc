"""Finding any form of known secrets in text: the matcher the echo scanner, the request key
scanner and the secret-leak reviewer share.

:func:`agentguard._secret.encoded_forms` says which strings reveal a secret. A reader can undo
more than those forms, so each is also looked for in the *views* of the text
(:mod:`agentguard._secret_views`: NULs and whitespace removed, JSON escapes and
percent-encoding undone in either order).

Matching is linear by construction: all the forms of all the secrets are one Aho-Corasick
automaton (``pyahocorasick``, built once after secrets are added, in time linear in the total
length of the forms), and each view is read once, whatever it holds. No text makes it slower:
the automaton's transitions are all computed in advance, unlike a lazily built RE2 DFA, which
on 1,400 literals runs out of memory and falls back to the NFA (3 s per MiB), and on crafted
near-misses spends 0.6 s per MiB building states even with 256 MiB of memory.

:meth:`SecretMatcher.find` is synchronous (the echo and key scanners check headers and bounded
windows); :meth:`SecretMatcher.find_stepwise` does the same work in steps of at most
:data:`~agentguard._secret_views.STEP` characters (views are built in such steps too, and
matched in slices that overlap by the longest form), awaiting a ``pause`` between steps: the
secret-leak reviewer passes :func:`agentguard.review.checkpoint`, which yields to the
event loop and enforces the review's deadline.

Of a secret's forms only those that contain no other form of the same secret are searched (a
prefix fragment is inside the raw value, a base64 core inside the whole base64): finding any
form is finding the secret.

Streaming: :meth:`SecretMatcher.holdback` says how many trailing characters of a window could
still be the start of a match that the next chunk completes. An unescaped form needs its own
length; each escape introducer (backslash, percent sign) in the tail can stretch a match by at
most 11 characters (``\\ud83d\\ude00`` is 12 characters for one), each NUL or whitespace
character by one. The count is taken over the tail itself until it settles, so a JSON stream
with an occasional ``\\n`` holds back little more than the longest form, and one that escapes
every character holds back enough to see a whole escaped form, up to :attr:`SecretMatcher.span`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable

import ahocorasick  # type: ignore[import-not-found]  # pyahocorasick ships no type hints

from agentguard._secret import encoded_forms
from agentguard._secret_views import STEP, text_views, unescape_json, unwrap, view_steps

__all__ = [
    "SPAN_PER_CHARACTER",
    "Pause",
    "SecretMatcher",
    "text_views",
    "unescape_json",
    "unwrap",
]

SPAN_PER_CHARACTER = 48
"""Most characters one character of a form takes in the deepest view searched in a stream (a
percent-encoded JSON escape of a surrogate pair, as UTF-32 read as UTF-8); bounds a streamed
window. Whole texts are also decoded deeper (up to three rounds of each decoding)."""

_ESCAPE_STRETCH = 11  # an escape is at most 12 characters for one (a \uXXXX\uXXXX pair)
_SLACK = 12  # an escape cut at the end of a window is still held back whole

Pause = Callable[[], Awaitable[None]]
"""What :meth:`SecretMatcher.find_stepwise` awaits between steps."""


def _longest_first(form: str) -> tuple[int, str]:
    return -len(form), form


class _Automaton:
    """Forms in one Aho-Corasick automaton: which one occurs first, or all that occur."""

    __slots__ = ("_automaton", "longest")

    def __init__(self, forms: dict[str, str]) -> None:
        self.longest = max(map(len, forms), default=0)
        self._automaton: object | None = None
        if forms:
            automaton = ahocorasick.Automaton()
            for form, secret in forms.items():
                automaton.add_word(form, (form, secret))
            automaton.make_automaton()
            self._automaton = automaton

    def first(self, text: str, start: int = 0, end: int | None = None) -> str | None:
        """The secret whose form ends first in ``text[start:end]``, or ``None``."""
        if self._automaton is None:
            return None
        found = self._automaton.iter(text, start, len(text) if end is None else end)  # type: ignore[attr-defined]
        for _, (_, secret) in found:
            return str(secret)
        return None

    def every(self, text: str, start: int = 0, end: int | None = None) -> set[str]:
        """Every form that occurs in ``text[start:end]``."""
        if self._automaton is None:
            return set()
        found = self._automaton.iter(text, start, len(text) if end is None else end)  # type: ignore[attr-defined]
        return {str(form) for _, (form, _) in found}


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
        self._automata: dict[str, _Automaton] = {}  # built when first needed after an add
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
        self._automata = {}  # rebuilt on the next search; a search under way keeps its own
        return True

    def _automaton(self, kind: str) -> _Automaton:
        automaton = self._automata.get(kind)
        if automaton is None:
            if kind == "all":
                forms = self.forms
            elif kind == "folded":
                forms = {form.lower(): secret for form, secret in self._search.items()}
            else:
                forms = self._search
            automaton = self._automata[kind] = _Automaton(forms)
        return automaton

    def find(self, text: str, *, fold_case: bool = False) -> str | None:
        """The secret that a form in ``text`` (or in a view of it) reveals, or ``None``.

        ``fold_case`` matches regardless of case (for header names, which HTTP lower-cases
        on the way: a key in a name still reaches the agent, in lower case).
        """
        if not self._search:
            return None
        automaton = self._automaton("folded" if fold_case else "search")
        for view in text_views(text.lower() if fold_case else text):
            found = automaton.first(view)
            if found is not None:
                return found
        return None

    async def find_stepwise(self, text: str, pause: Pause) -> str | None:
        """:meth:`find`, awaiting ``pause()`` between steps of at most
        :data:`~agentguard._secret_views.STEP` characters of work (see the module docstring).
        """
        if not self._search:
            return None
        automaton = self._automaton("search")
        overlap = automaton.longest - 1
        for view in view_steps(text):
            if view is None:
                await pause()
                continue
            for start in range(0, len(view), STEP):
                if start:
                    await pause()
                found = automaton.first(view, start, min(len(view), start + STEP + overlap))
                if found is not None:
                    return found
        return None

    def forms_in(self, text: str) -> list[str]:
        """Every form present in ``text`` itself (no view), longest first: what to redact."""
        return sorted(self._automaton("all").every(text), key=_longest_first)

    async def forms_in_stepwise(self, text: str, pause: Pause) -> list[str]:
        """:meth:`forms_in` in slices of :data:`~agentguard._secret_views.STEP` characters
        (overlapping by the longest form), awaiting ``pause()`` between them."""
        automaton = self._automaton("all")
        overlap = max(automaton.longest - 1, 0)
        found: set[str] = set()
        for start in range(0, len(text), STEP):
            if start:
                await pause()
            found |= automaton.every(text, start, min(len(text), start + STEP + overlap))
        return sorted(found, key=_longest_first)

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
            removed = tail.count("\x00") + len(tail) - sum(map(len, tail.split()))
            needed = base + _ESCAPE_STRETCH * escapes + removed
            if needed <= keep or keep >= cap or keep >= len(text):
                return min(keep, len(text))
            keep = min(needed, cap)
