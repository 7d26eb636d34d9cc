"""RFC 9728 protected resource metadata, generated from the guard's configuration.

An MCP client (or any OAuth client) that gets a ``401`` reads the ``resource_metadata`` URL from
the ``WWW-Authenticate`` challenge, fetches the document there and learns which authorization
servers issue tokens for this resource, which scopes exist, and whether DPoP is required::

    metadata = ProtectedResourceMetadata.from_guard(
        guard, resource="https://api.example.com/mcp",
        authorization_servers=["https://login.example.com"],
    )
    advertise_metadata(guard, metadata)     # 401s now carry resource_metadata="..."
    app.mount(metadata.well_known_path, metadata.app())

The document's ``resource`` must be exactly the URL clients use (RFC 9728 §3.3: a client rejects
a document whose ``resource`` differs from the one it asked about).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from agentguard._model import Level
from agentguard.asgi._responses import send_raw
from agentguard.asgi._types import Receive, Scope, Send
from agentguard.errors import Challenge, ConfigurationError

if TYPE_CHECKING:
    from agentguard._guard import Guard

__all__ = [
    "WELL_KNOWN_PREFIX",
    "ProtectedResourceMetadata",
    "ProtectedResourceMetadataApp",
    "advertise_metadata",
    "metadata_url",
    "scopes_for",
]

WELL_KNOWN_PREFIX = "/.well-known/oauth-protected-resource"


def _check_url(url: str, what: str) -> tuple[str, str, str]:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigurationError(f"{what} must be an absolute http(s) URL")
    if parts.query or parts.fragment:
        raise ConfigurationError(f"{what} must not have a query or fragment (RFC 9728 §1.2)")
    return parts.scheme, parts.netloc, parts.path


def metadata_url(resource: str) -> str:
    """Where the metadata of ``resource`` lives (RFC 9728 §3.1).

    The well-known segment goes between the host and the resource's path:
    ``https://api.example.com/mcp`` → ``https://api.example.com/.well-known/oauth-protected-resource/mcp``.
    """
    scheme, netloc, path = _check_url(resource, "the resource identifier")
    path = path.rstrip("/")
    return urlunsplit((scheme, netloc, WELL_KNOWN_PREFIX + path, "", ""))


def scopes_for(guard: Guard) -> list[str]:
    """``service:read`` and ``service:write`` for each service named by the rules or proxies."""
    services = {rule.service for rule in guard.permissions.rules if rule.service is not None}
    services.update(guard.services)
    levels = (Level.READ, Level.WRITE)
    return [f"{service}:{level.label}" for service in sorted(services) for level in levels]


@dataclass(frozen=True)
class ProtectedResourceMetadata:
    """The RFC 9728 document for one protected resource.

    Args:
        resource: the resource identifier: the URL clients call (``https://api.example.com/mcp``).
        authorization_servers: issuer identifiers of the authorization servers whose tokens this
            resource accepts (RFC 8414 issuers).
        scopes_supported: scope values (``crm:read`` ...).
        bearer_methods_supported: how tokens may be sent; agentguard reads the header only.
        dpop_signing_alg_values_supported: JWS algorithms accepted in DPoP proofs.
        dpop_bound_access_tokens_required: whether only DPoP-bound tokens are accepted.
        resource_name: a human-readable name.
        resource_documentation: a URL of developer documentation.
    """

    resource: str
    authorization_servers: tuple[str, ...] = ()
    scopes_supported: tuple[str, ...] = ()
    bearer_methods_supported: tuple[str, ...] = ("header",)
    dpop_signing_alg_values_supported: tuple[str, ...] = ()
    dpop_bound_access_tokens_required: bool = False
    resource_name: str | None = None
    resource_documentation: str | None = None

    def __post_init__(self) -> None:
        _check_url(self.resource, "the resource identifier")
        for issuer in self.authorization_servers:
            _check_url(issuer, "an authorization server issuer")
        if self.resource_documentation is not None:
            _check_url(self.resource_documentation, "resource_documentation")
        for name in (
            "authorization_servers",
            "scopes_supported",
            "bearer_methods_supported",
            "dpop_signing_alg_values_supported",
        ):
            value = getattr(self, name)
            if isinstance(value, str):
                raise ConfigurationError(f"{name} is a sequence of strings, not one string")
            object.__setattr__(self, name, tuple(value))

    @classmethod
    def from_guard(
        cls,
        guard: Guard,
        *,
        resource: str,
        authorization_servers: Sequence[str] = (),
        scopes_supported: Sequence[str] | None = None,
        resource_name: str | None = None,
        resource_documentation: str | None = None,
    ) -> ProtectedResourceMetadata:
        """The document for ``guard``: scopes from its rules and services, DPoP from its policy."""
        dpop = guard.dpop
        return cls(
            resource=resource,
            authorization_servers=tuple(authorization_servers),
            scopes_supported=tuple(
                scopes_for(guard) if scopes_supported is None else scopes_supported
            ),
            dpop_signing_alg_values_supported=dpop.algorithms if dpop is not None else (),
            dpop_bound_access_tokens_required=dpop is not None and dpop.required,
            resource_name=resource_name,
            resource_documentation=resource_documentation,
        )

    @property
    def url(self) -> str:
        """The absolute URL of this document (for ``resource_metadata``)."""
        return metadata_url(self.resource)

    @property
    def well_known_path(self) -> str:
        """The path part of :attr:`url`, to route or mount the app at."""
        return urlsplit(self.url).path

    def document(self) -> dict[str, object]:
        """The JSON object; empty optional members are left out."""
        document: dict[str, object] = {"resource": self.resource}
        if self.authorization_servers:
            document["authorization_servers"] = list(self.authorization_servers)
        if self.scopes_supported:
            document["scopes_supported"] = list(self.scopes_supported)
        document["bearer_methods_supported"] = list(self.bearer_methods_supported)
        if self.dpop_signing_alg_values_supported:
            document["dpop_signing_alg_values_supported"] = list(
                self.dpop_signing_alg_values_supported
            )
            document["dpop_bound_access_tokens_required"] = self.dpop_bound_access_tokens_required
        if self.resource_name is not None:
            document["resource_name"] = self.resource_name
        if self.resource_documentation is not None:
            document["resource_documentation"] = self.resource_documentation
        return document

    def app(self) -> ProtectedResourceMetadataApp:
        """An ASGI app serving this document (mount or route it at :attr:`well_known_path`)."""
        return ProtectedResourceMetadataApp(self)


class ProtectedResourceMetadataApp:
    """A tiny ASGI app answering ``GET`` (and ``HEAD``, ``OPTIONS``) with the metadata document.

    The document is public and read by browser-based clients, so it allows any origin; it never
    depends on the request.
    """

    def __init__(self, metadata: ProtectedResourceMetadata, *, max_age: int = 3600) -> None:
        self.metadata = metadata
        self._body = json.dumps(metadata.document(), separators=(",", ":")).encode()
        self._cache = f"public, max-age={max_age}"

    def __repr__(self) -> str:
        return f"ProtectedResourceMetadataApp(resource={self.metadata.resource!r})"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            await send({"type": "websocket.close", "code": 1008})
            return
        cors = [
            ("access-control-allow-origin", "*"),
            ("access-control-allow-methods", "GET, OPTIONS"),
        ]
        method = scope.get("method", "GET")
        if method == "OPTIONS":
            await send_raw(send, 204, [*cors, ("access-control-max-age", "86400")], b"")
            return
        if method not in ("GET", "HEAD"):
            body = b'{"error":"invalid_request","error_description":"use GET"}'
            headers = [("content-type", "application/json"), ("allow", "GET, HEAD, OPTIONS")]
            await send_raw(send, 405, headers, body)
            return
        headers = [("content-type", "application/json"), ("cache-control", self._cache), *cors]
        await send_raw(send, 200, headers, b"" if method == "HEAD" else self._body)


def advertise_metadata(guard: Guard, metadata: ProtectedResourceMetadata | str) -> Challenge:
    """Make the guard's challenges carry ``resource_metadata="<url>"`` (RFC 9728 §5.1).

    ``metadata`` is the document or its URL. Returns the new :class:`Challenge`, which every
    adapter of ``guard`` renders from now on (:meth:`Guard.advertise <agentguard.Guard.advertise>`);
    an earlier ``resource_metadata`` is replaced, other auth-params are kept.
    """
    url = metadata.url if isinstance(metadata, ProtectedResourceMetadata) else metadata
    _check_url(url, "the resource metadata URL")
    return guard.advertise(url)
