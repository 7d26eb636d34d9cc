"""The chain: order, first block wins, redactions accumulate, timeouts and errors fail closed."""

from __future__ import annotations

import json
import threading

import anyio
import pytest

from agentguard.review import (
    Direction,
    Outcome,
    ReviewBlocked,
    ReviewChain,
    ReviewContext,
    ReviewStep,
    SecretLeakReviewer,
    Verdict,
)
from agentguard.review._chain import ChainResult

pytestmark = pytest.mark.anyio
CONTEXT = ReviewContext(Direction.OUT, "GET", "/x", "text/plain")


class Replace:
    def __init__(self, old: str, new: str, name: str) -> None:
        self.old, self.new, self.name = old, new, name
        self.seen: list[str] = []

    async def review(self, context: ReviewContext, content: str) -> Verdict:
        self.seen.append(content)
        if self.old not in content:
            return Verdict.allow(self.name)
        return Verdict.redact(self.name, "replaced", content.replace(self.old, self.new), ("f1",))


async def test_redactions_accumulate_and_each_reviewer_sees_the_redacted_text() -> None:
    first, second = Replace("a", "b", "first"), Replace("b", "c", "second")
    result = await ReviewChain([first, second]).review(CONTEXT, "aaa")
    assert result.content == "ccc"
    assert second.seen == ["bbb"]
    assert [v.reviewer for v in result.findings] == ["first", "second"]
    assert result.blocked is None and result.changed


async def test_first_block_wins_and_later_reviewers_do_not_run() -> None:
    later = Replace("x", "y", "later")

    def refuse(context: ReviewContext, content: str) -> Verdict:
        return Verdict.block("refuse", "nope")

    result = await ReviewChain([refuse, later]).review(CONTEXT, "x")
    assert result.blocked is not None and result.blocked.reviewer == "refuse"
    assert later.seen == []


async def test_a_reviewer_that_raises_blocks() -> None:
    async def crash(context: ReviewContext, content: str) -> Verdict:
        raise RuntimeError(content)  # the content must not reach the log or the verdict

    result = await ReviewChain([crash]).review(CONTEXT, "secret-ish content")
    assert result.blocked == Verdict.block("crash", "reviewer_error")


async def test_a_reviewer_that_times_out_blocks() -> None:
    async def slow(context: ReviewContext, content: str) -> Verdict:
        await anyio.sleep(5)
        return Verdict.allow("slow")

    with anyio.fail_after(2):
        result = await ReviewChain([ReviewStep(slow, timeout=0.05)]).review(CONTEXT, "x")
    assert result.blocked is not None and result.blocked.reason == "reviewer_timeout"


async def test_a_slow_sync_reviewer_is_abandoned_after_its_timeout() -> None:
    release = threading.Event()

    def stuck(context: ReviewContext, content: str) -> Verdict:
        release.wait(5)
        return Verdict.allow("stuck")

    try:
        with anyio.fail_after(2):
            result = await ReviewChain([ReviewStep(stuck, timeout=0.05)]).review(CONTEXT, "x")
    finally:
        release.set()
    assert result.blocked is not None and result.blocked.reason == "reviewer_timeout"


async def test_on_error_allow_passes_but_reports_a_finding() -> None:
    def crash(context: ReviewContext, content: str) -> Verdict:
        raise ValueError("boom")

    result = await ReviewChain([ReviewStep(crash, on_error="allow")]).review(CONTEXT, "x")
    assert result.blocked is None
    assert [v.reason for v in result.findings] == ["reviewer_failed_open"]


async def test_an_answer_that_is_not_a_verdict_blocks() -> None:
    async def wrong(context: ReviewContext, content: str) -> object:
        return True

    result = await ReviewChain([wrong]).review(CONTEXT, "x")  # type: ignore[list-item]
    assert result.blocked is not None and result.blocked.reason == "reviewer_bad_answer"


async def test_sync_and_async_reviewers_and_review_methods_are_accepted() -> None:
    class SyncMethod:
        name = "sync_method"

        def review(self, context: ReviewContext, content: str) -> Verdict:
            return Verdict.allow(self.name)

    async def asynchronous(context: ReviewContext, content: str) -> Verdict:
        return Verdict.allow("a")

    def synchronous(context: ReviewContext, content: str) -> Verdict:
        return Verdict.allow("s")

    chain = ReviewChain([SyncMethod(), asynchronous, synchronous])  # type: ignore[list-item]
    assert [step.name for step in chain.steps] == ["sync_method", "asynchronous", "synchronous"]
    assert (await chain.review(CONTEXT, "x")).blocked is None


async def test_the_verdict_carries_the_step_name() -> None:
    async def liar(context: ReviewContext, content: str) -> Verdict:
        return Verdict.block("someone_else", "no")

    result = await ReviewChain([ReviewStep(liar, name="mine")]).review(CONTEXT, "x")
    assert result.blocked is not None and result.blocked.reviewer == "mine"


async def test_over_cap_blocks_by_default_and_passes_on_request() -> None:
    body = b"x" * 11
    blocked = await ReviewChain([SecretLeakReviewer()], max_bytes=10).review_body(CONTEXT, body)
    assert blocked.blocked is not None and blocked.blocked.reason == "over_size_cap"
    passed = await ReviewChain([SecretLeakReviewer()], max_bytes=10, over_cap="pass").review_body(
        CONTEXT, body
    )
    assert passed.blocked is None and passed.body == body
    assert [v.reason for v in passed.findings] == ["unreviewed_over_cap"]


async def test_unchanged_bodies_keep_their_exact_bytes() -> None:
    body = b"\xff\xfe not utf-8 \x00"
    result = await ReviewChain([SecretLeakReviewer()]).review_body(CONTEXT, body)
    assert result.body == body


def test_verdict_invariants() -> None:
    with pytest.raises(ValueError, match="replacement"):
        Verdict(Outcome.REDACT, "r", "n")
    with pytest.raises(ValueError, match="replacement"):
        Verdict(Outcome.BLOCK, "r", "n", replacement="x")
    with pytest.raises(ValueError, match="reason"):
        Verdict.block("n", "")
    with pytest.raises(ValueError, match="timeout"):
        ReviewStep(SecretLeakReviewer(), timeout=0)


SECRET = "crm-live-9f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c"


async def stream_through(chain: ReviewChain, chunks: list[bytes]) -> tuple[bytes, list[Verdict]]:
    stream = chain.stream(CONTEXT)
    out = b""
    for chunk in chunks:
        out += await stream.feed(chunk)
    out += await stream.finish()
    return out, stream.findings


@pytest.mark.parametrize("secret", ["crm-live-abc123XYZ", SECRET], ids=["short", "long"])
async def test_a_credential_split_across_stream_chunks_is_caught(secret: str) -> None:
    body = ("x" * 5000 + secret + "y" * 5000).encode()
    cut = 5000 + len(secret) // 2
    chain = ReviewChain([SecretLeakReviewer(secrets=[secret], action="redact")])
    assert chain.streaming
    out, findings = await stream_through(chain, [body[:cut], body[cut:]])
    assert secret[:12].encode() not in out and secret[-12:].encode() not in out
    assert out.startswith(b"x" * 5000 + b"[redacted:credential]")
    assert out.endswith(b"[redacted:credential]" + b"y" * 5000)
    assert findings and all(v.outcome is Outcome.REDACT for v in findings)


async def test_a_blocked_stream_raises_its_own_error() -> None:
    chain = ReviewChain([SecretLeakReviewer(secrets=[SECRET])])
    with pytest.raises(ReviewBlocked) as caught:
        await stream_through(chain, [b"a" * 100, SECRET.encode()[:10], SECRET.encode()[10:]])
    assert caught.value.status == 403 and caught.value.code == "response_blocked"


async def test_a_non_streaming_reviewer_makes_the_stream_buffer_up_to_the_cap() -> None:
    seen: list[str] = []

    async def whole(context: ReviewContext, content: str) -> Verdict:
        seen.append(content)
        return Verdict.allow("whole")

    chain = ReviewChain([whole], max_bytes=100)
    stream = chain.stream(CONTEXT)
    assert await stream.feed(b"a" * 40) == b""
    assert await stream.feed(b"b" * 40) == b""
    assert await stream.finish() == b"a" * 40 + b"b" * 40
    assert seen == ["a" * 40 + "b" * 40]
    with pytest.raises(ReviewBlocked):
        await chain.stream(CONTEXT).feed(b"c" * 101)
    passing = ReviewChain([whole], max_bytes=100, over_cap="pass").stream(CONTEXT)
    assert await passing.feed(b"c" * 101) == b"c" * 101
    assert [v.reason for v in passing.findings] == ["unreviewed_over_cap"]


async def test_multibyte_characters_split_across_chunks_survive() -> None:
    body = json.dumps({"name": "Zoë Ångström 日本語"}, ensure_ascii=False).encode()
    chain = ReviewChain([SecretLeakReviewer(secrets=[SECRET])])
    out, _ = await stream_through(chain, [body[i : i + 1] for i in range(len(body))])
    assert out == body


def test_chain_result_body_prefers_original_bytes() -> None:
    assert ChainResult("x", original=b"x").body == b"x"
    assert ChainResult("y", changed=True, original=b"x").body == b"y"
