"""What a log keeps of a prefix it archived: the tree hashes that still prove the kept tail.

After ``agentguard audit archive`` drops events ``[0, n)`` from the store, the store keeps an
:class:`ArchivedPrefix` instead:

- the RFC 6962 compact range (peaks) of the first ``n`` leaves, so every later root, inclusion
  proof and checkpoint of the tail is computed exactly as if the prefix were still there;
- the hash of event ``n - 1`` (which event ``n`` names as ``prev``) with its inclusion proof in
  the tree of size ``n``, so the chain link into the tail is proven by the peaks, not trusted;
- consistency proofs from every signed checkpoint size ``m < n`` the archiver knew to ``n``, so
  a verifier holding an older checkpoint still proves the log extends it;
- for a log archived more than once, one :class:`Boundary` per archive, each proven consistent
  with the one before.

Nothing here is trusted on its own: :func:`check_prefix` verifies every hash against the roots
the peaks give, and the peaks are bound to the signed checkpoints (a checkpoint at ``n`` must
equal their root; any later checkpoint's root is computed from them plus the tail).
"""

from __future__ import annotations

import base64
import binascii
import itertools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from agentguard.audit._merkle import (
    HASH_SIZE,
    CompactRange,
    consistency_path,
    inclusion_path,
    node_hash,
    root,
    verify_consistency,
    verify_inclusion,
)

__all__ = ["ArchivedPrefix", "Boundary", "PrefixCheck", "check_prefix", "extend_prefix"]

FORMAT = "agentguard-archived-prefix/v1"
_TILE = 256


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode("ascii")


def _hash(text: object) -> bytes:
    if not isinstance(text, str):
        raise ValueError("a hash is a base64 string")
    try:
        digest = base64.b64decode(text, validate=True)
    except binascii.Error:
        raise ValueError("a hash is not valid base64") from None
    if len(digest) != HASH_SIZE:
        raise ValueError("a hash is not 32 bytes")
    return digest


def _hashes(items: object) -> tuple[bytes, ...]:
    if not isinstance(items, list):
        raise ValueError("a proof is a list of hashes")
    return tuple(_hash(item) for item in items)


def _size(value: object) -> int:
    if type(value) is not int or value < 0:
        raise ValueError("a size is a non-negative integer")
    return value


@dataclass(frozen=True, slots=True)
class Boundary:
    """One archive point: the compact range at ``size`` and the proofs that lead to it.

    Attributes:
        size: how many events the log had dropped when this archive was made.
        peaks: the compact range of the first ``size`` leaves.
        link: consistency proof from the previous boundary's size (empty for the first).
        proofs: consistency proofs to ``size`` from signed checkpoint sizes between the previous
            boundary and this one, by size.
    """

    size: int
    peaks: tuple[bytes, ...]
    link: tuple[bytes, ...] = ()
    proofs: Mapping[int, tuple[bytes, ...]] = field(default_factory=dict)

    def root(self) -> bytes:
        """The Merkle root of the first ``size`` leaves (``ValueError`` if the peaks are bad)."""
        return CompactRange.from_peaks(self.size, self.peaks).root()

    def to_dict(self) -> dict[str, object]:
        return {
            "size": self.size,
            "peaks": [_b64(p) for p in self.peaks],
            "link": [_b64(p) for p in self.link],
            "proofs": {str(m): [_b64(p) for p in proof] for m, proof in self.proofs.items()},
        }

    @classmethod
    def from_dict(cls, data: object) -> Boundary:
        if not isinstance(data, dict):
            raise ValueError("a boundary is a JSON object")
        proofs = data.get("proofs", {})
        if not isinstance(proofs, dict) or not all(k.isdigit() for k in proofs):
            raise ValueError("proofs map checkpoint sizes to proofs")
        return cls(
            size=_size(data.get("size")),
            peaks=_hashes(data.get("peaks")),
            link=_hashes(data.get("link", [])),
            proofs={int(m): _hashes(proof) for m, proof in proofs.items()},
        )


@dataclass(frozen=True, slots=True)
class ArchivedPrefix:
    """The tree hashes a store keeps for the events it dropped (``[0, size)``).

    Attributes:
        boundaries: one per archive, oldest first; the last one's size is :attr:`size`.
        last_hash: the leaf hash of event ``size - 1``.
        last_proof: its inclusion proof in the tree of ``size``.
    """

    boundaries: tuple[Boundary, ...]
    last_hash: bytes
    last_proof: tuple[bytes, ...]

    @property
    def size(self) -> int:
        """How many events were dropped: the kept tail starts at this seq."""
        return self.boundaries[-1].size

    def compact(self) -> CompactRange:
        """The compact range the tail's leaves extend."""
        last = self.boundaries[-1]
        return CompactRange.from_peaks(last.size, last.peaks)

    def to_json(self) -> str:
        """The canonical text a store keeps (and an archive directory's ``prefix.json``)."""
        document = {
            "format": FORMAT,
            "boundaries": [b.to_dict() for b in self.boundaries],
            "last_hash": _b64(self.last_hash),
            "last_proof": [_b64(p) for p in self.last_proof],
        }
        return json.dumps(document, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> ArchivedPrefix:
        """Parse :meth:`to_json`'s text; ``ValueError`` if it is not one."""
        try:
            data = json.loads(text)
        except (ValueError, RecursionError):
            raise ValueError("an archived prefix is JSON") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError(f"not an {FORMAT} document")
        boundaries = data.get("boundaries")
        if not isinstance(boundaries, list) or not boundaries:
            raise ValueError("an archived prefix has at least one boundary")
        parsed = tuple(Boundary.from_dict(b) for b in boundaries)
        if any(a.size >= b.size for a, b in itertools.pairwise(parsed)):
            raise ValueError("boundaries grow strictly")
        if parsed[0].size < 1:
            raise ValueError("an archived prefix holds at least one event")
        return cls(parsed, _hash(data.get("last_hash")), _hashes(data.get("last_proof")))


@dataclass(frozen=True, slots=True)
class PrefixCheck:
    """What :func:`check_prefix` found: failures, warnings, and the checkpoints it matched."""

    failures: list[str]
    warnings: list[str]
    matched: int  # the largest checkpoint size at or below the prefix that verified (0: none)


def check_prefix(prefix: ArchivedPrefix, trusted: Mapping[int, bytes]) -> PrefixCheck:
    """Verify ``prefix``'s hashes against each other and the trusted checkpoints at or below it.

    ``trusted`` maps checkpoint sizes to signed roots. Fails closed: a trusted checkpoint
    inside the prefix for which no proof was kept is a failure (an archive keeps a proof for
    every checkpoint signed before it, so a missing one means the prefix was not made by
    ``audit archive`` from this log: only the archive directory could check that range), and
    with any trusted checkpoint given, the last boundary must itself be a signed size whose root
    matches (an archive always ends on a signed checkpoint). Without trusted checkpoints the
    prefix vouches for nothing and the caller reports the log as not anchored.
    """
    failures: list[str] = []
    warnings: list[str] = []
    roots: list[bytes] = []
    for index, boundary in enumerate(prefix.boundaries):
        try:
            roots.append(boundary.root())
        except ValueError as exc:
            return PrefixCheck([f"archived prefix at size {boundary.size}: {exc}"], [], 0)
        if index and not verify_consistency(
            prefix.boundaries[index - 1].size, boundary.size, roots[-2], roots[-1], boundary.link
        ):
            failures.append(f"archive boundary {boundary.size} does not extend the one before")
    size = prefix.size
    if not verify_inclusion(prefix.last_hash, size - 1, size, prefix.last_proof, roots[-1]):
        failures.append(f"the kept hash of seq {size - 1} is not in the archived tree")
    matched = 0
    for m in sorted(s for s in trusted if 0 < s <= size):
        index = next(i for i, b in enumerate(prefix.boundaries) if b.size >= m)
        boundary = prefix.boundaries[index]
        if m == boundary.size:
            ok = roots[index] == trusted[m]
        elif m in boundary.proofs:
            proof = boundary.proofs[m]
            ok = verify_consistency(m, boundary.size, trusted[m], roots[index], proof)
        else:
            failures.append(
                f"checkpoint at size {m} lies in the archived prefix and no proof for it was "
                "kept: this prefix was not archived from the signed log (check the archive "
                "directory against the same checkpoints)"
            )
            continue
        if not ok:
            failures.append(f"root at size {m} differs from the signed checkpoint (archived)")
        else:
            matched = m
    if trusted and prefix.boundaries[-1].size not in trusted:
        failures.append(
            f"the archived prefix ends at size {size}, which is no signed checkpoint: an archive "
            "always ends on one"
        )
    return PrefixCheck(failures, warnings, matched)


def extend_prefix(
    previous: ArchivedPrefix | None,
    leaves: Sequence[bytes],
    size: int,
    checkpoint_sizes: Sequence[int],
) -> ArchivedPrefix:
    """The prefix after also dropping the events up to ``size``.

    ``leaves`` are the leaf hashes of the events from ``previous.size`` (0 without one) up to
    ``size``, already verified; ``checkpoint_sizes`` are the signed sizes to keep proofs for
    (those between the previous boundary and ``size`` are used).
    """
    start = 0 if previous is None else previous.size
    if size <= start or len(leaves) != size - start:
        raise ValueError(f"need the {size - start} leaves from seq {start} up to {size}")
    known: dict[tuple[int, int], bytes] = {}
    if previous is not None:
        offset = 0
        for peak, height in zip(
            previous.boundaries[-1].peaks, _heights(start), strict=True
        ):  # perfect subtrees, largest first
            known[(offset, offset + (1 << height))] = peak
            offset += 1 << height

    def subtree(lo: int, hi: int) -> bytes:
        """MTH of leaves lo..hi-1; nodes above a tile are cached, so all proofs cost O(n)."""
        found = known.get((lo, hi))
        if found is not None:
            return found
        if lo >= start and hi - lo <= _TILE:
            return root(leaves[lo - start : hi - start])
        if hi - lo == 1:
            raise ValueError(f"leaf {lo} was archived before and is not at hand")
        k = 1 << ((hi - lo - 1).bit_length() - 1)
        digest = node_hash(subtree(lo, lo + k), subtree(lo + k, hi))
        known[(lo, hi)] = digest
        return digest

    compact = CompactRange() if previous is None else previous.compact()
    compact.extend(leaves)
    proofs = {
        m: tuple(consistency_path(subtree, m, size))
        for m in sorted(set(checkpoint_sizes))
        if start < m < size
    }
    link = () if previous is None else tuple(consistency_path(subtree, start, size))
    boundary = Boundary(size=size, peaks=compact.peaks, link=link, proofs=proofs)
    earlier = () if previous is None else previous.boundaries
    return ArchivedPrefix(
        boundaries=(*earlier, boundary),
        last_hash=leaves[-1],
        last_proof=tuple(inclusion_path(subtree, size - 1, size)),
    )


def _heights(size: int) -> list[int]:
    """The heights of the perfect subtrees making up a tree of ``size``, largest first."""
    return [bit for bit in range(size.bit_length() - 1, -1, -1) if size >> bit & 1]


def drop_problem(
    kept: ArchivedPrefix | None,
    prefix: ArchivedPrefix,
    last_hash: bytes | None,
    head_seq: int | None,
) -> str | None:
    """Why a store must refuse to drop ``prefix`` (``None``: it may).

    ``kept`` is the prefix the store holds now; ``last_hash`` the stored hash of the entry at
    ``prefix.size - 1`` (``None`` if absent); ``head_seq`` the head's seq. Stores call it inside
    the transaction that deletes, so the answer holds for what they delete.
    """
    size = prefix.size
    if kept is not None and prefix.boundaries[: len(kept.boundaries)] != kept.boundaries:
        return "the new archived prefix does not extend the one the store keeps"
    if kept is not None and size <= kept.size:
        return f"events before seq {kept.size} are already archived"
    if head_seq is None or head_seq < size:
        return (
            f"archiving up to seq {size} would drop the head: at least one newer event must "
            "remain so the chain continues"
        )
    if last_hash is None or last_hash != prefix.last_hash:
        return f"the entry at seq {size - 1} is not the one the archived prefix names"
    return None
