"""The gates between authorization and the call: rate limits, approvals, budgets.

Rate limits need only the principal, so they run inside the decision (:meth:`Guard._decide`),
right after the live grants. A call its rule holds for approval is bound to its exact body, so
the approval step, and the budget charge after it, run once the adapter has read the body:
:meth:`Gates.after_body` gives the :class:`~agentguard.Passage` the step to run before the
request reviewers. A call no rule holds is charged inside the decision.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, NoReturn

from agentguard._decisions import principal_ids
from agentguard.approvals._binding import Placement
from agentguard.approvals._errors import ApprovalInvalid, ApprovalQueueFull, ApprovalRequired
from agentguard.approvals._step import Call
from agentguard.errors import PayloadTooLarge, Reason, RequestRefused, ServiceUnavailable

if TYPE_CHECKING:
    from agentguard._decisions import DecisionRecorder
    from agentguard._model import Principal
    from agentguard._permissions import Requirement
    from agentguard._request import GuardRequest
    from agentguard.approvals._step import ApprovalStep
    from agentguard.limits._step import LimitStep

__all__ = ["BodyGate", "Gates"]

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
