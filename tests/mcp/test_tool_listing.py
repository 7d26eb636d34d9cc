"""The listing filter: ``tools/list`` results cut to the tools a caller may call, in a JSON
body or in an event stream however it is chunked; what cannot be read fails closed."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentguard._mcp_gate._listing import ListingFilter
from agentguard.asgi._types import Message

pytestmark = pytest.mark.anyio

TOOLS = [
    {"name": "list_notes", "inputSchema": {"type": "object"}},
    {"name": "add_note", "inputSchema": {"type": "object"}},
    {"name": "count_notes", "annotations": {"readOnlyHint": True}, "inputSchema": {}},
    {"nameless": True},
]
LISTING = {"jsonrpc": "2.0", "id": 2, "result": {"tools": TOOLS, "nextCursor": "c"}}
ALLOWED = {"list_notes", "count_notes"}


class Sent:
    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def __call__(self, message: Message) -> None:
        self.messages.append(message)

    @property
    def status(self) -> int:
        return int(self.messages[0]["status"])

    @property
    def headers(self) -> dict[bytes, bytes]:
        return dict(self.messages[0]["headers"])

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.messages[1:])


def _filter(sent: Sent, learned: dict[str, Any] | None = None, cap: int = 1 << 16) -> ListingFilter:
    return ListingFilter(
        {"type": "http", "method": "POST"},
        sent,
        keep=lambda name, annotations: name in ALLOWED,
        learn=(learned if learned is not None else {}).__setitem__,
        cap=cap,
        service="notes",
    )


async def _run(
    gate: ListingFilter, media: bytes, chunks: list[bytes], extra: Sequence[Any] = ()
) -> None:
    headers = [(b"content-type", media), (b"content-length", b"999"), *extra]
    await gate({"type": "http.response.start", "status": 200, "headers": headers})
    for index, chunk in enumerate(chunks):
        await gate(
            {"type": "http.response.body", "body": chunk, "more_body": index < len(chunks) - 1}
        )


async def test_a_json_listing_is_cut_and_its_length_set() -> None:
    sent, learned = Sent(), dict[str, Any]()
    body = json.dumps(LISTING).encode()
    await _run(_filter(sent, learned), b"application/json", [body[:10], body[10:]])
    document = json.loads(sent.body)
    assert [tool["name"] for tool in document["result"]["tools"]] == ["list_notes", "count_notes"]
    assert document["result"]["nextCursor"] == "c"
    assert sent.headers[b"content-length"] == str(len(sent.body)).encode()
    assert learned == {"list_notes": None, "add_note": None, "count_notes": {"readOnlyHint": True}}


async def test_other_json_passes_byte_for_byte() -> None:
    sent = Sent()
    body = b'{"jsonrpc": "2.0", "id": 1, "result": {"content": []}}'
    await _run(_filter(sent), b"application/json; charset=utf-8", [body])
    assert sent.body == body


@pytest.mark.parametrize(
    ("media", "body", "extra"),
    [
        (b"application/json", b"x" * 70000, []),
        (b"application/json", b"{not json", []),
        (b"application/json", json.dumps(LISTING).encode(), [(b"content-encoding", b"gzip")]),
    ],
)
async def test_an_unreadable_json_listing_is_a_502(
    media: bytes, body: bytes, extra: list[Any]
) -> None:
    sent = Sent()
    await _run(_filter(sent), media, [body], extra)
    assert sent.status == 502
    assert json.loads(sent.body)["reason"] == "upstream_protocol_error"
    assert b"add_note" not in sent.body


def _event(document: Any, newline: str, event_id: str) -> bytes:
    lines = ["event: message", f"id: {event_id}", f"data: {json.dumps(document)}"]
    return (newline.join(lines) + newline + newline).encode()


@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from(["\n", "\r\n", "\r"]),
    st.lists(st.integers(min_value=1, max_value=4000), max_size=12),
)
def test_an_event_stream_is_filtered_however_it_is_chunked(newline: str, cuts: list[int]) -> None:
    import anyio

    priming = f"id: 0{newline}data: {newline}{newline}".encode()
    notice = _event(
        {"jsonrpc": "2.0", "method": "notifications/progress", "params": {}}, newline, "1"
    )
    stream = (
        priming + notice + _event(LISTING, newline, "2") + b": keepalive" + newline.encode() * 2
    )
    points = sorted({cut % (len(stream) + 1) for cut in cuts})
    chunks = [
        stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True) if b > a
    ] or [b""]

    async def scenario() -> Sent:
        sent = Sent()
        await _run(_filter(sent), b"text/event-stream", chunks)
        return sent

    sent = anyio.run(scenario)
    assert b"content-length" not in sent.headers
    out = sent.body
    assert out.startswith(priming + notice)  # untouched events pass byte for byte
    assert b"add_note" not in out and b"nameless" not in out
    assert b"count_notes" in out and b"list_notes" in out
    assert b"id: 2" in out and out.endswith(b": keepalive" + newline.encode() * 2)


@pytest.mark.parametrize("cut", [3000, 0])
async def test_an_event_over_the_cap_ends_the_stream(cut: int) -> None:
    sent = Sent()
    first = _event({"jsonrpc": "2.0", "method": "notifications/progress"}, "\n", "1")
    huge = _event({"jsonrpc": "2.0", "id": 2, "result": {"tools": TOOLS * 400}}, "\n", "2")
    chunks = [first + huge[:cut], huge[cut:], first]
    await _run(_filter(sent, cap=4096), b"text/event-stream", chunks)
    assert sent.status == 200
    assert sent.messages[-1] == {"type": "http.response.body", "body": b"", "more_body": False}
    assert sent.body == first  # what came before the oversized event, and nothing after


async def test_other_responses_pass_untouched() -> None:
    sent = Sent()
    await _run(_filter(sent), b"text/plain", [b"add_note"])
    assert sent.body == b"add_note" and sent.headers[b"content-length"] == b"999"
