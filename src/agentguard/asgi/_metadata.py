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

When a resource names agentguard's own token endpoint as its authorization server, serve that
server's RFC 8414 document too, outside the guard (clients fetch it without a key)::

    server = AuthorizationServerMetadata.from_guard(guard, issuer="https://api.example.com")
    app.add_route(server.well_known_path, server.app())   # /.well-known/oauth-authorization-server
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from agentguard._model import Level
from agentguard.asgi._responses import answer_lifespan, send_raw
from agentguard.asgi._types import Receive, Scope, Send
from agentguard.errors import Challenge, ConfigurationError

if TYPE_CHECKING:
    from agentguard._guard import Guard

__all__ = [
    "AS_WELL_KNOWN_PREFIX",
    "WELL_KNOWN_PREFIX",
    "AuthorizationServerMetadata",
    "AuthorizationServerMetadataApp",
    "ProtectedResourceMetadata",
    "ProtectedResourceMetadataApp",
    "advertise_metadata",
    "authorization_server_metadata_url",
    "metadata_url",
    "scopes_for",
]

WELL_KNOWN_PREFIX = "/.well-known/oauth-protected-resource"
AS_WELL_KNOWN_PREFIX = "/.well-known/oauth-authorization-server"


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


def authorization_server_metadata_url(issuer: str) -> str:
    """Where the RFC 8414 metadata of ``issuer`` lives (RFC 8414 §3.1): the well-known segment
    between the host and the issuer's path, ``https://api.example.com`` →
    ``https://api.example.com/.well-known/oauth-authorization-server``."""
    scheme, netloc, path = _check_url(issuer, "the issuer identifier")
    return urlunsplit((scheme, netloc, AS_WELL_KNOWN_PREFIX + path.rstrip("/"), "", ""))


@dataclass(frozen=True)
class AuthorizationServerMetadata:
    """The RFC 8414 document for agentguard's token endpoint (:class:`~agentguard.asgi.OAuthApp`).

    agentguard's authorization server issues keys to operators (``agentguard keys issue``) and
    exchanges refresh keys: it has no authorization endpoint, so the document lists the
    ``refresh_token`` grant only, no response types, and public clients (``none``: a refresh
    key is its own proof, DPoP-bound where DPoP is on).

    Args:
        issuer: the issuer identifier, named in the resources' ``authorization_servers``.
        token_endpoint / revocation_endpoint / introspection_endpoint: absolute URLs.
        scopes_supported: scope values a refresh may narrow to (``crm:read`` ...).
        dpop_signing_alg_values_supported: JWS algorithms accepted in DPoP proofs (RFC 9449 §5.1).
        service_documentation: a URL of developer documentation.
    """

    issuer: str
    token_endpoint: str
    revocation_endpoint: str | None = None
    introspection_endpoint: str | None = None
    scopes_supported: tuple[str, ...] = ()
    dpop_signing_alg_values_supported: tuple[str, ...] = ()
    service_documentation: str | None = None

    def __post_init__(self) -> None:
        _check_url(self.issuer, "the issuer identifier")
        for name in ("token_endpoint", "revocation_endpoint", "introspection_endpoint"):
            value = getattr(self, name)
            if value is not None:
                _check_url(value, name)
        if self.service_documentation is not None:
            _check_url(self.service_documentation, "service_documentation")
        for name in ("scopes_supported", "dpop_signing_alg_values_supported"):
            value = getattr(self, name)
            if isinstance(value, str):
                raise ConfigurationError(f"{name} is a sequence of strings, not one string")
            object.__setattr__(self, name, tuple(value))

    @classmethod
    def from_guard(
        cls,
        guard: Guard,
        *,
        issuer: str,
        endpoints: str | None = None,
        introspection: bool = False,
        scopes_supported: Sequence[str] | None = None,
        service_documentation: str | None = None,
    ) -> AuthorizationServerMetadata:
        """The document for the :class:`~agentguard.asgi.OAuthApp` of ``guard``.

        ``endpoints`` is the absolute URL the OAuth app is mounted at (default: ``issuer`` +
        ``/oauth``, where the gateway mounts it); ``introspection`` lists the introspection
        endpoint (only when introspection secrets are configured).
        """
        base = (endpoints if endpoints is not None else issuer.rstrip("/") + "/oauth").rstrip("/")
        dpop = guard.dpop
        return cls(
            issuer=issuer,
            token_endpoint=f"{base}/token",
            revocation_endpoint=f"{base}/revoke",
            introspection_endpoint=f"{base}/introspect" if introspection else None,
            scopes_supported=tuple(
                scopes_for(guard) if scopes_supported is None else scopes_supported
            ),
            dpop_signing_alg_values_supported=dpop.algorithms if dpop is not None else (),
            service_documentation=service_documentation,
        )

    @property
    def url(self) -> str:
        """The absolute URL of this document."""
        return authorization_server_metadata_url(self.issuer)

    @property
    def well_known_path(self) -> str:
        """The path part of :attr:`url`, to route the app at (outside any guard)."""
        return urlsplit(self.url).path

    def document(self) -> dict[str, object]:
        """The JSON object; empty optional members are left out."""
        document: dict[str, object] = {
            "issuer": self.issuer,
            "token_endpoint": self.token_endpoint,
            "grant_types_supported": ["refresh_token"],
            "response_types_supported": [],  # REQUIRED by RFC 8414; no authorization endpoint
            "token_endpoint_auth_methods_supported": ["none"],
        }
        if self.revocation_endpoint is not None:
            document["revocation_endpoint"] = self.revocation_endpoint
            document["revocation_endpoint_auth_methods_supported"] = ["none"]
        if self.introspection_endpoint is not None:
            document["introspection_endpoint"] = self.introspection_endpoint
        if self.scopes_supported:
            document["scopes_supported"] = list(self.scopes_supported)
        if self.dpop_signing_alg_values_supported:
            document["dpop_signing_alg_values_supported"] = list(
                self.dpop_signing_alg_values_supported
            )
        if self.service_documentation is not None:
            document["service_documentation"] = self.service_documentation
        return document

    def app(self, *, max_age: int = 3600) -> AuthorizationServerMetadataApp:
        """An ASGI app serving this document; route it at :attr:`well_known_path`."""
        return AuthorizationServerMetadataApp(self, max_age=max_age)


class _DocumentApp:
    """A tiny ASGI app answering ``GET`` (and ``HEAD``, ``OPTIONS``) with one JSON document.

    Metadata documents are public and read by browser-based clients, so any origin is allowed;
    the answer never depends on the request.
    """

    def __init__(self, document: dict[str, object], *, max_age: int = 3600) -> None:
        self._body = json.dumps(document, separators=(",", ":")).encode()
        self._cache = f"public, max-age={max_age}"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await answer_lifespan(receive, send)
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


class ProtectedResourceMetadataApp(_DocumentApp):
    """Serves a :class:`ProtectedResourceMetadata` document (``GET``, ``HEAD``, ``OPTIONS``)."""

    def __init__(self, metadata: ProtectedResourceMetadata, *, max_age: int = 3600) -> None:
        super().__init__(metadata.document(), max_age=max_age)
        self.metadata = metadata

    def __repr__(self) -> str:
        return f"ProtectedResourceMetadataApp(resource={self.metadata.resource!r})"


class AuthorizationServerMetadataApp(_DocumentApp):
    """Serves an :class:`AuthorizationServerMetadata` document (``GET``, ``HEAD``, ``OPTIONS``)."""

    def __init__(self, metadata: AuthorizationServerMetadata, *, max_age: int = 3600) -> None:
        super().__init__(metadata.document(), max_age=max_age)
        self.metadata = metadata

    def __repr__(self) -> str:
        return f"AuthorizationServerMetadataApp(issuer={self.metadata.issuer!r})"


def advertise_metadata(guard: Guard, metadata: ProtectedResourceMetadata | str) -> Challenge:
    """Make the guard's challenges carry ``resource_metadata="<url>"`` (RFC 9728 §5.1).

    ``metadata`` is the document or its URL. Given the document, the challenges also carry
    ``scope="<scopes_supported>"`` (RFC 6750 §3: the scopes this resource offers, which MCP
    clients request), or no ``scope`` when it lists none; given a URL, the ``scope`` stays as it
    was. Returns the new :class:`Challenge`, which every adapter of ``guard`` renders from now
    on (:meth:`Guard.advertise <agentguard.Guard.advertise>`); an earlier ``resource_metadata``
    is replaced, other auth-params are kept.
    """
    url = metadata.url if isinstance(metadata, ProtectedResourceMetadata) else metadata
    _check_url(url, "the resource metadata URL")
    challenge = guard.advertise(url)
    if isinstance(metadata, ProtectedResourceMetadata):
        scope = " ".join(metadata.scopes_supported) or None
        if scope != challenge.scope:
            challenge = guard.advertise_scope(scope)
    return challenge
