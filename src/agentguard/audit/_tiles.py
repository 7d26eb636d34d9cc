"""The audit log as C2SP tlog-tiles: tile paths, tile contents and entry bundles.

A tiled log (c2sp.org/tlog-tiles, tile height 8) publishes its Merkle tree as static resources:

- ``tile/<L>/<N>``: hash tile ``N`` of level ``L``, the 256 hashes of the tree nodes at height
  ``8L`` numbered ``256N .. 256N + 255`` (level 0 holds the leaf hashes; at level ``L >= 1``
  each hash is the root of a full tile one level down, i.e. of ``256**L`` leaves);
- ``tile/entries/<N>``: entry bundle ``N``, the leaves ``256N .. 256N + 255`` themselves, each
  as a 2-byte big-endian length and the event's exact canonical bytes;
- ``.p/<W>`` after either marks a partial tile holding only the first ``W`` (1..255) of them:
  the right edge of a tree whose size is not a multiple of the tile's span.

``N`` is written in 3-digit groups, all but the last prefixed with ``x`` (1234067 is
``x001/x234/067``). :meth:`Tile.parse` accepts exactly the canonical form and nothing else: no
leading zeros in ``L`` or ``W``, no empty groups, no ``x000`` prefix, no index that no log of
fewer than 2**64 entries could have.

Everything here is pure; :mod:`agentguard.audit._tile_source` computes tiles from a store.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from agentguard.audit._merkle import HASH_SIZE, node_hash, root
from agentguard.errors import AgentGuardError

__all__ = [
    "ENTRIES",
    "MAX_ENTRY_BYTES",
    "TILE_HEIGHT",
    "TILE_WIDTH",
    "Tile",
    "TilePathError",
    "entry_bundle",
    "parse_entry_bundle",
    "root_from_tiles",
    "split_tile",
    "subtree_from_tiles",
    "tile_width",
    "tiles_at",
]

TILE_HEIGHT = 8
TILE_WIDTH = 1 << TILE_HEIGHT
ENTRIES = -1
"""The level of entry bundles (``tile/entries/...``), as Go's tlog numbers its data tiles."""
MAX_LEVEL = 63
MAX_ENTRY_BYTES = 0xFFFF
MAX_LEAVES = 1 << 64
"""No log has this many entries: tiles beyond it are refused as malformed."""

_PATH = re.compile(
    r"tile/(?P<level>entries|0|[1-9][0-9]?)/(?P<index>(?:x[0-9]{3}/){0,6}[0-9]{3})"
    r"(?:\.p/(?P<width>[1-9][0-9]{0,2}))?"
)
_MAX_PATH = 64


class TilePathError(AgentGuardError, ValueError):
    """Not a canonical tlog-tiles path (or not one any log could serve)."""


def _span(level: int) -> int:
    """How many leaves one hash of a level-``level`` tile covers (entry bundles: one)."""
    return 1 << (TILE_HEIGHT * max(level, 0))


def _encode_index(index: int) -> str:
    digits = str(index)
    digits = digits.zfill(-(-len(digits) // 3) * 3)
    groups = [digits[i : i + 3] for i in range(0, len(digits), 3)]
    return "/".join([*(f"x{group}" for group in groups[:-1]), groups[-1]])


@dataclass(frozen=True, slots=True)
class Tile:
    """One tile: ``level`` (:data:`ENTRIES` for an entry bundle), ``index`` and ``width``.

    ``width`` is 256 for a full tile and 1..255 for a partial one.
    """

    level: int
    index: int
    width: int = TILE_WIDTH

    def __post_init__(self) -> None:
        if not (self.level == ENTRIES or 0 <= self.level <= MAX_LEVEL):
            raise TilePathError(f"a tile level is 0..{MAX_LEVEL} (or entries)")
        if not 1 <= self.width <= TILE_WIDTH:
            raise TilePathError(f"a tile's width is 1..{TILE_WIDTH}")
        if self.index < 0 or self.index * TILE_WIDTH * _span(self.level) >= MAX_LEAVES:
            raise TilePathError("the tile index is beyond any log's size")

    @property
    def entries(self) -> bool:
        """Whether this is an entry bundle rather than a hash tile."""
        return self.level == ENTRIES

    @property
    def full(self) -> bool:
        """Whether this tile holds all 256 of its hashes (or entries)."""
        return self.width == TILE_WIDTH

    @property
    def leaves(self) -> tuple[int, int]:
        """The leaves ``[start, stop)`` its ``width`` hashes (or entries) cover."""
        span = _span(self.level)
        start = self.index * TILE_WIDTH * span
        return start, start + self.width * span

    def path(self) -> str:
        """The resource path, e.g. ``tile/0/x001/234`` or ``tile/entries/000.p/7``."""
        level = "entries" if self.entries else str(self.level)
        partial = "" if self.full else f".p/{self.width}"
        return f"tile/{level}/{_encode_index(self.index)}{partial}"

    @classmethod
    def parse(cls, path: str) -> Tile:
        """The tile a canonical path names; :class:`TilePathError` for anything else."""
        if len(path) > _MAX_PATH:
            raise TilePathError("a tile path is at most 64 characters")
        found = _PATH.fullmatch(path)
        if found is None:
            raise TilePathError("not a tile path: tile/<L>/<N>[.p/<W>] or tile/entries/<N>[.p/<W>]")
        level_text, index_text, width_text = found.group("level", "index", "width")
        if index_text.startswith("x000"):
            raise TilePathError("a tile index has no leading zero groups")
        width = TILE_WIDTH if width_text is None else int(width_text)
        if width_text is not None and width >= TILE_WIDTH:
            raise TilePathError("a partial tile's width is 1..255")
        level = ENTRIES if level_text == "entries" else int(level_text)
        return cls(level, int(index_text.replace("x", "").replace("/", "")), width)


def tile_width(size: int, level: int, index: int) -> int:
    """How many hashes (or entries) tile ``index`` of ``level`` has in a tree of ``size``.

    256 for a full tile, 1..255 for the right edge, 0 when the tree has no such tile.
    """
    nodes = size // _span(level) - index * TILE_WIDTH
    return max(0, min(TILE_WIDTH, nodes))


def tiles_at(size: int, *, entries: bool = True) -> Iterator[Tile]:
    """Every tile of the tree of ``size`` leaves: hash tiles level by level, then entry bundles.

    Full tiles first within a level, then its partial tile (if ``size`` leaves one).
    """
    levels = [level for level in range(MAX_LEVEL + 1) if size >= _span(level)]
    for level in [*levels, *([ENTRIES] if entries and size else [])]:
        nodes = size // _span(level)
        for index in range(nodes // TILE_WIDTH):
            yield Tile(level, index)
        if nodes % TILE_WIDTH:
            yield Tile(level, nodes // TILE_WIDTH, nodes % TILE_WIDTH)


def split_tile(data: bytes) -> list[bytes]:
    """The hashes of a hash tile's bytes; ``ValueError`` unless it is 1..256 whole hashes."""
    if not data or len(data) % HASH_SIZE or len(data) > TILE_WIDTH * HASH_SIZE:
        raise ValueError("a hash tile is 1 to 256 hashes of 32 bytes")
    return [data[i : i + HASH_SIZE] for i in range(0, len(data), HASH_SIZE)]


def entry_bundle(bodies: Sequence[bytes]) -> bytes:
    """An entry bundle: each body as a 2-byte big-endian length, then its bytes."""
    parts: list[bytes] = []
    for body in bodies:
        if len(body) > MAX_ENTRY_BYTES:
            raise ValueError(f"an entry of {len(body)} bytes does not fit an entry bundle")
        parts += (len(body).to_bytes(2, "big"), body)
    return b"".join(parts)


def parse_entry_bundle(data: bytes) -> list[bytes]:
    """The entries of a bundle; ``ValueError`` for a truncated one."""
    found: list[bytes] = []
    at = 0
    while at < len(data):
        if at + 2 > len(data):
            raise ValueError("the entry bundle ends inside a length")
        length = int.from_bytes(data[at : at + 2], "big")
        at += 2
        if at + length > len(data):
            raise ValueError("the entry bundle ends inside an entry")
        found.append(data[at : at + length])
        at += length
    return found


ReadTile = Callable[[Tile], bytes]
"""``read(tile)``: the bytes of a hash tile (full, or the partial of the tree being read)."""


def subtree_from_tiles(read: ReadTile, size: int) -> Callable[[int, int], bytes]:
    """``subtree(lo, hi)``: the tree hash of leaves ``lo .. hi - 1`` read from the tiles of a
    tree of ``size`` (for :func:`~agentguard.audit._merkle.inclusion_path` and friends).

    ``lo`` must be a multiple of the largest power of two below ``hi - lo`` (RFC 6962 splits
    give nothing else). A perfect subtree of ``2**(8L + r)`` leaves is the root of ``2**r``
    consecutive hashes of a level-``L`` tile.
    """
    cache: dict[tuple[int, int], list[bytes]] = {}

    def hashes(level: int, index: int) -> list[bytes]:
        key = (level, index)
        if key not in cache:
            cache[key] = split_tile(read(Tile(level, index, tile_width(size, level, index))))
        return cache[key]

    def perfect(lo: int, count: int) -> bytes:
        height = count.bit_length() - 1
        level = height // TILE_HEIGHT
        first = lo >> (TILE_HEIGHT * level)
        step = 1 << (height - TILE_HEIGHT * level)
        tile = hashes(level, first // TILE_WIDTH)[first % TILE_WIDTH :][:step]
        if len(tile) != step:
            raise ValueError("a tile is shorter than the tree of its size needs")
        return root(tile)

    def subtree(lo: int, hi: int) -> bytes:
        count = hi - lo
        if count & (count - 1) == 0:
            return perfect(lo, count)
        split = 1 << ((count - 1).bit_length() - 1)
        return node_hash(perfect(lo, split), subtree(lo + split, hi))

    return subtree


def root_from_tiles(read: ReadTile, size: int) -> bytes:
    """The root of the tree of ``size`` leaves, computed from its hash tiles alone."""
    if size == 0:
        return root([])
    return subtree_from_tiles(read, size)(0, size)
