"""The tool gate: every ``tools/call`` checked against the caller's live grants before the MCP
server runs, every ``tools/list`` result cut to the tools the caller may call.

One gate serves both places a Principal meets an MCP server: :class:`AgentGuardMCP
<agentguard.integrations.mcp.AgentGuardMCP>` in front of an SDK app (:meth:`ToolGate.run`), and
the gateway's proxy of a remote MCP server (:mod:`agentguard._mcp_gate._proxied`). Either way
the guard has already admitted the request and resolved its Principal.

A ``POST`` body is read whole (up to ``max_body_bytes``: 413 beyond it) and read strictly
(:mod:`agentguard._mcp_gate._messages`: 400 for anything two parsers could read differently).
Each ``tools/call`` in it (one message or a batch) is checked and audited, allowed or not
(``method="tools/call"``, ``detail={"tool": name}``). If any call is refused the whole request
is refused, before the server sees any of it: ``403`` with ``WWW-Authenticate: Bearer
error="insufficient_scope", scope="<every missing scope>"`` (RFC 6750 §3.1), so a client can
step up to exactly what it lacks. The body then reaches the server unchanged.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

import anyio

from agentguard._mcp_gate._listing import ListingFilter
from agentguard._mcp_gate._messages import Exchange, ToolCall, parse_exchange
from agentguard._mcp_gate._requirements import ToolNeed, ToolRequirements
from agentguard._model import Principal
from agentguard._request import GuardRequest
from agentguard.asgi._responses import send_error
from agentguard.asgi._types import Message, Receive, Scope, Send
from agentguard.audit._events import Action, AuditEvent, Decision
from agentguard.errors import (
    InsufficientScope,
    InvalidRequest,
    PayloadTooLarge,
    Reason,
    RequestRefused,
    RequestTimeout,
)

if TYPE_CHECKING:
    from agentguard._guard import Guard

__all__ = ["DEFAULT_MAX_BODY_BYTES", "ToolGate", "gated_tools", "tool_event"]

DEFAULT_MAX_BODY_BYTES = 1024 * 1024
DEFAULT_MAX_LISTING_BYTES = 8 * 1024 * 1024
BODY_SECONDS = 60.0

#: The tools the gate allowed for the request being handled, so ``require_tool``'s own check
#: (defence in depth) does not audit the same call twice.
_gated: ContextVar[frozenset[str]] = ContextVar("agentguard_mcp_gated", default=frozenset())


def gated_tools() -> frozenset[str]:
    """The tools the gate allowed for this request (empty outside a gated request)."""
    return _gated.get()


def tool_event(  # noqa: PLR0917 - one event's facts, in the order they are read
    guard: Guard,
    principal: Principal,
    name: str,
    need: ToolNeed | None,
    error: RequestRefused | None,
    request: GuardRequest | None = None,
    **detail: str | bool,
) -> AuditEvent:
    """The audit event of one tool decision (``method="tools/call"``, ``detail.tool``)."""
    return AuditEvent(
        action=Action.DECISION,
        ts=guard.clock.now(),
        decision=Decision.ALLOW if error is None else Decision.DENY,
        reason=error.reason.value if error is not None else None,
        service=need.service if need is not None else None,
        method="tools/call",
        path=f"tool:{name}"[:1024],
        status=error.status if error is not None else None,
        request_id=request.request_id if request is not None else None,
        user_id=principal.user_id,
        workspace_id=principal.workspace_id,
        account_id=principal.account_id,
        key_id=principal.key_id,
        family_id=principal.family_id,
        detail={"tool": name[:200], **detail},
    )


class _ClientLeft(Exception):
    """The client disconnected before its request body was complete."""


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives ``body`` back once, then reads on (the disconnect)."""
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def replay() -> Message:
        return pending.pop() if pending else await receive()

    return replay


class ToolGate:
    """Checks tool calls and filters tool listings for one MCP server (see the module docstring).

    Args:
        guard: records the decisions; its challenge is sent with refusals.
        requirements: what each tool needs.
        max_body_bytes: the largest request body read (413 beyond it).
        max_listing_bytes: the largest ``tools/list`` response (or event) held to filter it
            (502 or the stream ends beyond it).
        label: names the server in a 502.
    """

    def __init__(
        self,
        guard: Guard,
        requirements: ToolRequirements,
        *,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        max_listing_bytes: int = DEFAULT_MAX_LISTING_BYTES,
        label: str = "mcp",
    ) -> None:
        if max_body_bytes < 1 or max_listing_bytes < 1:
            raise ValueError("the MCP gate's caps are positive byte counts")
        self.guard = guard
        self.requirements = requirements
        self.max_body_bytes = max_body_bytes
        self.max_listing_bytes = max_listing_bytes
        self.label = label

    def __repr__(self) -> str:
        return f"ToolGate({self.requirements!r}, max_body_bytes={self.max_body_bytes})"

    async def read_body(self, request: GuardRequest, receive: Receive) -> bytes:
        """The whole request body: 413 over the cap, 408 if it takes over a minute."""
        declared = request.header(b"content-length")
        cap = self.max_body_bytes
        if declared is not None and declared.strip().isdigit() and int(declared) > cap:
            raise PayloadTooLarge(f"the MCP request body exceeds {cap} bytes")
        body = bytearray()
        with anyio.move_on_after(BODY_SECONDS) as deadline:
            more = True
            while more:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise _ClientLeft
                body += message.get("body", b"")
                if len(body) > cap:
                    raise PayloadTooLarge(f"the MCP request body exceeds {cap} bytes")
                more = message.get("more_body", False)
        if deadline.cancelled_caught:
            raise RequestTimeout(reason=Reason.REQUEST_BODY_TIMEOUT)
        return bytes(body)

    def exchange(self, request: GuardRequest, body: bytes) -> Exchange:
        """The tool calls and listings in ``body`` (400 if it cannot be read strictly)."""
        return parse_exchange(body, request.headers)

    def allows(self, principal: Principal, name: str, annotations: Any = None) -> bool:
        """Whether ``principal`` may call tool ``name`` (as a listing shows it)."""
        needs = self.requirements.needs(name, annotations)
        return bool(needs) and all(need.allowed(principal.grants, name) for need in needs)

    def _missing(self, principal: Principal, call: ToolCall) -> tuple[ToolNeed | None, list[str]]:
        needs = sorted(self.requirements.needs(call.name))
        if not needs:
            return None, []
        missing = [
            need.scope(call.name) for need in needs if not need.allowed(principal.grants, call.name)
        ]
        return needs[0], missing

    async def check(self, request: GuardRequest, principal: Principal, exchange: Exchange) -> None:
        """Audit every call's decision; raise the 403 if any call is refused (all are then)."""
        decided = [(call, *self._missing(principal, call)) for call in exchange.calls]
        refused = [call for call, need, missing in decided if need is None or missing]
        unknown = [call.name for call, need, _ in decided if need is None]
        scopes = list(dict.fromkeys(scope for _, _, missing in decided for scope in missing))
        error: InsufficientScope | None = None
        if refused:
            if unknown:
                what = ", ".join(repr(name[:64]) for name in dict.fromkeys(unknown))
                description = (
                    f"no permission is configured for tool {what}: give it @require_tool or "
                    "an entry in the MCP tools mapping"
                )
                error = InsufficientScope(description, required=" ".join(scopes) or None)
            else:
                error = InsufficientScope(required=" ".join(scopes))
        for call, need, missing in decided:
            own = error if (need is None or missing) else None
            extra: dict[str, str | bool] = {}
            if error is not None and own is None:
                own = error
                extra["with_batch"] = True  # allowed alone, refused with the calls beside it
            await self.guard.record(
                tool_event(self.guard, principal, call.name, need, own, request, **extra)
            )
        if error is not None:
            raise error

    def filtered(
        self, scope: Scope, send: Send, principal: Principal, exchange: Exchange | None
    ) -> Send:
        """``send``, filtering tool listings on every ``POST`` and every ``GET`` stream (where a
        resumed stream replays earlier responses).

        A ``POST`` whose body was read (``exchange``) is filtered even when it asked for no
        listing: a server may route another request's listing onto it (the SDK routes
        responses by ``str(id)``, so a later request with id ``"7"`` takes over the stream of a
        pending ``tools/list`` with id ``7``). Only the listings a request asked for teach the
        gate annotations.
        """
        if scope.get("method") not in ("GET", "POST"):
            return send
        if scope.get("method") == "POST" and exchange is None:
            return send  # the gate read no body: not one of its exchanges (run() always reads)
        asked = scope.get("method") == "GET" or (exchange is not None and bool(exchange.listings))
        return ListingFilter(
            scope,
            send,
            keep=lambda name, annotations: self.allows(principal, name, annotations),
            learn=self.requirements.learn if asked else _unlearned,
            cap=self.max_listing_bytes,
            service=self.label,
        )

    async def run(  # noqa: PLR0917 - an ASGI call plus what the guard decided
        self,
        app: Callable[[Scope, Receive, Send], Awaitable[None]],
        scope: Scope,
        receive: Receive,
        send: Send,
        request: GuardRequest,
        principal: Principal,
    ) -> None:
        """Gate one admitted request and run ``app`` for it (refusals are sent here)."""
        exchange = None
        if scope["type"] == "http":
            try:
                if request.method == "POST":
                    body = await self.read_body(request, receive)
                    exchange = self.exchange(request, body)
                    await self.check(request, principal, exchange)
                    receive = _replay(body, receive)
                elif _declares_body(request):
                    raise InvalidRequest(
                        "only a POST carries MCP messages; this request has a body"
                    )
            except _ClientLeft:
                return
            except InsufficientScope as refusal:  # audited call by call already
                await send_error(scope, send, refusal, self.guard.challenge)
                return
            except RequestRefused as refusal:
                sent = await self.guard.refuse(request, refusal, principal=principal)
                await send_error(scope, send, sent, self.guard.challenge)
                return
        send = self.filtered(scope, send, principal, exchange) if scope["type"] == "http" else send
        token = _gated.set(
            frozenset(call.name for call in exchange.calls) if exchange else frozenset()
        )
        try:
            await app(scope, receive, send)
        finally:
            _gated.reset(token)


def _declares_body(request: GuardRequest) -> bool:
    length, chunked = request.header(b"content-length"), request.header(b"transfer-encoding")
    return (length is not None and length.strip() not in (b"", b"0")) or chunked is not None


def _unlearned(name: str, annotations: Any) -> None:
    """Learn nothing from a listing no request of this exchange asked for."""
