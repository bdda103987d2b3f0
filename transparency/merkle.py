"""RFC 6962 / RFC 9162 Merkle tree hashing, proof shapes and proof verification (pure; hashlib only).

leaf = SHA-256(0x00 || entry), node = SHA-256(0x01 || left || right); the tree over n leaves splits at the
largest power of two smaller than n. Proofs are described here as *ranges* of leaves whose subtree hashes
make up the proof, so a store that keeps complete-subtree hashes can answer with O(log n) lookups.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Sequence

from transparency.errors import ProofError

EMPTY_ROOT = hashlib.sha256(b"").digest()
_sha256 = hashlib.sha256


def leaf_hash(entry: bytes) -> bytes:
    return _sha256(b"\x00" + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return _sha256(b"\x01" + left + right).digest()


def split_point(n: int) -> int:
    """The largest power of two strictly smaller than ``n`` (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


# --- roots -------------------------------------------------------------------------------------------
class RootBuilder:
    """Incremental root over appended leaf hashes: keeps one hash per complete subtree (the frontier)."""

    __slots__ = ("_stack", "size")

    def __init__(self, frontier: Sequence[bytes] = (), size: int = 0) -> None:
        self._stack = list(frontier)
        self.size = size

    def append(self, h: bytes) -> None:
        self.extend((h,))

    def extend(self, hashes: Iterable[bytes], *, record_from: int | None = None) -> list[tuple[int, int, bytes]]:
        """Append leaf hashes. With ``record_from``, returns (level, index, hash) of every complete subtree of at
        least that level the new leaves complete, in the order they complete (a sequencer stores them)."""
        stack = self._stack
        size = self.size
        lowest = record_from if record_from is not None else 64  # no tree has a 64th level
        out: list[tuple[int, int, bytes]] = []
        record = out.append
        for leaf in hashes:
            h = leaf
            n = size
            level = 0
            while n & 1:
                h = _sha256(b"\x01" + stack.pop() + h).digest()
                level += 1
                n >>= 1
                if level >= lowest:
                    record((level, ((size + 1) >> level) - 1, h))
            stack.append(h)
            size += 1
        self.size = size
        return out

    @property
    def frontier(self) -> list[bytes]:
        return list(self._stack)

    def root(self) -> bytes:
        if not self._stack:
            return EMPTY_ROOT
        h = self._stack[-1]
        for left in reversed(self._stack[:-1]):
            h = node_hash(left, h)
        return h


def root_from_leaf_hashes(hashes: Iterable[bytes]) -> bytes:
    builder = RootBuilder()
    builder.extend(hashes)
    return builder.root()


# --- proof shapes ------------------------------------------------------------------------------------
Range = tuple[int, int]


def inclusion_ranges(index: int, size: int) -> list[Range]:
    """The leaf ranges whose subtree hashes form the inclusion proof of ``index`` in a tree of ``size``
    (RFC 6962 section 2.1.1 PATH, bottom-up)."""
    if not 0 <= index < size:
        raise ValueError("index out of range")
    out: list[Range] = []
    lo, hi = 0, size
    while hi - lo > 1:
        k = split_point(hi - lo)
        if index < lo + k:
            out.append((lo + k, hi))
            hi = lo + k
        else:
            out.append((lo, lo + k))
            lo = lo + k
    out.reverse()
    return out


def consistency_ranges(first: int, second: int) -> list[Range]:
    """The leaf ranges forming the consistency proof between sizes ``first`` and ``second``
    (RFC 6962 section 2.1.2 SUBPROOF, in proof order)."""
    if not 0 <= first <= second:
        raise ValueError("sizes out of order")
    if first in (0, second):
        return []
    out: list[Range] = []
    lo, hi, m, whole = 0, second, first, True
    while True:
        n = hi - lo
        if m == n:
            if not whole:
                out.append((lo, hi))
            break
        k = split_point(n)
        if m <= k:
            out.append((lo + k, hi))
            hi = lo + k
        else:
            out.append((lo, lo + k))
            lo, m, whole = lo + k, m - k, False
    out.reverse()
    return out


def decompose(lo: int, hi: int) -> list[tuple[int, int]]:
    """Split a proof range into complete, aligned subtrees ``(level, index)``, left to right.

    Every range a proof uses starts at a multiple of the largest power of two not above its length, so it
    is a run of complete subtrees of decreasing size (the binary digits of ``hi - lo``).
    """
    out = []
    pos = lo
    n = hi - lo
    for level in range(n.bit_length() - 1, -1, -1):
        if n >> level & 1:
            out.append((level, pos >> level))
            pos += 1 << level
    return out


def inclusion_subtrees(index: int, size: int) -> list[list[tuple[int, int]]]:
    """The inclusion proof of ``index`` as complete subtrees: ``[decompose(r) for r in inclusion_ranges(...)]``
    straight from the bits of ``index`` and ``size - 1`` (the proof path of a store's hot read).

    Below the level where ``index`` and ``size - 1`` part, each node is the sibling at that level, whole but
    for the topmost, a right sibling cut off by the tree's edge; above it, a left sibling wherever ``index``
    has a one bit (bits where both have a zero are levels the tree does not fork at).
    """
    if not 0 <= index < size:
        raise ValueError("index out of range")
    inner = (index ^ (size - 1)).bit_length()
    out = [[(level, (index >> level) ^ 1)] for level in range(inner - 1)]
    if inner:
        top = inner - 1
        out.append(decompose(((index >> top) ^ 1) << top, min(size, ((index >> top) + 2) << top)))
    level = inner
    rest = index >> inner
    while rest:
        if rest & 1:
            out.append([(level, rest - 1)])
        rest >>= 1
        level += 1
    return out


def subtree_hash(leaf_hashes: Sequence[bytes]) -> bytes:
    """The hash of a complete subtree (a power of two of leaves), pairwise level by level."""
    hs = list(leaf_hashes)
    while len(hs) > 1:
        hs = [_sha256(b"\x01" + hs[i] + hs[i + 1]).digest() for i in range(0, len(hs), 2)]
    return hs[0]


def fold(hashes: Sequence[bytes]) -> bytes:
    """The hash of a range from its complete subtrees (left to right): they nest to the right."""
    h = hashes[-1]
    for left in reversed(hashes[:-1]):
        h = node_hash(left, h)
    return h


# --- verification (RFC 9162 sections 2.1.3.2 and 2.1.4.2) -------------------------------------------
def root_from_inclusion_proof(index: int, size: int, leaf: bytes, proof: Sequence[bytes]) -> bytes:
    if not 0 <= index < size:
        raise ProofError("invalid proof")
    fn, sn = index, size - 1
    r = leaf
    for p in proof:
        if sn == 0:
            raise ProofError("invalid proof")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("invalid proof")
    return r


def verify_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes], root: bytes) -> None:
    """Raise ``ProofError`` unless ``proof`` shows leaf hash ``leaf`` at ``index`` under ``root``."""
    if not hmac.compare_digest(root_from_inclusion_proof(index, size, leaf, proof), root):
        raise ProofError("invalid proof")


def verify_consistency(first: int, second: int, first_root: bytes, second_root: bytes, proof: Sequence[bytes]) -> None:
    """Raise ``ProofError`` unless ``proof`` shows the tree of ``first`` is a prefix of ``second``."""
    if not 0 <= first <= second:
        raise ProofError("invalid proof")
    if first == second:
        if proof or not hmac.compare_digest(first_root, second_root):
            raise ProofError("invalid proof")
        return
    if first == 0:
        if proof:
            raise ProofError("invalid proof")
        return
    if not proof:
        raise ProofError("invalid proof")
    path = list(proof)
    if first & (first - 1) == 0:  # a power of two: the first root is the first node of the path
        path.insert(0, first_root)
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError("invalid proof")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0 or not (hmac.compare_digest(fr, first_root) and hmac.compare_digest(sr, second_root)):
        raise ProofError("invalid proof")


# --- an in-memory tree (reference for tests, and for exports) ----------------------------------------
def _mth(leaves: Sequence[bytes], lo: int, hi: int) -> bytes:
    n = hi - lo
    if n == 0:
        return EMPTY_ROOT
    if n == 1:
        return leaves[lo]
    k = split_point(n)
    return node_hash(_mth(leaves, lo, lo + k), _mth(leaves, lo + k, hi))


def range_hash(leaf_hashes: Sequence[bytes], lo: int, hi: int) -> bytes:
    """MTH over leaves [lo, hi) by the RFC's recursive definition (slow; a reference)."""
    return _mth(leaf_hashes, lo, hi)


def inclusion_proof(leaf_hashes: Sequence[bytes], index: int, size: int) -> list[bytes]:
    return [_mth(leaf_hashes, lo, hi) for lo, hi in inclusion_ranges(index, size)]


def consistency_proof(leaf_hashes: Sequence[bytes], first: int, second: int) -> list[bytes]:
    return [_mth(leaf_hashes, lo, hi) for lo, hi in consistency_ranges(first, second)]


__all__ = [
    "EMPTY_ROOT",
    "ProofError",
    "Range",
    "RootBuilder",
    "consistency_proof",
    "consistency_ranges",
    "decompose",
    "fold",
    "inclusion_proof",
    "inclusion_ranges",
    "inclusion_subtrees",
    "leaf_hash",
    "node_hash",
    "range_hash",
    "root_from_inclusion_proof",
    "root_from_leaf_hashes",
    "split_point",
    "subtree_hash",
    "verify_consistency",
    "verify_inclusion",
]
