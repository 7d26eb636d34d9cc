"""A vendor's endpoints: from the configuration, or from its RFC 8414 metadata under an allow-list.

A metadata document is data from the network that names URLs the gateway will then send codes,
refresh tokens and its client secret to. So every endpoint it names must be ``https`` (``http``
only with ``allow_insecure_http``), carry no credentials or fragment, and be on a host in
``discovery_hosts`` (by default only the issuer's host); the document's ``issuer`` must be the
configured issuer exactly (RFC 8414 §3.3, the mix-up defence). A URL is read with both Python's
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
    "Endpoints",
    "allowed_hosts",
    "configured_endpoints",
    "endpoints_from_metadata",
    "well_known_url",
]

_WELL_KNOWN = "/.well-known/oauth-authorization-server"
# RFC 3986 characters minus "@" and "\": no userinfo, nothing parsers read differently.
_URL_CHARS = re.compile(r"[A-Za-z0-9\-._~:/?#\[\]!$&'()*+,;=%]{1,2048}")
_HOST_SHOWN = 80


@dataclass(frozen=True)
class Endpoints:
    """Where the vendor's authorization server answers."""

    authorization: str
    token: str
    revocation: str | None = None


def configured_endpoints(config: OAuthClientConfig) -> Endpoints | None:
    """The endpoints the configuration names, or ``None`` when they come from discovery."""
    if config.authorization_endpoint is None or config.token_endpoint is None:
        return None
    return Endpoints(
        config.authorization_endpoint, config.token_endpoint, config.revocation_endpoint
    )


def well_known_url(issuer: str) -> str:
    """RFC 8414 §3.1: the metadata URL, the well-known segment inserted before any path."""
    parts = urlsplit(issuer)
    path = parts.path.rstrip("/")
    return urlunsplit((parts.scheme, parts.netloc, _WELL_KNOWN + path, "", ""))


def allowed_hosts(config: OAuthClientConfig) -> frozenset[str]:
    """The hosts discovered endpoints may be on: ``discovery_hosts``, else the issuer's."""
    if config.discovery_hosts:
        return frozenset(host.lower().rstrip(".") for host in config.discovery_hosts)
    host = urlsplit(config.issuer or "").hostname or ""
    return frozenset({host.lower().rstrip(".")})


def _refuse(service: str, field: str, why: str) -> VendorUnavailable:
    return VendorUnavailable(
        service, f"{service}: refused the vendor's discovery metadata: {field} {why}"
    )


def _shown(host: str) -> str:
    printable = "".join(ch if ch.isprintable() else "?" for ch in host)
    return repr(printable[:_HOST_SHOWN])


def _checked_url(
    service: str, field: str, value: object, config: OAuthClientConfig, hosts: frozenset[str]
) -> str:
    import httpx  # lazily: `import agentguard.connect` needs no HTTP client

    if not isinstance(value, str) or _URL_CHARS.fullmatch(value) is None:
        raise _refuse(service, field, "is not a plain absolute URL")
    parts = urlsplit(value)
    try:
        url = httpx.URL(value)
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
    if host.lower() not in hosts:
        raise _refuse(service, field, f"is on host {_shown(host)}, which is not in discovery_hosts")
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
    hosts = allowed_hosts(config)
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
    return Endpoints(authorization, token, revocation)
