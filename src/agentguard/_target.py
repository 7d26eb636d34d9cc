"""The request target, canonicalised once: the path the guard authorises is the path forwarded.

Servers, frameworks and vendors disagree about what a path means: whether ``%2F`` splits a
segment, whether ``..`` (or ``%2e%2e``, or ``%252e%252e`` decoded twice) climbs, whether
``;jsessionid=x`` belongs to the segment, whether ``\\`` is a separator, whether ``admin.`` or
a fullwidth ``admin`` is ``admin``. Rather than guess which reading a vendor uses, every target
whose meaning could differ between readers is refused (400 ``invalid_request``) before any key
is looked up, and what is left has exactly one meaning:

- the path starts with ``/`` and is ASCII; its characters (after decoding) are letters, digits
  and ``-._~!$&'()*+,=:@``: nothing else, so no whitespace, control character, ``;``, ``\\``,
  ``%``, ``?``, ``#`` or non-ASCII character after decoding;
- every percent-escape is ``%`` and two hex digits, and encodes one of those characters other
  than ``.`` (so ``%2E``, ``%2F``, ``%5C``, ``%25``, ``%3B``, ``%C0%AE`` and ``%u002e`` are
  refused); ``%2F`` only where a service opted in (``allow_encoded_slash``);
- no segment is empty (``//``) except a final one (a trailing slash), none is ``.`` or ``..``,
  none ends with ``.``, and none reads as ``.``, ``..`` or nothing under any composition of the
  lenient segment readings (``+`` as a trimmed space, a trailing ``~`` dropped, trailing dots
  stripped, a format suffix dropped): ``..+``, ``+``, ``.~``, ``+...0``.

Letter case, format suffixes (``admin.json``) and ``+``/``~`` at a segment's edges are left as
they are: such paths are legitimate (``/tags/c++``, ``/report.csv``), so rather than refusing
them, :mod:`agentguard._permissions` matches rules under those readings and applies the
stricter rule.

A :class:`Target` is the decoded segments. Its :attr:`~Target.path` is what rules match; its
:attr:`~Target.raw` is the one encoding forwarded, which decodes (once, twice, leniently) to
that same path, ``%2F`` aside.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass

from agentguard.errors import InvalidRequest

__all__ = ["PATH_CHARACTERS", "Target", "canonical_target", "parse_decoded_path", "parse_raw_path"]

#: Characters a canonical path segment may hold (RFC 3986 ``pchar`` minus ``;`` and ``%``).
PATH_CHARACTERS = frozenset(string.ascii_letters + string.digits + "-._~!$&'()*+,=:@")
_HEX = frozenset(b"0123456789abcdefABCDEF")
_PLAIN_PATH = re.compile(rb"/[A-Za-z0-9\-._~!$&'()*+,=:@/]*")  # no escapes: the common case
_NAMED = {
    ord("/"): "an encoded '/' (%2F)",
    ord("."): "an encoded '.' (%2E)",
    ord("\\"): "an encoded '\\' (%5C)",
    ord("%"): "an encoded '%' (%25)",
}


def _refuse(what: str) -> InvalidRequest:
    return InvalidRequest(f"the request path contains {what}, which is refused as ambiguous")


def _character(byte: int, *, encoded: bool) -> InvalidRequest:
    if byte >= 0x80:
        return _refuse("a non-ASCII byte (only ASCII paths are accepted)")
    if byte == ord(";"):
        return _refuse("';' (path parameters)")
    if byte == ord("\\"):
        return _refuse("a backslash")
    if byte <= 0x20 or byte == 0x7F:
        return _refuse("whitespace or a control character")
    return _refuse(f"the character {chr(byte)!r}{' (percent-encoded)' if encoded else ''}")


@dataclass(frozen=True, slots=True)
class Target:
    """A canonical request path: decoded segments with one meaning.

    A segment holds only :data:`PATH_CHARACTERS`, plus ``/`` when it came from ``%2F`` on a
    service that allows encoded slashes. A final empty segment is a trailing slash.
    """

    segments: tuple[str, ...]

    @property
    def path(self) -> str:
        """The decoded path rules are matched on (``%2F`` decoded to ``/``)."""
        return "/" + "/".join(self.segments)

    @property
    def raw(self) -> bytes:
        """The one encoding forwarded: ``b""`` for the mount point itself, else ``/``-led."""
        if not self.segments:
            return b""
        return ("/" + "/".join(s.replace("/", "%2F") for s in self.segments)).encode("ascii")

    def under(self, root_path: str) -> Target:
        """This target relative to the mount ``root_path``, matched on whole decoded segments."""
        root = tuple(part for part in root_path.split("/") if part)
        if self.segments[: len(root)] != root:
            raise InvalidRequest("the request path is not under this service's mount point")
        return Target(self.segments[len(root) :])


#: Characters the lenient segment readings act on; a segment without any reads as itself.
_LENIENT = frozenset("+~.")
_DOTS_OR_NOTHING = frozenset({"", ".", ".."})


def _format_dropped(segment: str) -> str:
    stem, dot, _ = segment.rpartition(".")
    return stem if dot and stem.strip(".") else segment


#: How lenient readers rewrite one segment: ``+`` as a trimmed space (a form decoder on the
#: path), a trailing ``~`` dropped, trailing dots and spaces stripped (Windows), everything from
#: the first ``.`` dropped (Spring's suffix match), the last ``.ext`` dropped (Rails' format).
_SEGMENT_READINGS = (
    lambda s: s.replace("+", " ").strip(" "),
    lambda s: s.rstrip("~"),
    lambda s: s.rstrip(". "),
    lambda s: s.split(".", 1)[0] or s,
    _format_dropped,
)


def _lenient_readings(segment: str) -> set[str]:
    """Every spelling ``segment`` takes under the readings above, composed in any order.

    Each reading only removes characters (or turns ``+`` into a space), so the closure is small
    and finite; checking all of it, not one fixed order of readings, is what keeps ``+...0``
    (``+..`` once the format goes, then ``..``) from slipping through.
    """
    found = {segment}
    frontier = [segment]
    while frontier:
        current = frontier.pop()
        for reading in _SEGMENT_READINGS:
            spelled = reading(current)
            if spelled not in found:
                found.add(spelled)
                frontier.append(spelled)
    return found


def _check_segments(parts: list[str]) -> Target:
    for index, segment in enumerate(parts):
        last = index == len(parts) - 1
        pieces = segment.split("/")
        for piece in pieces:
            if not piece:
                if last and len(pieces) == 1:
                    continue  # a trailing slash
                raise _refuse("an empty segment ('//')")
            if piece in (".", ".."):
                raise _refuse("a '.' or '..' segment")
            if piece.endswith("."):
                raise _refuse("a segment ending in '.'")
            if _LENIENT.intersection(piece) and _DOTS_OR_NOTHING & _lenient_readings(piece):
                raise _refuse(
                    "a segment that reads as '.', '..' or nothing once '+', '~' or a suffix go"
                )
    return Target(tuple(parts))


def parse_raw_path(raw: bytes, *, allow_encoded_slash: bool = False) -> Target:
    """The canonical target of a path as sent (percent-encoding intact, without the query).

    Raises :class:`~agentguard.errors.InvalidRequest` for any target whose meaning could differ
    between readers (see the module docstring).
    """
    if _PLAIN_PATH.fullmatch(raw):
        return _check_segments(raw[1:].decode("ascii").split("/"))
    if not raw.startswith(b"/"):
        raise InvalidRequest("the request target must be a path starting with '/'")
    parts: list[str] = []
    for chunk in raw[1:].split(b"/"):
        out: list[str] = []
        index = 0
        while index < len(chunk):
            byte = chunk[index]
            if byte == ord("%"):
                escape = chunk[index + 1 : index + 3]
                if len(escape) != 2 or not all(b in _HEX for b in escape):
                    raise _refuse("a malformed percent-escape")
                value = int(escape, 16)
                if value == ord("/") and allow_encoded_slash:
                    out.append("/")
                elif value in _NAMED:
                    raise _refuse(_NAMED[value])
                elif chr(value) not in PATH_CHARACTERS:
                    raise _character(value, encoded=True)
                else:
                    out.append(chr(value))
                index += 3
                continue
            if chr(byte) not in PATH_CHARACTERS:
                raise _character(byte, encoded=False)
            out.append(chr(byte))
            index += 1
        parts.append("".join(out))
    return _check_segments(parts)


def parse_decoded_path(path: str) -> Target:
    """The canonical target of an already-decoded path (when the raw target is unknown).

    A literal ``%`` can only have come from ``%25``, so it is refused like one.
    """
    if "%" in path:
        raise _refuse(_NAMED[ord("%")])
    try:
        raw = path.encode("ascii")
    except UnicodeEncodeError:
        raise _character(0x80, encoded=False) from None
    return parse_raw_path(raw)


def canonical_target(
    path: str,
    raw_path: bytes | None = None,
    root_path: str = "",
    *,
    allow_encoded_slash: bool = False,
) -> Target:
    """The canonical form of ``path``, the decoded path an application routes on.

    ``raw_path`` (the target as sent) is the evidence of how ``path`` was encoded. It covers
    either ``path`` itself (ASGI, where ``path`` includes ``root_path``) or ``root_path + path``
    (WSGI's ``SCRIPT_NAME`` and ``PATH_INFO``). A raw path that decodes to neither (a layer
    rewrote the path) is set aside and ``path`` is canonicalised on its own; a raw path that is
    itself ambiguous is refused either way.
    """
    if raw_path is not None:
        raw_path = raw_path.split(b"?", 1)[0]  # a server that left the query on (old httpx)
        target = parse_raw_path(raw_path, allow_encoded_slash=allow_encoded_slash)
        decoded = target.path
        if decoded == path:
            return target
        root = root_path.rstrip("/")
        if root and decoded == root + path:
            return target.under(root)
    return parse_decoded_path(path)
