"""Reading the gateway's ``connection_required`` refusal: the user must connect an account.

The gateway marks its own refusal with an ``agentguard-connection`` header naming the service
(and drops a vendor's header of that name), so only that ``403`` body is read: a vendor's own
``403`` streams on untouched and can never pass for the gateway's (it could otherwise show
the human a link of the vendor's choosing). As defence in depth the link itself is kept only
when it is on the origin the refused request went to (the gateway's) and ``https``, or ``http``
on a loopback host; any other link is dropped (``connect_uri`` is ``None``).
"""

from __future__ import annotations

import ipaddress
import re

import httpx

from agentguard.client._errors import CONNECTION_RESPONSE_HEADER, AccountConnectionRequired
from agentguard.client._token import json_object, text
from agentguard.client._wire import WireResponse, WireURL

__all__ = ["connection_refusal", "names_connection"]

_SERVICE = re.compile(r"[a-z][a-z0-9_-]{0,62}\Z")
_MAX_URI = 2048
_DEFAULT_PORTS = {"https": 443, "http": 80}

Origin = tuple[str, bytes, int]


def names_connection(response: WireResponse) -> bool:
    """Whether ``response`` may be the gateway's ``connection_required`` refusal."""
    return response.status_code == 403 and CONNECTION_RESPONSE_HEADER in response.headers


def _loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it could resolve anywhere
        return False


def _origin(url: WireURL) -> Origin | None:
    if url.scheme not in _DEFAULT_PORTS or not url.raw_host:
        return None
    return url.scheme, url.raw_host.lower(), url.port or _DEFAULT_PORTS[url.scheme]


def _gateway_origin(response: WireResponse) -> Origin | None:
    """The origin of the request ``response`` answers, or ``None`` when it is not known."""
    try:
        return _origin(response.request.url)
    except RuntimeError:  # a response built without its request
        return None


def _link(value: str | None, gateway: Origin | None) -> str | None:
    """``value`` when it is an absolute URL of printable ASCII on the ``gateway`` origin, over
    https (or http on loopback); else ``None``."""
    if value is None or len(value) > _MAX_URI or not all(" " < ch <= "~" for ch in value):
        return None
    try:
        url = httpx.URL(value)
    except httpx.InvalidURL:
        return None
    if url.userinfo or gateway is None or _origin(url) != gateway:
        return None
    if url.scheme != "https" and not _loopback(url.host):
        return None
    return value


def connection_refusal(response: WireResponse) -> AccountConnectionRequired | None:
    """The error a read ``403`` stands for, or ``None`` when it is not a connection refusal."""
    body = json_object(response)
    if text(body, "error") != "connection_required":
        return None
    service = response.headers.get(CONNECTION_RESPONSE_HEADER, "")
    if not _SERVICE.match(service) or text(body, "service") not in (None, service):
        return None
    return AccountConnectionRequired(
        service,
        connect_uri=_link(text(body, "connect_uri"), _gateway_origin(response)),
        reason=text(body, "reason"),
        description=text(body, "error_description"),
    )
