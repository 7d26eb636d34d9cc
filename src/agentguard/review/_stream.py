"""Reviewing a streamed body without holding all of it.

When every reviewer in the chain declares ``streaming = True``, the body is reviewed one window
at a time: each window is the text held back from the previous one plus the new chunk, and the
last ``overlap`` characters (the largest any reviewer asks for) are held back again, so a match
that straddles a chunk boundary is always seen whole before any of it is released. Redactions
apply to the window before release.

Otherwise the body is buffered up to the chain's ``max_bytes`` and reviewed whole at the end;
past the cap, ``over_cap="block"`` stops the stream and ``over_cap="pass"`` releases it,
reviewed from then on only by the streaming reviewers (if any).
"""

from __future__ import annotations

import codecs
from typing import TYPE_CHECKING

from agentguard.review._base import Outcome, ReviewContext, Verdict
from agentguard.review._chain import encode_body
from agentguard.review._errors import blocked
from agentguard.review._views import wide_codec

if TYPE_CHECKING:
    from agentguard.review._chain import ReviewChain, ReviewStep

__all__ = ["ChainStream"]

_EXPANSION = 6  # the longest reading of one character (see agentguard.review._views)


class ChainStream:
    """Reviews one streamed body: ``feed`` each chunk, send what it returns, then ``finish``.

    ``feed`` and ``finish`` raise :class:`~agentguard.review.ReviewBlocked` when a reviewer
    blocks; the caller cuts the stream (or, if nothing was sent yet, answers with the error).
    ``findings`` collects every verdict worth auditing, including the blocking one.
    """

    def __init__(self, chain: ReviewChain, context: ReviewContext) -> None:
        self.chain = chain
        self.context = context
        self.findings: list[Verdict] = []
        self._decoder = codecs.getincrementaldecoder("utf-8")("surrogateescape")
        self._buffering = not chain.streaming
        self._steps: tuple[ReviewStep, ...] = chain.steps if chain.streaming else ()
        self._buffer = bytearray()
        self._held = ""
        self._sniffed = False

    @property
    def _overlap(self) -> int:
        """Characters held back for the next window: each reviewer's overlap, as long as its
        most expanded reading (``\\uXXXX`` is six characters for one; UTF-32 read as UTF-8 is
        four), plus a partial escape, so no reading of a form is split between windows."""
        overlap = max((step.overlap for step in self._steps), default=0)
        return _EXPANSION * overlap + _EXPANSION

    async def feed(self, chunk: bytes) -> bytes:
        """Review ``chunk``; return the bytes that are now safe to send (maybe none)."""
        if not self._sniffed and chunk:
            self._sniffed = True
            if not self._buffering and wide_codec(chunk[:4]) is not None:
                # UTF-16/32 (which JSON parsers detect): windows are read as UTF-8, so review
                # the body whole, in every reading, up to the cap (past it, as over_cap says).
                self._buffering = True
        if self._buffering:
            self._buffer += chunk
            if len(self._buffer) <= self.chain.max_bytes:
                return b""
            self._record(self.chain.over_cap_verdict())
            self._buffering = False
            self._steps = tuple(step for step in self.chain.steps if step.streaming)
            chunk, self._buffer = bytes(self._buffer), bytearray()
        return await self._window(self._decoder.decode(chunk))

    async def finish(self) -> bytes:
        """The rest of the body, once the stream has ended."""
        if self._buffering:
            self._buffering = False
            result = await self.chain.review_body(self.context, bytes(self._buffer))
            for verdict in result.findings:
                self._record(verdict)
            return result.body
        released = await self._window(self._decoder.decode(b"", final=True))
        held, self._held = self._held, ""
        return released + encode_body(held)

    async def _window(self, text: str) -> bytes:
        if not self._steps:
            return encode_body(text)
        if not text:
            return b""
        result = await self.chain.review(self.context, self._held + text, self._steps)
        for verdict in result.findings:
            self._record(verdict)
        content = result.content
        keep = self._overlap
        if keep == 0 or len(content) <= keep:
            release, self._held = ("", content) if keep else (content, "")
        else:
            release, self._held = content[:-keep], content[-keep:]
        return encode_body(release)

    def _record(self, verdict: Verdict) -> None:
        self.findings.append(verdict)
        if verdict.outcome is Outcome.BLOCK:
            raise blocked(self.context.direction, verdict)
