"""Guard: the one pipeline that decides a request, framework-neutral.

For each :class:`~agentguard.GuardRequest`, in order (:meth:`Guard._decide` is the one
place a step is added): refuse an ambiguous target, take the key from ``Authorization``, resolve
it live into a Principal, check its DPoP proof and binding and burn the proof, check the route's
requirement against the user's live grants, then append the decision (allowed or refused) to the
audit chain before the application runs. The allowed request continues as a
:class:`~agentguard.Passage`, through which every adapter (ASGI, proxy, WSGI, FastAPI, Flask, MCP)
runs the content steps: request review, then response review.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import timedelta
from types import MappingProxyType
from typing import TYPE_CHECKING

from agentguard._audience import check_audience
from agentguard._clock import Clock, SystemClock
from agentguard._decisions import DecisionRecorder, principal_ids
from agentguard._dpop_step import DPoPStep
from agentguard._gates import Gates, approval_step, limit_step, with_rule_gates
from agentguard._keys._issuer import DEFAULT_ACCESS_TTL, DEFAULT_REFRESH_TTL, KeyIssuer
from agentguard._live_streams import LiveStreams
from agentguard._model import Principal
from agentguard._passage import Passage, ResponseReview, Reviews
from agentguard._permissions import PermissionChecker, Requirement, RouteRule
from agentguard._request import Credentials, GuardRequest, parse_authorization
from agentguard._resolver import KeyResolver, TokenResolver
from agentguard.approvals._binding import Placement
from agentguard.approvals._policy import ApprovalPolicy
from agentguard.audit._aggregate import RefusalSummaries, RefusalSummaryPolicy
from agentguard.audit._writer import AuditWriter
from agentguard.errors import (
    Challenge,
    ConfigurationError,
    InvalidRequest,
    InvalidToken,
    Reason,
    RequestRefused,
    ServiceUnavailable,
    UsageError,
)
from agentguard.review._chain import ReviewChain, ReviewerLike, as_chain
from agentguard.storage._gate_protocols import ApprovalStore, LimitStore
from agentguard.storage._outage import shield_store, store_outage
from agentguard.storage._protocols import AuditStore, KeyLookup, KeyStore, ReplayCache

if TYPE_CHECKING:
    from agentguard._config_streams import StreamSettings
    from agentguard._services import ServiceConfig
    from agentguard.audit._events import AuditEvent
    from agentguard.credentials import CredentialSwapper
    from agentguard.dpop import VerifiedProof
    from agentguard.dpop._policy import DPoPPolicy
    from agentguard.limits._policy import Budget, RateLimit
    from agentguard.telemetry import Telemetry

__all__ = ["DEFAULT", "Guard", "Passage", "ResponseReview", "Reviews"]


_FOR_ONE_RESOURCE = (
    "this key was issued for one resource (RFC 8707 audience) and this server names none, so "
    "it cannot tell the key is meant for it; use a key without an audience here"
)


class _Default:
    """Marks "use the guard's own route rules" (``None`` means "no rule covers this")."""

    def __repr__(self) -> str:
        return "DEFAULT"


DEFAULT = _Default()

_DEFAULT_SUMMARIES = RefusalSummaryPolicy()
logger = logging.getLogger("agentguard.guard")


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
            :class:`~agentguard.dpop.DPoPPolicy`.
        replay_cache: where DPoP proof ids are burnt, shared by every instance; defaults to
            ``store`` when it is also a :class:`~agentguard.storage.ReplayCache`.
        services: upstream services :meth:`proxy_app` can front, by name.
        swapper: the :class:`~agentguard.credentials.CredentialSwapper` proxies use.
        token_resolvers: resolvers for credentials that are not agentguard keys (JWT access
            tokens from an existing authorization server, introspected opaque tokens); the
            first whose ``accepts`` says yes resolves the token.
        anonymous_refusals: how refusals that name no one (no key, a malformed or unknown
            key) are audited: counted per source and interval into one summary event (see
            :mod:`agentguard.audit._aggregate`; on by default), or ``None`` for one event each.
            Refusals about a known key always get their own event.
        request_reviewers / response_reviewers: a :class:`~agentguard.review.ReviewChain` (or a
            list of reviewers) for the content of allowed requests, in every adapter; an
            adapter's own ``request_reviewers=``/``response_reviewers=`` replace them there.
        approvals: how calls a rule holds for approval (``approval=`` on a
            :class:`~agentguard.RouteRule` or service route) are handled; by default such calls
            use the guard's store when it is an :class:`~agentguard.storage.ApprovalStore`
            (see :class:`~agentguard.approvals.ApprovalPolicy`).
        budgets / rate_limits: :class:`~agentguard.limits.Budget` and
            :class:`~agentguard.limits.RateLimit` checked on every authorised call.
        limit_store: where their counters live, shared by every instance; defaults to
            ``store`` when it is also a :class:`~agentguard.storage.LimitStore`.
        telemetry: a :class:`~agentguard.telemetry.Telemetry` for one OpenTelemetry span and
            the metrics of every decision (extra ``otel``); ``None`` (the default) costs a
            ``None`` check per step and imports nothing.
        streams: how open streams are kept live (:class:`~agentguard.config.StreamSettings`:
            re-check interval, revocation events, outage grace); see :attr:`streams`.
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
        request_reviewers: ReviewChain | Iterable[ReviewerLike] | None = None,
        response_reviewers: ReviewChain | Iterable[ReviewerLike] | None = None,
        approvals: ApprovalPolicy | None = None,
        budgets: Sequence[Budget] = (),
        rate_limits: Sequence[RateLimit] = (),
        limit_store: LimitStore | None = None,
        telemetry: Telemetry | None = None,
        streams: StreamSettings | None = None,
    ) -> None:
        if audit_store is None:
            if not isinstance(store, AuditStore):
                raise ConfigurationError(
                    "the store does not keep an audit log; pass audit_store=... explicitly"
                )
            audit_store = store
        self._store = store
        self._clock: Clock = clock or SystemClock()
        summaries = (
            None
            if anonymous_refusals is None
            else RefusalSummaries(anonymous_refusals, self._clock)
        )
        self._audit = AuditWriter(
            audit_store, instance=instance, timeout=audit_timeout, summaries=summaries
        )
        # One boundary for every backend, ours or a third party's: whatever a store call raises
        # reaches the request path as StoreUnavailable (503, audited), never as a 500.
        keys = shield_store(store, "key store")
        self._resolver = KeyResolver(keys, self._clock)
        self._issuer = KeyIssuer(
            keys,
            clock=self._clock,
            audit=self._audit,
            access_ttl=access_ttl,
            refresh_ttl=refresh_ttl,
            require_binding=dpop is not None and dpop.required,
        )
        self._telemetry = telemetry
        self._observer = None if telemetry is None else telemetry.observe(self._audit)
        self._decisions = DecisionRecorder(self._audit, self._clock, store)
        self._reviews = Reviews(
            as_chain(request_reviewers), as_chain(response_reviewers), self._audit, self._clock
        )
        self._permissions = PermissionChecker(rules)
        self._services = MappingProxyType({service.name: service for service in services})
        if len(self._services) != len(services):
            raise ConfigurationError("two services share one name")
        self._swapper = swapper
        self._gates = Gates(
            approval_step(approvals, store, rules, services, audit=self._audit, clock=self._clock),
            limit_step(budgets, rate_limits, limit_store, store, self._clock),
            self._decisions,
        )
        self._token_resolvers = tuple(token_resolvers)
        self._dpop = dpop
        self._dpop_step = DPoPStep(
            dpop, replay_cache if replay_cache is not None else store, self._clock
        )
        if dpop is None:
            self._challenge = Challenge(realm=realm)
            self._schemes: tuple[str, ...] = ("bearer",)
        else:
            # DPoP first: clients look for a nonce in the challenge the header starts with.
            schemes = ("DPoP",) if dpop.required else ("DPoP", "Bearer")
            self._challenge = Challenge(realm=realm, schemes=schemes, dpop_algs=dpop.algorithms)
            self._schemes = ("bearer", "dpop")
        self._streams = LiveStreams(self, streams)

    # Read-only views for adapters and operators; the collaborators themselves stay private.
    @property
    def approval_store(self) -> ApprovalStore | None:
        """Where approvals live (``None``: this guard holds no call for approval)."""
        step = self._gates.approvals
        return None if step is None else step.store

    @property
    def approval_policy(self) -> ApprovalPolicy | None:
        """The approval settings (``None`` without an approval store)."""
        step = self._gates.approvals
        return None if step is None else step.policy

    @property
    def limit_store(self) -> LimitStore | None:
        """Where budget counters and rate-limit buckets live (``None`` without any)."""
        step = self._gates.limits
        return None if step is None else step.store

    @property
    def telemetry(self) -> Telemetry | None:
        """The OpenTelemetry spans and metrics of this guard's decisions, or ``None``."""
        return self._telemetry

    @property
    def streams(self) -> LiveStreams:
        """The open streams this guard keeps live (cut when their key stops being valid)."""
        return self._streams

    @property
    def store(self) -> KeyStore:
        """The key and directory store this guard decides against."""
        return self._store

    @property
    def clock(self) -> Clock:
        """The guard's time source."""
        return self._clock

    @property
    def audit(self) -> AuditWriter:
        """The one writer every decision of this guard goes through."""
        return self._audit

    @property
    def issuer(self) -> KeyIssuer:
        """Issues, refreshes and revokes keys (audited), for the token endpoint and operators."""
        return self._issuer

    @property
    def challenge(self) -> Challenge:
        """The ``WWW-Authenticate`` challenge refusals carry."""
        return self._challenge

    @property
    def dpop(self) -> DPoPPolicy | None:
        """The DPoP policy, or ``None`` when only bearer keys are accepted."""
        return self._dpop

    @property
    def replay_cache(self) -> ReplayCache | None:
        """Where DPoP proof ids are burnt (``None`` without DPoP)."""
        return self._dpop_step.replay_cache

    @property
    def permissions(self) -> PermissionChecker:
        """The route rules."""
        return self._permissions

    @property
    def services(self) -> Mapping[str, ServiceConfig]:
        """The upstream services a :class:`~agentguard.asgi.ProxyApp` may front, by name."""
        return self._services

    @property
    def schemes(self) -> tuple[str, ...]:
        """The ``Authorization`` schemes this guard accepts, lower-case (``bearer``, ``dpop``)."""
        return self._schemes

    @property
    def swapper(self) -> CredentialSwapper | None:
        """The credential swapper proxies use by default."""
        return self._swapper

    async def resolve(self, token: str) -> Principal:
        """The live Principal for ``token``: an agentguard key, or one a token resolver accepts."""
        if not token.startswith("ag_"):
            for resolver in self._token_resolvers:
                with store_outage("token resolver"):  # refuses (503) rather than 500s
                    if resolver.accepts(token):
                        return await resolver.resolve(token)
        return await self._resolver.resolve(token)

    async def lookup(self, token: str) -> KeyLookup:
        """The stored record of agentguard key ``token`` (any kind, live or not), as the token
        endpoint's introspection needs it; an unknown or malformed key raises
        :class:`~agentguard.errors.InvalidToken`."""
        return await self._resolver.lookup(token)

    def advertise(self, resource_metadata: str) -> Challenge:
        """Make every challenge carry ``resource_metadata="<url>"`` (RFC 9728 §5.1); an earlier
        one is replaced, other auth-params are kept. Returns the new challenge."""
        extra = tuple(item for item in self._challenge.extra if item[0] != "resource_metadata")
        self._challenge = dataclasses.replace(
            self._challenge, extra=(*extra, ("resource_metadata", resource_metadata))
        )
        return self._challenge

    def advertise_scope(self, scope: str | None) -> Challenge:
        """Make every challenge carry ``scope="<scope>"`` (RFC 6750 §3), or none.

        An ``insufficient_scope`` refusal still names the one scope it needs instead.
        """
        self._challenge = dataclasses.replace(self._challenge, scope=scope)
        return self._challenge

    async def verify_token_proof(self, request: GuardRequest) -> VerifiedProof | None:
        """Check the ``DPoP`` proof of a token-endpoint request (RFC 9449 §5).

        Returns ``None`` when there is no proof and DPoP is optional; raises the resource-server
        form of the error, which the token endpoint re-renders as a 400.
        """
        return await self._dpop_step.token_proof(request)

    def __repr__(self) -> str:
        return f"Guard(store={type(self._store).__name__}, rules={len(self._permissions.rules)})"

    async def authenticate(
        self,
        request: GuardRequest,
        *,
        credentials: Credentials | Callable[[], Credentials] | None = None,
        requirement: Requirement | _Default | None = DEFAULT,
        resource: str | None = None,
        require_audience: bool = False,
    ) -> Principal:
        """Decide ``request``: return its live Principal, or raise the refusal.

        The same decision as :meth:`admit`, for callers that review no content.
        """
        passage = await self.admit(
            request,
            credentials=credentials,
            requirement=requirement,
            resource=resource,
            require_audience=require_audience,
        )
        trace = passage.trace  # this caller runs no more steps: the decision's span ends here
        if passage.gate is not None:  # bound to a body this caller never reads: fail closed
            refusal = ServiceUnavailable(
                "this route holds calls for approval, which binds the request body; guard it "
                "with the middleware (which reads the body) rather than a dependency or decorator"
            )
            sent = await self.refuse(request, refusal, principal=passage.principal)
            if trace is not None:
                trace.refused(sent)
                trace.end()
            raise sent
        if trace is not None:
            trace.end()
        return passage.principal

    async def admit(
        self,
        request: GuardRequest,
        *,
        credentials: Credentials | Callable[[], Credentials] | None = None,
        requirement: Requirement | _Default | None = DEFAULT,
        reviews: Reviews | None = None,
        service: str | None = None,
        placement: tuple[str, str] | None = None,
        resource: str | None = None,
        require_audience: bool = False,
    ) -> Passage:
        """Run the decision steps for ``request``; the :class:`Passage` on, or the refusal.

        ``credentials`` (or a function returning them) replaces the ``Authorization`` header as
        the key's source, as the proxy does for vendor-native placements; ``requirement``
        replaces the guard's own route rules; ``reviews`` (from :meth:`reviews`) replaces the
        guard's reviewers for this request's content; ``service`` names the upstream in review
        events; ``placement`` (``("query" | "header", name)``) names where a vendor-native
        placement put the key, the one field an approval leaves out of what it binds;
        ``resource`` (this resource server's RFC 8707 identifier) refuses a key issued for
        another resource, and with ``require_audience`` a key issued for none (401
        ``invalid_token``, :func:`~agentguard._audience.check_audience`). The decision is
        audited either way before this returns; if the audit store fails,
        :class:`~agentguard.errors.AuditUnavailable` (503) is raised instead.
        """
        started = self._clock.monotonic()
        trace = None if self._observer is None else self._observer.begin(request)
        if isinstance(requirement, _Default):
            requirement = self._permissions.requirement(request.method, request.path)
        elif requirement is not None and self._permissions.rules:
            requirement = with_rule_gates(self._permissions, request, requirement)
        try:
            principal = await self._decide(
                request, credentials, requirement, (resource, require_audience)
            )
        except RequestRefused as error:
            await self._decisions.refused(request, requirement, started, error, trace=trace)
            raise
        except UsageError as misuse:  # a backend or resolver misbehaving: refused, never a 500
            logger.error("a store or resolver raised %s on the request path", type(misuse).__name__)
            refusal = ServiceUnavailable(reason=Reason.INTERNAL_ERROR)
            await self._decisions.refused(request, requirement, started, refusal, trace=trace)
            raise refusal from None
        await self._decisions.allowed(request, requirement, started, principal, trace)
        return Passage(
            request,
            principal,
            requirement,
            self._reviews if reviews is None else reviews,
            requirement.service if service is None and requirement is not None else service,
            self._gates.after_body(
                request,
                principal,
                requirement,
                None if placement is None else Placement(*placement),
            ),
            trace,
        )

    async def _decide(
        self,
        request: GuardRequest,
        credentials: Credentials | Callable[[], Credentials] | None,
        requirement: Requirement | None,
        audience: tuple[str | None, bool] = (None, False),
    ) -> Principal:
        """The decision steps, in order; each raises its refusal. New steps go here."""
        request.target()  # 1. an ambiguous target is refused (400) before any key lookup
        if credentials is None:  # 2. the credentials, from the one place they may be
            credentials = parse_authorization(request, self._schemes)
        elif callable(credentials):
            credentials = credentials()
        if credentials.scheme not in self._schemes:
            raise InvalidRequest(reason=Reason.UNSUPPORTED_SCHEME)
        principal = await self.resolve(credentials.key)  # 3. live resolution
        try:
            # 4. DPoP: the proof, its binding to the key, then its jti burnt (RFC 9449 §4.3, §7)
            await self._dpop_step.check(request, credentials, principal.jkt)
            resource, require_audience = audience
            if resource is not None:  # RFC 8707: a key issued for another resource is refused
                check_audience(principal, resource, require=require_audience)
            elif principal.audience is not None:  # nor can a server that names no resource
                raise InvalidToken(_FOR_ONE_RESOURCE, reason=Reason.WRONG_AUDIENCE)
            self._permissions.authorize(principal, requirement)  # 5. the user's live grants
            # 6. rate limits; budgets now unless the call waits for an approval (the approval
            # step and the charge after it run on the body: see agentguard._gates)
            await self._gates.before_body(principal, requirement)
        except RequestRefused as error:  # a refusal about this key: name it
            raise error.with_context(**principal_ids(principal)) from None
        return principal

    def reviews(
        self,
        request_reviewers: ReviewChain | Iterable[ReviewerLike] | None = None,
        response_reviewers: ReviewChain | Iterable[ReviewerLike] | None = None,
    ) -> Reviews:
        """The review steps for an adapter: the given reviewers, else the guard's own.

        ``None`` keeps the guard's chain for that direction; an empty list turns it off.
        """
        request = self._reviews.request_chain
        response = self._reviews.response_chain
        if request_reviewers is not None:
            request = as_chain(request_reviewers)
        if response_reviewers is not None:
            response = as_chain(response_reviewers)
        return Reviews(request, response, self._audit, self._clock)

    async def record_refusal(
        self,
        request: GuardRequest,
        error: RequestRefused,
        *,
        principal: Principal | None = None,
        requirement: Requirement | None = None,
    ) -> None:
        """Audit a refusal an adapter made after :meth:`admit` (an extra scope a route
        declares, a tool's permission), exactly as the guard audits its own."""
        await self._decisions.refused(request, requirement, None, error, principal)

    async def refuse(
        self,
        request: GuardRequest,
        error: RequestRefused,
        *,
        principal: Principal | None = None,
        requirement: Requirement | None = None,
    ) -> RequestRefused:
        """Audit ``error`` as :meth:`record_refusal` does and return the refusal to send: the
        error itself, or :class:`~agentguard.errors.AuditUnavailable` (503) when it could not be
        recorded. Never raises a refusal, so an adapter always has one response to render."""
        try:
            await self.record_refusal(request, error, principal=principal, requirement=requirement)
        except RequestRefused as unrecorded:
            return unrecorded
        return error

    async def record(self, event: AuditEvent) -> None:
        """Append ``event`` to the audit chain (503 :class:`~agentguard.errors.AuditUnavailable`
        if the store fails)."""
        await self._audit.record(event)
