"""A tiny in-test tlog-witness (an httpx transport) and helpers shared by the witness tests."""

from __future__ import annotations

import base64
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import anyio
import httpx

from agentguard.audit import Action, AuditEvent, Ed25519Signer, open_checkpoint
from agentguard.audit._checkpoints import CheckpointError, _split_note
from agentguard.audit._cosignatures import CosignatureSigner
from agentguard.audit._merkle import EMPTY_ROOT, verify_consistency
from agentguard.testing import FakeClock

ORIGIN = "audit.example.test/agentguard/witnessed"
LOG = Ed25519Signer.generate("audit.example.test")

Override = Callable[[httpx.Request], Awaitable[httpx.Response | None]]


def events(count: int, tag: str = "e") -> list[AuditEvent]:
    clock = FakeClock()
    return [
        AuditEvent(action=Action.DECISION, ts=clock.now(), path=f"/{tag}/{n}") for n in range(count)
    ]


class RawStream(httpx.AsyncByteStream):
    """A response body streamed as the network would (not read in advance, never decoded)."""

    def __init__(self, data: bytes, chunk: int = 4096) -> None:
        self.data, self.chunk = data, chunk

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for start in range(0, len(self.data), self.chunk):
            yield self.data[start : start + self.chunk]


def streamed(response: httpx.Response) -> httpx.Response:
    """``response`` as a network response: its body a stream the client reads itself."""
    if not response.is_stream_consumed:
        return response
    return httpx.Response(
        response.status_code, headers=response.headers, stream=RawStream(response.content)
    )


@dataclass
class FakeWitness:
    """Checks the log signature and the consistency proof like a tlog-witness, then cosigns.

    ``override`` may answer a request instead (errors, junk, slowness); ``requests`` counts
    every request that reached it.
    """

    name: str
    log_vkey: str = field(default_factory=LOG.vkey)
    size: int = 0
    root: bytes = EMPTY_ROOT
    override: Override | None = None
    requests: list[bytes] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.signer = CosignatureSigner.generate(self.name)

    def vkey(self) -> str:
        return self.signer.vkey()

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    async def handle(self, request: httpx.Request) -> httpx.Response:
        return streamed(await self.answer(request))

    async def answer(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(await request.aread())
        if self.override is not None:
            answer = await self.override(request)
            if answer is not None:
                return answer
        return await self.answer_honestly(request)

    async def answer_honestly(self, request: httpx.Request) -> httpx.Response:
        """What an honest witness answers (overrides may build on it)."""
        body = await request.aread()
        if request.method != "POST" or not request.url.path.endswith("/add-checkpoint"):
            return httpx.Response(404)
        head, _, note = body.decode().partition("\n\n")
        lines = head.split("\n")
        old = int(lines[0].removeprefix("old "))
        proof = [base64.b64decode(line) for line in lines[1:]]
        try:
            checkpoint = open_checkpoint(note, [self.log_vkey])
        except CheckpointError:
            return httpx.Response(403)
        if old != self.size:
            return httpx.Response(
                409, content=f"{self.size}\n", headers={"Content-Type": "text/x.tlog.size"}
            )
        if old == 0:
            consistent = not proof
        else:
            consistent = verify_consistency(old, checkpoint.size, self.root, checkpoint.root, proof)
        if not consistent:
            return httpx.Response(422)
        self.size, self.root = checkpoint.size, checkpoint.root
        text, _ = _split_note(note)
        return httpx.Response(200, content=self.signer.line(text, int(time.time())))


async def slow(request: httpx.Request) -> httpx.Response:
    await anyio.sleep(30)
    return httpx.Response(500)
