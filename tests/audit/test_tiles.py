"""Tile paths, tile contents and entry bundles, against our own Merkle tree as the oracle."""

from __future__ import annotations

import hashlib
import os
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentguard.audit._merkle import inclusion_path, inclusion_proof, root, verify_inclusion
from agentguard.audit._tiles import (
    ENTRIES,
    MAX_LEVEL,
    TILE_WIDTH,
    Tile,
    TilePathError,
    entry_bundle,
    parse_entry_bundle,
    root_from_tiles,
    split_tile,
    subtree_from_tiles,
    tile_width,
    tiles_at,
)

CANONICAL = re.compile(
    r"tile/(entries|0|[1-9][0-9]?)/((x[0-9]{3}/)*[0-9]{3})(\.p/([1-9][0-9]{0,2}))?"
)


def leaf(n: int) -> bytes:
    return hashlib.sha256(b"\x00" + n.to_bytes(8, "big")).digest()


def materialise(leaves: list[bytes]) -> dict[Tile, bytes]:
    """The hash tiles of a tree, straight from the definition (an independent oracle):
    hash i of tile (L, N) is the root of leaves [(256N + i) * 256**L, ... + 256**L)."""
    size = len(leaves)
    tiles: dict[Tile, bytes] = {}
    level = 0
    while size >= TILE_WIDTH**level:
        span = TILE_WIDTH**level
        nodes = [root(leaves[k * span : (k + 1) * span]) for k in range(size // span)]
        for index in range(-(-len(nodes) // TILE_WIDTH)):
            chunk = nodes[index * TILE_WIDTH : (index + 1) * TILE_WIDTH]
            tiles[Tile(level, index, len(chunk))] = b"".join(chunk)
        level += 1
    return tiles


# -- paths -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "tile"),
    [
        ("tile/0/000", Tile(0, 0)),
        ("tile/0/x001/x234/067", Tile(0, 1234067)),
        ("tile/1/999.p/255", Tile(1, 999, 255)),
        ("tile/entries/x001/000.p/1", Tile(ENTRIES, 1000, 1)),
        ("tile/7/000", Tile(7, 0)),
        ("tile/0/x072/x057/x594/x037/x927/935", Tile(0, (1 << 56) - 1)),
    ],
)
def test_paths_parse_and_print_back(path: str, tile: Tile) -> None:
    assert Tile.parse(path) == tile
    assert tile.path() == path


@pytest.mark.parametrize(
    "path",
    [
        "tile/00/000", "tile/01/000", "tile/0/1", "tile/0/0000", "tile/0/x000/001",
        "tile/0/x1/000", "tile/0/001/", "tile//000", "tile/0/000.p/0", "tile/0/000.p/256",
        "tile/0/000.p/007", "tile/0/000.p/", "tile/0/000.p", "tile/-1/000", "tile/64/000",
        "tile/data/000", "tile/entries/000.p/300", "tile/0/X001/000", "tile/0/x001/x002",
        "tile/0/x072/x057/x594/x037/x927/936", "tile/1/x281/x474/x976/x710/656",
        "tile/7/001", "tile/0/x001/x002/x003/x004/x005/x006/x007/008", "tile/0/ 000",
        "tile/0/000\n", "tile/0/\u0660\u0660\u0660", "/tile/0/000", "tile/0/000/x001",
        "tile/entries", "tile/0", "checkpoint", "tile/0/" + "x000/" * 30 + "001",
    ],
)  # fmt: skip
def test_non_canonical_or_impossible_paths_are_refused(path: str) -> None:
    with pytest.raises(TilePathError):
        Tile.parse(path)


@st.composite
def tiles_strategy(draw: st.DrawFn) -> Tile:
    level = draw(st.one_of(st.just(ENTRIES), st.integers(0, 7)))
    last = (1 << 64) // (TILE_WIDTH * TILE_WIDTH ** max(level, 0)) - 1
    index = draw(st.one_of(st.integers(0, min(1000, last)), st.integers(0, last), st.just(last)))
    width = draw(st.one_of(st.just(TILE_WIDTH), st.integers(1, 255)))
    return Tile(level, index, width)


@given(tiles_strategy())
def test_every_tile_round_trips_through_its_path(tile: Tile) -> None:
    assert Tile.parse(tile.path()) == tile
    assert CANONICAL.fullmatch(tile.path())


@given(st.text(alphabet="tile/entrsx0123456789.p", max_size=60))
@settings(max_examples=2000)
def test_the_parser_accepts_only_what_prints_back_identically(path: str) -> None:
    try:
        tile = Tile.parse(path)
    except TilePathError:
        return
    assert tile.path() == path


@given(st.text(max_size=80))
def test_junk_is_refused_with_a_path_error_only(path: str) -> None:
    try:
        tile = Tile.parse(path)
    except TilePathError:
        return
    assert tile.path() == path


def test_levels_and_indexes_beyond_any_log_are_refused_even_when_built_directly() -> None:
    with pytest.raises(TilePathError):
        Tile(MAX_LEVEL + 1, 0)
    with pytest.raises(TilePathError):
        Tile(0, 1 << 56)
    with pytest.raises(TilePathError):
        Tile(0, 0, 0)
    with pytest.raises(TilePathError):
        Tile(0, -1)


# -- contents ----------------------------------------------------------------------------------


@given(st.integers(0, 70_000))
@settings(max_examples=60, deadline=None)
def test_tiles_at_lists_exactly_the_tiles_of_a_tree(size: int) -> None:
    listed = list(tiles_at(size))
    assert len(set(listed)) == len(listed)
    for tile in listed:
        level = 0 if tile.entries else tile.level
        assert tile_width(size, level, tile.index) == tile.width
        assert tile.leaves[1] <= size
    hashes = [t for t in listed if not t.entries]
    assert sum(t.width for t in hashes if t.level == 0) == size
    assert sum(t.width for t in listed if t.entries) == size
    widths = {t.level: 0 for t in hashes}
    for t in hashes:
        widths[t.level] += t.width
    assert widths == {lv: size // TILE_WIDTH**lv for lv in widths}


@given(st.integers(1, 3000), st.data())
@settings(max_examples=40, deadline=None)
def test_root_and_proofs_from_tiles_equal_the_merkle_oracle(size: int, data: st.DataObject) -> None:
    leaves = [leaf(n) for n in range(size)]
    tiles = materialise(leaves)
    assert set(tiles) == set(tiles_at(size, entries=False))
    assert root_from_tiles(tiles.__getitem__, size) == root(leaves)
    index = data.draw(st.integers(0, size - 1))
    path = inclusion_path(subtree_from_tiles(tiles.__getitem__, size), index, size)
    assert path == inclusion_proof(leaves, index, size)
    assert verify_inclusion(leaves[index], index, size, path, root(leaves))


def test_root_from_tiles_of_a_two_level_tree() -> None:
    size = TILE_WIDTH**2 + 3 * TILE_WIDTH + 5
    leaves = [leaf(n) for n in range(size)]
    tiles = materialise(leaves)
    assert Tile(2, 0, 1) in tiles and Tile(1, 1, 3) in tiles and Tile(0, 259, 5) in tiles
    assert root_from_tiles(tiles.__getitem__, size) == root(leaves)


def test_a_tampered_tile_breaks_the_root_or_the_proofs_through_it() -> None:
    leaves = [leaf(n) for n in range(600)]
    good = materialise(leaves)
    tiles = dict(good)
    bad = bytearray(tiles[Tile(1, 0, 2)])
    bad[40] ^= 1
    tiles[Tile(1, 0, 2)] = bytes(bad)
    assert root_from_tiles(tiles.__getitem__, 600) != root(leaves)
    tiles = dict(good)
    bad = bytearray(tiles[Tile(0, 1)])
    bad[40] ^= 1  # leaf 257's hash
    tiles[Tile(0, 1)] = bytes(bad)
    claimed = split_tile(tiles[Tile(0, 1)])[1]
    path = inclusion_path(subtree_from_tiles(tiles.__getitem__, 600), 257, 600)
    assert not verify_inclusion(claimed, 257, 600, path, root(leaves))


@given(st.lists(st.binary(max_size=300), max_size=40))
def test_entry_bundles_round_trip(bodies: list[bytes]) -> None:
    bundle = entry_bundle(bodies)
    assert parse_entry_bundle(bundle) == bodies
    assert len(bundle) == sum(2 + len(b) for b in bodies)


@given(st.binary(max_size=200))
def test_truncated_bundles_are_refused_never_misread(data: bytes) -> None:
    try:
        found = parse_entry_bundle(data)
    except ValueError:
        return
    assert entry_bundle(found) == data


def test_an_entry_too_large_for_a_bundle_is_refused() -> None:
    assert parse_entry_bundle(entry_bundle([b"x" * 0xFFFF])) == [b"x" * 0xFFFF]
    with pytest.raises(ValueError, match="does not fit"):
        entry_bundle([b"x" * 0x10000])


def test_split_tile_refuses_ragged_tiles() -> None:
    assert split_tile(os.urandom(64)) and len(split_tile(bytes(32 * 256))) == 256
    for bad in (b"", bytes(31), bytes(33), bytes(32 * 257)):
        with pytest.raises(ValueError):
            split_tile(bad)
