"""Reading the gateway's ``connection_required`` refusal: the user must connect an account.

The gateway marks its own refusal with an ``agentguard-connection`` header naming the service
(and drops a vendor's header of that name), so only that ``403`` body is read: a vendor's own
``403`` streams on untouched and can never pass for the gateway's (it could otherwise show
the human a link of the vendor's choosing).
"""

from __future__ import annotations

import re

import httpx

from agentguard.client._errors import CONNECTION_RESPONSE_HEADER, AccountConnectionRequired
from agentguard.client._token import json_object, text

__all__ = ["connection_refusal", "names_connection"]

_SERVICE = re.compile(r"[a-z][a-z0-9_-]{0,62}\Z")
_MAX_URI = 2048


def names_connection(response: httpx.Response) -> bool:
    """Whether ``response`` may be the gateway's ``connection_required`` refusal."""
    return response.status_code == 403 and CONNECTION_RESPONSE_HEADER in response.headers


def _link(value: str | None) -> str | None:
    """An absolute ``http(s)`` URL of printable ASCII, or ``None``."""
    if value is None or len(value) > _MAX_URI or not all(" " < ch <= "~" for ch in value):
        return None
    try:
        url = httpx.URL(value)
    except httpx.InvalidURL:
        return None
    if url.scheme not in ("http", "https") or not url.host or url.userinfo:
        return None
    return value


def connection_refusal(response: httpx.Response) -> AccountConnectionRequired | None:
    """The error a read ``403`` stands for, or ``None`` when it is not a connection refusal."""
    body = json_object(response)
    if text(body, "error") != "connection_required":
        return None
    service = response.headers.get(CONNECTION_RESPONSE_HEADER, "")
    if not _SERVICE.match(service) or text(body, "service") not in (None, service):
        return None
    return AccountConnectionRequired(
        service,
        connect_uri=_link(text(body, "connect_uri")),
        reason=text(body, "reason"),
        description=text(body, "error_description"),
    )
