"""``agentguard audit export --tiles DIR``: the log as static C2SP tlog-tiles.

Writes, for exactly the size of the newest trusted checkpoint (``--checkpoints`` and
``--vkey``, of ``--origin``), everything a tile client needs: ``checkpoint`` (that note), every
full hash tile and entry bundle, and the partial ones of that size. Any static file server can
host the directory; every byte in it is covered by the signed checkpoint.

Before anything is written, the Merkle root of the log's first ``size`` events is computed from
the tiles and must be the checkpoint's root, and a ``checkpoint`` already in ``DIR`` must be a
trusted note of the same origin, no larger, whose root the log still has: so re-running into
the same directory extends it, and a forked or rewritten log is refused. Tile files are
written to a temporary name, flushed and renamed; one already present is never rewritten, and
if its bytes differ the export stops (a fork). ``checkpoint`` is written last.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import secrets
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from agentguard.audit._checkpoints import (
    Checkpoint,
    CheckpointError,
    NoteVerifier,
    open_checkpoint,
)
from agentguard.audit._merkle import CompactRange
from agentguard.audit._tile_checkpoint import served_note
from agentguard.audit._tile_source import TileMissing, TileSource
from agentguard.audit._tiles import ENTRIES, Tile, parse_entry_bundle, split_tile, tiles_at
from agentguard.cli._audit import _notes, _vkeys, _with_store
from agentguard.cli._errors import CommandError

__all__ = ["run"]


@dataclass
class _Tally:
    written: int = 0
    present: int = 0
    digests: dict[int, bytes] = field(default_factory=dict)


def _origin(args: argparse.Namespace) -> str:
    origin: str | None = args.origin or os.environ.get("AGENTGUARD_AUDIT_ORIGIN") or None
    if origin is None:
        raise CommandError("--tiles needs the log's origin: pass --origin")
    return origin


def _previous(directory: Path, keys: list[NoteVerifier], origin: str) -> Checkpoint | None:
    """The checkpoint an earlier export left in ``directory``, verified; ``None`` if none."""
    path = directory / "checkpoint"
    if not directory.is_dir():
        return None
    root = _open_root(directory)
    try:
        data = _read_existing(root, "checkpoint", path)
    finally:
        os.close(root)
    if data is None:
        return None
    try:
        previous = open_checkpoint(data.decode("utf-8"), keys)
    except (CheckpointError, UnicodeDecodeError, ValueError):
        raise CommandError(
            f"{path} is not a checkpoint signed by the given keys: refusing to add to "
            "that directory (pass the key that signed it too, or export into a new one)"
        ) from None
    if previous.origin != origin:
        raise CommandError(f"{path} is a checkpoint of {previous.origin}, not of {origin}")
    return previous


_NOFOLLOW = os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


def _symlink(path: Path) -> CommandError:
    return CommandError(
        f"{path} is a symbolic link or not a regular file/directory: the export writes only "
        "real files inside its directory; refusing"
    )


def _open_root(directory: Path) -> int:
    """A descriptor of the export directory (created if missing; it may itself be a link)."""
    directory.mkdir(parents=True, exist_ok=True)
    return os.open(directory, os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0))


def _open_parent(root: int, directory: Path, parts: list[str]) -> int:
    """A descriptor of ``parts`` under ``root``, made as needed, never through a symlink."""
    current = os.dup(root)
    at = directory
    try:
        for part in parts:
            at = at / part
            with contextlib.suppress(FileExistsError):
                os.mkdir(part, 0o755, dir_fd=current)
            try:
                below = os.open(part, os.O_RDONLY | os.O_DIRECTORY | _NOFOLLOW, dir_fd=current)
            except OSError:  # ELOOP (a symlink) or ENOTDIR
                raise _symlink(at) from None
            os.close(current)
            current = below
    except BaseException:
        os.close(current)
        raise
    return current


def _read_existing(parent: int, name: str, path: Path) -> bytes | None:
    """The bytes of regular file ``name`` under ``parent``; ``None`` if absent; never a link."""
    try:
        handle = os.open(name, os.O_RDONLY | os.O_NONBLOCK | _NOFOLLOW, dir_fd=parent)
    except FileNotFoundError:
        return None
    except OSError:  # ELOOP: a symlink
        raise _symlink(path) from None
    with os.fdopen(handle, "rb") as existing:
        if not stat.S_ISREG(os.fstat(existing.fileno()).st_mode):
            raise _symlink(path)
        return existing.read()


def _write_file(directory: Path, relative: str, data: bytes, tally: _Tally) -> None:
    """Create ``relative`` with ``data`` via a flushed temporary file; an existing one must
    match. Nothing is read or written through a symbolic link inside ``directory``."""
    path = directory / relative
    *parts, name = relative.split("/")
    root = _open_root(directory)
    try:
        parent = _open_parent(root, directory, parts)
    finally:
        os.close(root)
    try:
        existing = _read_existing(parent, name, path)
        if existing is not None:
            if existing != data:
                raise CommandError(
                    f"{path} already holds different bytes: the log no longer has the history "
                    "that was exported there (a fork or a rewrite); refusing to overwrite it"
                )
            tally.present += 1
            return
        _replace_at(parent, name, path, data)
        tally.written += 1
    finally:
        os.close(parent)


def _replace(directory: Path, name: str, data: bytes) -> None:
    """Write ``directory/name`` (replacing a regular file, never following a link)."""
    root = _open_root(directory)
    try:
        _read_existing(root, name, directory / name)  # refuses a symlink or a special file
        _replace_at(root, name, directory / name, data)
    finally:
        os.close(root)


def _replace_at(parent: int, name: str, path: Path, data: bytes) -> None:
    temporary = f".{name}.{secrets.token_hex(8)}"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW
    handle = os.open(temporary, flags, 0o644, dir_fd=parent)
    try:
        with os.fdopen(handle, "wb") as sink:
            sink.write(data)
            sink.flush()
            os.fchmod(sink.fileno(), 0o644)
            os.fsync(sink.fileno())
        if os.path.islink(path):  # rename would replace the link itself; refuse all the same
            raise _symlink(path)
        os.replace(temporary, name, src_dir_fd=parent, dst_dir_fd=parent)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary, dir_fd=parent)
        raise


async def _read(source: TileSource, tile: Tile, size: int) -> bytes:
    try:
        return await source.read(tile, limit=size)
    except TileMissing as missing:
        raise CommandError(f"cannot export {tile.path()}: {missing}") from None


async def _check_root(
    source: TileSource, checkpoint: Checkpoint, previous: Checkpoint | None, tally: _Tally
) -> None:
    """Refuse unless the level-0 tiles give the signed roots (this and the previous export's)."""
    compact = CompactRange()
    for tile in tiles_at(checkpoint.size, entries=False):
        if tile.level != 0:
            break
        data = await _read(source, tile, checkpoint.size)
        tally.digests[tile.index] = hashlib.sha256(data).digest()
        for leaf in split_tile(data):
            compact.append(leaf)
            forked = previous is not None and compact.size == previous.size
            if forked and previous is not None and compact.root() != previous.root:
                raise CommandError(
                    f"the log's first {previous.size} events no longer have the root of the "
                    "checkpoint already exported there: the log forked; refusing"
                )
    if compact.root() != checkpoint.root:
        raise CommandError(
            f"the log's first {checkpoint.size} events do not have the signed checkpoint's root: "
            "the log was rewritten or forked; nothing exported"
        )


async def _export(
    store: Any, directory: Path, note: str, checkpoint: Checkpoint, previous: Checkpoint | None
) -> _Tally:
    source = TileSource(store)
    size = checkpoint.size
    tally = _Tally()
    if await source.size() < size:
        raise CommandError(
            f"the log has fewer events than the signed checkpoint's {size}: it was truncated or "
            "rolled back; nothing exported"
        )
    await _check_root(source, checkpoint, previous, tally)
    for tile in tiles_at(size):
        data = await _read(source, tile, size)
        _check_verified(tile, data, tally)
        await anyio.to_thread.run_sync(_write_file, directory, tile.path(), data, tally)
    await anyio.to_thread.run_sync(_replace, directory, "checkpoint", note.encode("utf-8"))
    return tally


def _check_verified(tile: Tile, data: bytes, tally: _Tally) -> None:
    """Refuse a level-0 tile or entry bundle other than the one whose hashes gave the signed
    root in :func:`_check_root` (the store may change between the two reads)."""
    if tile.level not in (0, ENTRIES):
        return  # made of roots cached from that same verified pass
    if tile.level == ENTRIES:
        try:
            bodies = parse_entry_bundle(data)
        except ValueError:
            bodies = []
        if len(bodies) != tile.width:
            raise CommandError(
                f"{tile.path()} does not hold {tile.width} events; nothing more written"
            )
        data = b"".join(hashlib.sha256(b"\x00" + body).digest() for body in bodies)
    if hashlib.sha256(data).digest() != tally.digests.get(tile.index):
        raise CommandError(
            f"{tile.path()} changed since its hashes were checked against the signed root (the "
            "store was modified during the export); nothing more written"
        )


def run(args: argparse.Namespace) -> int:
    """Export the tiles of the newest trusted checkpoint into ``args.tiles``."""
    directory: Path = args.tiles
    origin = _origin(args)
    if args.checkpoints is None:
        raise CommandError(
            "--tiles needs --checkpoints: tiles are exported for a signed checkpoint"
        )
    vkeys = _vkeys(args)
    if not vkeys:
        raise CommandError("--tiles needs trusted verifier keys: pass --vkey or --vkeys-file")
    keys = [NoteVerifier.from_vkey(vkey) for vkey in vkeys]
    note = served_note(_notes(args.checkpoints), origin, keys)
    if note is None:
        raise CommandError(
            f"no checkpoint of {origin} signed by the given keys in {args.checkpoints}: sign one "
            "first (agentguard audit checkpoint)"
        )
    checkpoint = open_checkpoint(note, keys)
    if directory.exists() and not directory.is_dir():
        raise CommandError(f"{directory} exists and is not a directory")
    previous = _previous(directory, keys, origin)
    if previous is not None and previous.size > checkpoint.size:
        raise CommandError(
            f"{directory} already holds a checkpoint of size {previous.size}, newer than the "
            f"newest trusted one ({checkpoint.size}); refusing to go back"
        )

    async def export(store: Any) -> _Tally:
        return await _export(store, directory, note, checkpoint, previous)

    tally: _Tally = anyio.run(_with_store, args, export)
    print(
        f"exported the tiles of checkpoint size {checkpoint.size} ({origin}) to {directory}: "
        f"{tally.written} written, {tally.present} already there",
        file=sys.stdout,
    )
    return 0
