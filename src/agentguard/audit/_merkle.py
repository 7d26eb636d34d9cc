"""The RFC 6962 / RFC 9162 Merkle tree over audit events: roots, proofs and their verifiers.

Leaves are event hashes, ``SHA-256(0x00 || canonical_bytes)`` (:func:`~agentguard.audit._chain.
leaf_hash`); interior nodes are ``SHA-256(0x01 || left || right)``. The tree over ``n`` leaves
splits at the largest power of two below ``n`` (RFC 6962 §2.1), so any tlog tooling computes the
same roots and checks the same proofs.

Everything here is pure and storage-independent. Proof generation takes the leaf hashes of the
tree (O(n) work); :class:`CompactRange` keeps the O(log n) state a writer needs to produce a root
after every append. The verifiers follow RFC 9162 §2.1.3.2 and §2.1.4.2 and also check the exact
proof length and every hash's length first: a proof one hash too long or too short is refused,
never "verified" by a lucky loop.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "CompactRange",
    "consistency_path",
    "consistency_proof",
    "inclusion_path",
    "inclusion_proof",
    "node_hash",
    "perfect_root",
    "root",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()
"""The root of the empty tree: SHA-256 of the empty string."""

_sha256 = hashlib.sha256

Subtree = Callable[[int, int], bytes]
"""``subtree(lo, hi)``: the tree hash over leaves ``lo .. hi - 1`` (an aligned subtree)."""


def node_hash(left: bytes, right: bytes) -> bytes:
    """The interior node over ``left`` and ``right``: ``SHA-256(0x01 || left || right)``."""
    return _sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two strictly below ``n`` (``n >= 2``)."""
    return 1 << ((n - 1).bit_length() - 1)


def root(leaves: Sequence[bytes]) -> bytes:
    """The Merkle tree hash (MTH) over ``leaves``, which are leaf hashes, not event bytes.

    Folds level by level, promoting an odd last node unchanged: the same tree as RFC 6962's
    recursive definition, without recursion.
    """
    if not leaves:
        return EMPTY_ROOT
    level = list(leaves)
    while len(level) > 1:
        odd = len(level) % 2
        paired = _parents(level[: len(level) - odd])
        if odd:
            paired.append(level[-1])
        level = paired
    return level[0]


class CompactRange:
    """An append-only Merkle accumulator holding one hash per set bit of the size (≤ 64).

    ``peaks`` are the roots of the perfect subtrees that make up the tree, largest (leftmost)
    first. A store keeps ``(size, peaks)`` in its head row and restores it with
    :meth:`from_peaks`, so producing a checkpoint never rereads the log.
    """

    __slots__ = ("_peaks", "_size")

    def __init__(self) -> None:
        self._size = 0
        self._peaks: list[bytes] = []

    @classmethod
    def from_peaks(cls, size: int, peaks: Sequence[bytes]) -> CompactRange:
        """Restore a range saved as ``(size, peaks)``; raises ``ValueError`` if they disagree."""
        if size < 0 or len(peaks) != size.bit_count():
            raise ValueError("a compact range needs one peak per set bit of its size")
        if any(len(peak) != HASH_SIZE for peak in peaks):
            raise ValueError("every peak must be a 32-byte hash")
        compact = cls()
        compact._size = size
        compact._peaks = list(peaks)
        return compact

    @property
    def size(self) -> int:
        """How many leaves have been appended."""
        return self._size

    @property
    def peaks(self) -> tuple[bytes, ...]:
        """The perfect-subtree roots, largest first."""
        return tuple(self._peaks)

    def append(self, leaf: bytes) -> None:
        """Add one leaf hash; amortised one node hash per append."""
        self._push(leaf, 1)

    def extend(self, leaves: Iterable[bytes]) -> None:
        """Append each of ``leaves`` in order: the tree of :meth:`append`, a level at a time.

        At each level the new nodes, after the peak to their left if that level has one, pair
        up into the next level's; an odd last node is that level's new peak.
        """
        nodes = list(leaves)
        peaks, start = self._peaks, self._size
        self._size = start + len(nodes)
        new_peaks: list[bytes] = []  # lowest level first
        while nodes:
            if start & 1:  # this level's peak is the left sibling of the first new node
                nodes.insert(0, peaks.pop())
            if len(nodes) & 1:
                new_peaks.append(nodes.pop())
            nodes = _parents(nodes)
            start >>= 1
        peaks.extend(reversed(new_peaks))

    def push_subtree(self, node: bytes, count: int) -> None:
        """Append ``count`` leaves given as the root ``node`` of their perfect subtree.

        ``count`` is a power of two and the size so far a multiple of it: the subtree is then
        a node of the tree :meth:`extend` would build over the same leaves, one level above
        ``log2(count)``'s leaves, so the result is the same.
        """
        if count < 1 or count & (count - 1) or self._size % count:
            raise ValueError(
                f"a subtree of {count} leaves cannot follow {self._size} (a power of two, "
                "after a multiple of it)"
            )
        if len(node) != HASH_SIZE:
            raise ValueError("a subtree root is a 32-byte hash")
        self._push(node, count)

    def _push(self, node: bytes, count: int) -> None:
        """Append the perfect subtree of ``count`` leaves rooted at ``node`` (checked by the
        caller), merging it with the peaks to its left while they are of its height."""
        peaks = self._peaks
        peaks.append(node)
        self._size += count
        level = self._size // count
        while not level & 1:
            right = peaks.pop()
            peaks[-1] = _sha256(b"\x01" + peaks[-1] + right).digest()
            level >>= 1

    def root(self) -> bytes:
        """The tree hash over everything appended so far."""
        peaks = self._peaks
        if not peaks:
            return EMPTY_ROOT
        digest = peaks[-1]
        for peak in reversed(peaks[:-1]):
            digest = _sha256(b"\x01" + peak + digest).digest()
        return digest

    def copy(self) -> CompactRange:
        """An independent copy (to compute a root "as of now" while appending continues)."""
        return CompactRange.from_peaks(self._size, self._peaks)

    def __repr__(self) -> str:
        return f"CompactRange(size={self._size}, root={self.root().hex()[:16]}…)"


_INTERIOR = _sha256(b"\x01")  # copied per node: cheaper than starting a hash afresh


def _parents(nodes: list[bytes]) -> list[bytes]:
    """The node hashes over ``nodes`` paired left to right (an even number of them)."""
    parents: list[bytes] = []
    fresh, append = _INTERIOR.copy, parents.append
    for left, right in zip(nodes[0::2], nodes[1::2], strict=True):
        digest = fresh()
        digest.update(left)
        digest.update(right)
        append(digest.digest())
    return parents


def perfect_root(leaves: list[bytes]) -> bytes:
    """The root of a power-of-two number of leaf hashes (their perfect subtree)."""
    count = len(leaves)
    if count < 1 or count & (count - 1):
        raise ValueError(f"{count} leaves do not make a perfect subtree")
    return root(leaves)


def _check_leaves(leaves: Sequence[bytes], size: int) -> None:
    if not 0 <= size <= len(leaves):
        raise ValueError(f"tree size {size} is outside the {len(leaves)} leaves given")


def inclusion_proof(leaves: Sequence[bytes], index: int, size: int) -> list[bytes]:
    """The audit path (RFC 6962 §2.1.1) for leaf ``index`` in the tree of the first ``size``.

    Hashes are ordered from the leaf's sibling up to the root's child.
    """
    _check_leaves(leaves, size)
    return inclusion_path(lambda lo, hi: root(leaves[lo:hi]), index, size)


def inclusion_path(subtree: Subtree, index: int, size: int) -> list[bytes]:
    """:func:`inclusion_proof` with ``subtree(lo, hi)`` giving the tree hash of leaves lo..hi-1.

    For trees whose leaves are not all at hand (an archived prefix kept as its peaks).
    """
    if not 0 <= index < size:
        raise ValueError(f"leaf index {index} is not in a tree of size {size}")
    path: list[bytes] = []
    lo, hi, m = 0, size, index
    while hi - lo > 1:
        k = _split(hi - lo)
        if m < k:
            path.append(subtree(lo + k, hi))
            hi = lo + k
        else:
            path.append(subtree(lo, lo + k))
            lo, m = lo + k, m - k
    path.reverse()
    return path


def consistency_proof(leaves: Sequence[bytes], old_size: int, new_size: int) -> list[bytes]:
    """The proof (RFC 6962 §2.1.2) that the tree of ``old_size`` is a prefix of ``new_size``.

    Empty when ``old_size`` is 0 or equals ``new_size``.
    """
    _check_leaves(leaves, new_size)
    return consistency_path(lambda lo, hi: root(leaves[lo:hi]), old_size, new_size)


def consistency_path(subtree: Subtree, old_size: int, new_size: int) -> list[bytes]:
    """:func:`consistency_proof` with ``subtree(lo, hi)`` giving the tree hash of lo..hi-1."""
    if not 0 <= old_size <= new_size:
        raise ValueError(f"old size {old_size} is not between 0 and {new_size}")
    if old_size in (0, new_size):
        return []
    proof: list[bytes] = []
    lo, hi, m, complete = 0, new_size, old_size, True
    while m != hi - lo:
        k = _split(hi - lo)
        if m <= k:
            proof.append(subtree(lo + k, hi))
            hi = lo + k
        else:
            proof.append(subtree(lo, lo + k))
            lo, m, complete = lo + k, m - k, False
    if not complete:
        proof.append(subtree(lo, hi))
    proof.reverse()
    return proof


def _inclusion_length(index: int, size: int) -> int:
    """The exact number of hashes in the audit path of ``index`` in a tree of ``size``."""
    inner = (index ^ (size - 1)).bit_length()
    return inner + (index >> inner).bit_count()


def _well_formed(proof: Sequence[bytes], length: int) -> bool:
    return len(proof) == length and all(
        isinstance(item, bytes) and len(item) == HASH_SIZE for item in proof
    )


def verify_inclusion(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> bool:
    """Whether ``proof`` shows leaf hash ``leaf`` at ``index`` in the tree of ``size``/``root``.

    RFC 9162 §2.1.3.2, after checking that the proof has exactly the expected length.
    """
    if not 0 <= index < size or len(leaf) != HASH_SIZE:
        return False
    if not _well_formed(proof, _inclusion_length(index, size)):
        return False
    fn, sn, digest = index, size - 1, leaf
    for sibling in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            digest = node_hash(sibling, digest)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            digest = node_hash(digest, sibling)
        fn >>= 1
        sn >>= 1
    return sn == 0 and digest == root


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> bool:
    """Whether ``proof`` shows the tree ``(old_size, old_root)`` is a prefix of the new one.

    RFC 9162 §2.1.4.2, after checking the exact proof length. Equal sizes need an empty proof
    and equal roots; old size 0 needs an empty proof and the empty-tree root.
    """
    if not 0 <= old_size <= new_size:
        return False
    if old_size == new_size:
        return not proof and old_root == new_root and len(old_root) == HASH_SIZE
    if old_size == 0:
        return not proof and old_root == EMPTY_ROOT
    shift = (old_size & -old_size).bit_length() - 1
    exact_power = old_size == 1 << shift
    expected = _inclusion_length(old_size - 1, new_size) - shift + (0 if exact_power else 1)
    if not _well_formed(proof, expected):
        return False
    path = [old_root, *proof] if exact_power else list(proof)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for node in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(node, fr)
            sr = node_hash(node, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, node)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == old_root and sr == new_root
