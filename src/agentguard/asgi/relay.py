"""Sending an upstream response on to the agent: echo scan, review, buffered or streamed.

Responses that fit in the first ``buffer_bytes`` are scanned whole before anything is sent, so
an echo becomes a clean 502; larger ones stream through a scanner that holds back just enough
bytes to see across chunk boundaries, and a stream that turns out to echo a credential is cut
off mid-way.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence

import httpx

from agentguard.asgi.types import Message, Send
from agentguard.credentials.echo import EchoScanner, SecretEchoed, StreamScanner
from agentguard.credentials.placement import HOP_BY_HOP
from agentguard.errors import AgentGuardError, BadGateway, Reason
from agentguard.review.base import Direction, ReviewContext, Verdict
from agentguard.review.chain import ReviewChain
from agentguard.review.errors import ReviewBlocked, blocked
from agentguard.secret import Secret

__all__ = ["ResponseRelay", "ResponseWithheld"]

# The gateway's own server sets Date and Server; the upstream's would arrive twice.
_DROPPED_RESPONSE = HOP_BY_HOP | {
    b"content-length",
    b"content-encoding",
    b"set-cookie",
    b"date",
    b"server",
}


class ResponseWithheld(Exception):
    """A response failed after it had started (an echoed credential, an upstream failure).

    The stream is cut: the exception propagates to the ASGI server, which drops the connection
    so the agent sees an incomplete response rather than a silently truncated one.
    """

    def __init__(self, error: AgentGuardError) -> None:
        self.error = error
        super().__init__(error.description)


class ResponseRelay:
    """Relays one upstream response for one service.

    Args:
        service: the service's name (for error bodies).
        chain: the response reviewers, if any.
        buffer_bytes: responses up to this size are scanned whole before the agent sees them.
        record: audits review findings.
        as_error: turns an upstream or scan failure into the gateway error to answer with.
    """

    def __init__(
        self,
        *,
        service: str,
        chain: ReviewChain | None,
        buffer_bytes: int,
        record: Callable[[Iterable[Verdict], ReviewContext], Awaitable[None]],
        as_error: Callable[[Exception], AgentGuardError],
    ) -> None:
        self.service = service
        self.chain = chain
        self.buffer_bytes = buffer_bytes
        self.record = record
        self.as_error = as_error

    async def relay(
        self, response: httpx.Response, credential: Secret, send: Send, context: ReviewContext
    ) -> None:
        """Send the upstream response on, scanning it for the credential and reviewing it."""
        if response.status_code == 401:
            raise BadGateway(self.service, reason=Reason.UPSTREAM_REJECTED_CREDENTIAL)
        scanner = EchoScanner([credential.reveal()])
        headers = [
            (name.lower(), value)
            for name, value in response.headers.raw
            if name.lower() not in _DROPPED_RESPONSE
        ]
        scanner.check_headers(headers)
        stream = scanner.stream()
        chain = self.chain
        limit = self.buffer_bytes
        if chain is not None and not chain.streaming:
            limit = max(limit, chain.max_bytes + 1)
        chunks = response.aiter_bytes().__aiter__()
        released: list[bytes] = []
        size = 0
        finished = False
        while size < limit:
            try:
                chunk = await chunks.__anext__()
            except StopAsyncIteration:
                finished = True
                break
            size += len(chunk)
            released.append(stream.feed(chunk))
        if finished:
            body = b"".join(released) + stream.finish()
            if chain is not None:
                result = await chain.review_body(context, body)
                await self.record(result.findings, context)
                if result.blocked is not None:
                    raise blocked(Direction.OUT, result.blocked)
                body = result.body
            headers.append((b"content-length", str(len(body)).encode()))
            await send(self._start(response.status_code, headers))
            await send({"type": "http.response.body", "body": body})
            return
        await self._relay_stream(
            status=response.status_code,
            headers=headers,
            released=released,
            chunks=chunks,
            stream=stream,
            context=context,
            send=send,
        )

    async def _relay_stream(
        self,
        *,
        status: int,
        headers: list[tuple[bytes, bytes]],
        released: list[bytes],
        chunks: AsyncIterator[bytes],
        stream: StreamScanner,
        context: ReviewContext,
        send: Send,
    ) -> None:
        """Send a response too large to buffer, reviewing it chunk by chunk as it goes."""
        chain = self.chain
        review = chain.stream(context) if chain is not None else None
        started = False
        try:
            first = b"".join(released)
            if review is not None:
                first = await review.feed(first)
            await send(self._start(status, headers))
            started = True
            await send({"type": "http.response.body", "body": first, "more_body": True})
            async for chunk in chunks:
                safe = stream.feed(chunk)
                if review is not None and safe:
                    safe = await review.feed(safe)
                if safe:
                    await send({"type": "http.response.body", "body": safe, "more_body": True})
            tail = stream.finish()
            if review is not None:
                tail = (await review.feed(tail) if tail else b"") + await review.finish()
        except (httpx.HTTPError, SecretEchoed) as failure:
            raise ResponseWithheld(self.as_error(failure)) from None
        except ReviewBlocked as refusal:
            if not started:
                raise
            raise ResponseWithheld(refusal) from None
        finally:
            if review is not None:
                await self.record(review.findings, context)
        await send({"type": "http.response.body", "body": tail})

    @staticmethod
    def _start(status: int, headers: Sequence[tuple[bytes, bytes]]) -> Message:
        return {"type": "http.response.start", "status": status, "headers": list(headers)}
