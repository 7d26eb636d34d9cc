"""agentguard for MCP servers built with the official ``mcp`` Python SDK (2.x).

Three pieces, used together (see ``examples/mcp_server.py``)::

    verifier = AgentGuardTokenVerifier(guard, resource="https://api.example.com/mcp")
    server = MCPServer("notes", token_verifier=verifier, auth=AuthSettings(
        issuer_url="https://api.example.com", resource_server_url="https://api.example.com/mcp",
        validate_token_resource=True))

    @server.tool()
    @require_tool("notes", "write")
    async def add_note(text: str) -> str: ...

    app = AgentGuardMCP(server.streamable_http_app(), guard, metadata=metadata, service="notes")

- :class:`AgentGuardMCP` wraps the SDK's ASGI app: it serves the RFC 9728 metadata document
  (any other ``/.well-known/`` path is a ``404``, so a client's discovery moves on), decides
  every request with :meth:`Guard.authenticate` (DPoP proofs included, which the SDK alone
  cannot check), and refuses with agentguard's ``401`` carrying ``WWW-Authenticate: Bearer ...
  resource_metadata="..."`` (and a ``DPoP`` challenge when DPoP is enabled). Then its tool gate
  checks each ``tools/call`` against the caller's live grant for that tool before the SDK runs
  it: a refusal is a ``403`` with ``WWW-Authenticate: Bearer error="insufficient_scope",
  scope="notes/add_note:write"`` (step-up), and ``tools/list`` shows only the tools the caller
  may call. Allowed requests reach the SDK with the Principal in
  :func:`agentguard.current_principal`.
- :class:`AgentGuardTokenVerifier` is the SDK's ``TokenVerifier`` hook: it hands the SDK an
  :class:`AgentGuardAccessToken` carrying the Principal. Used alone (no wrapper), it
  authenticates ``Bearer`` tokens itself, and the SDK renders the 401.
- :func:`require_tool` gives each tool its ``(service, level)``; the wrapper's gate knows it
  before the call, and the tool checks it again when it runs (defence in depth: a tool error
  the model can read, for a server used without the wrapper).

A tool's grant is its own entry (``notes/add_note:write``) if the user has one, else the
service's level (``notes:write``); a key's scope narrows both.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, cast

import anyio.to_thread

from agentguard._extras import missing_extra
from agentguard._mcp_gate import (
    DEFAULT_MAX_BODY_BYTES,
    ToolGate,
    ToolNeed,
    ToolRequirements,
    gated_tools,
    register_tool,
    tool_event,
)

try:
    from mcp.server.auth.middleware.auth_context import get_access_token
    from mcp.server.mcpserver.exceptions import ToolError
except ImportError as error:
    raise missing_extra(error) from None

from agentguard._context import principal_var
from agentguard._model import Grants, Level, Principal
from agentguard._permissions import Requirement
from agentguard._request import (
    GuardRequest,
    parse_authorization,
    public_prefixes,
)
from agentguard.asgi._live_call import run_live
from agentguard.asgi._metadata import (
    AuthorizationServerMetadata,
    ProtectedResourceMetadata,
    advertise_metadata,
)
from agentguard.asgi._responses import send_error, send_json
from agentguard.asgi._reviewed import run_admitted
from agentguard.asgi._scope import PRINCIPAL_STATE_KEY, request_from_scope
from agentguard.asgi._types import ASGIApp, Receive, Scope, Send
from agentguard.errors import ConfigurationError, InsufficientScope, RequestRefused
from agentguard.integrations._mcp_tokens import (
    ANY_KEY,
    AgentGuardAccessToken,
    AgentGuardTokenVerifier,
    Decided,
    checked_resource,
    decided_var,
)
from agentguard.review._chain import ReviewChain, ReviewerLike

if TYPE_CHECKING:
    from agentguard._guard import Guard

__all__ = [
    "AgentGuardAccessToken",
    "AgentGuardMCP",
    "AgentGuardTokenVerifier",
    "ToolPermissionDenied",
    "current_mcp_principal",
    "require_tool",
]

P = ParamSpec("P")
R = TypeVar("R")


class AgentGuardMCP:
    """ASGI wrapper that puts the guard in front of an MCP SDK app (``streamable_http_app()``).

    Args:
        app: the SDK's ASGI app.
        guard: decides every request; any live key may reach the MCP endpoint, and each tool
            call then needs the tool's own permission.
        metadata: the RFC 9728 document; it is served at its well-known path and the guard's
            challenges are made to point at it (:func:`advertise_metadata`). Every other
            ``/.well-known/`` path answers ``404``.
        public_paths: further path prefixes that skip the guard (and the ``404`` above).
        request_reviewers / response_reviewers: reviewers for the JSON-RPC bodies (tool
            arguments in, tool results out) instead of the guard's own
            (:meth:`Guard.reviews <agentguard.Guard.reviews>`); a request block is a 403 before
            the SDK sees the call, a response block a 403 or a cut stream.
        service: the service a tool belongs to when neither ``tools`` nor :func:`require_tool`
            names its requirement: it then needs ``read`` on it if the tool's annotations say
            ``readOnlyHint: true``, else ``write``. Without it, such a tool is refused to all.
        tools: requirements by tool name, ahead of :func:`require_tool`'s: a level on
            ``service`` (``{"purge": "write"}``) or on another service (``"crm:read"``).
        max_body_bytes: the largest request body read (``413`` beyond it); every ``POST`` body
            is read whole and must be strict JSON (``400`` otherwise), so other ``POST`` routes
            of the app take JSON or are listed in ``public_paths``.
        require_audience: with ``metadata``, every key must have been issued for this server's
            ``resource`` (RFC 8707, as MCP asks). A key issued for *another* resource is always
            refused (401 ``invalid_token``, reason ``wrong_audience``); ``False`` (the default)
            still accepts keys issued for no resource at all (deployment-wide keys, and every
            key made before audiences existed), ``True`` refuses them (``audience_required``).
        mcp_path: the path of the SDK's MCP endpoint (its ``streamable_http_path``, ``/mcp``
            by default). Only requests to it (and below it) go through the tool gate; the app's
            other routes are decided and reviewed like any guarded route and may take non-JSON
            bodies. ``None`` (the default) treats every path as the MCP endpoint: nothing
            reaches the SDK ungated, whatever path it serves.
        authorization_server: the RFC 8414 document of the agentguard token endpoint that
            issues this server's keys
            (:class:`~agentguard.asgi.AuthorizationServerMetadata`), served at its well-known
            path before the guard; list its issuer in ``metadata.authorization_servers``.
    """

    def __init__(
        self,
        app: ASGIApp,
        guard: Guard,
        *,
        metadata: ProtectedResourceMetadata | None = None,
        public_paths: Sequence[str] = (),
        request_reviewers: ReviewChain | Iterable[ReviewerLike] | None = None,
        response_reviewers: ReviewChain | Iterable[ReviewerLike] | None = None,
        service: str | None = None,
        tools: Mapping[str, Level | str] | None = None,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        require_audience: bool = False,
        authorization_server: AuthorizationServerMetadata | None = None,
        mcp_path: str | None = None,
    ) -> None:
        if mcp_path is not None and not mcp_path.startswith("/"):
            raise ConfigurationError(f"mcp_path must start with '/', not {mcp_path!r}")
        self._mcp_path = None if mcp_path is None else mcp_path.rstrip("/") or "/"
        self.app = app
        self.guard = guard
        self.resource = checked_resource(metadata.resource if metadata is not None else None)
        self.require_audience = require_audience
        self._server_metadata_app = (
            authorization_server.app() if authorization_server is not None else None
        )
        self.reviews = guard.reviews(request_reviewers, response_reviewers)
        self.metadata = metadata
        self._metadata_app = metadata.app() if metadata is not None else None
        if metadata is not None:
            advertise_metadata(guard, metadata)
        self.public_paths = public_prefixes(public_paths)
        self.gate = ToolGate(
            guard,
            ToolRequirements(service, tools),
            max_body_bytes=max_body_bytes,
            label=service or "mcp",
        )

    def __repr__(self) -> str:
        return f"AgentGuardMCP(app={self.app!r}, guard={self.guard!r})"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope_type = scope["type"]
        if scope_type == "lifespan":
            await self.app(scope, receive, send)
            return
        if scope_type not in ("http", "websocket"):
            raise RuntimeError(f"AgentGuardMCP cannot guard ASGI scope type {scope_type!r}")
        request = request_from_scope(scope)
        served = self._metadata_app
        if served is not None and request.path == served.metadata.well_known_path:
            await served(scope, receive, send)
            return
        server = self._server_metadata_app
        if server is not None and request.path == server.metadata.well_known_path:
            await server(scope, receive, send)
            return
        if request.in_public_paths(self.public_paths):
            await self.app(scope, receive, send)
            return
        if ".well-known" in request.path.split("/"):
            await _not_found(scope, send)
            return
        try:
            passage = await self.guard.admit(
                request,
                requirement=ANY_KEY,
                reviews=self.reviews,
                resource=self.resource,
                require_audience=self.require_audience,
            )
        except RequestRefused as error:
            await send_error(scope, send, error, self.guard.challenge)
            return
        principal = passage.principal
        credentials = parse_authorization(request, ("bearer", "dpop"))
        if credentials.scheme == "dpop":
            # The proof was checked above; the SDK only understands Bearer, so hand it that.
            scope = dict(scope)
            scope["headers"] = [
                (name, value)
                for name, value in scope.get("headers", ())
                if name != b"authorization"
            ]
            scope["headers"].append((b"authorization", b"Bearer " + credentials.key.encode()))
        scope.setdefault("state", {})[PRINCIPAL_STATE_KEY] = principal
        trace = passage.trace
        if trace is not None:  # telemetry: the decision's span ends with the response
            send = trace.watch(send)
        decided = decided_var.set(Decided(self.guard, credentials.key, principal))
        token = principal_var.set(principal)

        async def admitted(scope: Scope, receive: Receive, send: Send) -> None:
            await run_live(
                functools.partial(run_admitted, self.app, passage=passage),
                scope,
                receive,
                send,
                guard=self.guard,
                passage=passage,
                key=credentials.key,
            )

        try:
            if self._gated(request):
                await self.gate.run(admitted, scope, receive, send, request, principal)
            else:  # another route of the app: decided and reviewed, not an MCP exchange
                await admitted(scope, receive, send)
        finally:
            principal_var.reset(token)
            decided_var.reset(decided)
            if trace is not None:
                trace.end()

    def _gated(self, request: GuardRequest) -> bool:
        """Whether ``request`` is for the MCP endpoint (or below it), on its canonical target
        relative to the mount, as the app routes it; anything unclear is gated."""
        endpoint = self._mcp_path
        if endpoint is None or endpoint == "/":
            return True
        try:
            target = request.target()
            if request.root_path.strip("/"):
                target = target.under(request.root_path)
        except RequestRefused:
            return True
        path = target.path
        return path == endpoint or path.startswith(endpoint + "/")


async def _not_found(scope: Scope, send: Send) -> None:
    """``404`` for a ``/.well-known/`` path this server does not serve: a client looking for
    authorization server metadata (RFC 8414) or a path variant of ours then tries the next."""
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008, "reason": "not_found"})
        return
    await send_json(
        send,
        404,
        {"error": "not_found", "error_description": "no metadata document is served here"},
        [("cache-control", "no-store")],
    )


class ToolPermissionDenied(ToolError):
    """A tool was called by a key whose user lacks the tool's permission."""

    def __init__(self, error: InsufficientScope) -> None:
        self.error = error
        super().__init__(f"agentguard refused this call: {error.description}")


def current_mcp_principal() -> tuple[Principal, Guard | None]:
    """The Principal of the MCP request being handled (and the guard that decided it)."""
    access = get_access_token()
    if isinstance(access, AgentGuardAccessToken):
        return access.principal, cast("Guard | None", access._guard)
    decided = decided_var.get()
    if decided is not None:
        return decided.principal, decided.guard
    principal = principal_var.get()
    if principal is None:
        raise LookupError("no agentguard principal: this tool is not running in a guarded request")
    return principal, None


async def _check_tool(name: str, requirement: Requirement) -> None:
    principal, guard = current_mcp_principal()
    service = requirement.service
    allowed = service is None or principal.grants.allows_tool(service, name, requirement.level)
    need = None if service is None else ToolNeed(service, requirement.level)
    error = None
    if not allowed:
        assert need is not None  # noqa: S101 - a requirement without a service always allows
        error = InsufficientScope(required=need.scope(name))
    if guard is not None and (error is not None or name not in gated_tools()):
        # A call the gate allowed is audited once, by the gate; a refusal here always is.
        await guard.record(tool_event(guard, principal, name, need, error))
    if error is not None:
        raise ToolPermissionDenied(error)


def require_tool(
    service: str, level: Level | str = Level.READ, *, name: str | None = None
) -> Callable[[Callable[P, R]], Callable[P, Awaitable[Any]]]:
    """Give a tool function its permission: ``level`` on ``service``, checked on every call.

    Put it *under* the SDK's ``@server.tool()`` so the SDK registers the checked function (its
    signature and docstring are kept); ``name`` is the tool's name when the SDK is given
    another than the function's. The requirement is registered under that name, so
    :class:`AgentGuardMCP` checks it before the call reaches the SDK (a ``403`` naming the
    missing ``service/tool:level``) and hides the tool from callers who lack it. The tool checks
    it again when it runs, against the grant for this tool (``notes/add_note:write``, else
    ``notes:write``): a refusal there raises :class:`ToolPermissionDenied`, which the SDK
    returns as a tool error (``isError``). Each decision is audited once, with
    ``method="tools/call"``. Synchronous tools run in a worker thread.
    """
    requirement = Requirement(service, Level.parse(level))
    Grants.from_scope(f"{service}:read")  # the service name's rules, as in scopes

    def decorate(fn: Callable[P, R]) -> Callable[P, Awaitable[Any]]:
        tool_name: str = name or str(getattr(fn, "__name__", "tool"))
        register_tool(tool_name, service, requirement.level)

        @functools.wraps(fn)
        async def checked(*args: P.args, **kwargs: P.kwargs) -> Any:
            await _check_tool(tool_name, requirement)
            if inspect.iscoroutinefunction(fn):
                return await fn(*args, **kwargs)
            return await anyio.to_thread.run_sync(functools.partial(fn, *args, **kwargs))

        checked.__agentguard_requirement__ = requirement  # type: ignore[attr-defined]
        return checked

    return decorate
