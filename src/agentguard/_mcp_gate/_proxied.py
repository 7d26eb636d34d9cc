"""The gateway's proxy of a remote MCP server, with the tool gate in front of the upstream.

:class:`MCPProxyApp` is the service's :class:`~agentguard.asgi.ProxyApp` with two steps added
where the proxy holds what they need: once the guard has admitted the request and its body has
been received whole (an MCP service always has ``max_request_bytes``), the tool calls in it are
checked against the Principal before anything goes upstream; the upstream's response passes
through the listing filter after the proxy's own secret scan and review. Websockets are refused:
the gate reads HTTP bodies, and a socket to the same server would carry tool calls unchecked.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from agentguard._mcp_gate._gate import ToolGate
from agentguard._mcp_gate._messages import Exchange
from agentguard._mcp_gate._requirements import ToolRequirements
from agentguard.asgi._proxy import ProxyApp
from agentguard.asgi._responses import send_error
from agentguard.asgi._scope import request_from_scope
from agentguard.asgi._types import Receive, Scope, Send
from agentguard.errors import ConfigurationError, InsufficientScope, InvalidRequest

if TYPE_CHECKING:
    import httpx

    from agentguard._guard import Guard
    from agentguard._passage import Passage
    from agentguard._services import ServiceConfig
    from agentguard.asgi._upload import Upload
    from agentguard.credentials._swapper import CredentialSwapper, Outgoing

__all__ = ["MCPProxyApp"]


class _Refused(Exception):
    """Carries the gate's 403 out of the proxy, which would render it without a challenge."""

    def __init__(self, error: InsufficientScope) -> None:
        super().__init__(error.description)
        self.error = error


class _Call:
    """Per-request state between the proxy's steps."""

    __slots__ = ("exchange", "passage", "scope")

    def __init__(self, scope: Scope) -> None:
        self.scope = scope
        self.exchange: Exchange | None = None
        self.passage: Passage | None = None


_call: ContextVar[_Call | None] = ContextVar("agentguard_mcp_proxy_call", default=None)


class MCPProxyApp(ProxyApp):
    """A :class:`~agentguard.asgi.ProxyApp` for a service that is a remote MCP server.

    Args:
        guard, service, swapper, transport: as for :class:`~agentguard.asgi.ProxyApp`.
        gate: the tool gate; by default one for ``service``, its ``tools`` mapping and its
            ``max_request_bytes`` (``require_tool`` registrations play no part: the tools are
            remote).
    """

    def __init__(
        self,
        guard: Guard,
        service: ServiceConfig,
        swapper: CredentialSwapper | None = None,
        *,
        gate: ToolGate | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        **options: Any,
    ) -> None:
        if service.max_request_bytes is None:
            raise ConfigurationError(
                f"service {service.name}: an MCP service needs max_request_bytes (its bodies "
                "are read whole to check each tool call)"
            )
        super().__init__(guard, service, swapper, transport=transport, **options)
        self.gate = gate or ToolGate(
            guard,
            ToolRequirements(service.name, service.tools, registry=False),
            max_body_bytes=service.max_request_bytes,
            label=service.name,
        )

    def __repr__(self) -> str:
        return f"MCPProxyApp(service={self.service.name!r}, base_url={self.service.base_url!r})"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await self._refuse_websocket(scope, send)
            return
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        token = _call.set(_Call(scope))
        try:
            await super().__call__(scope, receive, send)
        except _Refused as refused:  # nothing was sent yet: the body was never forwarded
            await send_error(scope, send, refused.error, self.guard.challenge)
        finally:
            _call.reset(token)

    async def _refuse_websocket(self, scope: Scope, send: Send) -> None:
        """Refuse a websocket (400, audited): the gate checks tool calls in HTTP bodies only,
        so a socket to the same server would carry them unchecked (an MCP service is reached
        over streamable HTTP)."""
        error = InvalidRequest(
            f"{self.service.name} is an MCP service: it is reached over streamable HTTP, where "
            "each tool call is checked; a websocket would carry tool calls unchecked"
        )
        refusal = await self.guard.refuse(request_from_scope(scope), error)
        await send_error(scope, send, refusal, self.guard.challenge)

    async def _request_content(
        self, passage: Passage, receive: Receive, *args: Any, **kwargs: Any
    ) -> Upload:
        upload = await super()._request_content(passage, receive, *args, **kwargs)
        call = _call.get()
        if call is None:  # pragma: no cover - always set by __call__
            raise InvalidRequest("the MCP gate saw no request")
        call.passage = passage
        request = passage.request
        if request.method != "POST":
            if upload.content not in (None, b""):
                raise InvalidRequest("only a POST carries MCP messages; this request has a body")
            return upload
        content = upload.content if upload.content is not None else b""
        if not isinstance(content, bytes):  # pragma: no cover - a capped body is received whole
            raise InvalidRequest("the MCP request body was not received whole")
        call.exchange = self.gate.exchange(request, content)
        try:
            await self.gate.check(request, passage.principal, call.exchange)
        except InsufficientScope as refusal:  # audited call by call already
            if passage.trace is not None:
                passage.trace.refused(refusal)
            raise _Refused(refusal) from None
        return upload

    async def _relay(
        self,
        response: httpx.Response,
        outgoing: Outgoing,
        send: Send,
        *args: Any,
        **kwargs: Any,
    ) -> None:
        # Whatever else the proxy passes its relay (review context, telemetry) goes on as is.
        call = _call.get()
        if call is not None and call.passage is not None:
            send = self.gate.filtered(call.scope, send, call.passage.principal, call.exchange)
        await super()._relay(response, outgoing, send, *args, **kwargs)
