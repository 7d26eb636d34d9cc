"""The registry of upstream services the proxy fronts: one entry per vendor API.

A service names where the vendor lives (an exact base URL: the request never chooses the host),
where it expects its key (``Authorization: Bearer``, a named header such as ``X-Api-Key``, or a
query parameter), how long to wait, and which paths and methods need which level. Adding a
fourth service is one more entry, in code or in configuration::

    ServiceConfig(name="crm", base_url="https://api.crm.example", placement="header",
                  parameter="X-Api-Key")
"""

from __future__ import annotations

import enum
import ipaddress
import re
from collections.abc import Sequence
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

from agentguard._model import Level
from agentguard._permissions import PermissionChecker, RouteRule
from agentguard.connect._settings import OAuthClientConfig

__all__ = ["Placement", "ServiceConfig", "ServiceRoute", "ServiceTimeouts"]

_HEADER_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}\Z")
_FORBIDDEN_HEADERS = frozenset(
    {"host", "content-length", "transfer-encoding", "connection", "dpop", "cookie"}
)


class Placement(str, enum.Enum):
    """Where the vendor expects its key, and so where the agent puts our placeholder."""

    BEARER = "bearer"
    HEADER = "header"
    QUERY = "query"


class ServiceTimeouts(BaseModel):
    """Seconds to connect, to wait for each read (first byte and between chunks), and to write.

    There is deliberately no total-duration limit on responses: streamed responses
    (server-sent events) may run for as long as data keeps flowing. The agent's request body,
    by contrast, has an idle (``body_idle``) and a total (``body_total``) deadline.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    connect: float = Field(default=5.0, gt=0)
    read: float = Field(default=30.0, gt=0)
    write: float = Field(default=30.0, gt=0)
    pool: float = Field(default=5.0, gt=0)
    body_idle: float = Field(default=10.0, gt=0)
    """Longest wait for the agent's next request-body chunk (408 beyond it)."""
    body_total: float = Field(default=120.0, gt=0)
    """Longest time to receive the agent's whole request body (408 beyond it)."""


LevelName = Annotated[Level, BeforeValidator(Level.parse)]
"""A level given as ``"read"``/``"write"`` (configuration) or as a :class:`Level`."""


_Cost = Annotated[int, Field(ge=0, le=2**40)]


class ServiceRoute(BaseModel):
    """A permission rule below the service's mount: ``path`` prefix, level or per-method levels.

    ``approval``: ``true`` holds every call under the path for a human's approval, a list of
    methods (``["DELETE"]``) only those (see :mod:`agentguard.approvals`); ``cost``: what a
    call charges against budgets, one number or per method (``{POST = 5}``; others cost 1).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    path: str = "/"
    level: LevelName | None = None
    methods: dict[str, LevelName] = Field(default_factory=dict)
    approval: bool | tuple[str, ...] = False
    cost: _Cost | dict[str, _Cost] = 1


ServiceName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_-]{0,62}$")]
ToolName = Annotated[str, StringConstraints(pattern=r"^[\x21-\x7e]{1,256}$")]
"""A tool name as a server lists it: printable ASCII (MCP's own rule is stricter)."""


class ServiceConfig(BaseModel):
    """One upstream service.

    Attributes:
        name: the service name grants refer to (``crm``).
        base_url: exact upstream base URL; HTTPS unless ``allow_insecure_http``.
        placement: where the key goes; ``parameter`` names the header or query parameter.
        routes: permission rules relative to the mount; by default every path needs ``read``
            for GET/HEAD/OPTIONS and ``write`` for other methods.
        timeouts: connect/read/write/pool timeouts.
        allow_insecure_http: permit an ``http://`` base URL (tests, loopback sidecars).
        forward_headers: send ``X-Forwarded-For/-Proto/-Host`` upstream.
        max_connections: size of the pooled client's connection pool for this service.
        max_request_bytes: largest request body forwarded (413 beyond it, checked from
            ``Content-Length`` before anything is sent and while streaming); ``None`` for none.
            With a cap, the whole body is received before an upstream connection is taken.
        max_connections_per_caller: most upstream exchanges one user may have in flight on
            this service (429 beyond it); ``None`` means half of ``max_connections``.
        allow_encoded_slash: forward ``%2F`` inside a path segment, for a vendor whose IDs contain
            ``/``. Rules are matched on the decoded path (``%2F`` read as ``/``), so no reading
            of the slash reaches a stricter rule; off by default (400 ``invalid_request``).
        credentials: where the credential sent upstream comes from. ``"operator"`` (default):
            the vault (set by an operator; an admin-scoped one is minted into a per-user token).
            ``"connected"``: each user's own vendor account, connected over OAuth (``oauth``
            says how); a user who has none is refused ``connection_required``. Never one in
            place of the other: a connected service never reads the vault.
        oauth: the OAuth client for ``credentials = "connected"`` (required there, refused
            elsewhere).
        mcp: the service is a remote MCP server (streamable HTTP): each ``tools/call`` is
            checked against the caller's grant for that tool before it goes upstream (403
            ``insufficient_scope`` naming the missing ``service/tool:level``), and
            ``tools/list`` results are cut to the tools the caller may call. Without routes of
            its own, every method needs ``read`` on the service to reach the server at all.
            Needs ``max_request_bytes`` (bodies are read whole).
        tools: with ``mcp``, the level each tool needs, by tool name (``{add_note = "write"}``);
            a tool not named needs ``read`` when the server's listing marks it
            ``readOnlyHint: true``, else ``write``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: ServiceName
    base_url: str
    placement: Placement = Placement.BEARER
    parameter: str | None = None
    routes: tuple[ServiceRoute, ...] = ()
    timeouts: ServiceTimeouts = Field(default_factory=ServiceTimeouts)
    allow_insecure_http: bool = False
    forward_headers: bool = False
    max_connections: int = Field(default=100, ge=1)
    max_request_bytes: int | None = Field(default=10 * 1024 * 1024, ge=0)
    max_connections_per_caller: int | None = Field(default=None, ge=1)
    allow_encoded_slash: bool = False
    credentials: Literal["operator", "connected"] = "operator"
    oauth: OAuthClientConfig | None = None
    mcp: bool = False
    tools: dict[ToolName, LevelName] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> ServiceConfig:
        self._check_mcp()
        if self.credentials == "connected" and self.oauth is None:
            raise ValueError(
                f'service {self.name}: credentials = "connected" needs an oauth client '
                "configuration ([services.oauth])"
            )
        if self.credentials == "operator" and self.oauth is not None:
            raise ValueError(
                f'service {self.name}: oauth is only used with credentials = "connected"'
            )
        parts = urlsplit(self.base_url)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ValueError(f"service {self.name}: base_url must be an absolute http(s) URL")
        if parts.query or parts.fragment or parts.username or parts.password:
            raise ValueError(f"service {self.name}: base_url has no query, fragment or credentials")
        if parts.scheme == "http" and not self.allow_insecure_http:
            raise ValueError(
                f"service {self.name}: refusing to send credentials over plain http; "
                "use https or set allow_insecure_http"
            )
        if self.placement is Placement.BEARER:
            if self.parameter is not None:
                raise ValueError(f"service {self.name}: bearer placement takes no parameter")
        elif self.parameter is None:
            raise ValueError(
                f"service {self.name}: {self.placement.value} placement needs parameter"
            )
        elif self.placement is Placement.HEADER and (
            not _HEADER_NAME.match(self.parameter)
            or self.parameter.lower() in _FORBIDDEN_HEADERS
            or self.parameter.lower() == "authorization"
        ):
            raise ValueError(f"service {self.name}: {self.parameter!r} cannot carry the key")
        return self

    def _check_mcp(self) -> None:
        if self.tools and not self.mcp:
            raise ValueError(f"service {self.name}: tools are only read with mcp = true")
        if self.mcp and self.max_request_bytes is None:
            raise ValueError(
                f"service {self.name}: an MCP service needs max_request_bytes (each body is "
                "read whole to check its tool calls)"
            )
        for tool, level in self.tools.items():
            if level is Level.NONE:
                raise ValueError(
                    f"service {self.name}: tool {tool!r} needs read or write (to deny a tool "
                    "to someone, give them a '<service>/<tool>:none' grant)"
                )

    @property
    def is_loopback(self) -> bool:
        """Whether the upstream is on this machine (for documentation and warnings)."""
        host = urlsplit(self.base_url).hostname or ""
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return host == "localhost"

    def permission_checker(self) -> PermissionChecker:
        """Route rules of this service, on paths relative to the service's mount."""
        rules: Sequence[RouteRule] = [
            RouteRule(
                route.path,
                service=self.name,
                level=route.level,
                methods=route.methods,
                approval=route.approval,
                cost=route.cost,
            )
            for route in self.routes
        ]
        if not any(rule.prefix == "/" for rule in rules):
            # An MCP server takes every message as a POST: reaching it needs read, and each
            # tool call then needs its own level (the tool gate).
            level = Level.READ if self.mcp else None
            rules = [*rules, RouteRule("/", service=self.name, level=level)]
        return PermissionChecker(rules)
