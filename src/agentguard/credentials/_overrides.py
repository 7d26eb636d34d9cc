"""Method overrides, read the way the most lenient frameworks read them.

A vendor framework may take a request's method from a header (``X-HTTP-Method-Override``,
``X-Method-Override``, ``X-HTTP-Method``) or from a ``_method`` parameter in the query or the
body (Rails/Rack, Symfony/Laravel, Express ``method-override``). Each framework reads those
names its own way, so a name counts as an override under the union of the readings:

- percent-decoding, ``+`` as space, once or twice (a layer in front that decodes too);
- PHP's variable-name mangling: leading whitespace dropped, ``.``, space and an unmatched ``[``
  read as ``_`` (``.method``, ``%20method``, ``[method`` are ``_method`` to PHP), ``a[b]`` read
  as ``a`` (an array under the name ``a``), a NUL ending the name;
- letter case, and ``_`` as ``-`` (CGI-style header variables).

Query strings and form bodies are split on ``&`` and ``;`` (Rack 2). A body is read as a form
when its media type, cut at the first ``;``, ``,`` or space as PHP cuts it, is
``application/x-www-form-urlencoded`` or ``text/plain``, or when it has no ``Content-Type`` at
all (Rack parses such a POST as a form); a JSON body (a media type containing ``json``, as
Laravel decides) is read for top-level override keys.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from urllib.parse import unquote, unquote_plus

__all__ = [
    "METHOD_OVERRIDE_NAMES",
    "body_overrides",
    "form_pairs",
    "is_method_override",
    "may_carry_override",
    "override_values",
    "parameter_names",
    "split_parameters",
]

METHOD_OVERRIDE_NAMES = frozenset(
    {"x-http-method-override", "x-method-override", "x-http-method", "-method"}
)
"""Header and parameter names that override a request's method, as :func:`_fold` folds them."""

_SEPARATORS = re.compile(rb"([&;])")
_PHP_UNDERSCORE = str.maketrans({" ": "_", ".": "_", "[": "_"})
_FOLD = str.maketrans({"_": "-", " ": "-", ".": "-", "[": "-"})
_FORM_MEDIA = frozenset({"application/x-www-form-urlencoded", "text/plain", ""})


def _decoded(name: str) -> str:
    if "%" not in name and "+" not in name:
        return name
    name = unquote_plus(name, encoding="latin-1")
    if "%" in name:  # a framework behind a layer that decodes too: decoded twice
        name = unquote(name, encoding="latin-1")
    return name


def parameter_names(name: str) -> set[str]:
    """Every name a lenient parser may read for the raw (still encoded) parameter ``name``."""
    text = _decoded(name)
    if "method" not in text.lower():  # every override name has it; no reading adds letters
        return {text}
    found = {text, text.split("\x00", 1)[0]}
    for candidate in list(found):
        bracket = candidate.find("[")
        if bracket >= 0 and "]" in candidate[bracket:]:
            found.add(candidate[:bracket])  # PHP: a[b]=x is an array named a
        found.add(candidate.lstrip(" \t\r\n\x0b\x0c").translate(_PHP_UNDERSCORE))
    return found


def _fold(name: str) -> str:
    return name.strip(" \t\r\n\x0b\x0c").lower().translate(_FOLD)


def is_method_override(name: str | bytes) -> bool:
    """Whether a header or (raw, still encoded) parameter ``name`` overrides the method."""
    text = name.decode("latin-1") if isinstance(name, bytes) else name
    return any(_fold(candidate) in METHOD_OVERRIDE_NAMES for candidate in parameter_names(text))


def split_parameters(data: bytes) -> list[bytes]:
    """``data`` split into pieces and separators, alternately: ``a=1&b=2;c`` is
    ``[b"a=1", b"&", b"b=2", b";", b"c"]``."""
    return _SEPARATORS.split(data)


def form_pairs(data: bytes) -> Iterator[tuple[str, str]]:
    """The (raw name, decoded value) pairs of a query string or form body, split on ``&`` and
    ``;``."""
    for piece in split_parameters(data)[::2]:
        if piece:
            key, _, value = piece.decode("latin-1").partition("=")
            yield key, unquote_plus(value, encoding="latin-1")


def _once(char: str) -> str:
    """``char`` (a lower-case letter: or its capital) as sent, or percent-encoded: a regex
    matched on lower-cased text."""
    codes = "|".join(sorted({f"%{ord(char):02x}", f"%{ord(char.upper()):02x}"}))
    return f"(?:{re.escape(char)}|{codes})"


def _twice(char: str) -> str:
    """``char`` as sent, or what decodes to it once or twice: ``m``, ``%6d``, ``%256d``,
    ``%%36d``, ``%2536%64``."""
    spellings = [re.escape(char)]
    for code in sorted({f"{ord(char):02x}", f"{ord(char.upper()):02x}"}):
        spellings.append("%" + code)
        spellings.append(_once("%") + _once(code[0]) + _once(code[1]))
    return "(?:" + "|".join(spellings) + ")"


# "method" in any case and encoding (decoded once or twice): every override name has it, so a
# field without it needs no decoding. Found in C, this keeps a large form cheap.
_METHOD = re.compile(  # in a field's name (before any "="), on lower-cased text
    b"(?:\\A|[&;])[^&;=]*?" + "".join(_twice(c) for c in "method").encode("ascii")
)
_SEPARATOR = re.compile(rb"[&;]")
_MAX_CANDIDATES = 1_000
_MAX_NAME = 1_024
_UNKNOWN = "OVERRIDE"  # an unknown method: the default route rules treat it as a write


class _Object(list[tuple[str, object]]):
    """A JSON object's members, in order, duplicates kept."""


def _json_overrides(body: bytes) -> list[str]:
    try:
        document = json.loads(body, object_pairs_hook=_Object)
    except (ValueError, RecursionError):
        return []  # not JSON: no framework reads fields from it
    if not isinstance(document, _Object):
        return []  # only a top-level object has fields
    return [
        value if isinstance(value, str) else "OVERRIDE"  # an array or object: fail closed
        for key, value in document
        if is_method_override(key)
    ]


def _media_type(content_type: bytes | None) -> str | None:
    if content_type is None:
        return None
    text = content_type.decode("latin-1").strip().lower()
    return re.split(r"[;, \t]", text, maxsplit=1)[0]


def may_carry_override(content_type: bytes | None) -> bool:
    """Whether a body of media ``content_type`` is one :func:`body_overrides` reads (a form,
    multipart, JSON, or no declared type)."""
    media = _media_type(content_type)
    return (
        media is None or media in _FORM_MEDIA or "json" in media or media.startswith("multipart/")
    )


def body_overrides(body: bytes, content_type: bytes | None) -> list[str]:
    """The override values a form or JSON ``body`` of media ``content_type`` carries."""
    media = _media_type(content_type)
    if media is None or media in _FORM_MEDIA:
        return override_values(body)
    if "json" in media:
        return _json_overrides(body)
    if media.startswith("multipart/"):
        return _multipart_overrides(body)
    return []


# A part's name in its Content-Disposition: quoted (escapes allowed) or a bare token.
_PART_NAME = re.compile(rb'(?i)\bname\*?\s*=\s*(?:"((?:[^"\\\r\n]|\\.)*)"|([^;\s]+))')


def _multipart_overrides(body: bytes) -> list[str]:
    """The override values of a multipart body: each part named like an override parameter
    (Rails, Laravel and Symfony read ``_method`` from multipart forms too). Whatever cannot
    be read plainly (no header end, a long value, too many candidates) is an unknown method."""
    values: list[str] = []
    candidates = 0
    for match in _PART_NAME.finditer(body):
        raw = match.group(1) if match.group(1) is not None else match.group(2)
        name = raw.decode("latin-1")
        if "method" not in name.lower() or not is_method_override(name):
            continue
        candidates += 1
        if candidates > _MAX_CANDIDATES:
            return [*values, _UNKNOWN]
        crlf, lf = body.find(b"\r\n\r\n", match.end()), body.find(b"\n\n", match.end())
        ends = [(at, size) for at, size in ((crlf, 4), (lf, 2)) if at >= 0]
        if not ends:
            values.append(_UNKNOWN)
            continue
        at, size = min(ends)
        start = at + size
        stop = body.find(b"\n--", start)
        value = body[start : len(body) if stop < 0 else stop].strip()
        values.append(value.decode("latin-1") if len(value) <= _MAX_NAME else _UNKNOWN)
    return values


def override_values(data: bytes) -> list[str]:
    """The values of the override parameters of a query string or form body.

    Fails closed on hostile volume: more than 1,000 fields whose names mention ``method``, or
    such a name longer than 1 KiB, count as an unknown override method (a write).
    """
    values: list[str] = []
    done = candidates = 0
    for match in _METHOD.finditer(data.lower()):
        if match.start() < done:
            continue  # in a field already read
        start = match.start() + (data[match.start() : match.start() + 1] in (b"&", b";"))
        after = _SEPARATOR.search(data, match.end())
        done = len(data) if after is None else after.start()
        key, _, value = data[start:done].partition(b"=")
        candidates += 1
        if candidates > _MAX_CANDIDATES or len(key) > _MAX_NAME:
            return [*values, _UNKNOWN]
        if is_method_override(key.decode("latin-1")):
            values.append(unquote_plus(value.decode("latin-1"), encoding="latin-1"))
    return values
