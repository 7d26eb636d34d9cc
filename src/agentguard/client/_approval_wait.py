"""Waiting for a human's decision outside the model: poll with backoff until a deadline.

One plan, :func:`plan`, is a generator that yields either a request to send (and receives its
response, or the transport error) or a number of seconds to sleep; :func:`run` drives it in a
thread and :func:`arun` under an event loop, so ``wait_for_approval`` and its sync twin poll
alike. Each poll goes through the agent's own :class:`~agentguard.client.AgentAuth` flow (its
key, a fresh DPoP proof, nonce retry, renewal), on a client of the runtime's own, never the
agent's, so the agent's hooks and history never see it.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Callable, Generator
from datetime import datetime

import anyio
import httpx

from agentguard.client._approvals import Backoff, Polled, interpret_poll, retry_after
from agentguard.client._errors import ApprovalPending, ApprovalTimeout

__all__ = ["PollAuth", "Step", "arun", "plan", "run"]

Step = httpx.Request | float
Answer = httpx.Response | httpx.TransportError | None

_LATE_POLL = 1.0  # seconds after the approval's expiry to ask once more (clock skew)


class PollAuth(httpx.Auth):
    """The agent's auth flow for the status endpoint (built by ``AgentAuth``): its key and
    proof go on every poll, and the answer is never read as a held-back call."""

    def __init__(
        self,
        flow: Callable[[httpx.Request], Generator[httpx.Request, httpx.Response, None]],
        async_flow: Callable[[httpx.Request], AsyncGenerator[httpx.Request, httpx.Response]],
    ) -> None:
        self._flow = flow
        self._async_flow = async_flow

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        return self._flow(request)

    def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        return self._async_flow(request)


def plan(
    pending: ApprovalPending,
    url: httpx.URL,
    *,
    timeout: float,
    initial_interval: float,
    max_interval: float,
    now: Callable[[], datetime],
) -> Generator[Step, Answer, None]:
    """Poll ``url`` until the approval is decided; return once approved.

    Raises :class:`ApprovalDenied`, :class:`ApprovalExpired`, another
    :class:`ApprovalRefused`, :class:`ApprovalWaitFailed`, or :class:`ApprovalTimeout` once
    ``timeout`` seconds have passed with the approval still pending (or the status endpoint
    unreachable). Sleeps never pass the deadline, and the last poll is at the deadline.
    """
    deadline = time.monotonic() + timeout
    backoff = Backoff(initial_interval, max_interval)
    status: int | None = None
    problem = "still pending"
    while True:
        answer = yield httpx.Request("GET", url, headers={"Accept": "application/json"})
        server_wait: float | None = None
        if isinstance(answer, httpx.Response):
            status = answer.status_code
            outcome = interpret_poll(pending, url, answer)
            if outcome is Polled.APPROVED:
                return
            if outcome is Polled.UNAVAILABLE:
                problem = f"the status endpoint answered HTTP {status}"
                server_wait = retry_after(answer)
            else:
                problem = "still pending"
        else:
            status = None
            problem = f"no answer from the status endpoint ({type(answer).__name__})"
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ApprovalTimeout(
                pending.approval_id,
                f"gave up waiting for {pending.approval_id} after {timeout:g}s: {problem}",
                status=status,
            )
        delay = backoff.next(server_wait)
        if pending.expires_at is not None and server_wait is None:
            until_expiry = (pending.expires_at - now()).total_seconds() + _LATE_POLL
            if until_expiry > 0:
                delay = min(delay, until_expiry)  # learn of the expiry as it happens
        yield min(delay, remaining)


def run(plan_: Generator[Step, Answer, None], client: httpx.Client, auth: httpx.Auth) -> None:
    """Drive ``plan_`` in the calling thread."""
    try:
        step = next(plan_)
        while True:
            answer: Answer = None
            if isinstance(step, httpx.Request):
                try:
                    answer = client.send(step, auth=auth)
                except httpx.TransportError as error:
                    answer = error
            else:
                time.sleep(step)
            step = plan_.send(answer)
    except StopIteration:
        return
    finally:
        plan_.close()


async def arun(
    plan_: Generator[Step, Answer, None], client: httpx.AsyncClient, auth: httpx.Auth
) -> None:
    """Drive ``plan_`` under an event loop."""
    try:
        step = next(plan_)
        while True:
            answer: Answer = None
            if isinstance(step, httpx.Request):
                try:
                    answer = await client.send(step, auth=auth)
                except httpx.TransportError as error:
                    answer = error
            else:
                await anyio.sleep(step)
            step = plan_.send(answer)
    except StopIteration:
        return
    finally:
        plan_.close()
