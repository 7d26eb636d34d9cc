"""The standalone gateway: every part a :class:`~agentguard.config.Settings` describes, assembled.

Routes:

- ``/oauth/token``, ``/oauth/revoke``, ``/oauth/introspect``: the OAuth endpoints.
- ``/<service>/...``: one credential-swapping proxy per configured service; a service with
  ``mcp = true`` gets the MCP tool gate in front of its upstream (:mod:`agentguard._mcp_gate`).
- ``/connect/<service>``: the connect pages a human opens (with an operator's one-time link) to
  connect their own vendor account, when a service says ``credentials = "connected"``
  (:mod:`agentguard.gateway._connect`); the proxy then sends each user's own vendor token.
- ``/healthz``: liveness (the process answers); ``/readyz``: readiness: every store the
  gateway uses (key store, audit store, credential store, DPoP replay cache) answers a cheap
  probe within two seconds, else 503 naming the ones that did not (see
  :mod:`agentguard.gateway._readiness`).
- ``/.well-known/oauth-protected-resource[/<service>]``: RFC 9728 metadata for the gateway and
  each service, when ``public_origin`` is set; 401 challenges point at it.

The lifespan opens the store, starts the checkpointer (when ``[audit] checkpoint_dir`` is set)
and, on shutdown, after the server has let in-flight requests finish, signs a last checkpoint,
closes the proxies', minters' and vendor clients' connection pools, flushes the audit writer and
closes the store (and the replay cache, when it is a separate one).
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import anyio
import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Mount, Route

from agentguard._clock import Clock
from agentguard._config_connect import CONNECT_MOUNT
from agentguard._extras import import_extra
from agentguard._guard import Guard
from agentguard._mcp_gate._proxied import MCPProxyApp
from agentguard.asgi._oauth import OAuthApp
from agentguard.asgi._operator import OperatorApp
from agentguard.asgi._proxy import ProxyApp
from agentguard.audit._aggregate import RefusalSummaryPolicy
from agentguard.audit._checkpointer import Checkpointer, DirectoryCheckpointSink
from agentguard.config import Settings
from agentguard.credentials import CredentialSwapper, CredentialVault, TokenExchangeMinter
from agentguard.errors import ConfigurationError
from agentguard.gateway._connect import ConnectParts, connect_parts
from agentguard.gateway._gates import gate_parts, operator_app
from agentguard.gateway._logging import RequestIdMiddleware
from agentguard.gateway._readiness import (
    HealthCheck,
    run_checks,
    store_checks,
    witness_clients,
    witness_details,
)
from agentguard.gateway._telemetry import gateway_telemetry, metrics_endpoints
from agentguard.gateway._tiles import tile_endpoints
from agentguard.storage._outage import shield_store
from agentguard.storage._revocation_feeds import announce_changes
from agentguard.storage._urls import open_store

__all__ = ["Gateway", "build_gateway"]

logger = logging.getLogger("agentguard.gateway")

READY_TIMEOUT = 2.0


def _without_slash_redirects(app: Starlette) -> Starlette:
    """``app`` with Starlette's trailing-slash redirect off: it builds ``Location`` from the
    request's ``Host`` header (``GET /connect`` with ``Host: evil.example`` was answered
    ``307 http://evil.example/connect/``); a path without its slash is a 404 instead."""
    app.router.redirect_slashes = False
    return app


class Gateway:
    """The assembled gateway. ``gateway.app`` is the ASGI application to serve.

    Attributes:
        settings: what it was built from.
        store: the opened store (keys, directory, credentials, audit).
        guard: the :class:`~agentguard.Guard` every route shares.
        proxies: the proxy app per service name.
        checkpointer: signs checkpoints on a timer, when configured.
        connect: connected accounts (vendor clients, connect flow, connections, pages), when a
            service says ``credentials = "connected"``; else ``None``.
        health_checks: what ``/readyz`` runs; append a
            :class:`~agentguard.gateway._readiness.HealthCheck` to add one.
    """

    def __init__(
        self,
        settings: Settings,
        store: Any,
        guard: Guard,
        *,
        proxies: Mapping[str, ProxyApp],
        minters: Mapping[str, TokenExchangeMinter],
        checkpointer: Checkpointer | None,
        owned: Sequence[Any] = (),
        notifier: Any = None,
        connect: ConnectParts | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.guard = guard
        self.proxies = dict(proxies)
        self.minters = dict(minters)
        self.checkpointer = checkpointer
        self.connect = connect
        self.health_checks: list[HealthCheck] = store_checks(
            keys=guard.store,
            audit=guard.audit.store,
            replay=guard.replay_cache,
            credentials=store if proxies else None,
            clock=guard.clock,
        )
        if checkpointer is not None:  # a refused checkpoint (forked log) means "not ready"
            self.health_checks.append(HealthCheck("audit checkpointer", checkpointer.check))
        self.readiness_details: list[Callable[[], dict[str, object]]] = []
        """Extra fields for the ``/readyz`` body that never make it fail (witness status)."""
        if checkpointer is not None and checkpointer.witnesses is not None:
            self.readiness_details.append(witness_details(checkpointer.witnesses))
        limits = guard.limit_store
        if limits is not None and settings.limits.store is not None:
            # a separate limit store (Redis): a read of a probe counter (a charge of 0)
            async def probe_limits() -> object:
                ends = guard.clock.now() + timedelta(seconds=1)
                return await limits.charge("readyz", cost=0, limit=0, expires_at=ends)

            self.health_checks.append(HealthCheck("limit store", probe_limits))
        self._closed = False
        self._owned = list(owned)
        listener = operator_app(settings, guard, store, notifier)
        if connect is not None and isinstance(listener, OperatorApp):
            listener = listener.with_connections(connect.endpoints)
        extras = [
            endpoints
            for endpoints in (
                tile_endpoints(settings, store, checkpointer),
                metrics_endpoints(settings, guard.telemetry),
            )
            if endpoints is not None
        ]
        if extras and isinstance(listener, OperatorApp):
            listener = listener.with_endpoints(*extras)
        self.operator_app = listener
        """The operator listener's ASGI app (approvals, connections), or ``None``;
        ``agentguard serve`` serves it on ``[operator] host:port``, never on the agents'
        listener."""
        self.app = RequestIdMiddleware(
            _without_slash_redirects(
                Starlette(
                    routes=self._routes(),
                    lifespan=self._lifespan,
                    exception_handlers={404: _not_found, 405: _not_found},
                )
            ),
            access_log=settings.logging.access_log,
        )

    def __repr__(self) -> str:
        return f"Gateway(services={sorted(self.proxies)}, store={type(self.store).__name__})"

    def _routes(self) -> list[BaseRoute]:
        introspection = [
            secret.get_secret_value()
            for secret in self.settings.secret_values.introspection_secrets
        ]
        routes: list[BaseRoute] = [
            Route("/healthz", self._healthz, methods=["GET", "HEAD"]),
            Route("/readyz", self._readyz, methods=["GET", "HEAD"]),
            Mount("/oauth", app=OAuthApp(self.guard, introspection_secrets=introspection)),
        ]
        routes += _metadata_routes(self.settings, self.guard)
        if self.connect is not None:  # the settings reserve the name: no service shadows it
            routes.append(Mount(CONNECT_MOUNT, app=self.connect.app))
        routes += [Mount(f"/{name}", app=proxy) for name, proxy in self.proxies.items()]
        return routes

    async def _healthz(self, request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def _readyz(self, request: Request) -> JSONResponse:
        failed = await run_checks(self.health_checks, READY_TIMEOUT)
        details: dict[str, object] = {}
        for detail in self.readiness_details:
            details.update(detail())
        if failed:  # names the components and the error types only, never a message or a URL
            reason = next(iter(failed.values()))
            document = {"status": "unavailable", "reason": reason, "unavailable": failed}
            return JSONResponse({**document, **details}, status_code=503)
        return JSONResponse({"status": "ready", **details})

    async def _checkpoints(self, checkpointer: Checkpointer) -> None:
        interval = self.settings.audit.checkpoint_interval
        async with anyio.create_task_group() as witnessing:
            if checkpointer.witnesses is not None:  # cosigning runs beside, never in the way
                witnessing.start_soon(checkpointer.witnesses.run)
            while True:  # the first one at startup: a restored old snapshot is caught at once
                try:
                    await checkpointer.checkpoint()
                except Exception as error:  # keep serving; the operator sees it, verify too
                    logger.error("audit checkpoint failed: %s: %s", type(error).__name__, error)
                await anyio.sleep(interval)

    @asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        initialize = getattr(self.store, "initialize", None)
        if initialize is not None:
            await initialize()
        logger.info("gateway started; services: %s", ", ".join(sorted(self.proxies)) or "none")
        try:
            async with anyio.create_task_group() as tasks:
                if self.checkpointer is not None:
                    tasks.start_soon(self._checkpoints, self.checkpointer)
                tasks.start_soon(self.guard.audit.run_summaries)
                # open streams re-checked from startup: the revocation feed is listening
                # before the first stream opens
                tasks.start_soon(self.guard.streams.run)
                try:
                    yield
                finally:
                    tasks.cancel_scope.cancel()
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        """Drain: last checkpoint, close pools, flush the audit writer, close the store."""
        if self._closed:
            return
        self._closed = True
        with anyio.CancelScope(shield=True):
            if self.checkpointer is not None:
                try:
                    await self.checkpointer.checkpoint()
                except Exception as error:  # shutdown goes on; the failure is logged
                    logger.error("final checkpoint failed: %s", type(error).__name__)
                if self.checkpointer.witnesses is not None:
                    await self.checkpointer.witnesses.aclose()
            for proxy in self.proxies.values():
                await proxy.aclose()
            for minter in self.minters.values():
                await minter.aclose()
            if self.connect is not None:
                await self.connect.aclose()
            for part in self._owned:  # the webhook notifier (drained), a separate limit store
                closer = getattr(part, "aclose", None) or getattr(part, "close", None)
                if closer is not None:
                    try:
                        await closer()
                    except Exception as error:  # shutdown goes on; the failure is logged
                        failure = type(error).__name__  # never its text: it may name a URL
                        logger.error("closing %s failed: %s", type(part).__name__, failure)
            flushed = await self.guard.audit.flush()
            owned = [self.store]
            if self.guard.replay_cache is not None and self.guard.replay_cache is not self.store:
                owned.append(self.guard.replay_cache)
            for resource in owned:
                closer = getattr(resource, "close", None)
                if closer is not None:
                    await closer()
            logger.info("gateway stopped; %d buffered audit events flushed", flushed)


async def _not_found(request: Request, exc: Exception) -> JSONResponse:
    """Paths no route serves: the same JSON error shape as every other refusal."""
    status = getattr(exc, "status_code", 404)
    code = "not_found" if status == 404 else "invalid_request"
    description = (
        "nothing is served at this path: agents call /<service>/..., /oauth/...; operator "
        "endpoints are on the operator listener"
        if status == 404
        else "this method is not allowed here"
    )
    return JSONResponse(
        {"error": code, "error_description": description},
        status_code=status,
        headers={"cache-control": "no-store"},
    )


def _metadata_routes(settings: Settings, guard: Guard) -> list[BaseRoute]:
    """RFC 9728 documents: one for the gateway's origin, one per service (``/<service>``).

    Served only when ``public_origin`` is set (the document must name the exact URL clients
    use) and this agentguard ships ``agentguard.asgi._metadata``. The guard's challenges then
    carry ``resource_metadata`` pointing at the origin's document.
    """
    if settings.public_origin is None:
        return []
    try:
        metadata = importlib.import_module("agentguard.asgi._metadata")
    except ModuleNotFoundError:  # pragma: no cover - older agentguard without RFC 9728 support
        return []
    origin = settings.public_origin
    resources = [origin] + [f"{origin}/{service.name}" for service in settings.services]
    # RFC 8414: the gateway is the authorization server of its own keys (the OAuth app at
    # /oauth), so clients discover the token endpoint from the resource documents.
    server = metadata.AuthorizationServerMetadata.from_guard(
        guard,
        issuer=origin,
        introspection=bool(settings.secret_values.introspection_secrets),
    )
    routes: list[BaseRoute] = [Route(server.well_known_path, server.app())]
    for resource in resources:
        document = metadata.ProtectedResourceMetadata.from_guard(
            guard, resource=resource, authorization_servers=[origin]
        )
        routes.append(Route(document.well_known_path, document.app()))
    # the origin's document, not just its URL: every 401 then names the scopes (RFC 6750 §3)
    origin_document = metadata.ProtectedResourceMetadata.from_guard(
        guard, resource=origin, authorization_servers=[origin]
    )
    metadata.advertise_metadata(guard, origin_document)
    return routes


def _replay_cache(settings: Settings, clock: Clock | None) -> Any:
    """The DPoP replay cache ``[dpop] replay`` names, or ``None`` to keep it in the store."""
    if not settings.dpop.enabled or settings.dpop.replay is None:
        return None
    from agentguard.storage._redis import RedisReplayCache

    try:
        return RedisReplayCache(settings.dpop.replay, clock=clock)
    except ValueError:  # redis-py's own refusal of the URL; its message may quote the password
        raise ConfigurationError(
            "dpop.replay is not a valid Redis URL: redis://host:6379/0 or unix:///path.sock"
        ) from None


def build_gateway(
    settings: Settings,
    *,
    store: Any = None,
    clock: Clock | None = None,
    transports: Mapping[str, httpx.AsyncBaseTransport] | None = None,
    token_clients: Mapping[str, httpx.AsyncClient] | None = None,
    vendor_transports: Mapping[str, httpx.AsyncBaseTransport] | None = None,
) -> Gateway:
    """Assemble the gateway ``settings`` describe.

    Args:
        settings: from :func:`agentguard.config.load_settings`.
        store: use this store instead of opening ``settings.store.url``.
        clock: time source (tests).
        transports: an ``httpx`` transport per service name, instead of the network (tests).
        token_clients: an ``httpx.AsyncClient`` per minting service's token endpoint (tests).
        vendor_transports: an ``httpx`` transport per connected service's OAuth vendor (tests).
    """
    transports = transports or {}
    token_clients = token_clients or {}
    if store is None:
        store = open_store(settings.store.url, clock=clock)
    gates = gate_parts(settings, store, clock)
    guard_store = store
    if settings.streams.redis_url is not None:  # the Redis bus: this instance's writes announce
        import_extra("redis.asyncio")  # refused at startup, naming the extra, never in a loop
        guard_store = announce_changes(
            store, settings.streams.redis_url, channel=settings.streams.channel
        )
    guard = Guard(
        guard_store,
        replay_cache=_replay_cache(settings, clock),
        clock=clock,
        access_ttl=settings.access_ttl(),
        refresh_ttl=settings.refresh_ttl(),
        instance=settings.audit.instance,
        audit_timeout=settings.audit.timeout,
        dpop=settings.dpop_policy(),
        services=settings.services,
        anonymous_refusals=(
            RefusalSummaryPolicy(
                interval=settings.audit.refusal_interval,
                max_sources=settings.audit.refusal_max_sources,
            )
            if settings.audit.refusal_summaries
            else None
        ),
        telemetry=gateway_telemetry(settings),
        streams=settings.streams,
        **gates.options,
    )
    minters: dict[str, TokenExchangeMinter] = {}
    proxies: dict[str, ProxyApp] = {}
    connect = connect_parts(settings, store, guard, transports=vendor_transports)
    if settings.services:
        for name, minter in settings.minters.items():
            options: dict[str, Any] = {}
            if minter.subject_token_type is not None:
                options["subject_token_type"] = minter.subject_token_type
            minters[name] = TokenExchangeMinter(
                minter.token_url,
                audience=minter.audience,
                scope=minter.scope,
                client_id=minter.client_id,
                client=token_clients.get(name),
                clock=guard.clock,
                timeout=minter.timeout,
                allow_insecure_http=minter.allow_insecure_http,
                **options,
            )
        credentials = shield_store(store, "credential store")
        vault = CredentialVault(
            credentials, settings.keyring(), clock=guard.clock, audit=guard.audit
        )
        swapper = CredentialSwapper(
            vault,
            minters=minters,
            clock=guard.clock,
            audit=guard.audit,
            connections=connect.accounts if connect is not None else None,
        )
        proxies = {
            service.name: (MCPProxyApp if service.mcp else ProxyApp)(
                guard,
                service,
                swapper=swapper,
                transport=transports.get(service.name),
                # RFC 8707: a key issued for one resource is refused at the others
                resource=(
                    None
                    if settings.public_origin is None
                    else f"{settings.public_origin}/{service.name}"
                ),
            )
            for service in settings.services
        }
    checkpointer = None
    signer = settings.checkpoint_signer()
    if signer is not None and settings.audit.checkpoint_dir is not None and settings.audit.origin:
        checkpointer = Checkpointer(
            store,
            signer,
            settings.audit.origin,
            DirectoryCheckpointSink(settings.audit.checkpoint_dir),
            witnesses=witness_clients(settings.audit.witnesses),
            witness_quorum=settings.audit.witness_quorum,
        )
    return Gateway(
        settings,
        store,
        guard,
        proxies=proxies,
        minters=minters,
        checkpointer=checkpointer,
        owned=gates.owned,
        notifier=gates.notifier,
        connect=connect,
    )
