"""Guard: the one pipeline that decides a request, framework-neutral.

For each :class:`~agentguard.request.GuardRequest`: refuse ambiguous paths, take the key from
``Authorization``, resolve it live into a Principal, check the route's requirement against the
user's live grants, and append the decision (allowed or denied) to the audit chain before the
application runs. Adapters (ASGI, WSGI, FastAPI) call :meth:`Guard.authenticate` and render any
:class:`~agentguard.errors.AgentGuardError` it raises.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from agentguard.audit.aggregate import RefusalSummaries, RefusalSummaryPolicy
from agentguard.audit.events import Action, AuditEvent, Decision
from agentguard.audit.writer import AuditWriter
from agentguard.clock import Clock, SystemClock
from agentguard.credentials.keyscan import KEY_SHAPE
from agentguard.errors import (
    AgentGuardError,
    Challenge,
    ConfigurationError,
    InvalidRequest,
    InvalidToken,
    MalformedKey,
    Reason,
)
from agentguard.keys.format import hash_key, parse_key
from agentguard.keys.issuer import DEFAULT_ACCESS_TTL, DEFAULT_REFRESH_TTL, KeyIssuer
from agentguard.model import Principal
from agentguard.permissions import PermissionChecker, Requirement, RouteRule
from agentguard.request import Credentials, GuardRequest, parse_authorization
from agentguard.resolver import KeyResolver, TokenResolver, key_context
from agentguard.storage.outage import shield_store, store_outage
from agentguard.storage.protocols import AuditStore, KeyStore, ReplayCache

if TYPE_CHECKING:
    from agentguard.asgi.oauth import OAuthApp
    from agentguard.asgi.proxy import ProxyApp
    from agentguard.credentials import CredentialSwapper
    from agentguard.dpop import DPoPVerifier, VerifiedProof
    from agentguard.dpop.policy import DPoPPolicy
    from agentguard.services import ServiceConfig

__all__ = ["DEFAULT", "Guard"]


class _Default:
    """Marks "use the guard's own route rules" (``None`` means "no rule covers this")."""

    def __repr__(self) -> str:
        return "DEFAULT"


DEFAULT = _Default()

_DEFAULT_SUMMARIES = RefusalSummaryPolicy()
_IDENTITIES = ("key_id", "family_id", "user_id", "workspace_id", "account_id")
_NAMING_CANDIDATES = 8  # well-formed keys looked up per anonymous refusal, at most


def _principal_ids(principal: Principal) -> dict[str, str | None]:
    """The audit ids of the key a decision is about (never its secret)."""
    return {
        "key_id": principal.key_id,
        "family_id": principal.family_id,
        "user_id": principal.user_id,
        "workspace_id": principal.workspace_id,
        "account_id": principal.account_id,
    }


class Guard:
    """Authenticates, authorizes and audits requests against live state.

    Args:
        store: keys and directory (a :class:`~agentguard.storage.KeyStore`). Whatever a store
            call raises (any backend's own exceptions, timeouts) refuses the request with 503
            :class:`~agentguard.errors.StoreUnavailable`, audited, never a 500.
        rules: permission rules by path prefix; a path no rule covers is denied.
        audit_store: where decisions go; defaults to ``store`` when it is also an
            :class:`~agentguard.storage.AuditStore`. There is no way to run without an audit
            store: every decision is recorded, and a failing store refuses requests (503).
        clock: time source (tests pass a fake clock).
        access_ttl / refresh_ttl: key lifetimes for issuance and refresh.
        realm: the ``realm`` of ``WWW-Authenticate`` challenges.
        instance: this process's name in audit events.
        audit_timeout: seconds an audit append may take before the request gets 503
            (``None``: the store driver's own timeout applies).
        dpop: accept (or with ``required=True`` demand) DPoP-bound keys; see
            :class:`~agentguard.dpop.policy.DPoPPolicy`.
        replay_cache: where DPoP proof ids are burnt, shared by every instance; defaults to
            ``store`` when it is also a :class:`~agentguard.storage.ReplayCache`.
        services: upstream services :meth:`proxy_app` can front, by name.
        swapper: the :class:`~agentguard.credentials.CredentialSwapper` proxies use.
        token_resolvers: resolvers for credentials that are not agentguard keys (JWT access
            tokens from an existing authorization server, introspected opaque tokens); the
            first whose ``accepts`` says yes resolves the token.
        anonymous_refusals: how refusals that name no one (no key, a malformed or unknown
            key) are audited: counted per source and interval into one summary event (see
            :mod:`agentguard.audit.aggregate`; on by default), or ``None`` for one event each.
            Refusals about a known key always get their own event.
    """

    def __init__(
        self,
        store: KeyStore,
        *,
        rules: Sequence[RouteRule] = (),
        audit_store: AuditStore | None = None,
        clock: Clock | None = None,
        access_ttl: timedelta = DEFAULT_ACCESS_TTL,
        refresh_ttl: timedelta = DEFAULT_REFRESH_TTL,
        realm: str = "agentguard",
        instance: str | None = None,
        audit_timeout: float | None = None,
        dpop: DPoPPolicy | None = None,
        replay_cache: ReplayCache | None = None,
        services: Sequence[ServiceConfig] = (),
        swapper: CredentialSwapper | None = None,
        token_resolvers: Sequence[TokenResolver] = (),
        anonymous_refusals: RefusalSummaryPolicy | None = _DEFAULT_SUMMARIES,
    ) -> None:
        if audit_store is None:
            if not isinstance(store, AuditStore):
                raise ConfigurationError(
                    "the store does not keep an audit log; pass audit_store=... explicitly"
                )
            audit_store = store
        self.store = store
        self.clock: Clock = clock or SystemClock()
        summaries = (
            None if anonymous_refusals is None else RefusalSummaries(anonymous_refusals, self.clock)
        )
        self.audit = AuditWriter(
            audit_store, instance=instance, timeout=audit_timeout, summaries=summaries
        )
        # One boundary for every backend, ours or a third party's: whatever a store call raises
        # reaches the request path as StoreUnavailable (503, audited), never as a 500.
        keys = shield_store(store, "key store")
        self.resolver = KeyResolver(keys, self.clock)
        self.issuer = KeyIssuer(
            keys,
            clock=self.clock,
            audit=self.audit,
            access_ttl=access_ttl,
            refresh_ttl=refresh_ttl,
            require_binding=dpop is not None and dpop.required,
        )
        self.permissions = PermissionChecker(rules)
        self.services = {service.name: service for service in services}
        if len(self.services) != len(services):
            raise ConfigurationError("two services share one name")
        self.swapper = swapper
        self.token_resolvers = tuple(token_resolvers)
        self.dpop = dpop
        self.replay_cache: ReplayCache | None = None
        self.dpop_verifier: DPoPVerifier | None = None
        self.token_dpop_verifier: DPoPVerifier | None = None
        if dpop is None:
            self.challenge = Challenge(realm=realm)
            self._schemes: tuple[str, ...] = ("bearer",)
        else:
            self._setup_dpop(dpop, replay_cache if replay_cache is not None else store)
            # DPoP first: clients look for a nonce in the challenge the header starts with.
            schemes = ("DPoP",) if dpop.required else ("DPoP", "Bearer")
            self.challenge = Challenge(realm=realm, schemes=schemes, dpop_algs=dpop.algorithms)
            self._schemes = ("bearer", "dpop")

    async def resolve(self, token: str) -> Principal:
        """The live Principal for ``token``: an agentguard key, or one a token resolver accepts."""
        if not token.startswith("ag_"):
            for resolver in self.token_resolvers:
                with store_outage("token resolver"):  # refuses (503) rather than 500s
                    if resolver.accepts(token):
                        return await resolver.resolve(token)
        return await self.resolver.resolve(token)

    def _setup_dpop(self, policy: DPoPPolicy, replay: object) -> None:
        from agentguard.dpop import DPoPVerifier, NonceSource

        if not isinstance(replay, ReplayCache):
            raise ConfigurationError(
                "DPoP needs a replay cache shared by every instance; pass replay_cache=..."
            )
        self.replay_cache = replay
        shielded = shield_store(replay, "replay cache")

        def verifier(secret: bytes | None) -> DPoPVerifier:
            nonces = (
                None if secret is None else NonceSource(secret, self.clock, step=policy.nonce_step)
            )
            return DPoPVerifier(
                shielded,
                self.clock,
                algorithms=policy.algorithms,
                iat_window=policy.iat_window,
                max_proof_bytes=policy.max_proof_bytes,
                nonces=nonces,
            )

        self.dpop_verifier = verifier(policy.nonce_secret)
        self.token_dpop_verifier = verifier(policy.token_nonce_secret)

    async def verify_token_proof(self, request: GuardRequest) -> VerifiedProof | None:
        """Check the ``DPoP`` proof of a token-endpoint request (RFC 9449 §5).

        Returns ``None`` when there is no proof and DPoP is optional; raises the resource-server
        form of the error, which the token endpoint re-renders as a 400.
        """
        proofs = [value.decode("latin-1") for value in request.header_values(b"dpop")]
        if self.dpop is None or self.token_dpop_verifier is None:
            if proofs:
                raise InvalidRequest("this server does not accept DPoP proofs")
            return None
        if not proofs and not self.dpop.required:
            return None
        return await self.token_dpop_verifier.verify(
            proofs, method=request.method, url=self.dpop.url(request)
        )

    async def _check_binding(
        self, request: GuardRequest, credentials: Credentials, key_jkt: str | None
    ) -> None:
        """RFC 9449 §7: a bound key needs the DPoP scheme and a proof from its key."""
        if credentials.scheme == "bearer":
            if self.dpop is not None and self.dpop.required:
                raise InvalidToken(reason=Reason.DPOP_REQUIRED)
            if key_jkt is not None:
                raise InvalidToken(
                    "this key is DPoP-bound: send 'Authorization: DPoP <key>' with a DPoP proof",
                    reason=Reason.DPOP_BINDING_MISMATCH,
                )
            return
        if self.dpop is None or self.dpop_verifier is None:  # pragma: no cover - scheme refused
            raise InvalidRequest(reason=Reason.UNSUPPORTED_SCHEME)
        if key_jkt is None:
            raise InvalidToken(
                "this key is not DPoP-bound: send it as 'Authorization: Bearer <key>'",
                reason=Reason.DPOP_BINDING_MISMATCH,
            )
        proofs = [value.decode("latin-1") for value in request.header_values(b"dpop")]
        await self.dpop_verifier.verify(
            proofs,
            method=request.method,
            url=self.dpop.url(request),
            access_key=credentials.key,
            expected_jkt=key_jkt,
        )

    def __repr__(self) -> str:
        return f"Guard(store={type(self.store).__name__}, rules={len(self.permissions.rules)})"

    async def authenticate(
        self,
        request: GuardRequest,
        *,
        credentials: Credentials | Callable[[], Credentials] | None = None,
        requirement: Requirement | _Default | None = DEFAULT,
    ) -> Principal:
        """Decide ``request``: return its live Principal, or raise the refusal.

        ``credentials`` (or a function returning them) replaces the ``Authorization`` header as
        the key's source, as the proxy does for vendor-native placements; ``requirement``
        replaces the guard's own route rules. The decision is audited either way before this
        returns; if the audit store fails, :class:`~agentguard.errors.AuditUnavailable` (503) is
        raised instead of allowing.
        """
        started = self.clock.monotonic()
        if isinstance(requirement, _Default):
            requirement = self.permissions.requirement(request.method, request.path)
        try:
            request.target()  # an ambiguous target is refused (400) before any key lookup
            if credentials is None:
                credentials = parse_authorization(request, self._schemes)
            elif callable(credentials):
                credentials = credentials()
            if credentials.scheme not in self._schemes:
                raise InvalidRequest(reason=Reason.UNSUPPORTED_SCHEME)
            principal = await self.resolve(credentials.key)
            try:
                await self._check_binding(request, credentials, principal.jkt)
            except AgentGuardError as error:
                error.with_context(**_principal_ids(principal))
                raise
            try:
                self.permissions.authorize(principal, requirement)
            except AgentGuardError as error:  # a refusal about this key: name it
                error.with_context(**_principal_ids(principal))
                raise
        except AgentGuardError as error:
            await self._record(request, requirement, started, error=error)
            raise
        await self._record(request, requirement, started, principal=principal)
        return principal

    async def _names(self, request: GuardRequest, ids: dict[str, Any]) -> bool:
        """Whether a refused request carries a key the store knows; its ids go into ``ids``.

        A refusal before any key was resolved (an ambiguous path, two ``Authorization``
        headers, a key outside the credential position) may still hold someone's real key:
        that refusal is about them and gets its own event. Key-shaped strings that name no
        stored key are garbage, counted with the other anonymous refusals.
        """
        places = [request.path.encode("utf-8", "surrogateescape"), request.query_string]
        places += [value for _, value in request.headers]
        looked_up = 0
        for place in places:
            for shaped in KEY_SHAPE.findall(place):
                try:  # a checksum first: junk of the right shape costs no lookup
                    parsed = parse_key(shaped.decode("ascii"))
                except MalformedKey:
                    continue
                looked_up += 1
                if looked_up > _NAMING_CANDIDATES:
                    return False
                with store_outage():
                    found = await self.store.lookup(hash_key(parsed.value))
                if found is not None:
                    ids.update(key_context(found.key))
                    return True
        return False

    async def _record(
        self,
        request: GuardRequest,
        requirement: Requirement | None,
        started: float,
        *,
        principal: Principal | None = None,
        error: AgentGuardError | None = None,
    ) -> None:
        if error is None and principal is not None:  # allowed, the hot path: one event, direct
            event = AuditEvent(
                Action.DECISION,
                self.clock.now(),
                Decision.ALLOW,
                None,
                principal.user_id,
                principal.workspace_id,
                principal.account_id,
                principal.key_id,
                principal.family_id,
                requirement.service if requirement is not None else None,
                request.method,
                request.audit_path,
                None,
                int((self.clock.monotonic() - started) * 1_000_000),
                request.request_id,
            )
            await self.audit.record(event)
            return
        ids: dict[str, Any] = dict(error.audit_context) if error is not None else {}
        summaries = self.audit.summaries
        if (
            error is not None
            and principal is None
            and summaries is not None
            and error.status < 500
            and not any(ids.get(name) for name in _IDENTITIES)
            and summaries.counts(error.reason.value)
            and not await self._names(request, ids)
        ):  # a refusal about no one: counted per source and interval, not one event each
            await self.audit.count_refusal(
                source=request.client,
                reason=error.reason.value,
                status=error.status,
                service=requirement.service if requirement is not None else None,
            )
            return
        if principal is not None:
            ids = _principal_ids(principal)
        event = AuditEvent(
            action=Action.DECISION,
            ts=self.clock.now(),
            decision=Decision.DENY if error is not None else Decision.ALLOW,
            reason=error.reason.value if error is not None else None,
            service=requirement.service if requirement is not None else None,
            method=request.method,
            path=request.audit_path,
            status=error.status if error is not None else None,
            latency_us=int((self.clock.monotonic() - started) * 1_000_000),
            request_id=request.request_id,
            **ids,
        )
        await self.audit.record(event)

    def proxy_app(
        self,
        service: str | ServiceConfig,
        *,
        swapper: CredentialSwapper | None = None,
        **options: Any,
    ) -> ProxyApp:
        """An ASGI app that swaps credentials and forwards to ``service`` (mount it at its path).

        ``service`` is a name from ``services=`` or a :class:`~agentguard.services.ServiceConfig`;
        ``options`` go to :class:`~agentguard.asgi.proxy.ProxyApp`.
        """
        from agentguard.asgi.proxy import ProxyApp

        config = self.services.get(service) if isinstance(service, str) else service
        if config is None:
            raise ConfigurationError(f"no service named {service!r}; pass services=[...]")
        chosen = swapper or self.swapper
        if chosen is None:
            raise ConfigurationError("proxy_app needs a CredentialSwapper (Guard(swapper=...))")
        return ProxyApp(self, config, chosen, **options)

    def oauth_app(self, **options: Any) -> OAuthApp:
        """The ASGI app serving ``/token``, ``/revoke`` and ``/introspect``.

        Mount it outside the guarded paths (or list its prefix in the middleware's
        ``public_paths``): its callers hold refresh keys, not access keys. ``options`` go to
        :class:`~agentguard.asgi.oauth.OAuthApp`.
        """
        from agentguard.asgi.oauth import OAuthApp

        return OAuthApp(self, **options)
