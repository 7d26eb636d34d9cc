"""Linear-time regular expressions for reviewers: RE2 (``google-re2``) behind a typed wrapper.

Python's ``re`` backtracks: a crafted body (a 1 MiB run of ``-----BEGIN RSA PRIVATE KEY-----``
lines, ``<!--`` repeated) made one review take tens of seconds. RE2 runs in time linear in the
text for every pattern it accepts, and rejects the constructs that cannot be (backreferences,
lookarounds, repetition counts above 1000), so every built-in rule and every rule a user adds
is linear by construction. RE2 also releases the interpreter lock while it matches.

Differences from ``re`` that built-in patterns account for:

- ``\\w``, ``\\s``, ``\\d`` and ``\\b`` are ASCII-only in RE2; :data:`WORD` and :data:`SPACE`
  spell out Python's Unicode classes, and :data:`WORD_START` / :data:`WORD_END` stand for
  ``\\b`` next to a word character by consuming the neighbouring character (or matching at
  the end of the text), which is the same for "is there a match" questions.
- ``\\uXXXX`` is written ``\\x{XXXX}``; lookarounds become consumed characters or a check in
  Python; ``re.MULTILINE`` is ``(?m)``.

Bodies are decoded with ``surrogateescape``; their lone surrogates (which UTF-8 cannot carry)
are matched as U+FFFD, one character for one, so offsets are unchanged.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterator
from typing import Any, NamedTuple

import re2  # type: ignore[import-untyped]  # google-re2 ships no type hints
from re2 import _re2

from agentguard.errors import AgentGuardError

__all__ = [
    "SPACE",
    "WORD",
    "WORD_END",
    "WORD_START",
    "LinearPattern",
    "LiteralSet",
    "PatternError",
    "Span",
    "Subject",
]

WORD = r"\pL\pN_"
"""The inside of a character class for Python's ``\\w`` (letters, numbers, underscore)."""

SPACE = (
    r"\t\n\x0b\x0c\r\x1c-\x1f \x{85}\x{a0}\x{1680}\x{2000}-\x{200a}\x{2028}\x{2029}"
    r"\x{202f}\x{205f}\x{3000}"
)
"""The inside of a character class for Python's ``\\s`` (``str.isspace``)."""

WORD_START = rf"(?:\A|[^{WORD}])"
"""``\\b`` before a word character: the start of the text or one non-word character."""

WORD_END = rf"(?:[^{WORD}]|\z)"
"""``\\b`` after a word character: one non-word character or the end of the text."""

_ERRORS = "agentguard.review.replacement"


def _replace_surrogates(error: UnicodeError) -> tuple[str | bytes, int]:
    if not isinstance(error, UnicodeEncodeError):
        raise error
    # Bytes, because the UTF-8 encoder takes only ASCII text from an error handler.
    return "\ufffd".encode() * (error.end - error.start), error.end


codecs.register_error(_ERRORS, _replace_surrogates)


class PatternError(AgentGuardError, ValueError):
    """A pattern RE2 cannot run in linear time (a lookaround, a backreference, ``{n}`` over
    1000) or that does not parse. The message names the construct, never any reviewed text."""


class Span(NamedTuple):
    """Character offsets of one match (or of one group, ``-1`` when it did not take part)."""

    start: int
    end: int


class Subject:
    """Text prepared once (encoded to UTF-8) for many searches, with offset conversion.

    Offsets in and out are character offsets into ``text``. For ASCII text they equal byte
    offsets; otherwise each conversion walks from the previous one, so a left-to-right scan
    costs time linear in the text.
    """

    __slots__ = ("_byte", "_char", "ascii", "data", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self.ascii = text.isascii()
        self.data = text.encode("utf-8", _ERRORS)
        self._byte = 0  # a known pair of (byte, char) offsets: the conversion cursor
        self._char = 0

    def __len__(self) -> int:
        return len(self.text)

    def char_offset(self, byte: int) -> int:
        """The character offset of a byte offset that starts a character."""
        if self.ascii or byte < 0:
            return byte
        if byte >= self._byte:
            self._char += len(self.data[self._byte : byte].decode("utf-8"))
        else:
            self._char -= len(self.data[byte : self._byte].decode("utf-8"))
        self._byte = byte
        return self._char

    def byte_offset(self, char: int) -> int:
        """The byte offset of a character offset."""
        if self.ascii:
            return char
        if char >= self._char:
            self._byte += len(self.text[self._char : char].encode("utf-8", _ERRORS))
        else:
            self._byte -= len(self.text[char : self._char].encode("utf-8", _ERRORS))
        self._char = char
        return self._byte


class LinearMatch:
    """One match: spans in character offsets, groups by number or name."""

    __slots__ = ("_names", "_spans", "_subject")

    def __init__(self, subject: Subject, spans: list[Span], names: dict[str, int]) -> None:
        self._subject = subject
        self._spans = spans
        self._names = names

    def span(self, group: int | str = 0) -> Span:
        """The span of ``group`` (``(-1, -1)`` when the group did not take part)."""
        index = self._names[group] if isinstance(group, str) else group
        return self._spans[index]

    def start(self, group: int | str = 0) -> int:
        """Where ``group`` starts."""
        return self.span(group).start

    def end(self, group: int | str = 0) -> int:
        """Where ``group`` ends."""
        return self.span(group).end

    def group(self, group: int | str = 0) -> str | None:
        """The text of ``group``, or ``None`` when it did not take part."""
        start, end = self.span(group)
        return None if start < 0 else self._subject.text[start:end]


def _options() -> Any:
    options = re2.Options()
    options.log_errors = False
    return options


_UNANCHORED: Any = _re2.RE2.Anchor.UNANCHORED


class LinearPattern:
    """A compiled RE2 pattern.

    Args:
        pattern: RE2 syntax (https://github.com/google/re2/wiki/Syntax).
        multiline: ``^`` and ``$`` match at line boundaries (``re.MULTILINE``).

    Raises:
        PatternError: the pattern is not RE2 syntax (lookarounds and backreferences are not).
    """

    __slots__ = ("_groups", "_names", "_regexp", "multiline", "pattern")

    def __init__(self, pattern: str, *, multiline: bool = False) -> None:
        self.pattern = pattern
        self.multiline = multiline
        source = "(?m)" + pattern if multiline else pattern
        # The binding's RE2 object directly: re2.compile's Python layer costs several
        # microseconds per match, which dominates on bodies dense with matches.
        self._regexp: Any = _re2.RE2(source.encode("utf-8", _ERRORS), _options())
        if not self._regexp.ok():
            detail = self._regexp.error()
            if isinstance(detail, bytes):
                detail = detail.decode("utf-8", "replace")
            raise PatternError(f"not a linear-time (RE2) pattern: {detail}")
        self._groups = int(self._regexp.NumberOfCapturingGroups())
        self._names: dict[str, int] = {
            (name.decode() if isinstance(name, bytes) else str(name)): int(index)
            for name, index in self._regexp.NamedCapturingGroups()
        }

    def __repr__(self) -> str:
        return f"LinearPattern({self.pattern!r})"

    @property
    def groups(self) -> int:
        """How many capturing groups the pattern has."""
        return self._groups

    @property
    def groupindex(self) -> dict[str, int]:
        """Named groups to their numbers."""
        return dict(self._names)

    def _raw(self, subject: Subject, byte: int) -> list[tuple[int, int]] | None:
        data = subject.data
        spans: list[tuple[int, int]] = self._regexp.Match(_UNANCHORED, data, byte, len(data))
        return None if spans[0][0] < 0 else spans

    def _match(self, subject: Subject, raw: list[tuple[int, int]]) -> LinearMatch:
        if subject.ascii:
            spans = [Span(start, end) for start, end in raw]
        else:
            spans = [
                Span(-1, -1)
                if start < 0
                else Span(subject.char_offset(start), subject.char_offset(end))
                for start, end in raw
            ]
        return LinearMatch(subject, spans, self._names)

    def search_spans(self, subject: Subject, pos: int = 0) -> list[Span] | None:
        """Every group's span in the leftmost match at or after ``pos`` (group 0 first), or
        ``None``: :meth:`search` without the match object."""
        raw = self._raw(subject, subject.byte_offset(pos)) if pos <= len(subject) else None
        if raw is None:
            return None
        if subject.ascii:
            return [Span(start, end) for start, end in raw]
        return self._match(subject, raw)._spans

    def search(self, text: str | Subject, pos: int = 0) -> LinearMatch | None:
        """The leftmost match at or after character ``pos``, or ``None``.

        ``\\A``, ``^`` and ``\\b`` still see the text before ``pos``.
        """
        subject = text if isinstance(text, Subject) else Subject(text)
        if pos > len(subject):
            return None
        raw = self._raw(subject, subject.byte_offset(pos))
        return None if raw is None else self._match(subject, raw)

    def finditer(self, text: str | Subject, resume: int | str = 0) -> Iterator[LinearMatch]:
        """Matches left to right; each next search starts where group ``resume`` ended.

        With the default ``resume=0`` matches do not overlap, like ``re.finditer``. A pattern
        that consumes a boundary character after the part it reports (see
        :data:`WORD_END`) resumes at that part's group so the character is seen again.
        """
        subject = text if isinstance(text, Subject) else Subject(text)
        data = subject.data
        index = self._names[resume] if isinstance(resume, str) else resume
        pos = 0
        while pos <= len(data):
            raw = self._raw(subject, pos)
            if raw is None:
                return
            yield self._match(subject, raw)
            after = raw[index][1]
            if after < 0:
                after = raw[0][1]
            if after <= pos:  # an empty match: step one character on
                after = pos + 1
                while after < len(data) and (data[after] & 0xC0) == 0x80:
                    after += 1
            pos = after

    def spans(self, text: str | Subject, group: int | str = 0) -> Iterator[Span]:
        """The span of ``group`` in each match, left to right, resuming where it ended.

        The same matches as ``finditer(text, resume=group)``, without match objects: the
        fast path for bodies dense with matches.
        """
        subject = text if isinstance(text, Subject) else Subject(text)
        data = subject.data
        size = len(data)
        index = self._names[group] if isinstance(group, str) else group
        match = self._regexp.Match
        convert = None if subject.ascii else subject.char_offset
        pos = 0
        while pos <= size:
            raw = match(_UNANCHORED, data, pos, size)
            if raw[0][0] < 0:
                return
            start, end = raw[index]
            if start < 0:
                start, end = raw[0]
            if convert is None:
                yield Span(start, end)
            else:
                yield Span(convert(start), convert(end))
            if end <= pos:
                end = pos + 1
                while end < size and (data[end] & 0xC0) == 0x80:
                    end += 1
            pos = end


class LiteralSet:
    """Which of a few literal strings occur in a text, in one linear-time pass (an RE2 set)."""

    __slots__ = ("_literals", "_set")

    def __init__(self, literals: Iterator[str] | list[str] | tuple[str, ...]) -> None:
        self._literals = tuple(dict.fromkeys(literals))
        self._set: Any = re2.Set.SearchSet(_options())
        for literal in self._literals:
            self._set.Add(re2.escape(literal))
        if self._literals:
            self._set.Compile()

    def present(self, text: str | Subject) -> frozenset[str]:
        """The literals that occur in ``text``."""
        if not self._literals:
            return frozenset()
        subject = text if isinstance(text, Subject) else Subject(text)
        found = self._set.Match(subject.data) or ()
        return frozenset(self._literals[index] for index in found)
