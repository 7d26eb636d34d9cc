"""A vendor's endpoints: from the configuration, or from its RFC 8414 metadata under an allow-list.

A metadata document is data from the network that names URLs the gateway will then send codes,
refresh tokens and its client secret to. So every endpoint it names must be ``https`` (``http``
only with ``allow_insecure_http``), carry no credentials or fragment, and be on a host and port in
``discovery_hosts`` (by default only the issuer's own host and port); the document's ``issuer``
must be the configured issuer exactly (RFC 8414 §3.3, the mix-up defence). An allow-list entry is
``host`` or ``host:port`` (an IPv6 literal in brackets): without a port it allows only the
scheme's default port (443, or 80 for ``http``), so an allowed host's Redis or admin port is
never a target. A URL is read with both Python's
and httpx's parsers and must look the same to both, so no parser difference smuggles another
host past the check. Anything else refuses the whole document: an endpoint is never followed
"just this once".
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from agentguard.connect._errors import VendorUnavailable
from agentguard.connect._settings import OAuthClientConfig

__all__ = [
    "DEFAULT_PORTS",
    "AllowedHosts",
    "Endpoints",
    "allowed_hosts",
    "configured_endpoints",
    "endpoints_from_metadata",
    "issuer_fault",
    "well_known_url",
]

_WELL_KNOWN = "/.well-known/oauth-authorization-server"
# RFC 3986 characters minus "@" and "\": no userinfo, nothing parsers read differently.
_URL_CHARS = re.compile(r"[A-Za-z0-9\-._~:/?#\[\]!$&'()*+,;=%]{1,2048}")
_ENTRY = re.compile(
    r"(?:\[(?P<ipv6>[0-9A-Fa-f:.]{2,45})\]|(?P<host>[A-Za-z0-9._-]{1,253}))(?::(?P<port>[0-9]{1,5}))?"
)
_HOST_SHOWN = 80

DEFAULT_PORTS = {"https": 443, "http": 80}
"""The port a URL without one is on."""

AllowedHosts = frozenset[tuple[str, int | None]]
"""``(host, port)`` pairs discovered endpoints may be on; port ``None``: the scheme's default."""


@dataclass(frozen=True)
class Endpoints:
    """Where the vendor's authorization server answers, and what it said of itself.

    Attributes:
        authorization, token, revocation: the endpoints (``revocation`` ``None``: no RFC 7009).
        issuer: the issuer identifier these came from (discovery, or the configured one).
        iss_parameter_supported: the metadata's ``authorization_response_iss_parameter_supported``
            (RFC 9207): the authorization response must then carry ``iss``.
    """

    authorization: str
    token: str
    revocation: str | None = None
    issuer: str | None = None
    iss_parameter_supported: bool = False


def configured_endpoints(config: OAuthClientConfig) -> Endpoints | None:
    """The endpoints the configuration names, or ``None`` when they come from discovery."""
    if config.authorization_endpoint is None or config.token_endpoint is None:
        return None
    return Endpoints(
        config.authorization_endpoint,
        config.token_endpoint,
        config.revocation_endpoint,
        issuer=config.issuer,
    )


def well_known_url(issuer: str) -> str:
    """RFC 8414 §3.1: the metadata URL, the well-known segment inserted before any path."""
    parts = urlsplit(issuer)
    path = parts.path.rstrip("/")
    return urlunsplit((parts.scheme, parts.netloc, _WELL_KNOWN + path, "", ""))


def _entry(entry: str) -> tuple[str, int | None]:
    match = _ENTRY.fullmatch(entry)
    port = None if match is None or match["port"] is None else int(match["port"])
    if match is None or port == 0 or (port is not None and port > 65535):
        raise ValueError(
            f"discovery_hosts entry {_shown(entry)} is not host or host:port "
            "(an IPv6 address in brackets, a port from 1 to 65535)"
        )
    host = match["ipv6"] or match["host"]
    return host.lower().rstrip("."), port


def allowed_hosts(config: OAuthClientConfig) -> AllowedHosts:
    """What discovered endpoints may be on: ``discovery_hosts``, else the issuer's host and port.

    Raises:
        ValueError: an entry is not ``host`` or ``host:port``, or the issuer's port is not a
            port number.
    """
    if config.discovery_hosts:
        return frozenset(_entry(entry) for entry in config.discovery_hosts)
    parts = urlsplit(config.issuer or "")
    port = parts.port or DEFAULT_PORTS.get(parts.scheme)
    return frozenset({((parts.hostname or "").lower().rstrip("."), port)})


def _refuse(service: str, field: str, why: str) -> VendorUnavailable:
    return VendorUnavailable(
        service, f"{service}: refused the vendor's discovery metadata: {field} {why}"
    )


def _shown(host: str) -> str:
    printable = "".join(ch if ch.isprintable() else "?" for ch in host)
    return repr(printable[:_HOST_SHOWN])


def _allowed(host: str, scheme: str, port: int, hosts: AllowedHosts) -> bool:
    return (host, port) in hosts or ((host, None) in hosts and port == DEFAULT_PORTS[scheme])


def _checked_url(
    service: str, field: str, value: object, config: OAuthClientConfig, hosts: AllowedHosts
) -> str:
    import httpx  # lazily: `import agentguard.connect` needs no HTTP client

    if not isinstance(value, str) or _URL_CHARS.fullmatch(value) is None:
        raise _refuse(service, field, "is not a plain absolute URL")
    parts = urlsplit(value)
    try:
        url = httpx.URL(value)
        port = parts.port
    except (httpx.InvalidURL, ValueError):
        raise _refuse(service, field, "is not a plain absolute URL") from None
    schemes = ("https", "http") if config.allow_insecure_http else ("https",)
    if parts.scheme not in schemes or url.scheme != parts.scheme:
        raise _refuse(service, field, f"is not {' or '.join(schemes)}")
    if parts.fragment or "@" in parts.netloc:
        raise _refuse(service, field, "carries a fragment or credentials")
    host = (parts.hostname or "").rstrip(".")
    if not host or url.host.lower().rstrip(".") != host.lower():
        raise _refuse(service, field, f"has a host that reads two ways ({_shown(host)})")
    default = DEFAULT_PORTS[parts.scheme]
    if (port or default) != (url.port or default):
        raise _refuse(service, field, f"has a port that reads two ways ({_shown(parts.netloc)})")
    if not _allowed(host.lower(), parts.scheme, port or default, hosts):
        where = host if port is None else f"{host}:{port}"
        raise _refuse(service, field, f"is on {_shown(where)}, which is not in discovery_hosts")
    return value


def endpoints_from_metadata(
    service: str, config: OAuthClientConfig, document: dict[str, Any] | None
) -> Endpoints:
    """The endpoints an RFC 8414 metadata document names, once every check passed.

    Raises:
        VendorUnavailable: naming the field (and the refused host) that failed.
    """
    if document is None:
        raise _refuse(service, "the document", "is not a JSON object")
    if document.get("issuer") != config.issuer:
        raise _refuse(service, "issuer", "is not the configured issuer")
    try:
        hosts = allowed_hosts(config)
    except ValueError as error:
        raise VendorUnavailable(service, f"{service}: {error}") from None
    authorization = _checked_url(
        service, "authorization_endpoint", document.get("authorization_endpoint"), config, hosts
    )
    token = _checked_url(service, "token_endpoint", document.get("token_endpoint"), config, hosts)
    revocation = document.get("revocation_endpoint")
    if revocation is not None:
        revocation = _checked_url(service, "revocation_endpoint", revocation, config, hosts)
    methods = document.get("code_challenge_methods_supported")
    if methods is not None and (not isinstance(methods, list) or "S256" not in methods):
        raise _refuse(service, "code_challenge_methods_supported", "does not include S256")
    iss_supported = document.get("authorization_response_iss_parameter_supported", False)
    if not isinstance(iss_supported, bool):
        raise _refuse(
            service, "authorization_response_iss_parameter_supported", "is not true or false"
        )
    return Endpoints(
        authorization,
        token,
        revocation,
        issuer=config.issuer,
        iss_parameter_supported=iss_supported,
    )


def issuer_fault(iss: str | None, issuer: str | None, *, required: bool) -> str | None:
    """What is wrong with an authorization response's ``iss`` (RFC 9207 §2.4), or ``None``.

    ``iss`` must equal ``issuer`` exactly (no normalisation: RFC 9207 §2.4 compares strings);
    it may be absent only when not ``required``; with no ``issuer`` known it is not compared.
    """
    if iss is None:
        return "has no iss, which the vendor's metadata promises" if required else None
    if issuer is not None and iss != issuer:
        return "names another issuer"
    return None
