"""An independent oracle for request paths: how different servers might read one path.

Nothing here imports agentguard. ``remove_dot_segments`` is RFC 3986 §5.2.4 written out from
the RFC's own algorithm; the lenient readings are what real servers do: decode twice (a proxy
in front of a framework), treat ``\\`` as ``/`` (IIS, some Windows stacks), drop ``;params``
(Tomcat, Jetty), strip trailing dots and whitespace per segment (Windows file systems),
NFKC-fold (Unicode-normalising routers), case-fold (case-insensitive routers), decode overlong
UTF-8 (old, lenient decoders), ``%uXXXX`` (IIS), drop a format suffix (Rails ``(.:format)``
drops the last ``.ext`` of the path, also before a trailing slash; Spring MVC's suffix pattern
match serves ``/x.anything`` from ``/x``), and the speculative ones: ``+`` read as a space
and trimmed (a form decoder applied to the path), a trailing ``~`` dropped.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Sequence
from urllib.parse import unquote, unquote_to_bytes

__all__ = [
    "READINGS",
    "RULE_READINGS",
    "readings",
    "remove_dot_segments",
    "rfc_reading",
    "rule_for",
]


def remove_dot_segments(path: str) -> str:
    """RFC 3986 §5.2.4, step by step."""
    source, output = path, ""
    while source:
        if source.startswith("../"):  # A
            source = source[3:]
        elif source.startswith("./"):
            source = source[2:]
        elif source.startswith("/./"):  # B
            source = "/" + source[3:]
        elif source == "/.":
            source = "/"
        elif source.startswith("/../"):  # C
            source = "/" + source[4:]
            output = output[: output.rfind("/")] if "/" in output else ""
        elif source == "/..":
            source = "/"
            output = output[: output.rfind("/")] if "/" in output else ""
        elif source in (".", ".."):  # D
            source = ""
        else:  # E
            start = 1 if source.startswith("/") else 0
            end = source.find("/", start)
            end = len(source) if end < 0 else end
            output += source[:end]
            source = source[end:]
    return output


_UNRESERVED_ESCAPE = re.compile(r"%(2[dDeE]|5[fF]|7[eE]|[46][1-9a-fA-F]|[57][0-9aA]|3[0-9])")


def rfc_reading(raw: str) -> str:
    """RFC 3986 normalisation (§6.2.2): decode unreserved escapes, remove dot segments, decode."""
    normal = _UNRESERVED_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), raw)
    return unquote(remove_dot_segments(normal), errors="surrogateescape")


def _overlong(raw: str) -> str:
    """Decode escapes as bytes, reading 2-byte overlong UTF-8 forms as the ASCII they encode."""
    data = unquote_to_bytes(raw)
    data = re.sub(
        rb"[\xc0\xc1][\x80-\xbf]", lambda m: bytes([((m[0][0] & 1) << 6) | (m[0][1] & 63)]), data
    )
    return data.decode("utf-8", "surrogateescape")


def _segments(function: Callable[[str], str]) -> Callable[[str], str]:
    return lambda path: "/".join(function(segment) for segment in path.split("/"))


def _drop_format(path: str) -> str:
    """Rails: the last ``.ext`` of the last segment (before a trailing slash) is a format; the
    name before it has a character other than ``.``."""
    trailing = "/" if len(path) > 1 and path.endswith("/") else ""
    parent, _, last = path[: len(path) - len(trailing)].rpartition("/")
    stem, dot, _ = last.rpartition(".")
    return f"{parent}/{stem}{trailing}" if dot and stem.strip(".") else path


READINGS: dict[str, Callable[[str], str]] = {
    "decode": lambda p: unquote(p, errors="surrogateescape"),
    "percent-u": lambda p: re.sub(r"%u([0-9a-fA-F]{4})", lambda m: chr(int(m[1], 16)), p),
    "overlong": _overlong,
    "backslash": lambda p: p.replace("\\", "/"),
    "params": _segments(lambda s: s.split(";", 1)[0]),
    "trailing": _segments(lambda s: s.rstrip(". \t\r\n\x0b\x0c")),
    "nfkc": lambda p: unicodedata.normalize("NFKC", p),
    "casefold": str.casefold,
    "dots": remove_dot_segments,
    "format": _drop_format,
    "suffix": _segments(lambda s: s.split(".", 1)[0] or s),
    "plus-space": _segments(lambda s: s.replace("+", " ").strip()),
    "tilde": _segments(lambda s: s.rstrip("~")),
}


#: Readings the rules account for (a path is matched under each), not the canonicaliser: letter
#: case, format suffixes, ``+`` and ``~`` at a segment's edges.
RULE_READINGS = frozenset({"casefold", "format", "suffix", "plus-space", "tilde"})


def readings(raw: str, *, rounds: int = 3, without: frozenset[str] = frozenset()) -> set[str]:
    """Every path ``raw`` can become under up to ``rounds`` lenient steps, dots removed
    (``without`` the readings named)."""
    steps = [reading for name, reading in READINGS.items() if name not in without]
    found = {raw, rfc_reading(raw)}
    frontier = set(found)
    for _ in range(rounds):
        step = {reading(path) for path in frontier for reading in steps}
        frontier = step - found
        found |= step
        if not frontier:
            break
    return {remove_dot_segments(path) for path in found}


def rule_for(path: str, prefixes: Sequence[str]) -> str | None:
    """The longest of ``prefixes`` that ``path`` is under, on a segment boundary (exact case)."""
    best: str | None = None
    for prefix in prefixes:
        root = prefix.rstrip("/")
        if (root in ("", path) or path.startswith(root + "/")) and (
            best is None or len(root) > len(best.rstrip("/"))
        ):
            best = prefix
    return best
