"""Reading a ``Content-Type`` header one way only, so that the gateway and every client agree.

Clients disagree on ambiguous headers: with two ``charset`` parameters httpx and
``email.message`` take the first, other parsers the last; ``email.message`` (and so httpx)
understands RFC 2231 ``charset*=utf-8''cp500``, simple splitters do not. A body scanned in one
charset and read in another can reveal a secret the scan did not see, so
:func:`parse_content_type` accepts only a header with one reading (RFC 9110 §8.3.1 grammar):

- exactly one ``Content-Type`` field;
- ``type/subtype`` made of tokens, then ``;``-separated ``name=value`` parameters whose value is
  a token or a quoted string (empty parameters between semicolons are allowed);
- at most one charset parameter, and never an RFC 2231 one (``charset*``, ``charset*0``, in any
  case);
- no quoted value holding ``;``, ``,``, ``"`` or ``\\`` (a parser that ignores quoting
  would find a second parameter in ``a="x;charset=cp500"``);
- a charset that names a text encoding Python can decode.

Anything else raises :class:`AmbiguousContentType`. :meth:`ContentType.as_utf8` then writes the
single canonical form the gateway sends on: ``type/subtype; other=params; charset=utf-8``.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Sequence
from dataclasses import dataclass

from agentguard.errors import AgentGuardError

__all__ = ["AmbiguousContentType", "ContentType", "parse_content_type", "text_codec"]

_TCHAR_RUN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"  # RFC 9110 token
_QUOTED = r'"((?:[^"\\\x00-\x08\x0a-\x1f\x7f]|\\[\t -~\x80-\xff])*)"'  # quoted-string
_MEDIA = re.compile(rf"[ \t]*({_TCHAR_RUN})/({_TCHAR_RUN})[ \t]*")
_PARAMETER = re.compile(
    rf";[ \t]*(?:({_TCHAR_RUN})[ \t]*=[ \t]*(?:({_TCHAR_RUN})|{_QUOTED})[ \t]*)?"
)
_TOKEN_ONLY = re.compile(_TCHAR_RUN)
_QUOTED_PAIR = re.compile(r"\\(.)")
_SPLITTERS = re.compile(r'[;,"\\]')  # split on or unquoted by parsers that ignore quoting


class AmbiguousContentType(AgentGuardError, ValueError):
    """A ``Content-Type`` that clients could read in more than one way (or not at all).

    The message names the problem, never the header's value.
    """


def text_codec(charset: str) -> str | None:
    """Python's name for a text encoding, or ``None`` (unknown, or a bytes-to-bytes codec)."""
    try:
        name = codecs.lookup(charset).name
        b"a".decode(name, "replace")  # b"" skips the check that refuses bytes-to-bytes codecs
    except (LookupError, ValueError, TypeError):
        return None
    return name


@dataclass(frozen=True)
class ContentType:
    """One parsed ``Content-Type``.

    Attributes:
        media: ``type/subtype``, lower-cased; ``""`` when the header is absent.
        charset: Python's codec name for the declared charset, or ``None``.
        parameters: the other parameters, names lower-cased, values unquoted, in order.
    """

    media: str = ""
    charset: str | None = None
    parameters: tuple[tuple[str, str], ...] = ()

    def as_utf8(self) -> str:
        """The canonical header for this type with the body in UTF-8."""
        parts = [self.media or "text/plain"]
        for name, value in self.parameters:
            shown = value if _TOKEN_ONLY.fullmatch(value) else _quote(value)
            parts.append(f"{name}={shown}")
        parts.append("charset=utf-8")
        return "; ".join(parts)


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def parse_content_type(values: Sequence[str]) -> ContentType:
    """Parse the ``Content-Type`` field values of one message (see the module docstring).

    Raises:
        AmbiguousContentType: more than one field, a malformed value, more than one charset
            parameter or an RFC 2231 one, or a charset Python cannot decode.
    """
    if not values:
        return ContentType()
    if len(values) > 1:
        raise AmbiguousContentType("more than one Content-Type header")
    value = values[0]
    media = _MEDIA.match(value)
    if media is None:
        raise AmbiguousContentType("a Content-Type that is not type/subtype")
    position = media.end()
    charsets: list[str] = []
    parameters: list[tuple[str, str]] = []
    while position < len(value):
        parameter = _PARAMETER.match(value, position)
        if parameter is None or parameter.end() == position:
            raise AmbiguousContentType("a malformed Content-Type parameter")
        position = parameter.end()
        name, token, quoted = parameter.groups()
        if name is None:
            continue
        name = name.lower()
        text = token if token is not None else _QUOTED_PAIR.sub(r"\1", quoted)
        if token is None and _SPLITTERS.search(text):
            raise AmbiguousContentType("a quoted parameter value that naive parsers split")
        if name.startswith("charset*"):
            raise AmbiguousContentType("an RFC 2231 charset parameter (charset*)")
        if name == "charset":
            charsets.append(text)
        else:
            parameters.append((name, text))
    if len(charsets) > 1:
        raise AmbiguousContentType("more than one charset parameter")
    codec = None
    if charsets:
        codec = text_codec(charsets[0].strip())
        if codec is None:
            raise AmbiguousContentType("a charset the gateway cannot decode")
    kind = f"{media.group(1)}/{media.group(2)}".lower()
    return ContentType(kind, codec, tuple(parameters))
