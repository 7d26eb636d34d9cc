"""The ``htu`` claim: RFC 3986 §6.2.2-6.2.3 normalisation, so equal URLs compare equal.

Client libraries spell one URL differently (``%7e`` or ``~``, ``%2f`` or ``%2F``, ``:443`` or
nothing, ``/a/./b`` or ``/a/b``), so both the proof's ``htu`` and the server's own URL are
normalised before they are compared: scheme and host lowercased, IDNA (UTS #46) host, default
port dropped, percent-encoded unreserved octets decoded, remaining hex uppercased, characters a
URI may not contain percent-encoded as UTF-8, dot segments removed, empty path made ``/``.
``%2F`` stays encoded (it is data, not a separator) and a trailing slash is kept. Query and
fragment are not part of ``htu`` (RFC 9449 §4.2) and are dropped.

Only ``http``, ``https``, ``ws`` and ``wss`` URLs with a host and no userinfo are accepted.
"""

from __future__ import annotations

import ipaddress
import re
from functools import lru_cache

import idna

__all__ = ["normalize_htu"]

_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
# RFC 3986 Appendix B, with the authority required.
_URL = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://([^/?#]*)([^?#]*)(?:\?[^#]*)?(?:#.*)?", re.DOTALL)
_HOST_LABELS = re.compile(
    r"[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?(?:\.[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?)*\.?"
)
_PORT = re.compile(r"[0-9]{0,5}")
_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
# Characters a path may hold as they are: unreserved, sub-delims, ":" and "@" (RFC 3986 §3.3).
_PATH_SAFE = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~!$&'()*+,;=:@/"
)
_HEX = frozenset("0123456789abcdefABCDEF")


def _host(host: str) -> str:
    if host.startswith("["):
        if not host.endswith("]") or "%" in host:
            raise ValueError("invalid IP literal")
        return "[" + ipaddress.IPv6Address(host[1:-1]).compressed + "]"
    if not host.isascii():
        host = idna.encode(host, uts46=True).decode("ascii")
    host = host.lower()
    if not _HOST_LABELS.fullmatch(host):
        raise ValueError("invalid host")
    return host


def _authority(scheme: str, authority: str) -> str:
    if "@" in authority:
        raise ValueError("userinfo is not allowed")
    host, port = authority, ""
    if not authority.endswith("]") and ":" in authority:
        host, _, port = authority.rpartition(":")
    if not _PORT.fullmatch(port):
        raise ValueError("invalid port")
    normal = _host(host)
    if port and int(port) > 65535:
        raise ValueError("invalid port")
    if port and int(port) != _DEFAULT_PORTS[scheme]:
        return f"{normal}:{int(port)}"
    return normal


def _percent_normalise(path: str) -> str:
    out: list[str] = []
    i, length = 0, len(path)
    while i < length:
        char = path[i]
        if char == "%":
            pair = path[i + 1 : i + 3]
            if len(pair) != 2 or not _HEX.issuperset(pair):
                raise ValueError("invalid percent-encoding")
            octet = int(pair, 16)
            out.append(chr(octet) if octet in _UNRESERVED else "%" + pair.upper())
            i += 3
            continue
        if char in _PATH_SAFE:
            out.append(char)
        else:
            out.extend(f"%{byte:02X}" for byte in char.encode("utf-8"))
        i += 1
    return "".join(out)


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 §5.2.4, on a path that starts with ``/``."""
    output: list[str] = []
    segments = path.split("/")[1:]
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        if segment == ".":
            if last:
                output.append("")
        elif segment == "..":
            if output:
                output.pop()
            if last:
                output.append("")
        else:
            output.append(segment)
    return "/" + "/".join(output)


@lru_cache(maxsize=512)
def normalize_htu(url: str) -> str:
    """``url`` normalised for comparing DPoP ``htu`` values (RFC 3986 §6.2.2-6.2.3).

    Raises :class:`ValueError` if ``url`` is not an absolute http(s)/ws(s) URL with a valid
    host, port and percent-encoding. The result is idempotent: normalising it again returns it.
    """
    match = _URL.fullmatch(url)
    if match is None:
        raise ValueError("not an absolute URL")
    scheme, authority, path = match.groups()
    scheme = scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise ValueError("unsupported scheme")
    authority = _authority(scheme, authority)
    path = _remove_dot_segments(_percent_normalise(path)) if path else "/"
    return f"{scheme}://{authority}{path}"
