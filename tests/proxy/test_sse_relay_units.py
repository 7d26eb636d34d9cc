"""ResponseRelay in-process: the buffer-or-stream rule, SSE framing and stream-lease cuts.

The upstream is an ``httpx.Response`` over a scripted byte stream (gates hold it where a test
wants it), ``send`` records the ASGI messages: what the agent would get, byte for byte.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Iterable
from typing import Any

import anyio
import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentguard._secret import Secret
from agentguard._stream_lease import StreamLease
from agentguard.asgi._relay import ResponseRelay, ResponseWithheld, StreamCut
from agentguard.asgi._relay_stream import SseFraming, error_event
from agentguard.credentials import SecretEchoed
from agentguard.errors import BadGateway, InvalidToken, Reason, RequestRefused
from agentguard.review import ReviewChain, ReviewContext, Verdict
from agentguard.review._base import Direction

pytestmark = pytest.mark.anyio

KEY = "sk-live-" + "Q7f_2kLm" * 4
CONTEXT = ReviewContext(Direction.OUT, "GET", "/events", "text/event-stream")
SSE = [("content-type", "text/event-stream")]
PLAIN = [("content-type", "text/plain")]


class Script(httpx.AsyncByteStream):
    """Yields its chunks in order; at an ``anyio.Event`` it says so (``waiting``) and waits."""

    def __init__(self, *items: bytes | anyio.Event) -> None:
        self.items = items
        self.waiting = anyio.Event()
        self.closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for item in self.items:
            if isinstance(item, anyio.Event):
                self.waiting.set()
                await item.wait()
            else:
                yield item

    async def aclose(self) -> None:
        self.closed = True


class Agent:
    """The ASGI ``send`` of one response, recorded."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    async def __call__(self, message: Any) -> None:
        self.messages.append(dict(message))

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.messages if "body" in m)

    @property
    def ended_cleanly(self) -> bool:
        last = self.messages[-1] if self.messages else {}
        return last.get("type") == "http.response.body" and not last.get("more_body", False)


async def _noop(findings: Iterable[Verdict], context: ReviewContext) -> None:
    return None


def _as_error(failure: Exception) -> RequestRefused:
    if isinstance(failure, RequestRefused):
        return failure
    if isinstance(failure, SecretEchoed):
        return BadGateway("crm", reason=Reason.SECRET_ECHO_BLOCKED)
    return BadGateway("crm")


def relay(chain: ReviewChain | None = None, buffer_bytes: int = 1024) -> ResponseRelay:
    return ResponseRelay(
        service="crm", chain=chain, buffer_bytes=buffer_bytes, record=_noop, as_error=_as_error
    )


def lease() -> StreamLease:
    return StreamLease("key-1", "user-1", "ws-1", "acct-1")


REVOKED = InvalidToken("the access key was revoked")


async def run_cut(
    response: httpx.Response, script: Script, agent: Agent, *, chain: ReviewChain | None = None
) -> BaseException:
    """Relay ``response``, cut the lease once the script waits at its gate; what was raised."""
    held = lease()
    raised: list[BaseException] = []

    async def go() -> None:
        try:
            await relay(chain).relay(response, Secret(KEY), agent, CONTEXT, lease=held)
        except (RequestRefused, ResponseWithheld) as error:
            raised.append(error)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            group.start_soon(go)
            await script.waiting.wait()
            held.cut(REVOKED)
    assert len(raised) == 1
    return raised[0]


async def test_a_lease_cut_while_the_body_is_buffered_sends_nothing() -> None:
    script = Script(b'{"contacts": ', anyio.Event(), b"[]}")
    response = httpx.Response(200, headers=[("content-length", "16"), *PLAIN], stream=script)
    agent = Agent()
    raised = await run_cut(response, script, agent)
    assert isinstance(raised, InvalidToken)
    assert raised.description == REVOKED.description
    assert agent.messages == []
    assert script.closed


async def test_a_lease_cut_while_a_whole_body_is_reviewed_sends_nothing() -> None:
    held = lease()

    def cutting(context: ReviewContext, content: str) -> Verdict:
        held.cut(REVOKED)  # the registry cuts the lease while the reviewer works
        return Verdict.allow("cutting")

    response = httpx.Response(200, headers=[("content-length", "2"), *PLAIN], content=b"{}")
    agent = Agent()
    with pytest.raises(InvalidToken):
        await relay(ReviewChain([cutting])).relay(response, Secret(KEY), agent, CONTEXT, lease=held)
    assert agent.messages == []


async def test_a_lease_cut_before_the_relay_refuses_at_once() -> None:
    held = lease()
    held.cut(REVOKED)
    script = Script(b"data: 1\n\n")
    response = httpx.Response(200, headers=SSE, stream=script)
    agent = Agent()
    with pytest.raises(InvalidToken):
        await relay().relay(response, Secret(KEY), agent, CONTEXT, lease=held)
    assert agent.messages == []
    assert script.closed


async def test_an_sse_stream_cut_mid_event_gets_only_whole_events_then_the_error_event() -> None:
    script = Script(b"data: 1\n\n", b"data: 2\n\nevent: tick\ndata: par", anyio.Event())
    response = httpx.Response(200, headers=SSE, stream=script)
    agent = Agent()
    raised = await run_cut(response, script, agent)
    assert isinstance(raised, StreamCut)
    assert raised.error is REVOKED
    assert raised.error_event
    assert agent.messages[0]["type"] == "http.response.start"
    assert agent.body == b"data: 1\n\ndata: 2\n\n" + error_event(REVOKED)
    assert not agent.ended_cleanly
    assert script.closed
    data = json.loads(error_event(REVOKED).split(b"data: ", 1)[1])
    assert data == {
        "error": "invalid_token",
        "error_description": REVOKED.description,
        "reason": REVOKED.reason.value,
    }


async def test_a_plain_stream_cut_by_its_lease_ends_without_a_clean_end() -> None:
    script = Script(b'{"n": 1}\n', b'{"n": 2}\n', anyio.Event(), b'{"n": 3}\n')
    response = httpx.Response(200, headers=PLAIN, stream=script)
    agent = Agent()
    raised = await run_cut(response, script, agent)
    assert isinstance(raised, StreamCut)
    assert not raised.error_event
    assert agent.body == b'{"n": 1}\n{"n": 2}\n'  # the scanner held nothing back
    assert not agent.ended_cleanly
    assert script.closed


async def test_an_sse_stream_that_echoes_the_key_later_ends_with_an_error_event() -> None:
    script = Script(b'data: {"n": 1}\n\n', b'data: {"k": "' + KEY[:9].encode(), KEY[9:].encode())
    response = httpx.Response(200, headers=SSE, stream=script)
    agent = Agent()
    with pytest.raises(ResponseWithheld) as cut:
        await relay().relay(response, Secret(KEY), agent, CONTEXT)
    assert not isinstance(cut.value, StreamCut)
    assert cut.value.error.reason is Reason.SECRET_ECHO_BLOCKED
    assert agent.body == b'data: {"n": 1}\n\n' + error_event(cut.value.error)
    assert KEY[:12].encode() not in agent.body
    assert not agent.ended_cleanly


async def test_an_uncut_lease_changes_nothing() -> None:
    events = [b'data: {"n": %d}\n\n' % n for n in range(5)]
    response = httpx.Response(200, headers=SSE, stream=Script(*events))
    agent = Agent()
    await relay().relay(response, Secret(KEY), agent, CONTEXT, lease=lease())
    assert agent.body == b"".join(events)
    assert agent.ended_cleanly
    assert len([m for m in agent.messages if m.get("body")]) == 5  # one send per event


@pytest.mark.parametrize(
    ("headers", "streamed"),
    [
        (SSE, True),
        ([("content-length", "100"), *SSE], True),
        (PLAIN, True),  # no length: not known to be small
        ([("content-length", "2048"), *PLAIN], True),
        ([("content-length", "1024"), *PLAIN], False),
        ([("content-length", "10"), ("content-type", "application/json")], False),
        ([("content-length", "ten"), *PLAIN], True),
    ],
)
def test_what_is_streamed_at_once(headers: list[tuple[str, str]], streamed: bool) -> None:
    gateway = relay(buffer_bytes=1024)
    content_type = gateway._content_type(httpx.Headers(headers))
    assert gateway.streams_at_once(httpx.Headers(headers), content_type) is streamed


def test_a_reviewer_that_needs_whole_bodies_keeps_responses_buffered() -> None:
    gateway = relay(ReviewChain([lambda context, content: Verdict.allow("whole")]))
    headers = httpx.Headers(SSE)
    assert not gateway.streams_at_once(headers, gateway._content_type(headers))


LINE_END = st.sampled_from(["\n", "\r\n", "\r"])
EVENT = st.tuples(
    st.lists(st.text(alphabet='abc: {}"1', max_size=12), min_size=1, max_size=3),
    LINE_END,
    LINE_END,
).map(lambda parts: parts[1].join(f"data: {line}" for line in parts[0]) + parts[1] + parts[2])


@settings(max_examples=200, deadline=None)
@given(st.lists(EVENT, max_size=8), st.lists(st.integers(1, 9), min_size=1, max_size=8))
def test_sse_framing_sends_whole_events_and_loses_nothing(
    events: list[str], sizes: list[int]
) -> None:
    stream = "".join(events).encode()
    framing = SseFraming(limit=10_000)
    sent, position, index = b"", 0, 0
    while position < len(stream):
        size = sizes[index % len(sizes)]
        out = framing.take(stream[position : position + size])
        position, index = position + size, index + 1
        sent += out
        if out:  # a send ends where an event ends: the next event can be framed after it
            assert framing.aligned
            assert re.split(rb"\r\n|\r|\n", sent)[-2:] == [b"", b""]  # a blank line
    assert sent + framing.rest() == stream


def test_an_event_longer_than_the_limit_is_sent_as_it_comes() -> None:
    framing = SseFraming(limit=8)
    assert framing.take(b"data: ab") == b""
    assert framing.take(b"cdef") == b"data: abcdef"
    assert not framing.aligned
    assert framing.take(b"\n\ndata: x") == b"\n\n"
    assert framing.aligned
    framing = SseFraming(limit=100)
    assert framing.take(b"data: x\r") == b""
    assert framing.take(b"\n") == b""  # CRLF split in two is one line end, not an event's end
    assert framing.take(b"\r\n") == b"data: x\r\n\r\n"


async def test_an_echo_in_the_first_chunk_of_a_stream_is_refused_before_anything_is_sent() -> None:
    script = Script(b'data: {"error": "bad key ' + KEY.encode() + b'"}\n\n', b"data: 2\n\n")
    response = httpx.Response(200, headers=SSE, stream=script)
    agent = Agent()
    with pytest.raises(SecretEchoed):
        await relay().relay(response, Secret(KEY), agent, CONTEXT, lease=lease())
    assert agent.messages == []
