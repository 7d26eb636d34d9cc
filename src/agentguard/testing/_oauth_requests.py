"""Reading the fake OAuth vendor's requests as a strict server does.

The authorization request (RFC 6749 §4.1.1 with RFC 7636 §4.3): an unknown client or a redirect
URI that is not registered gets an error page, never a redirect (§4.1.2.1: the vendor must not
become an open redirector); any other fault redirects back with its error. The client's
authentication at the token and revocation endpoints (§2.3.1): one method per request, the
secret compared in constant time. The token request's grants (§4.1.3, §6).
"""

from __future__ import annotations

import base64
import hmac
import re
from collections.abc import Collection
from datetime import datetime
from typing import Any
from urllib.parse import unquote_plus, urlsplit

from agentguard.testing._oauth_ledger import Ledger, _OAuthFailure
from agentguard.testing._oauth_pages import Answer, error_page, redirect, with_query

__all__ = ["authenticate_client", "back_params", "check_authorization", "token_grant"]

_CHALLENGE = re.compile(r"[A-Za-z0-9_-]{43}")  # RFC 7636 §4.2 S256, unpadded
_VERIFIER = re.compile(r"[A-Za-z0-9._~-]{43,128}")  # RFC 7636 §4.1
_URI = re.compile(r"[\x21-\x7e]{1,2048}")


def check_authorization(
    params: dict[str, str],
    *,
    client_id: str,
    redirect_uris: Collection[str],
    scopes: Collection[str],
    issuer: str | None,
) -> Answer | str:
    """The request's redirect URI when the request is good, else the answer refusing it.

    ``issuer`` is the ``iss`` the redirect back carries (``None``: none).
    """
    if params.get("client_id") != client_id:
        return error_page(400, "unknown client_id")
    redirect_uri = params.get("redirect_uri", "")
    parts = urlsplit(redirect_uri)
    if (
        _URI.fullmatch(redirect_uri) is None
        or parts.scheme not in ("http", "https")
        or not parts.hostname
        or parts.fragment
        or (redirect_uris and redirect_uri not in redirect_uris)
    ):
        return error_page(400, "redirect_uri is missing or not registered")
    # A missing code_challenge_method means "plain" (RFC 7636 §4.3): refused like any other.
    pkce = params.get("code_challenge_method") == "S256" and _CHALLENGE.fullmatch(
        params.get("code_challenge", "")
    )
    if params.get("response_type") != "code":
        error = "unsupported_response_type"
    elif not pkce:
        error = "invalid_request"
    elif scopes and not set(params.get("scope", "").split()) <= set(scopes):
        error = "invalid_scope"
    else:
        return redirect_uri
    return redirect(with_query(redirect_uri, {"error": error, **back_params(params, issuer)}))


def back_params(params: dict[str, str], issuer: str | None) -> dict[str, str]:
    """What every answer to the client carries: its ``state`` and our ``iss`` (RFC 9207;
    ``issuer`` ``None``: a vendor that does not send it)."""
    back: dict[str, str] = {}
    state = params.get("state")
    if state is not None:
        back["state"] = state
    if issuer is not None:
        back["iss"] = issuer
    return back


def authenticate_client(
    headers: dict[str, str],
    form: dict[str, str],
    *,
    client_id: str,
    secret: str | None,
) -> str:
    """The authenticated client id (``secret`` ``None``: a public client, id alone).

    Raises:
        _OAuthFailure: ``invalid_request`` for two methods at once, 401 ``invalid_client``.
    """
    basic = headers.get("authorization")
    if basic is not None and "client_secret" in form:
        raise _OAuthFailure("invalid_request")
    if basic is not None:
        scheme, _, encoded = basic.partition(" ")
        try:
            pair = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
        except ValueError:
            raise _OAuthFailure("invalid_client", 401) from None
        name, sep, presented = pair.partition(":")
        name, presented = unquote_plus(name), unquote_plus(presented)
        if scheme.lower() != "basic" or not sep or form.get("client_id", name) != name:
            raise _OAuthFailure("invalid_client", 401)
    elif "client_secret" in form:
        name, presented = form.get("client_id", ""), form["client_secret"]
    elif secret is None:
        name, presented = form.get("client_id", ""), ""
    else:
        raise _OAuthFailure("invalid_client", 401)
    expected = secret or ""
    good = hmac.compare_digest(presented.encode(), expected.encode())
    if name != client_id or not good:
        raise _OAuthFailure("invalid_client", 401)
    return name


def token_grant(
    ledger: Ledger, form: dict[str, str], *, client_id: str, now: datetime, ttl: int
) -> dict[str, Any]:
    """The token response for an ``authorization_code`` or ``refresh_token`` request.

    Raises:
        _OAuthFailure: ``invalid_request``, ``invalid_grant``, ``invalid_scope``,
            ``unsupported_grant_type``.
    """
    grant_type = form.get("grant_type")
    if grant_type == "authorization_code":
        code, redirect_uri = form.get("code"), form.get("redirect_uri")
        if not code or not redirect_uri:
            raise _OAuthFailure("invalid_request")
        verifier = form.get("code_verifier")
        if verifier is not None and _VERIFIER.fullmatch(verifier) is None:
            verifier = None  # a malformed verifier matches no challenge
        return ledger.redeem_code(
            code,
            client_id=client_id,
            redirect_uri=redirect_uri,
            verifier=verifier,
            now=now,
            ttl=ttl,
        )
    if grant_type == "refresh_token":
        token = form.get("refresh_token")
        if not token:
            raise _OAuthFailure("invalid_request")
        scope = form.get("scope")
        scopes = tuple(scope.split()) if scope is not None else None
        return ledger.refresh(token, client_id=client_id, scopes=scopes, now=now, ttl=ttl)
    raise _OAuthFailure("unsupported_grant_type")
