"""The refresh round trip: RFC 6749's refresh grant, its DPoP proof, one nonce retry.

Token requests go through a client the runtime owns, never through the agent's, so the refresh
key and the rotated keys never pass the agent's event hooks, logging or ``response.history``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Generator
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any, TypeVar

import anyio
import httpx

from agentguard._clock import Clock
from agentguard._secret import Secret
from agentguard.client._credentials_file import BEARER, DPOP, AgentCredentials, TokenType
from agentguard.client._errors import DPoPNonceLoop, RefreshFailed
from agentguard.client._flow import Io, Perform
from agentguard.client._nonces import Nonces
from agentguard.client._wire import WireResponse

__all__ = ["TokenEndpoint", "json_object", "parse_token_response", "text"]

Y = TypeVar("Y")

_KEY = re.compile(r"^[A-Za-z0-9._~+/-]{8,512}=*$")


def json_object(response: WireResponse) -> dict[str, Any]:
    """The response's JSON object, or ``{}`` when it is not one."""
    try:
        document = json.loads(response.content)
    except (ValueError, RecursionError):
        return {}
    return document if isinstance(document, dict) else {}


def text(document: dict[str, Any], name: str) -> str | None:
    value = document.get(name)
    return value if isinstance(value, str) else None


def parse_token_response(
    credentials: AgentCredentials, body: dict[str, Any], started: datetime
) -> AgentCredentials:
    """The rotated credentials in a 200 answer (RFC 6749 section 5.1), else a permanent error.

    The refresh key was spent by the request, so an unusable answer cannot be retried.
    """
    access = text(body, "access_token")
    refresh = text(body, "refresh_token")
    expires_in = body.get("expires_in")
    scheme = (text(body, "token_type") or "").lower()
    token_type: TokenType = DPOP if scheme == "dpop" else BEARER
    if (
        access is None
        or refresh is None
        or not _KEY.match(access)
        or not _KEY.match(refresh)
        or isinstance(expires_in, bool)
        or not isinstance(expires_in, int)
        or not 0 < expires_in < 10**9
        or scheme not in ("dpop", "bearer")
        or (token_type == DPOP and credentials.dpop_key is None)
    ):
        raise RefreshFailed(
            status=200,
            error="invalid_response",
            description="the token endpoint's answer is not a usable key pair",
            permanent=True,
        )
    return credentials.with_keys(
        Secret(access),
        Secret(refresh),
        issued_at=started,
        expires_at=started + timedelta(seconds=expires_in),
        token_type=token_type,
    )


@dataclass(frozen=True)
class TokenEndpoint:
    """Exchanges a refresh key for a new pair, through clients of its own.

    ``resource``, when set, is sent as RFC 8707's ``resource`` with every refresh.
    """

    nonces: Nonces
    transport: httpx.BaseTransport | None
    async_transport: httpx.AsyncBaseTransport | None
    timeout: float
    resource: str | None = None

    def refresh(
        self, credentials: AgentCredentials, clock: Clock, perform: Perform[Y]
    ) -> Generator[Y, Any, AgentCredentials]:
        """POST the refresh grant (answering one ``use_dpop_nonce``); the rotated credentials."""
        nonce_retried = False
        while True:
            started = clock.now()
            request = self._request(credentials, started)
            try:
                response = yield from perform(
                    Io(partial(self._send, request), partial(self._asend, request))
                )
            except httpx.HTTPError as error:
                raise RefreshFailed(
                    status=None, error="temporarily_unavailable", description=type(error).__name__
                ) from None
            self.nonces.remember("token", request.url, response)
            body = json_object(response)
            if response.status_code == 200:
                return parse_token_response(credentials, body, started)
            code = text(body, "error")
            if (
                response.status_code == 400
                and code == "use_dpop_nonce"
                and credentials.dpop_key is not None
                and response.headers.get("dpop-nonce")
            ):
                if nonce_retried:
                    raise DPoPNonceLoop(str(request.url))
                nonce_retried = True
                continue
            raise RefreshFailed(
                status=response.status_code,
                error=code,
                reason=text(body, "reason"),
                description=text(body, "error_description"),
            )

    def _request(self, credentials: AgentCredentials, now: datetime) -> httpx.Request:
        url = httpx.URL(credentials.token_url)
        headers = {"Accept": "application/json"}
        if credentials.dpop_key is not None:
            nonce = self.nonces.get("token", url)
            iat = int(now.timestamp())
            headers["DPoP"] = credentials.dpop_key.proof(
                "POST", credentials.token_url, nonce=nonce, iat=iat
            )
        form = {"grant_type": "refresh_token", "refresh_token": credentials.refresh_key.reveal()}
        if self.resource is not None:
            form["resource"] = self.resource
        return httpx.Request("POST", url, data=form, headers=headers)

    def _send(self, request: httpx.Request) -> httpx.Response:
        client = httpx.Client(transport=self.transport, timeout=self.timeout)
        try:
            return client.send(request)
        finally:
            if self.transport is None:  # never close a transport the caller owns
                client.close()

    async def _asend(self, request: httpx.Request) -> httpx.Response:
        # a started refresh must finish: cancelling it after the server rotated the keys
        # would lose the new pair and leave only a spent refresh key
        with anyio.CancelScope(shield=True):
            client = httpx.AsyncClient(transport=self.async_transport, timeout=self.timeout)
            try:
                response = await client.send(request)
            finally:
                if self.async_transport is None:
                    await client.aclose()
        return response
