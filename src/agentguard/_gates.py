"""The gates between authorization and the call: rate limits, approvals, budgets.

Rate limits need only the principal, so they run inside the decision (:meth:`Guard._decide`),
right after the live grants. A call its rule holds for approval is bound to its exact body, so
the approval step, and the budget charge after it, run once the adapter has read the body:
:meth:`Gates.after_body` gives the :class:`~agentguard.Passage` the step to run before the
request reviewers. A call no rule holds is charged inside the decision.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, NoReturn

from agentguard._decisions import principal_ids
from agentguard.approvals._binding import Placement
from agentguard.approvals._errors import ApprovalInvalid, ApprovalQueueFull, ApprovalRequired
from agentguard.approvals._policy import ApprovalPolicy
from agentguard.approvals._step import ApprovalStep, Call
from agentguard.errors import (
    ConfigurationError,
    PayloadTooLarge,
    Reason,
    RequestRefused,
    ServiceUnavailable,
)
from agentguard.limits._step import LimitStep
from agentguard.storage._gate_protocols import ApprovalStore, LimitStore
from agentguard.storage._outage import shield_store

if TYPE_CHECKING:
    from agentguard._clock import Clock
    from agentguard._decisions import DecisionRecorder
    from agentguard._model import Principal
    from agentguard._permissions import PermissionChecker, Requirement, RouteRule
    from agentguard._request import GuardRequest
    from agentguard._services import ServiceConfig
    from agentguard.audit._writer import AuditWriter
    from agentguard.limits._policy import Budget, RateLimit

__all__ = ["BodyGate", "Gates", "approval_step", "limit_step", "with_rule_gates"]

logger = logging.getLogger("agentguard.guard")


class BodyGate:
    """The gates one admitted call still has to pass once its body is read (run once)."""

    __slots__ = (
        "_gates",
        "_passed",
        "_placement",
        "_principal",
        "_request",
        "_requirement",
        "refusal",
    )  # fmt: skip

    def __init__(
        self,
        gates: Gates,
        request: GuardRequest,
        principal: Principal,
        requirement: Requirement,
        placement: Placement | None = None,
    ) -> None:
        self._gates = gates
        self._placement = placement
        self._request = request
        self._principal = principal
        self._requirement = requirement
        self._passed = False
        self.refusal: RequestRefused | None = None

    @property
    def max_body(self) -> int:
        """The largest body this gate decides on (the adapter reads this much, plus one)."""
        approvals = self._gates.approvals
        return 0 if approvals is None else approvals.policy.max_body

    async def __call__(self, body: bytes) -> None:
        """Pass ``body``'s call through the approval step and the budgets, or raise the
        refusal, audited (it is also kept in :attr:`refusal`, so adapters do not audit it
        again). A second call does nothing: the call was already decided."""
        if self._passed:
            return
        if self.refusal is not None:
            raise self.refusal
        try:
            await self._run(body)
        except RequestRefused as error:
            self.refusal = error
            raise
        self._passed = True

    async def _run(self, body: bytes) -> None:
        gates, request, principal, requirement = (
            self._gates, self._request, self._principal, self._requirement,
        )  # fmt: skip
        approvals = gates.approvals
        if approvals is None:
            logger.error("a rule holds calls for approval, but the guard has no approval store")
            await self._refuse(ServiceUnavailable(reason=Reason.INTERNAL_ERROR))
        if len(body) > approvals.policy.max_body:
            await self._refuse(
                PayloadTooLarge(
                    "a call held for approval binds its whole body, and this body is larger "
                    "than the approval step accepts (ApprovalPolicy.max_body; [approvals] "
                    "max_body in agentguard.toml)"
                )
            )
        call = Call(request, principal, requirement)
        try:  # 1. the approval named, verified (the step audits its own refusals)
            approved = await approvals.check(call, body, self._placement)
        except (ApprovalRequired, ApprovalInvalid, ApprovalQueueFull):
            raise  # the step audited these itself
        except RequestRefused as error:  # an approval store outage, a refused target: audited here
            await self._refuse(error)
        limits = gates.limits
        if limits is not None:  # 2. room in the budgets, or the approval stays unused
            try:
                await limits.room(principal, requirement)
            except RequestRefused as error:
                await self._refuse(error)
        try:  # 3. the approval used, once across every instance (losers are charged nothing)
            await approvals.consume(approved, call)
        except ApprovalInvalid:
            raise
        except RequestRefused as error:
            await self._refuse(error)
        if limits is not None:  # 4. the budgets charged, atomically
            try:
                await limits.charge(principal, requirement)
            except RequestRefused as error:
                await self._refuse(error)

    async def _refuse(self, error: RequestRefused) -> NoReturn:
        error = error.with_context(**principal_ids(self._principal))
        await self._gates.recorder.refused(
            self._request, self._requirement, None, error, self._principal
        )
        raise error


class Gates:
    """The rate-limit, approval and budget steps of one guard (each optional)."""

    __slots__ = ("approvals", "limits", "recorder")

    def __init__(
        self,
        approvals: ApprovalStep | None,
        limits: LimitStep | None,
        recorder: DecisionRecorder,
    ) -> None:
        self.approvals = approvals
        self.limits = limits
        self.recorder = recorder

    async def before_body(self, principal: Principal, requirement: Requirement | None) -> None:
        """Inside the decision: take the rate limits; charge budgets unless the call waits for
        an approval (then the charge follows the approval)."""
        limits = self.limits
        if limits is None:
            return
        await limits.take(principal, requirement)
        if requirement is not None and not requirement.approval:
            await limits.charge(principal, requirement)

    def after_body(
        self,
        request: GuardRequest,
        principal: Principal,
        requirement: Requirement | None,
        placement: Placement | None = None,
    ) -> BodyGate | None:
        """The gate the body must pass for this call, or ``None`` when its rule holds nothing.

        ``placement`` names the field a vendor-native placement put the key in (see
        :class:`agentguard.approvals._binding.Placement`)."""
        if requirement is None or not requirement.approval:
            return None
        return BodyGate(self, request, principal, requirement, placement)


def approval_step(
    policy: ApprovalPolicy | None,
    store: object,
    rules: Sequence[RouteRule],
    services: Sequence[ServiceConfig],
    *,
    audit: AuditWriter,
    clock: Clock,
) -> ApprovalStep | None:
    """The guard's approval step: on ``policy.store``, else on ``store`` when it keeps
    approvals; ``None`` when nothing holds calls. A rule that holds calls with nowhere to keep
    approvals is a :class:`~agentguard.errors.ConfigurationError`, never a silent pass."""
    approval_store = policy.store if policy is not None else None
    if approval_store is None and isinstance(store, ApprovalStore):
        approval_store = store
    if approval_store is None:
        held = [rule.prefix for rule in rules if rule.approval]
        held += [service.name for service in services for r in service.routes if r.approval]
        if policy is not None or held:
            raise ConfigurationError(
                "rules hold calls for approval but there is no approval store: pass "
                "approvals=ApprovalPolicy(store=...) or a store that keeps approvals"
            )
        return None
    shielded = shield_store(approval_store, "approval store")
    return ApprovalStep(policy or ApprovalPolicy(), shielded, audit, clock)


def limit_step(
    budgets: Sequence[Budget],
    rate_limits: Sequence[RateLimit],
    limit_store: LimitStore | None,
    store: object,
    clock: Clock,
) -> LimitStep | None:
    """The guard's budgets and rate limits on ``limit_store``, else on ``store`` when it keeps
    counters; ``None`` without any."""
    if not budgets and not rate_limits:
        return None
    if limit_store is None:
        if not isinstance(store, LimitStore):
            raise ConfigurationError(
                "budgets and rate limits need a limit store: pass limit_store=... (e.g. a "
                "RedisLimitStore) or a store that keeps counters"
            )
        limit_store = store
    shielded = shield_store(limit_store, "limit store")
    return LimitStep(budgets, rate_limits, shielded, clock)


def with_rule_gates(
    permissions: PermissionChecker, request: GuardRequest, requirement: Requirement
) -> Requirement:
    """An adapter's own requirement (a decorator's, a dependency's), with the gates the
    guard's rules put on this path added: a rule's approval or cost is never skipped by
    declaring a requirement elsewhere."""
    try:
        ruled = permissions.requirement(request.method, request.target().path)
    except RequestRefused:  # an ambiguous target: refused by the first decision step
        return requirement
    if ruled is None or (not ruled.approval and ruled.cost <= requirement.cost):
        return requirement
    return dataclasses.replace(
        requirement,
        approval=requirement.approval or ruled.approval,
        cost=max(requirement.cost, ruled.cost),
        rule=ruled.rule if not requirement.rule else requirement.rule + ruled.rule[:16],
    )
