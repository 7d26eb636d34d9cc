"""The approval webhook: signed, retried, never in the request's way, verified by receivers."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentguard._model import ApprovalRecord, ApprovalStatus
from agentguard.approvals._notify import (
    ApprovalNotifier,
    WebhookNotifier,
    sign_webhook,
    verify_webhook,
)
from agentguard.asgi._types import Receive, Scope, Send
from agentguard.errors import UsageError
from agentguard.testing import FakeClock
from tests.support.servers import LoopbackServer, free_port

SECRET = b"w" * 32
NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)


def record(**changes: object) -> ApprovalRecord:
    fields: dict[str, object] = {
        "id": "apr_" + "A" * 22,
        "binding": "0" * 64,
        "family_id": "fam-1",
        "key_id": "key-1",
        "user_id": "user-1",
        "workspace_id": "ws-1",
        "account_id": "acct-1",
        "service": "crm",
        "scope": "crm:write",
        "method": "POST",
        "path": "/crm/contacts",
        "query": "email=someone%40example.com",
        "body_digest": "sha-256:" + "1" * 64,
        "body_bytes": 17,
        "body_preview": '{"name":"Jane Q"}',
        "rule_version": "2" * 16,
        "created_at": NOW,
        "expires_at": NOW + timedelta(hours=1),
    }
    fields.update(changes)
    return ApprovalRecord.model_validate(fields)


class Receiver:
    """A webhook receiver: records each POST, answers scripted statuses, can be held."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.statuses: deque[int] = deque()
        self.open = threading.Event()
        self.open.set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        self.requests.append((headers, body))
        await asyncio.to_thread(self.open.wait)  # the test opens it from its own thread
        status = self.statuses.popleft() if self.statuses else 204
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    app = Receiver()
    with LoopbackServer(app) as server:
        try:
            yield app, server.url + "/hooks/s3cr3t-path"
        finally:
            app.open.set()


async def until(condition: Callable[[], bool], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met before the deadline")
        await asyncio.sleep(0.01)


def notifier(url: str, **options: object) -> WebhookNotifier:
    options.setdefault("backoff", 0.01)
    return WebhookNotifier(url, SECRET, **options)  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_signature_verifies_with_an_independent_hmac(
    receiver: tuple[Receiver, str],
) -> None:
    app, url = receiver
    hook = notifier(url, clock=FakeClock(NOW))
    assert isinstance(hook, ApprovalNotifier)
    hook.notify("approval.requested", record())
    await until(lambda: hook.delivered == 1)
    await hook.aclose()
    [(headers, body)] = app.requests
    assert headers["agentguard-event"] == "approval.requested"
    assert headers["content-type"] == "application/json"
    fields = dict(part.split("=", 1) for part in headers["agentguard-signature"].split(","))
    assert fields["t"] == str(int(NOW.timestamp()))
    expected = hmac.new(SECRET, fields["t"].encode() + b"." + body, hashlib.sha256).hexdigest()
    assert fields["v1"] == expected
    assert verify_webhook(SECRET, headers["agentguard-signature"], body, now=NOW)
    document = json.loads(body)
    assert document["event"] == "approval.requested"
    assert document["approval"] == {
        "id": "apr_" + "A" * 22,
        "state": "pending",
        "user_id": "user-1",
        "workspace_id": "ws-1",
        "account_id": "acct-1",
        "key_id": "key-1",
        "service": "crm",
        "scope": "crm:write",
        "method": "POST",
        "path": "/crm/contacts",
        "body_digest": "sha-256:" + "1" * 64,
        "body_bytes": 17,
        "created_at": "2026-01-01T00:00:00Z",
        "expires_at": "2026-01-01T01:00:00Z",
        "decided_by": None,
    }
    assert b"Jane" not in body and b"someone" not in body  # no preview, no query


@pytest.mark.anyio
async def test_events_arrive_in_order_with_the_decision(receiver: tuple[Receiver, str]) -> None:
    app, url = receiver
    hook = notifier(url, clock=FakeClock(NOW))
    hook.notify("approval.requested", record())
    decided = record(status=ApprovalStatus.DENIED, decided_at=NOW, decided_by="op-alice")
    hook.notify("approval.denied", decided)
    await hook.aclose()
    events = [json.loads(body) for _, body in app.requests]
    assert [e["event"] for e in events] == ["approval.requested", "approval.denied"]
    assert events[1]["approval"]["state"] == "denied"
    assert events[1]["approval"]["decided_by"] == "op-alice"
    assert hook.delivered == 2


@pytest.mark.anyio
async def test_retries_after_500s_then_succeeds(receiver: tuple[Receiver, str]) -> None:
    app, url = receiver
    app.statuses.extend([500, 503, 429, 200])
    hook = notifier(url)
    hook.notify("approval.approved", record(status=ApprovalStatus.APPROVED))
    await until(lambda: hook.delivered == 1)
    await hook.aclose()
    assert len(app.requests) == 4
    deliveries = {headers["agentguard-delivery"] for headers, _ in app.requests}
    assert len(deliveries) == 1  # one id across retries, for the receiver to deduplicate
    assert len({body for _, body in app.requests}) == 1
    assert hook.dropped == 0


@pytest.mark.anyio
async def test_a_client_error_is_not_retried(
    receiver: tuple[Receiver, str], caplog: pytest.LogCaptureFixture
) -> None:
    app, url = receiver
    app.statuses.append(400)
    hook = notifier(url)
    with caplog.at_level(logging.WARNING, "agentguard.approvals"):
        hook.notify("approval.requested", record())
        await until(lambda: hook.dropped == 1)
    await hook.aclose()
    assert len(app.requests) == 1
    assert "HTTP 400" in caplog.text
    assert "s3cr3t-path" not in caplog.text


@pytest.mark.anyio
async def test_connection_errors_are_retried_then_dropped_without_leaking_the_url(
    caplog: pytest.LogCaptureFixture,
) -> None:
    hook = notifier(f"http://127.0.0.1:{free_port()}/hooks/s3cr3t-path", retries=2)
    with caplog.at_level(logging.WARNING, "agentguard.approvals"):
        hook.notify("approval.requested", record())
        await until(lambda: hook.dropped == 1)
    await hook.aclose()
    assert "after 3 attempts" in caplog.text
    assert "s3cr3t-path" not in caplog.text
    assert "s3cr3t" not in repr(hook)


@pytest.mark.anyio
async def test_notify_never_blocks_on_a_slow_receiver(receiver: tuple[Receiver, str]) -> None:
    app, url = receiver
    app.open.clear()  # the receiver holds every request
    hook = notifier(url)
    started = time.monotonic()
    for _ in range(50):
        hook.notify("approval.requested", record())
    elapsed = time.monotonic() - started
    await until(lambda: len(app.requests) == 1)
    assert elapsed < 0.5
    assert hook.queued == 50
    app.open.set()
    await until(lambda: hook.delivered == 50)
    await hook.aclose()


@pytest.mark.anyio
async def test_a_full_queue_drops_new_events_with_a_warning(
    receiver: tuple[Receiver, str], caplog: pytest.LogCaptureFixture
) -> None:
    app, url = receiver
    app.open.clear()
    hook = notifier(url, max_queue=2)
    with caplog.at_level(logging.WARNING, "agentguard.approvals"):
        for number in range(5):
            hook.notify("approval.requested", record(id=f"apr_{number:022d}"))
    assert (hook.queued, hook.dropped) == (2, 3)
    assert "queue is full" in caplog.text
    app.open.set()
    await hook.aclose()
    ids = [json.loads(body)["approval"]["id"] for _, body in app.requests]
    assert ids == ["apr_" + "0" * 22, "apr_" + "0" * 21 + "1"]


@pytest.mark.anyio
async def test_aclose_gives_up_at_its_deadline(receiver: tuple[Receiver, str]) -> None:
    app, url = receiver
    app.open.clear()
    hook = notifier(url)
    hook.notify("approval.requested", record())
    hook.notify("approval.requested", record())
    await until(lambda: len(app.requests) == 1)
    started = time.monotonic()
    await hook.aclose(timeout=0.2)
    assert time.monotonic() - started < 2
    assert (hook.delivered, hook.dropped, hook.queued) == (0, 2, 0)
    hook.notify("approval.requested", record())  # after close: dropped, not queued
    assert (hook.dropped, hook.queued) == (3, 0)


def test_events_queued_outside_a_loop_are_sent_on_close(
    receiver: tuple[Receiver, str], caplog: pytest.LogCaptureFixture
) -> None:
    app, url = receiver
    hook = notifier(url)
    with caplog.at_level(logging.WARNING, "agentguard.approvals"):
        hook.notify("approval.approved", record(status=ApprovalStatus.APPROVED))
    assert "outside an event loop" in caplog.text
    assert hook.queued == 1
    anyio.run(hook.aclose)
    assert (hook.delivered, len(app.requests)) == (1, 1)


def test_settings_are_checked() -> None:
    with pytest.raises(UsageError):
        WebhookNotifier("ftp://example.com/hook", SECRET)
    with pytest.raises(UsageError):
        WebhookNotifier("https://example.com/hook", b"short")
    with pytest.raises(UsageError):
        WebhookNotifier("https://example.com/hook", SECRET, max_queue=0)


# verify_webhook, for receivers

BODIES = st.binary(max_size=512)
STAMPS = st.integers(min_value=1_000_000_000, max_value=4_000_000_000)


@given(body=BODIES, stamp=STAMPS, secret=st.binary(min_size=16, max_size=64))
def test_a_signed_body_verifies(body: bytes, stamp: int, secret: bytes) -> None:
    header = sign_webhook(secret, body, timestamp=stamp)
    assert verify_webhook(secret, header, body, now=stamp)
    assert verify_webhook(secret, header, body, now=stamp + 300)
    assert not verify_webhook(secret, header, body, now=stamp + 301)
    assert not verify_webhook(secret, header, body, now=stamp - 301)
    assert not verify_webhook(secret + b"x", header, body, now=stamp)


@given(body=BODIES.filter(bool), stamp=STAMPS, data=st.data())
def test_any_tampered_byte_fails(body: bytes, stamp: int, data: st.DataObject) -> None:
    header = sign_webhook(SECRET, body, timestamp=stamp)
    index = data.draw(st.integers(0, len(body) - 1))
    flip = data.draw(st.integers(1, 255))
    tampered = body[:index] + bytes([body[index] ^ flip]) + body[index + 1 :]
    assert not verify_webhook(SECRET, header, tampered, now=stamp)
    extra = data.draw(st.binary(min_size=1, max_size=8))
    assert not verify_webhook(SECRET, header, body + extra, now=stamp)


@given(body=BODIES, stamp=STAMPS, shift=st.integers(-300, 300).filter(bool))
def test_a_tampered_timestamp_fails(body: bytes, stamp: int, shift: int) -> None:
    signature = sign_webhook(SECRET, body, timestamp=stamp).split(",")[1]
    assert not verify_webhook(SECRET, f"t={stamp + shift},{signature}", body, now=stamp)


@given(body=BODIES, stamp=STAMPS, data=st.data())
def test_a_tampered_signature_fails(body: bytes, stamp: int, data: st.DataObject) -> None:
    header = sign_webhook(SECRET, body, timestamp=stamp)
    index = data.draw(st.integers(0, len(header) - 1))
    replacement = data.draw(st.characters(codec="ascii").filter(lambda c: c != header[index]))
    tampered = header[:index] + replacement + header[index + 1 :]
    assert not verify_webhook(SECRET, tampered, body, now=stamp)


@given(header=st.text(max_size=200), now=STAMPS)
def test_arbitrary_headers_never_raise(header: str, now: int) -> None:
    assert verify_webhook(SECRET, header, b"{}", now=now) in (True, False)
    assert not verify_webhook(SECRET, None, b"{}", now=now)


def test_a_rotating_sender_may_send_two_signatures() -> None:
    body = b'{"event":"approval.requested"}'
    old = sign_webhook(b"o" * 32, body, timestamp=1_800_000_000)
    new = sign_webhook(SECRET, body, timestamp=1_800_000_000).split(",")[1]
    assert verify_webhook(SECRET, f"{old},{new}", body, now=1_800_000_000)
    assert not verify_webhook(SECRET, f"t=1,{old}", body, now=1_800_000_000)  # two timestamps
    assert verify_webhook(SECRET, f"{old},{new}", body, now=NOW.replace(year=2027)) is False
