"""A C2SP tlog-witness client: submit a signed checkpoint, get back a verified cosignature.

``POST <url>/add-checkpoint`` with the body::

    old <the size the witness last cosigned>
    <base64 consistency proof hash, one per line, from that size to the new one>

    <the signed checkpoint note>

The answers handled: 200 with signature lines (each line under this witness's configured key
must verify against the checkpoint, and at least one must; anything else is a failure, never
a cosignature kept; lines under other names are ignored, however malformed); 409 with
``Content-Type: text/x.tlog.size`` and the witness's size (the client retries once, with a
proof from that size; a size larger than the checkpoint submitted means the witness cosigned
a bigger tree of this log: a rollback, or a confused witness, logged CRITICAL and never
adopted); anything else (403 unknown log key, 404
unknown origin, 422 inconsistent: a fork, 5xx, timeouts, junk) is a :class:`WitnessResult`
failure, after which the client backs off exponentially. :meth:`WitnessClient.submit` never
raises: a witness is a second opinion, never a dependency of the request path.

Transport rules: ``https`` only (``http`` to a loopback address is allowed for a local
witness), redirects are never followed, a response with a ``Content-Encoding`` other than
``identity`` is refused before any decompression, its raw bytes are read up to 64 KiB, and
every request has the configured timeout (and an overall deadline of twice that plus a
second, against a witness that drips bytes). The consistency proof is computed before the
request, outside that deadline: local work never counts as the witness's slowness.
"""

from __future__ import annotations

import base64
import ipaddress
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import anyio
import httpx

from agentguard.audit._checkpoints import CheckpointError, MalformedNote, _split_note
from agentguard.audit._cosignatures import MAX_TIMESTAMP, WitnessKey, parse_signature_lines
from agentguard.errors import UsageError

__all__ = ["ProofSource", "WitnessClient", "WitnessResult"]

logger = logging.getLogger("agentguard.audit")

ProofSource = Callable[[int, int], Awaitable[Sequence[bytes]]]
"""``await proof(old, new)``: the RFC 6962 consistency proof between two sizes of the log."""

MAX_RESPONSE = 64 * 1024
MAX_PROOF_LINES = 63
SIZE_TYPE = "text/x.tlog.size"
_BACKOFF_START = 1.0
_BACKOFF_MAX = 600.0


@dataclass(frozen=True, slots=True)
class WitnessResult:
    """One submission's outcome.

    Attributes:
        witness: the witness's key name.
        size: the checkpoint's size.
        lines: the verified cosignature lines (empty on failure).
        error: why it failed, ``None`` on success. Never holds a URL or a response body.
        status: the last HTTP status, if any.
    """

    witness: str
    size: int
    lines: tuple[str, ...] = ()
    error: str | None = None
    status: int | None = None

    @property
    def ok(self) -> bool:
        """Whether the witness cosigned."""
        return self.error is None


def _check_url(url: str) -> str:
    parsed = httpx.URL(url)
    if parsed.scheme == "https" and parsed.host:
        return url.rstrip("/")
    if parsed.scheme == "http" and parsed.host:
        host = parsed.host
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = host == "localhost"
        if loopback:
            return url.rstrip("/")
    raise UsageError("a witness URL must be https (http only to a loopback address)")


def _parse_size(body: bytes) -> int:
    text = body.decode("ascii", "replace")
    digits = text[:-1]
    if (
        not text.endswith("\n")
        or not digits.isascii()
        or not digits.isdigit()
        or len(digits) > 19
        or digits != str(int(digits))
        or int(digits) > MAX_TIMESTAMP
    ):
        raise MalformedNote("a text/x.tlog.size body is a decimal size (< 2^63) and a newline")
    return int(digits)


class WitnessClient:
    """Submits checkpoints to one witness and keeps what it learned of the witness's size.

    Args:
        url: the witness's submission prefix (``/add-checkpoint`` is appended).
        vkey: its ``cosignature/v1`` vkey, configured out of band.
        timeout: seconds per HTTP request.
        transport: an httpx transport (tests); the default opens real connections.
    """

    def __init__(
        self,
        url: str,
        vkey: str,
        *,
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.url = _check_url(url)
        self.key = WitnessKey.from_vkey(vkey)
        self.timeout = timeout
        self._client = httpx.AsyncClient(
            timeout=timeout, follow_redirects=False, transport=transport, trust_env=False
        )
        self.size: int | None = None
        """The size the witness last cosigned, as far as this client knows."""
        self.failures = 0
        self._retry_at = 0.0
        self._alarmed = False  # the rollback alert is logged once per client

    @property
    def name(self) -> str:
        """The witness's key name."""
        return self.key.name

    @property
    def retry_at(self) -> float:
        """The ``time.monotonic()`` before which :meth:`submit` backs off (0 when not)."""
        return self._retry_at

    @property
    def failing(self) -> bool:
        """Whether the last submission failed."""
        return self.failures > 0

    def __repr__(self) -> str:
        return f"WitnessClient(name={self.name!r}, size={self.size})"

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()

    @property
    def deadline(self) -> float:
        """Seconds one request may take in all, however slowly the witness sends."""
        return self.timeout * 2 + 1

    async def _post(self, body: bytes) -> tuple[int, str, bytes]:
        headers = {"Content-Type": "text/plain; charset=utf-8", "Accept-Encoding": "identity"}
        url = f"{self.url}/add-checkpoint"
        with anyio.fail_after(self.deadline):
            async with self._client.stream("POST", url, content=body, headers=headers) as response:
                encoding = response.headers.get("content-encoding", "identity").strip().lower()
                if encoding not in ("", "identity"):
                    raise MalformedNote("the witness's response is encoded, not identity")
                chunks: list[bytes] = []
                total = 0
                async for chunk in response.aiter_raw():  # never decompressed
                    total += len(chunk)
                    if total > MAX_RESPONSE:
                        raise MalformedNote("the witness's response is too large")
                    chunks.append(chunk)
        kind = response.headers.get("content-type", "").split(";")[0].strip().lower()
        return response.status_code, kind, b"".join(chunks)

    def _cosignatures(self, body: bytes, text: bytes) -> tuple[str, ...]:
        """The verified lines of a 200 body; raises MalformedNote if none or a bad one.

        Lines under other names (other witnesses, other signature types) are skipped however
        they look; a line under this witness's name must be well formed.
        """
        try:
            decoded = body.decode("utf-8")
        except UnicodeDecodeError:
            raise MalformedNote("the witness's response is not UTF-8") from None
        if not decoded.endswith("\n"):
            raise MalformedNote("signature lines end with a newline")
        ours = f"\u2014 {self.key.name} "
        mine = [line + "\n" for line in decoded[:-1].split("\n") if line.startswith(ours)]
        kept: list[str] = []
        for name, ident, blob in parse_signature_lines("".join(mine)) if mine else []:
            if (name, ident) != (self.key.name, self.key.key_id):
                continue  # another cosignature type or key: not ours to count
            if self.key.verify(text, blob) is None:
                raise MalformedNote("a cosignature under the witness's key does not verify")
            encoded = base64.b64encode(ident + blob).decode()
            kept.append(f"\u2014 {name} {encoded}\n")
        if not kept:
            raise MalformedNote("the response holds no cosignature under the witness's key")
        return tuple(kept)

    async def submit(
        self, note: str, proof: ProofSource, *, now: float | None = None
    ) -> WitnessResult:
        """Submit ``note`` (a signed checkpoint); never raises.

        While backing off after a failure, returns a failure without a request.
        """
        moment = time.monotonic() if now is None else now
        try:
            text, _ = _split_note(note)
            size = int(text.split(b"\n", 2)[1])
        except (CheckpointError, ValueError, IndexError):
            return WitnessResult(self.name, -1, error="the note is not a signed checkpoint")
        if moment < self._retry_at:
            return WitnessResult(self.name, size, error="backing off after a failure")
        result = await self._attempt(note, text, size, proof)
        if result.ok:
            self.failures, self._retry_at, self.size = 0, 0.0, size
        else:
            self.record_failure(result, moment)
        return result

    def record_failure(self, result: WitnessResult, now: float | None = None) -> None:
        """Count a failed submission and back off: 1 s, 2 s, 4 s ... up to 10 minutes."""
        self.failures += 1
        delay = min(_BACKOFF_MAX, _BACKOFF_START * 2 ** min(self.failures - 1, 20))
        self._retry_at = (time.monotonic() if now is None else now) + delay
        logger.warning(
            "witness %s did not cosign the checkpoint of size %d: %s",
            self.name,
            result.size,
            result.error,
        )

    async def _attempt(
        self, note: str, text: bytes, size: int, proof: ProofSource
    ) -> WitnessResult:
        old = self.size or 0
        status: int | None = None
        for _ in range(2):  # the first try, and one retry from the size a 409 names
            if old > size:
                return WitnessResult(
                    self.name,
                    size,
                    error=f"the witness already cosigned size {old}, larger than {size}: "
                    "the log was rolled back or forked",
                    status=status,
                )
            try:
                hashes = list(await proof(old, size)) if 0 < old < size else []
            except Exception as error:  # a proof source failure is this witness's failure
                return WitnessResult(
                    self.name, size, error=f"no consistency proof: {type(error).__name__}"
                )
            if len(hashes) > MAX_PROOF_LINES or any(len(h) != 32 for h in hashes):
                return WitnessResult(self.name, size, error="the consistency proof is malformed")
            lines = "".join(base64.b64encode(h).decode() + "\n" for h in hashes)
            body = f"old {old}\n{lines}\n{note}".encode()
            try:
                status, kind, answer = await self._post(body)
            except (httpx.TimeoutException, TimeoutError):
                return WitnessResult(self.name, size, error="timed out")
            except (httpx.HTTPError, MalformedNote, OSError) as error:
                return WitnessResult(
                    self.name, size, error=f"request failed: {type(error).__name__}"
                )
            if status == 200:
                try:
                    return WitnessResult(
                        self.name, size, self._cosignatures(answer, text), status=200
                    )
                except MalformedNote as error:
                    return WitnessResult(
                        self.name, size, error=f"bad response: {error}", status=200
                    )
            if status == 409 and kind == SIZE_TYPE:
                try:
                    witnessed = _parse_size(answer)
                except MalformedNote as error:
                    return WitnessResult(self.name, size, error=f"bad 409: {error}", status=409)
                if witnessed == old:
                    return WitnessResult(
                        self.name, size, error="409 naming the size sent", status=409
                    )
                if witnessed > size:
                    return self._ahead(size, witnessed)
                self.size, old = witnessed, witnessed  # checked: a size it really cosigned
                continue
            return WitnessResult(self.name, size, error=_refusal(status), status=status)
        return WitnessResult(
            self.name, size, error="the witness's size changed again (a second 409)", status=409
        )

    def _ahead(self, size: int, witnessed: int) -> WitnessResult:
        """A 409 naming a size above the checkpoint's: never adopted, alerted once."""
        if not self._alarmed:
            self._alarmed = True
            logger.critical(
                "AUDIT ALERT: witness %s says it cosigned size %d of this log, more than the "
                "%d entries submitted: the log was rolled back, or the witness is confused",
                self.name,
                witnessed,
                size,
            )
        return WitnessResult(
            self.name,
            size,
            error=f"the witness claims size {witnessed}, larger than the log's {size}",
            status=409,
        )


def _refusal(status: int) -> str:
    meaning = {
        400: "malformed request",
        403: "the witness does not trust the log's key",
        404: "the witness does not know this log's origin",
        409: "conflict without a size",
        422: "the witness refused: the checkpoint is not consistent with what it cosigned "
        "before (a fork)",
        503: "the witness is unavailable",
    }
    return f"HTTP {status}: {meaning.get(status, 'unexpected answer')}"
