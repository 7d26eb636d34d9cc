"""RFC 6962 Merkle tree: known-answer vectors, a recursive reference, and proof properties."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentguard.audit import leaf_hash
from agentguard.audit._merkle import (
    EMPTY_ROOT,
    CompactRange,
    consistency_proof,
    inclusion_proof,
    node_hash,
    root,
    verify_consistency,
    verify_inclusion,
)

# The certificate-transparency / transparency-dev test tree: eight leaves, its roots at every
# size, and published audit paths and consistency proofs.
LEAVES = [
    b"",
    b"\x00",
    b"\x10",
    b"\x20\x21",
    b"\x30\x31",
    b"\x40\x41\x42\x43",
    b"\x50\x51\x52\x53\x54\x55\x56\x57",
    bytes(range(0x60, 0x70)),
]
ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
INCLUSION = [
    (0, 1, []),
    (
        0,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        5,
        8,
        [
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (
        1,
        5,
        [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
]
CONSISTENCY = [
    (1, 1, []),
    (
        1,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        5,
        [
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
]
HASHES = [leaf_hash(leaf) for leaf in LEAVES]


def reference_root(leaves: list[bytes]) -> bytes:
    """MTH exactly as RFC 6962 §2.1 defines it, recursively."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return leaves[0]
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return node_hash(reference_root(leaves[:k]), reference_root(leaves[k:]))


def reference_root_from_path(leaf: bytes, m: int, n: int, path: list[bytes]) -> bytes | None:
    """The root an audit path implies, by RFC 6962 §2.1.1's recursion (None: wrong shape)."""
    if not 0 <= m < n:
        return None
    if n == 1:
        return leaf if not path else None
    if not path:
        return None
    k = 1
    while k * 2 < n:
        k *= 2
    if m < k:
        left = reference_root_from_path(leaf, m, k, path[:-1])
        return None if left is None else node_hash(left, path[-1])
    right = reference_root_from_path(leaf, m - k, n - k, path[:-1])
    return None if right is None else node_hash(path[-1], right)


def reference_consistent(
    m: int, n: int, old_root: bytes, new_root: bytes, proof: list[bytes]
) -> bool:
    """Whether ``proof`` is SUBPROOF(m, D[n], true) of RFC 6962 §2.1.2 for the two roots."""

    def implied(m: int, n: int, full: bool, proof: list[bytes]) -> tuple[bytes, bytes] | None:
        if m == n:
            if full:
                return (old_root, old_root) if not proof else None
            return (proof[0], proof[0]) if len(proof) == 1 else None
        if not proof:
            return None
        k = 1
        while k * 2 < n:
            k *= 2
        if m <= k:
            sub = implied(m, k, full, proof[:-1])
            return None if sub is None else (sub[0], node_hash(sub[1], proof[-1]))
        sub = implied(m - k, n - k, False, proof[:-1])
        if sub is None:
            return None
        return node_hash(proof[-1], sub[0]), node_hash(proof[-1], sub[1])

    if not 0 < m <= n:
        empty_ok = n > 0 or new_root == EMPTY_ROOT
        return m == 0 and not proof and old_root == EMPTY_ROOT and empty_ok
    return implied(m, n, True, proof) == (old_root, new_root)


def hashes(n: int) -> list[bytes]:
    return [hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(n)]


def flip(digest: bytes, bit: int = 0) -> bytes:
    return bytes([digest[0] ^ (1 << bit)]) + digest[1:]


def test_empty_tree_root_is_sha256_of_nothing() -> None:
    assert root([]) == EMPTY_ROOT == hashlib.sha256(b"").digest()
    assert CompactRange().root() == EMPTY_ROOT


@pytest.mark.parametrize("size", range(1, 9))
def test_roots_match_the_ct_vectors(size: int) -> None:
    assert root(HASHES[:size]).hex() == ROOTS[size - 1]
    compact = CompactRange()
    compact.extend(HASHES[:size])
    assert compact.root().hex() == ROOTS[size - 1]


@pytest.mark.parametrize(("index", "size", "path"), INCLUSION)
def test_inclusion_proofs_match_the_ct_vectors(index: int, size: int, path: list[str]) -> None:
    proof = inclusion_proof(HASHES, index, size)
    assert [p.hex() for p in proof] == path
    assert verify_inclusion(HASHES[index], index, size, proof, bytes.fromhex(ROOTS[size - 1]))


@pytest.mark.parametrize(("old", "new", "expected"), CONSISTENCY)
def test_consistency_proofs_match_the_ct_vectors(old: int, new: int, expected: list[str]) -> None:
    proof = consistency_proof(HASHES, old, new)
    assert [p.hex() for p in proof] == expected
    old_root, new_root = bytes.fromhex(ROOTS[old - 1]), bytes.fromhex(ROOTS[new - 1])
    assert verify_consistency(old, new, old_root, new_root, proof)


def test_consistency_against_the_wrong_new_root_fails() -> None:
    proof = consistency_proof(HASHES, 3, 7)
    old_root = bytes.fromhex(ROOTS[2])
    assert not verify_consistency(3, 7, old_root, bytes.fromhex(ROOTS[5]), proof)


def test_proof_generation_rejects_out_of_range_arguments() -> None:
    with pytest.raises(ValueError, match="index"):
        inclusion_proof(HASHES, 3, 3)
    with pytest.raises(ValueError, match="size"):
        inclusion_proof(HASHES, 0, 9)
    with pytest.raises(ValueError, match="old size"):
        consistency_proof(HASHES, 5, 4)


def test_compact_range_round_trips_through_its_peaks() -> None:
    compact = CompactRange()
    compact.extend(hashes(11))
    restored = CompactRange.from_peaks(compact.size, compact.peaks)
    assert len(compact.peaks) == 3  # 11 = 8 + 2 + 1
    restored.append(b"\x07" * 32)
    compact.append(b"\x07" * 32)
    assert restored.root() == compact.root() == root([*hashes(11), b"\x07" * 32])
    with pytest.raises(ValueError, match="peak"):
        CompactRange.from_peaks(11, compact.peaks[:2])


@settings(max_examples=200)
@given(st.integers(min_value=0, max_value=300))
def test_accumulator_root_equals_the_recursive_root(n: int) -> None:
    leaves = hashes(n)
    compact = CompactRange()
    for i, leaf in enumerate(leaves, start=1):
        compact.append(leaf)
        if i in (1, n // 2, n):
            assert compact.root() == reference_root(leaves[:i])
    assert root(leaves) == reference_root(leaves) == compact.root()


@given(st.lists(st.binary(min_size=32, max_size=32), max_size=40))
def test_accumulator_root_equals_the_recursive_root_for_any_leaves(leaves: list[bytes]) -> None:
    compact = CompactRange()
    compact.extend(leaves)
    assert compact.root() == root(leaves) == reference_root(leaves)
    assert compact.copy().root() == compact.root()


@settings(max_examples=200)
@given(
    st.integers(min_value=0, max_value=70),
    st.lists(st.integers(min_value=0, max_value=40), max_size=6),
)
def test_extend_in_any_chunks_builds_the_tree_append_builds(start: int, chunks: list[int]) -> None:
    """``extend`` (a level at a time) and ``append`` (a leaf at a time) keep the same peaks."""
    leaves = hashes(start + sum(chunks))
    by_leaf, by_chunk = CompactRange(), CompactRange()
    by_chunk.extend(leaves[:start])
    done = start
    for leaf in leaves[:start]:
        by_leaf.append(leaf)
    for chunk in chunks:
        by_chunk.extend(iter(leaves[done : done + chunk]))
        for leaf in leaves[done : done + chunk]:
            by_leaf.append(leaf)
        done += chunk
        assert (by_chunk.size, by_chunk.peaks) == (by_leaf.size, by_leaf.peaks)
    assert by_chunk.root() == root(leaves)


@st.composite
def index_and_size(draw: st.DrawFn) -> tuple[int, int]:
    size = draw(st.integers(min_value=1, max_value=130))
    return draw(st.integers(min_value=0, max_value=size - 1)), size


@settings(max_examples=300)
@given(index_and_size(), st.data())
def test_inclusion_proof_verifies_and_every_alteration_fails(
    case: tuple[int, int], data: st.DataObject
) -> None:
    index, size = case
    leaves = hashes(size)
    tree_root = root(leaves)
    proof = inclusion_proof(leaves, index, size)
    assert verify_inclusion(leaves[index], index, size, proof, tree_root)
    assert not verify_inclusion(flip(leaves[index]), index, size, proof, tree_root)
    assert not verify_inclusion(leaves[index], index, size, proof, flip(tree_root))
    for position in range(len(proof)):
        bit = data.draw(st.integers(min_value=0, max_value=7))
        altered = [*proof[:position], flip(proof[position], bit), *proof[position + 1 :]]
        assert not verify_inclusion(leaves[index], index, size, altered, tree_root)
    # A different index or size verifies only where RFC 6962 says the same path proves it
    # (leaf 0 of a 3-tree and of a 4-tree share a path shape): the reference decides.
    for other, other_size in {
        (index - 1, size),
        (index + 1, size),
        (index + size, size),
        (index, size - 1),
        (index, size + 1),
        (index, 2 * size),
    }:
        implied = reference_root_from_path(leaves[index], other, other_size, proof)
        expected = implied == tree_root
        assert verify_inclusion(leaves[index], other, other_size, proof, tree_root) is expected
    if index > 0 or size > 1:
        assert not verify_inclusion(leaves[index], index + 1, size, proof, tree_root)
    assert not verify_inclusion(leaves[index], index, size, [*proof, tree_root], tree_root)
    if proof:
        assert not verify_inclusion(leaves[index], index, size, proof[:-1], tree_root)
        assert not verify_inclusion(leaves[index], index, size, proof[1:], tree_root)
        short = [proof[0][:31], *proof[1:]]
        assert not verify_inclusion(leaves[index], index, size, short, tree_root)


@st.composite
def old_and_new(draw: st.DrawFn) -> tuple[int, int]:
    new = draw(st.integers(min_value=1, max_value=130))
    return draw(st.integers(min_value=0, max_value=new)), new


@settings(max_examples=300)
@given(old_and_new(), st.data())
def test_consistency_proof_verifies_and_every_alteration_fails(
    case: tuple[int, int], data: st.DataObject
) -> None:
    old, new = case
    leaves = hashes(new + 1)
    old_root, new_root = root(leaves[:old]), root(leaves[:new])
    proof = consistency_proof(leaves, old, new)
    assert verify_consistency(old, new, old_root, new_root, proof)
    assert not verify_consistency(old, new, flip(old_root), new_root, proof)
    if old > 0:  # the empty tree is a prefix of every tree
        assert not verify_consistency(old, new, old_root, flip(new_root), proof)
    for position in range(len(proof)):
        bit = data.draw(st.integers(min_value=0, max_value=7))
        altered = [*proof[:position], flip(proof[position], bit), *proof[position + 1 :]]
        assert not verify_consistency(old, new, old_root, new_root, altered)
    assert reference_consistent(old, new, old_root, new_root, proof)
    # Other sizes verify only where RFC 6962 says the same proof proves them: the reference
    # decides (a proof from 4 to 5 leaves also proves 4 to 6 for these two roots).
    for other_old, other_new in {(old - 1, new), (old + 1, new), (old, new + 1), (old, new - 1)}:
        if 0 <= other_old <= other_new:
            expected = reference_consistent(other_old, other_new, old_root, new_root, proof)
            got = verify_consistency(other_old, other_new, old_root, new_root, proof)
            assert got is expected
    assert not verify_consistency(old, new, old_root, new_root, [*proof, new_root])
    if proof:
        assert not verify_consistency(old, new, old_root, new_root, proof[:-1])
        assert not verify_consistency(old, new, old_root, new_root, proof[1:])


def test_size_mismatched_consistency_is_refused() -> None:
    leaves = hashes(8)
    assert not verify_consistency(5, 4, root(leaves[:5]), root(leaves[:4]), [])
    assert not verify_consistency(0, 4, b"\x00" * 32, root(leaves[:4]), [])
    assert verify_consistency(0, 4, EMPTY_ROOT, root(leaves[:4]), [])
    assert verify_consistency(4, 4, root(leaves[:4]), root(leaves[:4]), [])
    assert not verify_consistency(4, 4, root(leaves[:4]), root(leaves[:4]), [root(leaves)])
