"""AgentAuth: the client auth that holds the agent's keys, signs every call and renews them.

For each request it attaches ``Authorization: DPoP <key>`` and a fresh proof (``Bearer <key>``
for unbound keys), renews first once the key has used ``renew_at`` of its life (one refresh
however many requests are in flight), answers one ``use_dpop_nonce`` demand, and on ``401
invalid_token`` refreshes and retries once, raises :class:`ApprovalPending` for a call held
for a human and :class:`AccountConnectionRequired` for a service whose connected account the
user must connect first. One generator, :meth:`AgentAuth._flow`, does it for ``httpx.Client`` and
``httpx.AsyncClient`` alike (see :mod:`agentguard.client._flow`), and for ``httpx2``'s clients,
which the ``mcp`` SDK's client is built on: when ``httpx2`` is installed, ``AgentAuth`` is an
``httpx2.Auth`` as well (its clients refuse any other ``auth``), without importing it otherwise.
"""

from __future__ import annotations

import os
import re
from collections.abc import AsyncGenerator, Callable, Generator
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar, cast, overload

import httpx

from agentguard._audience import canonical_resource
from agentguard._clock import Clock, SystemClock
from agentguard.client._approval_wait import PollAuth, arun, plan, run
from agentguard.client._approvals import approval_refusal, names_approval, status_url
from agentguard.client._connections import connection_refusal, names_connection
from agentguard.client._credentials_file import DPOP, AgentCredentials, CredentialsFile
from agentguard.client._errors import ApprovalPending, DPoPNonceLoop, RefreshFailed
from agentguard.client._flow import Io, Perform, adrive, deferred, inline
from agentguard.client._keys import Keys
from agentguard.client._nonces import Nonces, origin
from agentguard.client._token import TokenEndpoint, json_object, text
from agentguard.client._wire import WireRequest, WireResponse, WireURL

if TYPE_CHECKING:
    import httpx2
    from httpx2 import Auth as _Httpx2Auth
else:
    try:
        from httpx2 import Auth as _Httpx2Auth
    except ImportError:  # no httpx2: AgentAuth is an httpx.Auth only
        _Httpx2Auth = object

__all__ = ["AgentAuth", "KeyPlacement"]

Y = TypeVar("Y")
R = TypeVar("R", bound=WireRequest)

KeyPlacement = Callable[[httpx.Request, str], None]
"""Puts the access key where a service expects it: ``(request, access_key) -> None``."""

_ERROR_PARAM = re.compile(r'\berror\s*=\s*"?([A-Za-z0-9_.-]+)"?')


#: ``invalid_token`` reasons a refresh cannot cure: the new key would carry the same audience.
_NOT_RENEWABLE = frozenset({"wrong_audience", "audience_required"})


def _challenge_error(response: WireResponse) -> str | None:
    """The ``error`` of a 401's ``WWW-Authenticate`` challenges (or of its JSON body)."""
    for value in response.headers.get_list("www-authenticate"):
        found = _ERROR_PARAM.search(value)
        if found:
            return found.group(1)
    return text(json_object(response), "error")


def _without_query(url: WireURL) -> str:
    """``url`` as text, without its query and fragment (for messages: a query may hold data)."""
    return str(url).split("#", 1)[0].split("?", 1)[0]


class AgentAuth(httpx.Auth, _Httpx2Auth):
    """Signs and renews an agent's agentguard keys, for ``httpx`` and ``httpx2`` clients.

    Pass it as ``auth=`` to ``httpx.Client``, ``httpx.AsyncClient``, ``httpx2.Client`` or
    ``httpx2.AsyncClient``; the ``mcp`` SDK's streamable HTTP client takes such an
    ``httpx2.AsyncClient`` (``streamable_http_client(url, http_client=...)``). Proofs sign the
    method and URL of the request exactly as the client sends it.

    Args:
        credentials: the keys, their lifetime, the token endpoint and the DPoP key.
        file: where rotated keys are persisted (and re-read before each refresh, so several
            processes of one agent share one key family).
        clock: time source (tests share a fake clock with the server).
        renew_at: fraction of the access key's life after which it is renewed (default 0.8).
        expiry_margin: seconds before expiry after which the current key is no longer used
            while a refresh is in flight (covers clock skew and latency).
        token_transport / async_token_transport: transports for the token requests (default:
            httpx's, honouring proxy environment variables).
        token_timeout: seconds a token request may take.
        placement: where to put the access key instead of ``Authorization`` (for services
            that expect a vendor-native header); the DPoP proof is still attached. Under an
            ``httpx2`` client it receives an ``httpx2.Request`` (the same API).
        resource: an RFC 8707 resource identifier sent with every refresh, so the renewed keys
            are issued for that resource only (their audience); ``None`` keeps whatever
            audience the keys have.

    Errors are the same for ``httpx.Client`` and ``httpx.AsyncClient``, for requests and for
    :meth:`renew` / :meth:`arenew`:

    - :class:`~agentguard.client.RefreshFailed` with ``permanent`` true when the token endpoint
      refuses the refresh key (``invalid_grant``: the user was disabled, the keys revoked,
      expired or reused). The request that needed the renewal raises it, whether the renewal
      was due by time or asked for by a ``401 invalid_token``; so does every later call that
      needs one. Nothing is retried: catch it around the agent's job, report ``str(error)``
      (one line, no key) and stop.
    - :class:`~agentguard.client.RefreshFailed` with ``transient`` true (no answer, 429, 5xx)
      only once the current key can no longer be used; until then requests go on with it and
      the renewal is tried again after 30 seconds.
    - :class:`~agentguard.client.DPoPNonceLoop` and
      :class:`~agentguard.client.CredentialsFileError`, as documented on them.
    - :class:`~agentguard.client.ApprovalPending` when the guard holds the call for a human
      (``403`` with an ``agentguard-approval`` header): wait with :meth:`wait_for_approval`,
      then send the same request again with ``headers=pending.retry_headers``. A ``403`` to a
      request that named an approval raises :class:`~agentguard.client.ApprovalRefused`
      (:class:`~agentguard.client.ApprovalDenied`, :class:`~agentguard.client.ApprovalExpired`)
      when the approval cannot be used.
    - :class:`~agentguard.client.AccountConnectionRequired` when the service acts with the
      user's own connected vendor account and there is none that works (``403
      connection_required`` with an ``agentguard-connection`` header): nothing was forwarded;
      a human must connect the account at ``error.connect_uri``. Only these ``403`` bodies
      are read.

    Any other ``401`` and ``403`` is returned as a response, not raised; so is a ``401`` for a
    key issued for another resource (reason ``wrong_audience`` or ``audience_required``), which
    no refresh can cure. So are ``429``
    ``rate_limited`` and ``budget_exhausted``: the runtime (not the model) should wait the
    ``Retry-After`` seconds before sending the call again; a ``budget_exhausted`` wait can be
    as long as the rest of the budget window, so report it rather than hold a job open, and
    never loop a model on a ``429`` (each attempt counts against the same limit).
    """

    requires_request_body = True  # httpx.Client reads it; the flow reads it for AsyncClient

    def __init__(
        self,
        credentials: AgentCredentials,
        *,
        file: CredentialsFile | None = None,
        clock: Clock | None = None,
        renew_at: float = 0.8,
        expiry_margin: float = 30.0,
        token_transport: httpx.BaseTransport | None = None,
        async_token_transport: httpx.AsyncBaseTransport | None = None,
        token_timeout: float = 10.0,
        placement: KeyPlacement | None = None,
        resource: str | None = None,
    ) -> None:
        if not 0 < renew_at < 1:
            raise ValueError("renew_at is a fraction of the key's life, between 0 and 1")
        if expiry_margin < 0:
            raise ValueError("expiry_margin must not be negative")
        if resource is not None:
            canonical_resource(resource)  # ValueError: not an http(s) URL without query/fragment
        self.renew_at = renew_at
        self.placement = placement
        self._nonces = Nonces()
        token = TokenEndpoint(
            self._nonces,
            transport=token_transport,
            async_transport=async_token_transport,
            timeout=token_timeout,
            resource=resource,
        )
        self._keys = Keys(
            credentials,
            token,
            file=file,
            clock=clock or SystemClock(),
            expiry_margin=timedelta(seconds=expiry_margin),
        )

    @classmethod
    def from_file(
        cls, path: str | os.PathLike[str], *, clock: Clock | None = None, **options: Any
    ) -> AgentAuth:
        """Load a credentials file (see :class:`CredentialsFile`) and persist renewals to it."""
        file = CredentialsFile(path)
        return cls(file.load(), file=file, clock=clock, **options)

    def __repr__(self) -> str:
        credentials = self.credentials
        return (
            f"AgentAuth(token_type={credentials.token_type!r}, "
            f"expires_at={credentials.expires_at.isoformat()!r}, file={self.file!r})"
        )

    @property
    def credentials(self) -> AgentCredentials:
        """The keys in use right now."""
        return self._keys.credentials

    @property
    def file(self) -> CredentialsFile | None:
        """The credentials file renewals are written to, if any."""
        return self._keys.file

    @property
    def clock(self) -> Clock:
        """Time source of expiry, renewal and proofs."""
        return self._keys.clock

    @clock.setter
    def clock(self, clock: Clock) -> None:
        self._keys.clock = clock

    @property
    def refreshes(self) -> int:
        """How many times this runtime has exchanged its refresh key."""
        return self._keys.refreshes

    @overload
    def auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]: ...

    @overload
    def auth_flow(
        self, request: httpx2.Request
    ) -> Generator[httpx2.Request, httpx2.Response, None]: ...

    def auth_flow(self, request: WireRequest) -> Generator[WireRequest, Any, None]:
        """The flow for ``httpx.Client`` and ``httpx2.Client``: a renewal blocks the thread."""
        return self._flow(request, inline)

    @overload
    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]: ...

    @overload
    def sync_auth_flow(
        self, request: httpx2.Request
    ) -> Generator[httpx2.Request, httpx2.Response, None]: ...

    def sync_auth_flow(self, request: WireRequest) -> Generator[WireRequest, Any, None]:
        """What the sync clients call: :meth:`auth_flow` (it reads the request body itself)."""
        return self._flow(request, inline)

    @overload
    def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]: ...

    @overload
    def async_auth_flow(
        self, request: httpx2.Request
    ) -> AsyncGenerator[httpx2.Request, httpx2.Response]: ...

    def async_auth_flow(self, request: WireRequest) -> AsyncGenerator[WireRequest, Any]:
        """The same flow for ``httpx.AsyncClient`` and ``httpx2.AsyncClient``: a renewal is
        awaited, and no lock is held across a request."""
        return adrive(self._flow(request, deferred))

    def _flow(
        self, request: R, perform: Perform[Y], *, poll: bool = False
    ) -> Generator[R | Y, Any, None]:
        """``poll``: a status poll, signed wherever it goes (``status_url`` chose the URL) and
        never read as a held-back call."""
        yield from perform(Io(request.read, request.aread))  # a retry resends it
        if not poll and not self._applies(request.url, self.credentials):
            yield request
            return
        credentials = yield from self._keys.current(None, self.renew_at, perform)
        nonce_retried = refreshed = False
        while True:
            self._authorize(request, credentials)
            response: WireResponse = yield request
            self._nonces.remember("resource", request.url, response)
            if not poll and names_approval(request, response):
                yield from perform(Io(response.read, response.aread))
                refusal = approval_refusal(request, response)
                if refusal is not None:
                    raise refusal
                return
            if not poll and names_connection(response):
                yield from perform(Io(response.read, response.aread))
                needed = connection_refusal(response)
                if needed is not None:
                    raise needed
                return
            if response.status_code != 401:
                return
            yield from perform(Io(response.read, response.aread))
            error = _challenge_error(response)
            if error == "use_dpop_nonce" and response.headers.get("dpop-nonce"):
                if nonce_retried:
                    raise DPoPNonceLoop(_without_query(request.url))
                nonce_retried = True
                continue
            if error != "invalid_token":
                return
            if text(json_object(response), "reason") in _NOT_RENEWABLE:
                return  # a renewed key has the same audience: the caller gets the 401 as it is
            if refreshed:
                raise RefreshFailed(
                    status=401,
                    error="invalid_token",
                    reason=text(json_object(response), "reason"),
                    description="the renewed access key was refused at once; check that the "
                    "service and the token endpoint share one store and one clock",
                    permanent=False,
                )
            refreshed = True
            credentials = yield from self._keys.current(credentials, self.renew_at, perform)

    def _applies(self, url: WireURL, credentials: AgentCredentials) -> bool:
        if credentials.resource_url is None:
            return True
        base = httpx.URL(credentials.resource_url)
        if origin(url) != origin(base):
            return False
        prefix = base.path.rstrip("/")
        return url.path == prefix or url.path.startswith(prefix + "/")

    def _authorize(self, request: WireRequest, credentials: AgentCredentials) -> None:
        key = credentials.access_key.reveal()
        scheme = "Bearer"
        if credentials.token_type == DPOP and credentials.dpop_key is not None:
            scheme = "DPoP"
            request.headers["DPoP"] = credentials.dpop_key.proof(
                request.method,
                str(request.url),
                access_key=key,
                nonce=self._nonces.get("resource", request.url),
                iat=int(self.clock.now().timestamp()),
            )
        if self.placement is not None:
            self.placement(cast("httpx.Request", request), key)
        else:
            request.headers["Authorization"] = f"{scheme} {key}"

    # waiting for a human's approval, outside the model

    async def wait_for_approval(
        self,
        pending: ApprovalPending,
        *,
        timeout: float = 900.0,
        initial_interval: float = 1.0,
        max_interval: float = 30.0,
    ) -> None:
        """Return once the approval ``pending`` names is approved; then resend the call with
        ``headers=pending.retry_headers``.

        Polls the status endpoint (``pending.approval_uri`` when it is on the token endpoint's
        origin and ends in the approval id, else the token endpoint's sibling
        ``approvals/<id>``) with this runtime's key and DPoP proof, renewing the key as any
        call would, through the token transports. Between polls it sleeps with exponential
        backoff and jitter (``initial_interval`` doubling up to ``max_interval`` seconds, never
        less than a ``Retry-After``), so a long wait costs a few dozen requests and no model
        turns. No answer, ``429`` and ``5xx`` are waited out like a pending state.

        Raises:
            ApprovalDenied: an operator denied it.
            ApprovalExpired: it expired undecided (send the call again for a new one).
            ApprovalRefused: otherwise unusable (``approval_used``, ``unknown_approval``).
            ApprovalTimeout: ``timeout`` seconds passed while it was still pending (it may
                still be approved: waiting again is fine).
            ApprovalWaitFailed: the status endpoint refused the poll (e.g. ``401``, ``403``).
            RefreshFailed: the keys could not be renewed, as for any call.
        """
        steps = self._plan(pending, timeout, initial_interval, max_interval)
        token = self._keys.token
        client = httpx.AsyncClient(transport=token.async_transport, timeout=token.timeout)
        try:
            await arun(steps, client, self._poll_auth())
        finally:
            if token.async_transport is None:  # never close a transport the caller owns
                await client.aclose()

    def wait_for_approval_sync(
        self,
        pending: ApprovalPending,
        *,
        timeout: float = 900.0,
        initial_interval: float = 1.0,
        max_interval: float = 30.0,
    ) -> None:
        """:meth:`wait_for_approval` for threads (``httpx.Client``): blocks while it waits."""
        steps = self._plan(pending, timeout, initial_interval, max_interval)
        token = self._keys.token
        client = httpx.Client(transport=token.transport, timeout=token.timeout)
        try:
            run(steps, client, self._poll_auth())
        finally:
            if token.transport is None:
                client.close()

    def _plan(
        self, pending: ApprovalPending, timeout: float, initial: float, maximum: float
    ) -> Generator[httpx.Request | float, Any, None]:
        if not timeout >= 0:
            raise ValueError("timeout is a number of seconds >= 0")
        url = status_url(pending, self.credentials.token_url)
        return plan(
            pending,
            url,
            timeout=timeout,
            initial_interval=initial,
            max_interval=maximum,
            now=self.clock.now,
        )

    def _poll_auth(self) -> PollAuth:
        return PollAuth(
            lambda request: self._flow(request, inline, poll=True),
            lambda request: adrive(self._flow(request, deferred, poll=True)),
        )

    # explicit renewal (the background Renewer uses these)

    def renew(self, *, fraction: float | None = None) -> bool:
        """Renew now if the key has used ``fraction`` (default ``renew_at``) of its life.

        Returns whether the keys changed. ``fraction=0`` renews unconditionally (unless another
        caller is renewing right now). Raises :class:`RefreshFailed` when the server refuses.
        """
        before = self.credentials
        for _ in self._keys.current(None, self._fraction(fraction), inline):
            pass  # inline I/O: nothing is yielded
        return self.credentials.access_key != before.access_key

    async def arenew(self, *, fraction: float | None = None) -> bool:
        """:meth:`renew` for event loops."""
        before = self.credentials
        async for _ in adrive(self._keys.current(None, self._fraction(fraction), deferred)):
            pass  # a renewal sends no request of the agent's
        return self.credentials.access_key != before.access_key

    def _fraction(self, fraction: float | None) -> float:
        return self.renew_at if fraction is None else fraction
