"""The operator listener's JSON endpoints, as one ASGI app: approvals (and operator endpoints to
come), authenticated by operator tokens only.

- ``GET /healthz``: liveness, unauthenticated.
- ``GET /approvals``: newest first; query ``status`` (``pending``, ``approved``, ``denied``,
  ``consumed``, ``expired``: what the approval is now), ``user_id``, ``limit`` (1-1000, 100).
- ``GET /approvals/{id}``: one approval.
- ``POST /approvals/{id}/approve`` and ``POST /approvals/{id}/deny``: decide a pending
  approval (audited as ``approval.decide``, the operator token's name as the operator).
- ``GET /connections``, ``POST /connections/{service}/{user_id}/link``,
  ``DELETE /connections/{service}/{user_id}``: users' connected vendor accounts, when a
  service uses them (:mod:`agentguard.asgi._operator_connections`).
- Further endpoints mounted by other parts of the gateway, each under its own first path
  segment (:class:`OperatorEndpoints`: the audit log's tiles, the metrics); an endpoint may
  declare a request public (no operator token), and answers in its own content type.

Every other request needs ``Authorization: Bearer ag_op_...``: missing, malformed, unknown,
revoked or expired tokens are 401 with a ``WWW-Authenticate`` challenge, and an agent key is
refused 401 saying that agent keys are not accepted here. Errors: 400 bad query parameters,
404 unknown approval or endpoint, 405 wrong method (with ``Allow``), 409 an approval that is no
longer pending, 503 (with ``Retry-After``) when the store or the audit log fails. Never a 500.
Every response is JSON with ``Cache-Control: no-store``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable
from urllib.parse import parse_qsl

from agentguard._model import ApprovalRecord, OperatorRecord
from agentguard._request import parse_authorization
from agentguard.approvals._decide import ApprovalNotPending, decide
from agentguard.approvals._operators import authenticate_operator
from agentguard.approvals._queue import APPROVAL_STATES, approval_document, find_approvals
from agentguard.asgi._responses import answer_lifespan, send_error, send_json
from agentguard.asgi._scope import request_from_scope, route_path
from agentguard.asgi._types import Message, Receive, Scope, Send
from agentguard.audit._events import Action, AuditEvent, Decision
from agentguard.errors import (
    AuthenticationError,
    Challenge,
    InvalidRequest,
    MethodNotAllowed,
    MissingCredentials,
    RequestRefused,
    StoreUnavailable,
)
from agentguard.storage._gate_protocols import ApprovalStore, OperatorStore
from agentguard.storage._outage import store_outage

if TYPE_CHECKING:
    from agentguard._guard import Guard
    from agentguard.approvals._notify import ApprovalNotifier
    from agentguard.asgi._operator_connections import ConnectionEndpoints

__all__ = ["OperatorApp", "OperatorEndpoints"]

logger = logging.getLogger("agentguard.operator")

NO_STORE = [("cache-control", "no-store")]
CHALLENGE = Challenge(realm="agentguard operator")
MAX_LIMIT = 1000
_QUERY_NAMES = frozenset({"status", "user_id", "limit"})
_APPROVAL_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}\Z")  # an Identifier


@runtime_checkable
class OperatorEndpoints(Protocol):
    """Endpoints mounted on the operator listener under one first path segment.

    ``segment`` is the first path segment served (``"log"`` serves ``/log/...``).
    ``public(parts)`` says whether a request needs no operator token (``parts`` are the path's
    segments, the first being ``segment``); ``handle`` answers it and returns ``True``, or
    returns ``False`` (having sent nothing) for a 404. ``operator`` is the authenticated
    operator, or ``None`` for a public request. Raising :class:`RequestRefused` answers with
    its error; anything else is logged and answered 503.
    """

    segment: str

    def public(self, parts: Sequence[str]) -> bool: ...

    async def handle(
        self, scope: Scope, send: Send, parts: Sequence[str], operator: OperatorRecord | None
    ) -> bool: ...


class _NotFound(Exception):
    """404: no such endpoint, or no such approval."""

    def __init__(self, description: str, approval_id: str | None = None) -> None:
        super().__init__(description)
        self.description = description
        self.approval_id = approval_id


def _query(scope: Scope) -> dict[str, str]:
    """The query parameters, each at most once, only the known ones (else 400)."""
    raw: bytes = scope.get("query_string", b"")
    try:
        text = raw.decode("ascii")
        pairs = parse_qsl(text, keep_blank_values=True, max_num_fields=len(_QUERY_NAMES))
    except (UnicodeDecodeError, ValueError):
        raise InvalidRequest(
            "the query string is not valid (at most status, user_id, limit)"
        ) from None
    found: dict[str, str] = {}
    for name, value in pairs:
        if name not in _QUERY_NAMES:
            raise InvalidRequest("unknown query parameter; use status, user_id or limit")
        if name in found:
            raise InvalidRequest(f"the query parameter {name} is given more than once")
        found[name] = value
    return found


def _limit(value: str | None) -> int:
    if value is None:
        return 100
    if not (value.isascii() and value.isdigit() and len(value) <= 4) or not (
        1 <= int(value) <= MAX_LIMIT
    ):
        raise InvalidRequest(f"limit is a whole number from 1 to {MAX_LIMIT}")
    return int(value)


class OperatorApp:
    """ASGI app for the operator endpoints (paths relative to its mount).

    Args:
        guard: the Guard whose audit writer records decisions and whose clock tells the time.
        approvals: where approvals live (the gateway's store).
        operators: where operator token records live (the gateway's store).
        notifier: told of each decision (``approval.approved`` / ``approval.denied``).
        connections: the connected-account endpoints (``None``: no service uses them).
        extras: further endpoints, each under its own first path segment.
    """

    def __init__(
        self,
        guard: Guard,
        *,
        approvals: ApprovalStore,
        operators: OperatorStore,
        notifier: ApprovalNotifier | None = None,
        connections: ConnectionEndpoints | None = None,
        extras: Sequence[OperatorEndpoints] = (),
    ) -> None:
        self.guard = guard
        self.approvals = approvals
        self.operators = operators
        self.notifier = notifier
        self.connections = connections
        self.extras = {extra.segment: extra for extra in extras}
        reserved = {"healthz", "approvals", "connections"} & set(self.extras)
        if reserved or len(self.extras) != len(extras):
            raise ValueError(f"operator endpoint segments clash: {sorted(reserved) or extras}")

    def with_connections(self, connections: ConnectionEndpoints) -> OperatorApp:
        """This app with the connected-account endpoints too."""
        return OperatorApp(
            self.guard,
            approvals=self.approvals,
            operators=self.operators,
            notifier=self.notifier,
            connections=connections,
            extras=tuple(self.extras.values()),
        )

    def with_endpoints(self, *extras: OperatorEndpoints) -> OperatorApp:
        """This app with further endpoints too (each under its own first path segment)."""
        return OperatorApp(
            self.guard,
            approvals=self.approvals,
            operators=self.operators,
            notifier=self.notifier,
            connections=self.connections,
            extras=(*self.extras.values(), *extras),
        )

    def __repr__(self) -> str:
        return f"OperatorApp(approvals={type(self.approvals).__name__})"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await answer_lifespan(receive, send)
            return
        if kind == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        if kind != "http":
            raise ValueError(f"OperatorApp does not handle {kind!r} scopes")
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = True
            await send(message)

        try:
            await self._handle(scope, tracked)
        except RequestRefused as error:
            await send_error(scope, send, error, CHALLENGE)
        except Exception as error:  # never a 500: a bug is logged and refused like an outage
            logger.error(
                "operator endpoint failed: %s (refused with 503)",
                type(error).__name__,
                exc_info=error,
            )
            if not started:
                await send_error(scope, send, StoreUnavailable(), CHALLENGE)

    async def _handle(self, scope: Scope, send: Send) -> None:
        path = route_path(scope).rstrip("/") or "/"
        method: str = scope["method"]
        if path == "/healthz":
            _allow(method, ("GET", "HEAD"))
            await send_json(send, 200, {"status": "ok"}, NO_STORE)
            return
        parts = path.strip("/").split("/")
        extra = self.extras.get(parts[0])
        if extra is not None and extra.public(parts):
            if not await extra.handle(scope, send, parts, None):
                await _not_found(send, _NotFound("no such endpoint"))
            return
        operator = await self._authenticate(scope)
        try:
            if extra is not None:
                if not await extra.handle(scope, send, parts, operator):
                    raise _NotFound("no such endpoint")
            elif parts == ["approvals"]:
                _allow(method, ("GET",))
                await self._list(scope, send)
            elif len(parts) == 2 and parts[0] == "approvals":
                _allow(method, ("GET",))
                await self._show(parts[1], send)
            elif len(parts) == 3 and parts[0] == "approvals" and parts[2] in ("approve", "deny"):
                _allow(method, ("POST",))
                await self._decide(parts[1], parts[2] == "approve", operator, send)
            elif parts[0] == "connections" and self.connections is None:
                raise _NotFound("no such endpoint: no service uses connected accounts")
            elif not (
                parts[0] == "connections"
                and self.connections is not None
                and await self.connections.handle(scope, send, parts, operator)
            ):
                raise _NotFound("no such endpoint")
        except _NotFound as missing:
            await _not_found(send, missing)
        except ApprovalNotPending as refused:
            document = {
                "error": "approval_not_pending",
                "error_description": str(refused),
                "approval_id": refused.approval_id,
                "state": refused.state or "unknown",
            }
            await send_json(send, 409, document, NO_STORE)

    async def _authenticate(self, scope: Scope) -> OperatorRecord:
        """The operator the request's bearer token names; 401 (or 400) otherwise."""
        request = request_from_scope(scope)
        try:
            try:
                presented = parse_authorization(request).key
            except MissingCredentials:  # the agents' wording names an access key
                raise MissingCredentials(
                    "no operator token was presented: send Authorization: Bearer ag_op_... "
                    "(agentguard operators issue --name NAME makes one)"
                ) from None
            with store_outage("operator store", "lookup_operator"):
                return await authenticate_operator(
                    self.operators, presented, now=self.guard.clock.now()
                )
        except (AuthenticationError, InvalidRequest) as error:
            audit = self.guard.audit
            token_id = error.audit_context.get("key_id")  # a revoked or expired token: named
            if audit.summaries is not None and token_id is None:  # junk: counted, not a row each
                await audit.count_refusal(
                    source=request.client, reason=error.reason.value, status=error.status
                )
            else:
                await audit.record(
                    AuditEvent(
                        action=Action.DECISION,
                        ts=self.guard.clock.now(),
                        decision=Decision.DENY,
                        reason=error.reason.value,
                        method=request.method,
                        path=request.audit_path,
                        status=error.status,
                        request_id=request.request_id,
                        detail={"listener": "operator", "operator_id": token_id},
                    )
                )
            raise

    async def _list(self, scope: Scope, send: Send) -> None:
        query = _query(scope)
        limit = _limit(query.get("limit"))
        state = query.get("status")
        if state is not None and state not in APPROVAL_STATES:
            raise InvalidRequest(f"status is one of {', '.join(APPROVAL_STATES)}")
        user_id = query.get("user_id") or None
        now = self.guard.clock.now()
        with store_outage("approval store", "list_approvals"):
            found = await find_approvals(
                self.approvals, state=state, user_id=user_id, limit=limit, now=now
            )
        documents = [approval_document(record, now) for record in found]
        await send_json(send, 200, {"approvals": documents}, NO_STORE)

    async def _show(self, approval_id: str, send: Send) -> None:
        if not _APPROVAL_ID.match(approval_id):
            raise _NotFound("no approval with this id")
        with store_outage("approval store", "get_approval"):
            record = await self.approvals.get_approval(approval_id)
        if record is None:
            raise _NotFound("no approval with this id", approval_id)
        await send_json(send, 200, approval_document(record, self.guard.clock.now()), NO_STORE)

    async def _decide(
        self, approval_id: str, approve: bool, operator: OperatorRecord, send: Send
    ) -> None:
        if not _APPROVAL_ID.match(approval_id):
            raise _NotFound("no approval with this id")
        outcome: ApprovalRecord | ApprovalNotPending
        with store_outage("approval store", "decide_approval"):
            outcome = await _decided(
                decide(
                    self.approvals,
                    self.guard.audit,
                    approval_id,
                    approve=approve,
                    by=operator.name,
                    clock=self.guard.clock,
                    notifier=self.notifier,
                    via="api",
                    operator_id=operator.id,
                )
            )
        if isinstance(outcome, ApprovalNotPending):
            if outcome.state is None:
                raise _NotFound("no approval with this id", approval_id)
            raise outcome
        await send_json(send, 200, approval_document(outcome, self.guard.clock.now()), NO_STORE)


async def _not_found(send: Send, missing: _NotFound) -> None:
    document = {"error": "not_found", "error_description": missing.description}
    if missing.approval_id is not None:
        document["approval_id"] = missing.approval_id
    await send_json(send, 404, document, NO_STORE)


async def _decided(
    decision: Awaitable[ApprovalRecord],
) -> ApprovalRecord | ApprovalNotPending:
    """The decided record, or the refusal as a value (so the outage boundary passes it by)."""
    try:
        return await decision
    except ApprovalNotPending as refused:
        return refused


def _allow(method: str, allowed: tuple[str, ...]) -> None:
    if method not in allowed:
        raise MethodNotAllowed(allowed)
