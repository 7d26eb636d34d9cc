"""Reading the guard's approval answers: a held-back call, a refused approval, a status poll.

A call a route rule holds for a human comes back ``403`` with an ``agentguard-approval``
header; only then (or when the request itself named an approval) is the body read, so other
responses stream untouched. The status endpoint is polled at the URI the refusal gave when it
is on the token endpoint's origin and ends in the approval id, else at the token endpoint's
sibling ``approvals/<id>``: the runtime sends its access key only where it already trusts.
"""

from __future__ import annotations

import email.utils
import logging
import math
import re
import secrets
from datetime import datetime, timezone
from enum import Enum
from urllib.parse import quote

import httpx

from agentguard.client._errors import (
    APPROVAL_REQUEST_HEADER,
    ApprovalDenied,
    ApprovalExpired,
    ApprovalPending,
    ApprovalRefused,
    ApprovalWaitFailed,
    printable,
)
from agentguard.client._nonces import origin
from agentguard.client._token import json_object, text
from agentguard.client._wire import WireRequest, WireResponse, WireURL

__all__ = [
    "APPROVAL_RESPONSE_HEADER",
    "Backoff",
    "Polled",
    "approval_refusal",
    "interpret_poll",
    "names_approval",
    "retry_after",
    "status_url",
]

logger = logging.getLogger("agentguard.client")

APPROVAL_RESPONSE_HEADER = "agentguard-approval"
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}\Z")
_RETRYABLE = frozenset({408, 425, 429, 500, 502, 503, 504})
_MAX_RETRY_AFTER = 3600.0


class Polled(Enum):
    """What one poll of the status endpoint said, when it did not end the wait."""

    APPROVED = "approved"
    PENDING = "pending"
    UNAVAILABLE = "unavailable"  # no answer, 429 or 5xx: poll again later


def names_approval(request: WireRequest, response: WireResponse) -> bool:
    """Whether ``response`` may be an approval answer, so its body is worth reading."""
    if response.status_code != 403:
        return False
    return APPROVAL_RESPONSE_HEADER in response.headers or APPROVAL_REQUEST_HEADER in (
        request.headers
    )


def _instant(value: str | None) -> datetime | None:
    if value is None or len(value) > 64:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed.astimezone(timezone.utc) if parsed.tzinfo is not None else None


def _absolute(base: WireURL, reference: str | None) -> str | None:
    if reference is None or len(reference) > 2048:
        return None
    try:
        url = httpx.URL(str(base)).join(reference)
    except httpx.InvalidURL:
        return None
    return str(url) if url.scheme in ("http", "https") and url.host else None


def approval_refusal(
    request: WireRequest, response: WireResponse
) -> ApprovalPending | ApprovalRefused | None:
    """The error a read ``403`` stands for, or ``None`` when it is not about an approval."""
    body = json_object(response)
    reason = text(body, "reason")
    description = text(body, "error_description")
    held = response.headers.get(APPROVAL_RESPONSE_HEADER)
    if held is not None:
        if not _ID.match(held):
            return None
        return ApprovalPending(
            held,
            approval_uri=_absolute(request.url, text(body, "approval_uri")),
            expires_at=_instant(text(body, "expires_at")),
            reason=reason,
            description=description,
        )
    if text(body, "error") != "approval_invalid":
        return None
    approval_id = text(body, "approval_id") or request.headers.get(APPROVAL_REQUEST_HEADER, "")
    if not _ID.match(approval_id):
        return None
    kind = {"approval_denied": ApprovalDenied, "approval_expired": ApprovalExpired}.get(
        reason or "", ApprovalRefused
    )
    return kind(approval_id, reason=reason, description=description)


def status_url(pending: ApprovalPending, token_url: str) -> httpx.URL:
    """Where to poll ``pending``: its ``approval_uri`` if it is on the token endpoint's origin
    and names the approval as its last path segment, else ``<token endpoint>/../approvals/<id>``.
    """
    token = httpx.URL(token_url)
    segment = quote(pending.approval_id, safe="")
    if pending.approval_uri is not None:
        given = httpx.URL(pending.approval_uri)
        if origin(given) == origin(token) and given.raw_path.split(b"?")[0].endswith(
            b"/" + segment.encode()
        ):
            return given
        logger.warning(
            "ignoring the approval_uri of approval %s: not the token endpoint's origin or not "
            "this approval's path; polling the token endpoint's approvals/ instead",
            pending.approval_id,
        )
    return token.copy_with(query=None, fragment=None).join(f"approvals/{segment}")


def retry_after(response: httpx.Response) -> float | None:
    """``Retry-After`` in seconds (delta-seconds or an HTTP date), capped at an hour."""
    value = response.headers.get("retry-after", "").strip()
    if not value:
        return None
    if value.isdigit():
        return min(float(value), _MAX_RETRY_AFTER)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    seconds = (when - datetime.now(timezone.utc)).total_seconds()
    return min(max(seconds, 0.0), _MAX_RETRY_AFTER)


def interpret_poll(pending: ApprovalPending, url: httpx.URL, response: httpx.Response) -> Polled:
    """What a status answer means; raises when it ends the wait without an approval."""
    status = response.status_code
    body = json_object(response)
    approval_id = pending.approval_id
    if status == 200 and text(body, "approval_id") == approval_id:
        state = text(body, "state")
        if state in ("approved", "pending"):
            return Polled(state)
        if state == "denied":
            raise ApprovalDenied(approval_id, description="an operator denied the approval")
        if state == "expired":
            raise ApprovalExpired(approval_id, description="nobody decided in time")
        if state == "consumed":
            raise ApprovalRefused(
                approval_id,
                reason="approval_used",
                description="the approved call already ran (an approval allows one call)",
            )
    if status in _RETRYABLE:
        return Polled.UNAVAILABLE
    if status == 404 and text(body, "reason") == "unknown_approval":
        raise ApprovalRefused(
            approval_id, reason="unknown_approval", description=text(body, "error_description")
        )
    code = printable(text(body, "error") or "no error code")
    where = printable(str(url.copy_with(query=None)))
    raise ApprovalWaitFailed(
        approval_id,
        f"cannot read approval {approval_id} at {where}: HTTP {status} {code}",
        status=status,
    )


class Backoff:
    """Exponential delays with jitter: each in ``[d/2, d]``, ``d`` doubling up to a cap."""

    def __init__(self, initial: float, maximum: float) -> None:
        if not (0 < initial <= maximum) or not math.isfinite(maximum):
            raise ValueError("intervals are positive, finite, and initial <= maximum")
        self._delay = initial
        self._maximum = maximum
        self._random = secrets.SystemRandom()

    def next(self, at_least: float | None = None) -> float:
        """The next delay, and never less than ``at_least`` (a server's ``Retry-After``)."""
        delay = self._delay
        self._delay = min(delay * 2, self._maximum)
        jittered = delay / 2 + self._random.uniform(0, delay / 2)
        return max(jittered, at_least or 0.0)
