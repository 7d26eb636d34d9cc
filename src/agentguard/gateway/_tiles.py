"""The audit log's tiles on the operator listener (``[audit] tiles``), under ``/log/``."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from agentguard.asgi._operator import OperatorEndpoints
from agentguard.config import Settings

__all__ = ["tile_endpoints"]

logger = logging.getLogger("agentguard.gateway")


def tile_endpoints(settings: Settings, store: Any, checkpointer: Any) -> OperatorEndpoints | None:
    """The ``/log/`` endpoints, or ``None`` when ``[audit] tiles = "off"`` or ``store`` keeps no
    audit log to read.

    The checkpoint served is what the checkpointer published last (when it exposes
    ``last_note``), else read from its sink at most once a second (its origin's newest note,
    signed by its key, preferring the one with the most distinct valid ``[[audit.witnesses]]``
    cosigners); without a checkpointer no checkpoint is served and tiles go up to the log's
    size.
    """
    access = settings.audit.tiles
    if access == "off" or not callable(getattr(store, "read", None)):
        return None
    if not callable(getattr(store, "head", None)):
        return None
    from agentguard.asgi._tile_endpoints import TileEndpoints
    from agentguard.audit._checkpoints import CheckpointError, NoteVerifier
    from agentguard.audit._cosignatures import WitnessKey
    from agentguard.audit._tile_source import TileSource

    log_keys: list[NoteVerifier] = []
    sink = origin = None
    if checkpointer is not None:
        sink, origin = checkpointer.sink, checkpointer.origin
        own = getattr(checkpointer.signer, "vkey", None)
        if callable(own):
            log_keys.append(NoteVerifier.from_vkey(str(own())))
    witnesses: list[WitnessKey] = []
    for number, witness in enumerate(settings.audit.witnesses, 1):
        try:
            witnesses.append(WitnessKey.from_vkey(witness.vkey))
        except CheckpointError as error:  # only ranks the notes served here: warn, serve on
            logger.warning(
                "[[audit.witnesses]] #%d: %s; its cosignatures are not counted", number, error
            )
    return TileEndpoints(
        TileSource(store),
        access=access,
        sink=sink,
        origin=origin,
        log_keys=log_keys,
        witness_keys=witnesses,
        published=_published(checkpointer),
    )


_ABSENT = object()


def _published(checkpointer: Any) -> Callable[[], Sequence[str | None]] | None:
    """What the in-process checkpointer published last, if it tells: its ``last_note`` and,
    with witnesses, their ``last_cosigned`` note. ``None`` (read the sink) when it does not
    expose both, since serving the log-signed note alone would hide the cosigned one."""
    if checkpointer is None or getattr(checkpointer, "last_note", _ABSENT) is _ABSENT:
        return None
    witnesses = getattr(checkpointer, "witnesses", None)
    if witnesses is not None and getattr(witnesses, "last_cosigned", _ABSENT) is _ABSENT:
        return None

    def published() -> Sequence[str | None]:
        own: str | None = checkpointer.last_note
        if witnesses is None:
            return (own,)
        cosigned: str | None = witnesses.last_cosigned
        return (own, cosigned)

    return published
