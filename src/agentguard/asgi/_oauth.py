"""The OAuth endpoints as one ASGI app: token (refresh), revocation, introspection.

- ``POST /token``: ``grant_type=refresh_token`` (RFC 6749 §6) with rotation; JSON bodies per
  §5.1/§5.2 and ``Cache-Control: no-store``. An RFC 8707 ``resource`` narrows the new keys'
  audience (or keeps it); a malformed one, or one the key's audience does not cover, is ``400
  invalid_target`` and the refresh key stays unused (see :mod:`agentguard._audience`).
- ``POST /revoke``: RFC 7009. Always ``200`` for a well-formed request, whether or not the key
  existed; revoking a refresh key revokes its whole family.
- ``POST /introspect``: RFC 7662, for resource servers that authenticate with a configured
  introspection secret (``Authorization: Bearer <secret>``). Without one configured it refuses.
- ``GET /approvals/{id}``: an agent's own approval's state, authenticated with its access key
  (see :mod:`agentguard.asgi._approval_status`).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from typing import TYPE_CHECKING

from agentguard._model import Grants, KeyKind
from agentguard._request import TOKEN68, GuardRequest, parse_authorization
from agentguard._resolver import key_context, liveness_failure
from agentguard.asgi._approval_status import APPROVALS_PREFIX, ApprovalStatusEndpoint
from agentguard.asgi._forms import read_form
from agentguard.asgi._responses import send_error, send_json, send_raw
from agentguard.asgi._scope import request_from_scope, route_path
from agentguard.asgi._types import Receive, Scope, Send
from agentguard.audit._events import Action, AuditEvent, Decision
from agentguard.errors import (
    InvalidClient,
    InvalidDPoPProof,
    InvalidRequest,
    InvalidScope,
    InvalidToken,
    MethodNotAllowed,
    RequestRefused,
    StoreUnavailable,
    UnsupportedGrantType,
    UseDPoPNonce,
)
from agentguard.storage._protocols import KeyLookup

if TYPE_CHECKING:
    from agentguard._guard import Guard

__all__ = ["OAuthApp"]

NO_STORE = [("cache-control", "no-store"), ("pragma", "no-cache")]
_OUTAGE_ACTIONS = {"/token": Action.KEY_REFRESH, "/revoke": Action.KEY_REVOKE}


class OAuthApp:
    """ASGI app for ``/token``, ``/revoke``, ``/introspect`` and ``/approvals/{id}`` (paths
    relative to its mount).

    Args:
        guard: the Guard whose issuer and store it uses.
        introspection_secrets: secrets resource servers present to introspect; only their
            SHA-256 is kept. Empty (the default) disables introspection.
        max_body: largest accepted form body in bytes.
    """

    def __init__(
        self, guard: Guard, *, introspection_secrets: Sequence[str] = (), max_body: int = 8192
    ) -> None:
        self.guard = guard
        self.max_body = max_body
        for secret in introspection_secrets:
            if len(secret) < 32 or not TOKEN68.match(secret):
                raise ValueError(
                    "an introspection secret is at least 32 URL-safe characters; "
                    "generate one with secrets.token_urlsafe(32)"
                )
        self._introspection_hashes = [
            hashlib.sha256(secret.encode()).digest() for secret in introspection_secrets
        ]
        self._routes = {
            "/token": self._token,
            "/revoke": self._revoke,
            "/introspect": self._introspect,
        }
        self._approval_status = ApprovalStatusEndpoint(guard)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            await send({"type": "websocket.close", "code": 1008})
            return
        path = route_path(scope).rstrip("/")
        if path.startswith(APPROVALS_PREFIX):
            await self._approval_status(scope, send, path[len(APPROVALS_PREFIX) :])
            return
        handler = self._routes.get(path)
        if handler is None:
            document = {"error": "not_found", "error_description": "no such endpoint"}
            await send_json(send, 404, document)
            return
        try:
            if scope["method"] != "POST":
                raise MethodNotAllowed(("POST",))
            form = await read_form(scope, receive, self.max_body)
            await handler(scope, form, send)
        except RequestRefused as error:
            if isinstance(error, StoreUnavailable):
                error = await self._record_outage(scope, error)
            challenge = self.guard.challenge if isinstance(error, InvalidClient) else None
            await send_error(scope, send, error, challenge)

    async def _record_outage(self, scope: Scope, error: StoreUnavailable) -> RequestRefused:
        """Audit a refusal a storage failure forced; the audit store's own failure wins."""
        request = request_from_scope(scope)
        action = _OUTAGE_ACTIONS.get(route_path(scope).rstrip("/"), Action.DECISION)
        event = AuditEvent(
            action=action, ts=self.guard.clock.now(), decision=Decision.DENY,
            reason=error.reason.value, method=request.method, path=request.audit_path,
            status=error.status, request_id=request.request_id,
        )  # fmt: skip
        try:
            await self.guard.audit.record(event)
        except RequestRefused as unrecorded:
            return unrecorded
        return error

    async def _token(self, scope: Scope, form: dict[str, str], send: Send) -> None:
        grant_type = form.get("grant_type")
        if not grant_type:
            raise InvalidRequest("grant_type is required")
        if grant_type != "refresh_token":
            raise UnsupportedGrantType()
        refresh_key = form.get("refresh_token")
        if not refresh_key:
            raise InvalidRequest("refresh_token is required")
        scope_param = form.get("scope")
        requested: Grants | None = None
        if scope_param is not None:
            try:
                requested = Grants.from_scope(scope_param)
            except ValueError:
                raise InvalidScope() from None
        jkt = await self._token_proof(scope, refresh_key)
        client = scope.get("client")
        issued = await self.guard.issuer.refresh(
            refresh_key,
            scope=requested,
            jkt=jkt,
            source=client[0] if client else None,
            resource=form.get("resource"),
        )
        document: dict[str, object] = {
            "access_token": issued.access_key.reveal(),
            "token_type": issued.token_type,
            "expires_in": issued.expires_in(self.guard.clock.now()),
            "refresh_token": issued.refresh_key.reveal(),
        }
        if issued.access.scope is not None:
            document["scope"] = issued.access.scope.to_scope()
        await send_json(send, 200, document, NO_STORE)

    async def _token_proof(self, scope: Scope, refresh_key: str) -> str | None:
        """The thumbprint of the token request's valid DPoP proof, or ``None`` without one.

        A refused proof is audited with the ids of the refresh key it came with; with a key the
        store does not know (or none well-formed) it names no one and is counted in the refusal
        summary per client address instead, so a flood of junk proofs writes no row each.
        """
        request = request_from_scope(scope)
        try:
            verified = await self.guard.verify_token_proof(request)
        except (InvalidDPoPProof, UseDPoPNonce) as error:
            found = await self._known_key(refresh_key)
            audit = self.guard.audit
            if found is None and audit.summaries is not None:
                client = scope.get("client")
                await audit.count_refusal(
                    source=client[0] if client else None, reason=error.reason.value, status=400
                )
            else:
                ids = key_context(found.key) if found is not None else {}
                await audit.record(
                    AuditEvent(
                        action=Action.KEY_REFRESH,
                        ts=self.guard.clock.now(),
                        decision=Decision.DENY,
                        reason=error.reason.value,
                        method="POST",
                        path=request.audit_path,
                        status=400,
                        request_id=request.request_id,
                        **ids,
                    )
                )
            raise error.at_token_endpoint() from None
        return verified.jkt if verified is not None else None

    async def _known_key(self, presented: str) -> KeyLookup | None:
        """The stored key ``presented`` names, or ``None`` (malformed or unknown)."""
        try:
            return await self.guard.lookup(presented)
        except InvalidToken:  # malformed or unknown
            return None

    async def _revoke(self, scope: Scope, form: dict[str, str], send: Send) -> None:
        token = form.get("token")
        if not token:
            raise InvalidRequest("token is required")
        await self.guard.issuer.revoke_presented(token)
        await send_raw(send, 200, NO_STORE, b"")

    def _authenticate_introspection(self, scope: Scope) -> None:
        if not self._introspection_hashes:
            raise InvalidClient("introspection is disabled: no introspection secret is configured")
        request = GuardRequest(method="POST", path=scope["path"], headers=scope.get("headers", ()))
        try:
            presented = parse_authorization(request).key
        except RequestRefused:
            raise InvalidClient() from None
        digest = hashlib.sha256(presented.encode()).digest()
        matched = False
        for expected in self._introspection_hashes:
            matched |= hmac.compare_digest(digest, expected)
        if not matched:
            raise InvalidClient()

    async def _introspect(self, scope: Scope, form: dict[str, str], send: Send) -> None:
        self._authenticate_introspection(scope)
        token = form.get("token")
        if not token:
            raise InvalidRequest("token is required")
        await send_json(send, 200, await self._describe(token), NO_STORE)

    async def _describe(self, token: str) -> dict[str, object]:
        try:
            found = await self.guard.lookup(token)
        except InvalidToken:
            return {"active": False}
        key = found.key
        if liveness_failure(found, self.guard.clock.now()) is not None or key.used_at is not None:
            return {"active": False}
        user = found.user
        if user is None:  # liveness_failure already refused this; keeps the type checker honest
            return {"active": False}
        document: dict[str, object] = {
            "active": True,
            "token_type": "access_token" if key.kind is KeyKind.ACCESS else "refresh_token",
            "sub": key.user_id,
            "scope": user.grants.narrow(key.scope).to_scope(),
            "exp": int(key.expires_at.timestamp()),
            "iat": int(key.created_at.timestamp()),
            "jti": key.id,
            "workspace_id": key.workspace_id,
            "account_id": key.account_id,
        }
        if key.jkt is not None:
            document["cnf"] = {"jkt": key.jkt}
        if key.audience is not None:
            document["aud"] = key.audience
        return document


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
