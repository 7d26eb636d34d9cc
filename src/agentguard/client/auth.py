"""AgentAuth: the ``httpx.Auth`` that holds the agent's keys, signs every call and renews them.

The runtime, not the model, holds both keys. For each request it attaches
``Authorization: DPoP <key>`` and a fresh proof (or ``Bearer <key>`` for unbound keys); once the
access key has used ``renew_at`` of its life it renews first, with a single refresh however many
requests are in flight; it answers one ``use_dpop_nonce`` demand with the server's nonce; and on
``401 invalid_token`` it refreshes once and retries once before giving up with
:class:`~agentguard.client.RefreshFailed` (``permanent`` when the server refused the keys for
good: user disabled, keys revoked).

Token requests go through a client the auth owns, never through the agent's client, so the
refresh key and the rotated keys never pass the agent's event hooks, logging or
``response.history``.

Locks: a ``threading.Lock`` guards the in-memory state and is held only while reading or
updating it, never across a ``yield`` or an ``await``. When a credentials file is used, the
refresh leader holds the file's inter-process ``flock`` from re-reading the file until the new
keys are written, so two processes of one agent never spend the same refresh key (which the
server would treat as theft and answer by revoking the whole family). Only the leader takes it;
requests never wait on it.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from collections.abc import AsyncGenerator, Callable, Generator, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from functools import partial
from typing import Any, Literal

import anyio
import httpx

from agentguard.client.credentials_file import (
    BEARER,
    DPOP,
    AgentCredentials,
    CredentialsFile,
    TokenType,
)
from agentguard.client.errors import CredentialsFileError, DPoPNonceLoop, RefreshFailed
from agentguard.client.renewal import (
    Effect,
    Flight,
    Flow,
    RunBlocking,
    SendResource,
    SendToken,
    WaitFor,
)
from agentguard.clock import Clock, SystemClock
from agentguard.secret import Secret

__all__ = ["AgentAuth", "Placement"]

logger = logging.getLogger("agentguard.client")

Placement = Callable[[httpx.Request, str], None]
"""Puts the access key where a service expects it: ``(request, access_key) -> None``."""

_ERROR_PARAM = re.compile(r'\berror\s*=\s*"?([A-Za-z0-9_.-]+)"?')
_KEY = re.compile(r"^[A-Za-z0-9._~+/-]{8,512}=*$")
_RETRY_AFTER_FAILURE = timedelta(seconds=30)


def _origin(url: httpx.URL) -> str:
    port = url.port or {"http": 80, "https": 443}.get(url.scheme, 0)
    return f"{url.scheme}://{url.host}:{port}"


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        document = json.loads(response.content)
    except (ValueError, RecursionError):
        return {}
    return document if isinstance(document, dict) else {}


def _text(document: dict[str, Any], name: str) -> str | None:
    value = document.get(name)
    return value if isinstance(value, str) else None


def _challenge_error(response: httpx.Response) -> str | None:
    """The ``error`` of a 401's ``WWW-Authenticate`` challenges (or of its JSON body)."""
    for value in response.headers.get_list("www-authenticate"):
        found = _ERROR_PARAM.search(value)
        if found:
            return found.group(1)
    return _text(_json(response), "error")


class _Decision:
    """What a caller does after looking at the state under the lock."""

    __slots__ = ("credentials", "fallback", "flight", "kind")

    def __init__(
        self,
        kind: Literal["use", "wait", "lead"],
        credentials: AgentCredentials,
        flight: Flight | None = None,
        fallback: AgentCredentials | None = None,
    ) -> None:
        self.kind = kind
        self.credentials = credentials
        self.flight = flight
        self.fallback = fallback


class AgentAuth(httpx.Auth):
    """Signs and renews an agent's agentguard keys, for ``httpx.Client`` and ``AsyncClient``.

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
            that expect a vendor-native header); the DPoP proof is still attached.

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

    Any other ``401`` (and every ``403``) is returned as a response, not raised.
    """

    requires_request_body = True

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
        placement: Placement | None = None,
    ) -> None:
        if not 0 < renew_at < 1:
            raise ValueError("renew_at is a fraction of the key's life, between 0 and 1")
        if expiry_margin < 0:
            raise ValueError("expiry_margin must not be negative")
        self.file = file
        self.clock: Clock = clock or SystemClock()
        self.renew_at = renew_at
        self.expiry_margin = timedelta(seconds=expiry_margin)
        self.token_timeout = token_timeout
        self.placement = placement
        self._token_transport = token_transport
        self._async_token_transport = async_token_transport
        self._lock = threading.Lock()
        self._credentials = credentials
        self._flight: Flight | None = None
        self._retry_after: datetime | None = None
        self._nonces: dict[tuple[str, str], str] = {}
        self.refreshes = 0

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
        with self._lock:
            return self._credentials

    # state, under the lock and never across an effect

    def _decide(self, stale: AgentCredentials | None, fraction: float) -> _Decision:
        with self._lock:
            current = self._credentials
            now = self.clock.now()
            if stale is not None:
                if current.access_key != stale.access_key:
                    return _Decision("use", current)  # someone renewed since it was refused
                valid = False
            else:
                if now < current.renew_point(fraction):
                    return _Decision("use", current)
                valid = now < current.expires_at - self.expiry_margin
                if valid and self._retry_after is not None and now < self._retry_after:
                    return _Decision("use", current)
            if self._flight is not None:
                if valid:
                    return _Decision("use", current)
                return _Decision("wait", current, self._flight)
            self._flight = Flight()
            return _Decision("lead", current, self._flight, current if valid else None)

    def _install(self, credentials: AgentCredentials) -> None:
        with self._lock:
            self._credentials = credentials
            self._retry_after = None

    def _nonce(self, role: str, url: httpx.URL) -> str | None:
        with self._lock:
            return self._nonces.get((role, _origin(url)))

    def _remember_nonce(self, role: str, url: httpx.URL, response: httpx.Response) -> None:
        nonce = response.headers.get("dpop-nonce")
        if nonce:
            with self._lock:
                self._nonces[(role, _origin(url))] = nonce

    def _iat(self) -> int:
        return int(self.clock.now().timestamp())

    # the renewal, as effects

    def _current(self, stale: AgentCredentials | None, fraction: float) -> Flow[AgentCredentials]:
        """Credentials good to use now, renewing first when due (``stale``: refused ones)."""
        while True:
            decision = self._decide(stale, fraction)
            if decision.kind == "use":
                return decision.credentials
            if decision.kind == "wait" and decision.flight is not None:
                yield WaitFor(decision.flight)
                continue
            flight = decision.flight
            assert flight is not None  # noqa: S101 - "lead" always carries its flight
            try:
                return (yield from self._refresh(decision.credentials, stale, fraction))
            except RefreshFailed as error:
                if error.permanent or decision.fallback is None:
                    raise
                with self._lock:
                    self._retry_after = self.clock.now() + _RETRY_AFTER_FAILURE
                logger.warning("key renewal failed, still using the current key: %s", error)
                return decision.fallback
            finally:
                with self._lock:
                    if self._flight is flight:
                        self._flight = None
                flight.finish()

    def _refresh(
        self, base: AgentCredentials, stale: AgentCredentials | None, fraction: float
    ) -> Flow[AgentCredentials]:
        """The leader's work: adopt another process's renewal, or exchange the refresh key."""
        file = self.file
        lock = None
        if file is not None:
            lock = yield RunBlocking(file.lock().acquire)
        try:
            if file is not None:
                on_disk: AgentCredentials = yield RunBlocking(file.load)
                if on_disk.refresh_key != base.refresh_key:
                    if stale is not None:
                        fresh = on_disk.access_key != stale.access_key
                    else:
                        fresh = self.clock.now() < on_disk.renew_point(fraction)
                    if fresh:
                        self._install(on_disk)
                        return on_disk
                    base = on_disk
            renewed = yield from self._exchange(base)
            self._install(renewed)
            if file is not None:
                try:
                    yield RunBlocking(partial(file.save, renewed))
                except CredentialsFileError as error:
                    logger.error("renewed keys are in memory only: %s", error)
            return renewed
        finally:
            if lock is not None:
                lock.release()

    def _token_request(self, credentials: AgentCredentials) -> httpx.Request:
        url = httpx.URL(credentials.token_url)
        headers = {"Accept": "application/json"}
        if credentials.dpop_key is not None:
            headers["DPoP"] = credentials.dpop_key.proof(
                "POST", credentials.token_url, nonce=self._nonce("token", url), iat=self._iat()
            )
        form = {"grant_type": "refresh_token", "refresh_token": credentials.refresh_key.reveal()}
        return httpx.Request("POST", url, data=form, headers=headers)

    def _exchange(self, credentials: AgentCredentials) -> Flow[AgentCredentials]:
        """POST the refresh key to the token endpoint (one nonce retry); the new credentials."""
        nonce_retried = False
        while True:
            started = self.clock.now()
            request = self._token_request(credentials)
            try:
                response: httpx.Response = yield SendToken(request)
            except httpx.HTTPError as error:
                raise RefreshFailed(
                    status=None, error="temporarily_unavailable", description=type(error).__name__
                ) from None
            self._remember_nonce("token", request.url, response)
            body = _json(response)
            if response.status_code == 200:
                with self._lock:
                    self.refreshes += 1
                return self._parse_token(credentials, body, started)
            error_code = _text(body, "error")
            if (
                response.status_code == 400
                and error_code == "use_dpop_nonce"
                and credentials.dpop_key is not None
                and response.headers.get("dpop-nonce")
            ):
                if nonce_retried:
                    raise DPoPNonceLoop(str(request.url))
                nonce_retried = True
                continue
            raise RefreshFailed(
                status=response.status_code,
                error=error_code,
                reason=_text(body, "reason"),
                description=_text(body, "error_description"),
            )

    def _parse_token(
        self, credentials: AgentCredentials, body: dict[str, Any], started: datetime
    ) -> AgentCredentials:
        access = _text(body, "access_token")
        refresh = _text(body, "refresh_token")
        expires_in = body.get("expires_in")
        scheme = (_text(body, "token_type") or "").lower()
        normalised: TokenType = DPOP if scheme == "dpop" else BEARER
        if (
            access is None
            or refresh is None
            or not _KEY.match(access)
            or not _KEY.match(refresh)
            or isinstance(expires_in, bool)
            or not isinstance(expires_in, int)
            or expires_in <= 0
            or scheme not in ("dpop", "bearer")
            or (normalised == DPOP and credentials.dpop_key is None)
        ):
            raise RefreshFailed(
                status=200,
                error="invalid_response",
                description="the token endpoint's answer is not a usable key pair",
                permanent=True,
            )
        return credentials.with_keys(
            Secret(access),
            Secret(refresh),
            issued_at=started,
            expires_at=started + timedelta(seconds=expires_in),
            token_type=normalised,
        )

    # the request flow, as effects

    def _applies(self, url: httpx.URL, credentials: AgentCredentials) -> bool:
        if credentials.resource_url is None:
            return True
        base = httpx.URL(credentials.resource_url)
        if _origin(url) != _origin(base):
            return False
        prefix = base.path.rstrip("/")
        return url.path == prefix or url.path.startswith(prefix + "/")

    def _authorize(self, request: httpx.Request, credentials: AgentCredentials) -> None:
        key = credentials.access_key.reveal()
        scheme = "Bearer"
        if credentials.token_type == DPOP and credentials.dpop_key is not None:
            scheme = "DPoP"
            request.headers["DPoP"] = credentials.dpop_key.proof(
                request.method,
                str(request.url),
                access_key=key,
                nonce=self._nonce("resource", request.url),
                iat=self._iat(),
            )
        if self.placement is not None:
            self.placement(request, key)
        else:
            request.headers["Authorization"] = f"{scheme} {key}"

    def _flow(self, request: httpx.Request) -> Flow[None]:
        if not self._applies(request.url, self.credentials):
            yield SendResource(request)
            return
        credentials = yield from self._current(None, self.renew_at)
        nonce_retried = refreshed = False
        while True:
            self._authorize(request, credentials)
            response: httpx.Response = yield SendResource(request)
            self._remember_nonce("resource", request.url, response)
            if response.status_code != 401:
                return
            error = _challenge_error(response)
            if error == "use_dpop_nonce" and response.headers.get("dpop-nonce"):
                if nonce_retried:
                    raise DPoPNonceLoop(str(request.url.copy_with(query=None)))
                nonce_retried = True
                continue
            if error != "invalid_token":
                return
            if refreshed:
                raise RefreshFailed(
                    status=401,
                    error="invalid_token",
                    reason=_text(_json(response), "reason"),
                    description="the renewed access key was refused at once; check that the "
                    "service and the token endpoint share one store and one clock",
                    permanent=False,
                )
            refreshed = True
            credentials = yield from self._current(credentials, self.renew_at)

    # drivers: one for threads, one for event loops

    @contextmanager
    def _token_client(self) -> Iterator[httpx.Client]:
        client = httpx.Client(transport=self._token_transport, timeout=self.token_timeout)
        try:
            yield client
        finally:
            if self._token_transport is None:  # never close a transport the caller owns
                client.close()

    def _perform(self, effect: Effect) -> Any:
        if isinstance(effect, WaitFor):
            effect.flight.wait_sync()
            return None
        if isinstance(effect, SendToken):
            with self._token_client() as client:
                return client.send(effect.request)
        if isinstance(effect, RunBlocking):
            return effect.fn()
        raise TypeError(f"cannot perform {effect!r} here")

    async def _aperform(self, effect: Effect) -> Any:
        if isinstance(effect, WaitFor):
            await effect.flight.wait_async()
            return None
        if isinstance(effect, SendToken):
            # a started refresh must finish: cancelling it after the server rotated the
            # keys would lose the new pair and leave only a spent refresh key
            with anyio.CancelScope(shield=True):
                client = httpx.AsyncClient(
                    transport=self._async_token_transport, timeout=self.token_timeout
                )
                try:
                    return await client.send(effect.request)
                finally:
                    if self._async_token_transport is None:
                        await client.aclose()
        if isinstance(effect, RunBlocking):
            with anyio.CancelScope(shield=True):
                return await anyio.to_thread.run_sync(effect.fn)
        raise TypeError(f"cannot perform {effect!r} here")

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        request.read()
        flow = self._flow(request)
        try:
            effect = next(flow)
            while True:
                if isinstance(effect, SendResource):
                    response = yield effect.request
                    if response.status_code == 401:
                        response.read()
                    effect = flow.send(response)
                    continue
                try:
                    result = self._perform(effect)
                except Exception as error:
                    effect = flow.throw(error)
                    continue
                effect = flow.send(result)
        except StopIteration:
            return
        finally:
            flow.close()

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        await request.aread()
        flow = self._flow(request)
        try:
            effect = next(flow)
            while True:
                if isinstance(effect, SendResource):
                    response = yield effect.request
                    if response.status_code == 401:
                        await response.aread()
                    effect = flow.send(response)
                    continue
                try:
                    result = await self._aperform(effect)
                except Exception as error:
                    effect = flow.throw(error)
                    continue
                effect = flow.send(result)
        except StopIteration:
            return
        finally:
            flow.close()

    # explicit renewal (the background Renewer uses these)

    def _run(self, flow: Flow[AgentCredentials]) -> AgentCredentials:
        try:
            effect = next(flow)
            while True:
                try:
                    result = self._perform(effect)
                except Exception as error:
                    effect = flow.throw(error)
                    continue
                effect = flow.send(result)
        except StopIteration as stop:
            credentials: AgentCredentials = stop.value
            return credentials
        finally:
            flow.close()

    async def _arun(self, flow: Flow[AgentCredentials]) -> AgentCredentials:
        try:
            effect = next(flow)
            while True:
                try:
                    result = await self._aperform(effect)
                except Exception as error:
                    effect = flow.throw(error)
                    continue
                effect = flow.send(result)
        except StopIteration as stop:
            credentials: AgentCredentials = stop.value
            return credentials
        finally:
            flow.close()

    def renew(self, *, fraction: float | None = None) -> bool:
        """Renew now if the key has used ``fraction`` (default ``renew_at``) of its life.

        Returns whether the keys changed. ``fraction=0`` renews unconditionally (unless another
        caller is renewing right now). Raises :class:`RefreshFailed` when the server refuses.
        """
        before = self.credentials
        after = self._run(self._current(None, self.renew_at if fraction is None else fraction))
        return after.access_key != before.access_key

    async def arenew(self, *, fraction: float | None = None) -> bool:
        """:meth:`renew` for event loops."""
        before = self.credentials
        after = await self._arun(
            self._current(None, self.renew_at if fraction is None else fraction)
        )
        return after.access_key != before.access_key
