"""Telling people about approvals: the notifier contract and a signed webhook.

:class:`WebhookNotifier` POSTs one JSON document per event (``approval.requested``,
``approval.approved``, ``approval.denied``) to a URL, signed with HMAC-SHA256 in the
``agentguard-signature`` header (``t=<unix seconds>,v1=<hex>``, over ``f"{t}.".encode() + body``)
so a receiver can check that agentguard sent it, unchanged and recently: :func:`verify_webhook`.
The document names the call (service, scope, method, path, body digest and size) and who asked
(ids only); never the body preview or the query, which may hold personal data, and never a key.

:meth:`WebhookNotifier.notify` never blocks a request: it queues the event and returns. A
background task, started in the running loop on first use, delivers the queue in order, one at
a time, retrying connection errors, ``429`` and ``5xx`` with exponential backoff; a receiver
that answers another ``4xx`` is not retried. When the queue is full, new events are dropped
with a warning: a notification is a courtesy, the approval itself is in the store and the
operator API lists it. ``aclose()`` drains what is queued, within a deadline.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import re
import secrets
from collections import deque
from datetime import datetime
from typing import TYPE_CHECKING, Protocol, runtime_checkable
from urllib.parse import urlsplit

from agentguard._clock import Clock, SystemClock
from agentguard._model import ApprovalRecord
from agentguard.errors import UsageError

if TYPE_CHECKING:
    import httpx

__all__ = [
    "EVENTS",
    "EVENT_HEADER",
    "SIGNATURE_HEADER",
    "ApprovalNotifier",
    "WebhookNotifier",
    "sign_webhook",
    "verify_webhook",
    "webhook_body",
]

logger = logging.getLogger("agentguard.approvals")

EVENTS = ("approval.requested", "approval.approved", "approval.denied")
SIGNATURE_HEADER = "agentguard-signature"
EVENT_HEADER = "agentguard-event"
DELIVERY_HEADER = "agentguard-delivery"

_SIGNATURE = re.compile(r"[0-9a-f]{64}\Z")
_EVENT = re.compile(r"[a-z][a-z0-9_.]{0,63}\Z")
_MAX_BACKOFF = 30.0


@runtime_checkable
class ApprovalNotifier(Protocol):
    """Told about approvals as they are requested and decided.

    ``notify`` is called on the request path (and on the operator's decision) from the event
    loop's thread; it must return at once and must not raise for a delivery problem (queue the
    work, as :class:`WebhookNotifier` does). ``event`` is one of :data:`EVENTS`.
    """

    def notify(self, event: str, record: ApprovalRecord) -> None: ...


def _iso(instant: datetime | None) -> str | None:
    return None if instant is None else instant.isoformat().replace("+00:00", "Z")


def webhook_body(
    event: str, record: ApprovalRecord, now: datetime, delivery: str | None = None
) -> bytes:
    """The JSON document a webhook receives for ``event`` about ``record`` at ``now``.

    ``delivery`` (the id of the ``agentguard-delivery`` header) is in the signed body too, so
    a receiver that drops duplicates by it can trust it."""
    approval = {
        "id": record.id,
        "state": record.state(now),
        "user_id": record.user_id,
        "workspace_id": record.workspace_id,
        "account_id": record.account_id,
        "key_id": record.key_id,
        "service": record.service,
        "scope": record.scope,
        "method": record.method,
        "path": record.path,
        "body_digest": record.body_digest,
        "body_bytes": record.body_bytes,
        "created_at": _iso(record.created_at),
        "expires_at": _iso(record.expires_at),
        "decided_by": record.decided_by,
    }
    document: dict[str, object] = {"event": event, "approval": approval}
    if delivery is not None:
        document["delivery"] = delivery
    return json.dumps(document, separators=(",", ":"), ensure_ascii=True).encode()


def _mac(secret: bytes, timestamp: int, body: bytes) -> str:
    return hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def sign_webhook(secret: bytes, body: bytes, *, timestamp: int) -> str:
    """The ``agentguard-signature`` value for ``body`` sent at ``timestamp`` (Unix seconds)."""
    return f"t={timestamp},v1={_mac(secret, timestamp, body)}"


def verify_webhook(
    secret: bytes,
    header: str | None,
    body: bytes,
    *,
    now: datetime | float,
    tolerance: float = 300,
) -> bool:
    """Whether ``header`` (the ``agentguard-signature`` value) signs exactly ``body`` with
    ``secret``, at a time within ``tolerance`` seconds of ``now`` (a datetime or Unix seconds).

    For receivers: verify the raw body bytes before parsing them. Any ``v1`` entry may match
    (a sender rotating its secret may send two); the comparison is constant-time. A malformed
    header is ``False``, never an exception. Replays within the tolerance pass: deduplicate
    on the ``agentguard-delivery`` header (one id per event, the same on every retry; also the
    body's signed ``delivery`` member: compare the two).
    """
    if not isinstance(header, str) or len(header) > 1024:
        return False
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t" and value.isdigit() and len(value) <= 12 and timestamp is None:
            timestamp = int(value)
        elif name == "v1" and _SIGNATURE.match(value):
            candidates.append(value)
        elif name == "t":
            return False  # a second or malformed timestamp
    if timestamp is None or not candidates:
        return False
    seconds = now.timestamp() if isinstance(now, datetime) else float(now)
    if abs(seconds - timestamp) > tolerance:
        return False
    expected = _mac(secret, timestamp, body)
    matched = False
    for candidate in candidates:
        matched |= hmac.compare_digest(expected, candidate)
    return matched


class WebhookNotifier:
    """Delivers approval events to ``url`` as signed JSON POSTs, in the background.

    Args:
        url: the receiver (``https://``; ``http://`` for a receiver on a private network).
            It may hold a secret path (chat webhooks do): it is never logged, only its host.
        secret: the HMAC key the receiver verifies with (at least 16 bytes; 32 random bytes
            recommended).
        retries: attempts after the first for an event that met a connection error, a
            timeout, ``429`` or ``5xx``.
        timeout: seconds one attempt may take.
        max_queue: events waiting at most; beyond it new events are dropped with a warning.
        client: an ``httpx.AsyncClient`` to send with (not closed by :meth:`aclose`);
            default: one of the notifier's own.
        backoff: the first retry's delay in seconds; each retry doubles it (jittered, at most
            30 seconds, never less than a ``Retry-After``).
        clock: time source of the signature timestamps and the ``state`` sent.
    """

    def __init__(
        self,
        url: str,
        secret: bytes,
        *,
        retries: int = 5,
        timeout: float = 5.0,
        max_queue: int = 1000,
        client: httpx.AsyncClient | None = None,
        backoff: float = 0.5,
        clock: Clock | None = None,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UsageError("the webhook url is an http(s) URL with a host")
        if len(secret) < 16:
            raise UsageError("the webhook secret is at least 16 bytes; use secrets.token_bytes(32)")
        if retries < 0 or max_queue < 1 or timeout <= 0 or backoff <= 0:
            raise UsageError("retries >= 0, max_queue >= 1, timeout > 0 and backoff > 0")
        self.url = url
        self.host = parts.hostname
        self.retries = retries
        self.timeout = timeout
        self.max_queue = max_queue
        self.backoff = backoff
        self.clock: Clock = clock or SystemClock()
        self.dropped = 0
        self.delivered = 0
        self._secret = secret
        self._client = client
        self._queue: deque[tuple[str, str, bytes]] = deque()
        self._wakeup: asyncio.Event | None = None
        self._worker: asyncio.Task[None] | None = None
        self._closing = False
        self._random = secrets.SystemRandom()

    def __repr__(self) -> str:
        return f"WebhookNotifier(host={self.host!r}, queued={len(self._queue)})"

    @property
    def queued(self) -> int:
        """Events waiting for delivery (the one being delivered included)."""
        return len(self._queue)

    def notify(self, event: str, record: ApprovalRecord) -> None:
        """Queue ``event`` about ``record`` and return at once (see the module docstring).

        Call it from the event loop's thread; the delivery task starts in that loop.
        """
        if self._closing:
            self._drop(event, "the notifier is closed")
            return
        if not _EVENT.match(event):
            self._drop("(malformed)", "not an event name")
            return
        if len(self._queue) >= self.max_queue:
            self._drop(event, "the queue is full")
            return
        delivery = secrets.token_hex(16)
        body = webhook_body(event, record, self.clock.now(), delivery)
        self._queue.append((event, delivery, body))
        self._start()

    def _drop(self, event: str, why: str) -> None:
        self.dropped += 1
        logger.warning(
            "approval webhook event %s dropped (%s); %d dropped so far", event, why, self.dropped
        )

    def _start(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            logger.warning("approval webhook event queued outside an event loop; sent later")
            return
        worker = self._worker
        if worker is None or worker.done() or worker.get_loop() is not loop:
            self._wakeup = asyncio.Event()
            self._worker = loop.create_task(self._deliver_all(), name="agentguard-webhook")
        if self._wakeup is not None:
            self._wakeup.set()

    async def _deliver_all(self) -> None:
        wakeup = self._wakeup
        if wakeup is None:  # set by _start before the task runs
            return
        client = self._client
        owned = client is None
        if client is None:
            import httpx

            client = httpx.AsyncClient(timeout=self.timeout)
        try:
            while True:
                if not self._queue:
                    if self._closing:
                        return
                    wakeup.clear()
                    await wakeup.wait()
                    continue
                event, delivery, body = self._queue[0]
                try:
                    await self._deliver(client, event, delivery, body)
                except Exception as error:  # a broken client must not stop later events
                    self.dropped += 1
                    logger.error(
                        "approval webhook event %s dropped: %s", event, type(error).__name__
                    )
                self._queue.popleft()
        finally:
            if owned:
                await client.aclose()

    async def _deliver(
        self, client: httpx.AsyncClient, event: str, delivery: str, body: bytes
    ) -> None:
        import httpx

        delay = self.backoff
        for attempt in range(self.retries + 1):
            timestamp = int(self.clock.now().timestamp())
            headers = {
                "content-type": "application/json",
                EVENT_HEADER: event,
                DELIVERY_HEADER: delivery,
                SIGNATURE_HEADER: sign_webhook(self._secret, body, timestamp=timestamp),
            }
            wait: float | None = None
            try:
                response = await client.post(
                    self.url, content=body, headers=headers, timeout=self.timeout
                )
            except httpx.HTTPError as error:
                problem = type(error).__name__
            else:
                status = response.status_code
                if 200 <= status < 300:
                    self.delivered += 1
                    return
                if status != 429 and status < 500:
                    self.dropped += 1
                    logger.warning(
                        "approval webhook at %s refused event %s with HTTP %d; not retried",
                        self.host, event, status,
                    )  # fmt: skip
                    return
                problem = f"HTTP {status}"
                wait = _retry_after(response.headers.get("retry-after"))
            if attempt < self.retries:
                jittered = delay / 2 + self._random.uniform(0, delay / 2)
                await asyncio.sleep(min(max(jittered, wait or 0.0), _MAX_BACKOFF))
                delay = min(delay * 2, _MAX_BACKOFF)
        self.dropped += 1
        logger.warning(
            "approval webhook at %s: event %s undelivered after %d attempts (%s)",
            self.host, event, self.retries + 1, problem,
        )  # fmt: skip

    async def aclose(self, timeout: float = 10.0) -> None:
        """Stop accepting events and deliver what is queued, for at most ``timeout`` seconds;
        what is left then is dropped with a warning."""
        self._closing = True
        if self._queue:
            self._start()  # events queued outside a loop, or a worker whose loop is gone
        worker = self._worker
        if worker is None or worker.done():
            self._abandon()
            return
        if self._wakeup is not None:
            self._wakeup.set()
        done, _ = await asyncio.wait({worker}, timeout=timeout)
        if not done:
            worker.cancel()
            await asyncio.wait({worker})
        self._abandon()

    def _abandon(self) -> None:
        left = len(self._queue)
        if left:
            self.dropped += left
            self._queue.clear()
            logger.warning("approval webhook closed with %d events undelivered", left)


def _retry_after(value: str | None) -> float | None:
    if value is None or not value.strip().isdigit():
        return None
    return float(value.strip())
