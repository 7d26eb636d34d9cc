"""Reading a vendor's token endpoint answer: the one place its bytes become :class:`VendorTokens`.

Everything here is strict because the result goes into a header on every upstream call and into
the store: a token is printable ASCII without spaces, the type is Bearer, a lifetime is a
positive, bounded integer. An RFC 6749 §5.2 error answer becomes :class:`VendorRefused` with the
vendor's code only when the code is well formed and repeats none of the secrets the request
carried; anything else unusable becomes ``invalid_response``. Messages name the field that was
wrong, never a value from the body.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from agentguard._secret import Secret, encoded_forms
from agentguard.connect._errors import VendorRefused, VendorUnavailable
from agentguard.connect._tokens import VendorTokens

__all__ = [
    "INVALID_RESPONSE",
    "MAX_LIFETIME",
    "error_code",
    "parse_json_object",
    "parse_token_response",
    "refusal",
]

INVALID_RESPONSE = "invalid_response"
MAX_LIFETIME = 10 * 366 * 86400
"""The longest ``expires_in`` taken (about ten years); longer is a malformed answer."""

_TOKEN = re.compile(r"[\x21-\x7e]{1,8192}")  # printable ASCII, no space: it goes in a header
_ERROR = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]{1,64}")  # RFC 6749 §5.2 charset, no space
_SCOPE = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]{1,256}")  # RFC 6749 §3.3 scope-token
_DIGITS = re.compile(r"[0-9]{1,10}")
_UNAVAILABLE_4XX = frozenset({408, 425, 429})  # the vendor asks us to come back later


class _Malformed(ValueError):
    """A token response field is unusable; the message names the field, never its value."""


class _NotBearer(ValueError):
    """A well-formed answer with a token type other than Bearer (DPoP, MAC, N_A)."""


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document = dict(pairs)
    if len(document) != len(pairs):
        raise ValueError("duplicate member")  # two readers could take different values
    return document


def parse_json_object(body: bytes) -> dict[str, Any] | None:
    """``body`` as a JSON object with unique member names, or ``None``."""
    try:
        document = json.loads(body, object_pairs_hook=_unique_keys, parse_constant=_no_constants)
    except (ValueError, RecursionError):
        return None
    return document if isinstance(document, dict) else None


def error_code(document: dict[str, Any] | None, sent: Iterable[str] = ()) -> str:
    """The RFC 6749 ``error`` of an error answer, or ``invalid_response``.

    The code is refused when it is not a short string of RFC 6749's charset, or when it
    contains any form of a secret the request sent (a vendor that echoes the refresh token).
    """
    code = document.get("error") if document is not None else None
    if not isinstance(code, str) or _ERROR.fullmatch(code) is None:
        return INVALID_RESPONSE
    for secret in sent:
        if any(form in code for form in encoded_forms(secret)):
            return INVALID_RESPONSE
    return code


def _token(document: dict[str, Any], name: str) -> Secret | None:
    value = document.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or _TOKEN.fullmatch(value) is None:
        raise _Malformed(f"{name} is not a printable ASCII string without spaces")
    return Secret(value)


def _lifetime(document: dict[str, Any]) -> int | None:
    value = document.get("expires_in")
    if value is None:
        return None
    if isinstance(value, str) and _DIGITS.fullmatch(value):
        value = int(value)  # some vendors send the number as a string
    if not isinstance(value, int) or isinstance(value, bool):
        raise _Malformed("expires_in is not an integer")
    if not 0 < value <= MAX_LIFETIME:
        raise _Malformed(f"expires_in is not between 1 and {MAX_LIFETIME} seconds")
    return value


def _scopes(document: dict[str, Any], requested: Sequence[str]) -> tuple[tuple[str, ...], bool]:
    """The granted scopes, and whether the answer said them (``scope`` was present)."""
    value = document.get("scope")
    if value is None:
        return tuple(requested), False  # RFC 6749 §5.1: omitted when it is what was requested
    if not isinstance(value, str):
        raise _Malformed("scope is not a string")
    scopes = [scope for scope in value.split(" ") if scope]
    if any(_SCOPE.fullmatch(scope) is None for scope in scopes):
        raise _Malformed("scope holds a token outside RFC 6749's charset")
    return tuple(dict.fromkeys(scopes)), True


def _tokens(document: dict[str, Any], now: datetime, requested: Sequence[str]) -> VendorTokens:
    token_type = document.get("token_type")
    if not isinstance(token_type, str):
        raise _Malformed("token_type is missing")
    access = _token(document, "access_token")
    if access is None:
        raise _Malformed("access_token is missing")
    refresh = _token(document, "refresh_token")
    lifetime = _lifetime(document)
    scopes, scope_given = _scopes(document, requested)
    if token_type.lower() != "bearer":
        # Checked last so a well-formed DPoP or MAC answer is named for what it is.
        raise _NotBearer
    expires_at = None if lifetime is None else now + timedelta(seconds=lifetime)
    return VendorTokens(access, refresh, expires_at, scopes, scope_given=scope_given)


def refusal(
    service: str, status: int, body: bytes, *, sent: Iterable[str] = (), endpoint: str
) -> VendorRefused | VendorUnavailable:
    """The error a non-success answer of the vendor's ``endpoint`` stands for.

    5xx, and a 4xx that asks to come back later (408, 425, 429): :class:`VendorUnavailable`.
    Any other status: :class:`VendorRefused` with the RFC 6749 ``error`` of the body when it
    is well formed (see :func:`error_code`), else ``invalid_response``.
    """
    if status >= 500 or status in _UNAVAILABLE_4XX:
        return VendorUnavailable(service, f"{service}: the vendor's {endpoint} answered {status}")
    if 400 <= status < 500:
        return VendorRefused(service, error_code(parse_json_object(body), sent))
    return VendorRefused(
        service, INVALID_RESPONSE, f"{service}: the vendor's {endpoint} answered {status}"
    )


def parse_token_response(
    service: str,
    status: int,
    body: bytes,
    *,
    now: datetime,
    requested_scopes: Sequence[str] = (),
    sent: Iterable[str] = (),
) -> VendorTokens:
    """The tokens of a token endpoint's answer (RFC 6749 §5.1), or the refusal it stands for.

    Args:
        service: named in the errors.
        status, body: the answer (the body already capped by the caller).
        now: the injected clock's time, for ``expires_at``.
        requested_scopes: what a response without ``scope`` was granted (its
            ``scope_given`` is then ``False``).
        sent: the secrets the request carried; an error code that repeats one is not shown.

    Raises:
        VendorRefused: an RFC 6749 error answer (its ``error``), a token type other than
            Bearer (``unsupported_token_type``), or any other unusable answer, a 2xx other
            than 200 included (``invalid_response``).
        VendorUnavailable: 5xx, or a 4xx that asks to come back later (408, 425, 429).
    """
    if status != 200:
        raise refusal(service, status, body, sent=sent, endpoint="token endpoint")
    document = parse_json_object(body)
    if document is None:
        raise VendorRefused(
            service,
            INVALID_RESPONSE,
            f"{service}: the vendor's token response is not a JSON object",
        )
    try:
        return _tokens(document, now, requested_scopes)
    except _Malformed as error:
        raise VendorRefused(
            service, INVALID_RESPONSE, f"{service}: the vendor's token response: {error}"
        ) from None
    except _NotBearer:
        raise VendorRefused(service, "unsupported_token_type") from None
