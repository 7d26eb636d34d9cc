"""The audit log as C2SP tlog-tiles on the operator listener, under ``/log/``.

- ``GET /log/checkpoint``: the newest signed checkpoint note of the log's origin (among the
  notes of the greatest size, the one with the most distinct valid signers), ``text/plain``,
  ``Cache-Control: no-cache``; 404 when none was signed yet. It is what the in-process
  checkpointer published last when it tells, else a cached sink lookup, refreshed at most
  once per ``refresh`` seconds by one request at a time: no request rate makes the sink (a
  directory of one file per checkpoint) work harder.
- ``GET /log/tile/<L>/<N>[.p/<W>]``: a hash tile; ``GET /log/tile/entries/<N>[.p/<W>]``: an
  entry bundle (each event's exact canonical bytes). ``application/octet-stream``; full tiles
  never change (``max-age=31536000, immutable``), partial ones are cached briefly.

Tiles are served up to the size of the checkpoint served (so everything a client fetches is
covered by a signature it can check); without a checkpoint sink, up to the log's size.
``HEAD`` works wherever ``GET`` does. Who may read is ``[audit] tiles``: ``operators`` (an
operator token), ``hashes`` (checkpoint and hash tiles public, entry bundles need a token) or
``public``. A malformed or non-canonical path is 404, a tile the log does not have (yet) 404,
one over events the store archived and dropped 410, another method 405 with ``Allow``; a
failing store 503. A high tile whose roots are not cached yet (the first after a restart) is
computed by one request at a time: operators queue behind it, anonymous clients get 503 with
``Retry-After`` rather than queueing. Never a 500.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import anyio

from agentguard._config_observe import TileAccess
from agentguard._model import OperatorRecord
from agentguard.asgi._responses import send_json
from agentguard.asgi._scope import route_path
from agentguard.asgi._types import Scope, Send
from agentguard.audit._checkpoints import NoteVerifier
from agentguard.audit._cosignatures import WitnessKey
from agentguard.audit._sinks import CheckpointSink
from agentguard.audit._tile_checkpoint import newest_served, note_head, served_note
from agentguard.audit._tile_source import TileBusy, TileGone, TileMissing, TileSource
from agentguard.audit._tiles import Tile, TilePathError
from agentguard.errors import MethodNotAllowed, StoreUnavailable
from agentguard.storage._outage import store_outage

__all__ = ["TileEndpoints"]

IMMUTABLE = "max-age=31536000, immutable"
PARTIAL = "max-age=60"
NO_STORE = [("cache-control", "no-store")]
BUSY_RETRY = 5  # seconds an anonymous client waits while the tree is computed cold
_T = TypeVar("_T")


async def _outcome(work: Awaitable[_T]) -> _T | TileMissing:
    """The result, or a missing tile as a value (so the outage boundary lets it pass)."""
    try:
        return await work
    except TileMissing as missing:
        return missing


class TileEndpoints:
    """:class:`~agentguard.asgi._operator.OperatorEndpoints` serving ``/log/...``.

    Args:
        source: computes the tiles from the audit store.
        access: ``operators``, ``hashes`` or ``public`` (``off`` mounts nothing).
        sink: where the checkpointer publishes notes (``None``: no checkpoint is served and
            tiles go up to the log's size).
        origin: the log's origin; only its notes are served.
        log_keys: keys whose signature makes a note trusted (the checkpointer's own).
        witness_keys: witnesses whose valid cosignatures make a note preferred.
        refresh: seconds a note looked up in ``sink`` is served (and bounds tiles) before
            the sink is read again; one request at a time reads it, the others get the
            cached note, so no request rate makes the sink work harder than that.
        published: the notes the in-process checkpointer published last (its own, and the
            cosigned one); when it returns a trusted note, that is served and the sink is not
            read at all.
    """

    segment = "log"

    def __init__(
        self,
        source: TileSource,
        *,
        access: TileAccess,
        sink: CheckpointSink | None = None,
        origin: str | None = None,
        log_keys: Sequence[NoteVerifier] = (),
        witness_keys: Sequence[WitnessKey] = (),
        refresh: float = 1.0,
        published: Callable[[], Sequence[str | None]] | None = None,
    ) -> None:
        if access == "off":
            raise ValueError("tiles are off: mount no tile endpoints")
        if sink is not None and not origin:
            raise ValueError("serving checkpoints needs the log's origin")
        self.source = source
        self.access = access
        self.sink = sink
        self.origin = origin
        self.log_keys = tuple(log_keys)
        self.witness_keys = tuple(witness_keys)
        self.refresh = refresh
        self.published = published
        self._note: str | None = None
        self._signed_size = 0
        self._looked_up = False
        self._next_lookup = float("-inf")
        self._failed = False
        self._lock = anyio.Lock()
        self._published_notes: tuple[str, ...] = ()
        self._published_choice: str | None = None

    def __repr__(self) -> str:
        return f"TileEndpoints(access={self.access!r}, origin={self.origin!r})"

    def public(self, parts: Sequence[str]) -> bool:
        """Whether ``/log/...`` needs no operator token under the configured access."""
        if self.access == "public":
            return True
        if self.access == "hashes":
            return parts[1:3] != ["tile", "entries"]
        return False

    async def handle(
        self, scope: Scope, send: Send, parts: Sequence[str], operator: OperatorRecord | None
    ) -> bool:
        """Answer a ``/log/...`` request; ``False`` (nothing sent) for an unknown path."""
        if not _canonical(scope, parts):
            return False
        method: str = scope["method"]
        if parts[1:] == ["checkpoint"]:
            _allow(method)
            await self._checkpoint(send, method == "HEAD")
            return True
        if parts[1:2] != ["tile"]:
            return False
        try:
            tile = Tile.parse("/".join(parts[1:]))
        except TilePathError as error:
            await _missing(send, 404, "not_found", str(error))
            return True
        _allow(method)
        await self._tile(tile, send, method == "HEAD", public=operator is None)
        return True

    async def _current(self) -> str | None:
        """The note to serve: what the in-process checkpointer published, else the cached
        sink lookup, refreshed at most once per :attr:`refresh` seconds by one request at a
        time (the others meanwhile get the cached note, or wait for the first lookup)."""
        if self.sink is None or self.origin is None:
            return None
        published = self._published()
        if published is not None:
            return published
        if time.monotonic() < self._next_lookup:
            return self._cached()
        if self._lock.locked() and self._looked_up:
            return self._cached()
        async with self._lock:
            if time.monotonic() >= self._next_lookup:
                await self._lookup()
        return self._cached()

    def _published(self) -> str | None:
        """The best of the notes the in-process checkpointer last published, if it says."""
        if self.published is None or self.origin is None:
            return None
        notes = tuple(note for note in self.published() if note)
        if not notes:
            return None
        if notes != self._published_notes:  # verified once per new note, not per request
            self._published_notes = notes
            self._published_choice = served_note(
                notes, self.origin, self.log_keys, self.witness_keys
            )
        note = self._published_choice
        if note is not None:
            self._remember(note)
        return note

    def _cached(self) -> str | None:
        if self._note is None and self._failed:
            raise StoreUnavailable("the checkpoint sink is unavailable; retry later")
        return self._note

    def _remember(self, note: str | None) -> None:
        head = None if note is None else note_head(note)
        self._note, self._signed_size = note, 0 if head is None else head[1]

    async def _lookup(self) -> None:
        """Read the sink's newest notes once (bounded verification) and cache the choice.

        A failing sink keeps the note served before (if any); the next try is a refresh
        period later, never on every request. The next lookup waits at least four times as
        long as this one took, so a slow sink is never kept busy by requests.
        """
        if self.sink is None or self.origin is None:
            return
        started = time.monotonic()
        try:
            with store_outage("checkpoint sink", "newest"):
                finder = getattr(self.sink, "newest", None)
                notes: list[str] = (
                    await finder(self.origin) if callable(finder) else await self.sink.notes()
                )
            note = newest_served(notes, self.origin, self.log_keys, self.witness_keys)
            if note is not None or self._note is None:
                self._remember(note)
            self._failed = False
        except StoreUnavailable:
            self._failed = True
        finally:
            now = time.monotonic()
            self._looked_up = True
            self._next_lookup = now + max(self.refresh, 4 * (now - started))

    async def _limit(self, stop: int) -> int | None:
        """How far tiles may go: the served checkpoint's size (``None``: the log's size)."""
        if self.sink is None:
            return None
        if stop > self._signed_size:
            await self._current()
        return self._signed_size

    async def _checkpoint(self, send: Send, head: bool) -> None:
        note = await self._current()
        if note is None:
            await _missing(send, 404, "not_found", "no signed checkpoint of this log yet")
            return
        headers = [("content-type", "text/plain; charset=utf-8"), ("cache-control", "no-cache")]
        await _send(send, headers, note.encode("utf-8"), head)

    async def _tile(self, tile: Tile, send: Send, head: bool, *, public: bool) -> None:
        limit = await self._limit(tile.leaves[1])
        with store_outage("audit store", "read"):
            data = await _outcome(self.source.read(tile, limit=limit, wait=not public))
        if isinstance(data, TileBusy):
            headers = [*NO_STORE, ("retry-after", str(BUSY_RETRY))]
            await send_json(send, 503, {"error": "busy", "error_description": str(data)}, headers)
            return
        if isinstance(data, TileGone):
            await _missing(send, 410, "gone", str(data))
            return
        if isinstance(data, TileMissing):
            await _missing(send, 404, "not_found", str(data))
            return
        scope = "public" if public else "private"
        cache = f"{scope}, {IMMUTABLE if tile.full else PARTIAL}"
        headers = [("content-type", "application/octet-stream"), ("cache-control", cache)]
        await _send(send, headers, data, head)


def _canonical(scope: Scope, parts: Sequence[str]) -> bool:
    """Whether the request path is exactly ``/`` + ``parts`` (no trailing slash, no escapes)."""
    raw: bytes | None = scope.get("raw_path")
    if raw is not None and b"%" in raw:
        return False
    return route_path(scope) == "/" + "/".join(parts)


def _allow(method: str) -> None:
    if method not in ("GET", "HEAD"):
        raise MethodNotAllowed(("GET", "HEAD"))


async def _send(send: Send, headers: list[tuple[str, str]], body: bytes, head: bool) -> None:
    raw = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers]
    raw.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": 200, "headers": raw})
    await send({"type": "http.response.body", "body": b"" if head else body})


async def _missing(send: Send, status: int, error: str, description: str) -> None:
    await send_json(send, status, {"error": error, "error_description": description}, NO_STORE)
