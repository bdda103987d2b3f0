"""RFC 6962 / 9162 Merkle tree: published vectors, and hypothesis against the RFC's recursive definition."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from transparency import merkle
from transparency.merkle import ProofError

VECTORS = json.loads((Path(__file__).parent / "rfc6962_vectors.json").read_text())
LEAVES = [merkle.leaf_hash(bytes.fromhex(h)) for h in VECTORS["leaves_hex"]]


def _hx(items: list[str]) -> list[bytes]:
    return [bytes.fromhex(h) for h in items]


def test_published_roots() -> None:
    assert merkle.root_from_leaf_hashes([]).hex() == VECTORS["empty_root"]
    for size, root in enumerate(VECTORS["roots"], start=1):
        assert merkle.root_from_leaf_hashes(LEAVES[:size]).hex() == root
        assert merkle.range_hash(LEAVES, 0, size).hex() == root


@pytest.mark.parametrize("vec", VECTORS["inclusion"], ids=lambda v: f"{v['index']}-{v['size']}")
def test_published_inclusion_proofs(vec: dict) -> None:
    index, size, proof = vec["index"], vec["size"], _hx(vec["proof"])
    root = bytes.fromhex(VECTORS["roots"][size - 1])
    assert merkle.inclusion_proof(LEAVES, index, size) == proof
    merkle.verify_inclusion(index, size, LEAVES[index], proof, root)
    for bad in _corrupt_inclusion(index, size, proof, root):
        with pytest.raises(ProofError):
            merkle.verify_inclusion(*bad)


@pytest.mark.parametrize("vec", VECTORS["consistency"], ids=lambda v: f"{v['first']}-{v['second']}")
def test_published_consistency_proofs(vec: dict) -> None:
    first, second, proof = vec["first"], vec["second"], _hx(vec["proof"])
    r1 = bytes.fromhex(VECTORS["roots"][first - 1])
    r2 = bytes.fromhex(VECTORS["roots"][second - 1])
    assert merkle.consistency_proof(LEAVES, first, second) == proof
    merkle.verify_consistency(first, second, r1, r2, proof)
    if proof:
        for bad in _corrupt_consistency(first, second, r1, r2, proof):
            with pytest.raises(ProofError):
                merkle.verify_consistency(*bad)


def _corrupt_inclusion(index: int, size: int, proof: list[bytes], root: bytes) -> list[tuple]:
    some = bytes.fromhex("abacaba000000000000000000000000000000000000000000060061e00123456")
    leaf = LEAVES[index]
    out = [
        (index - 1, size, leaf, proof, root),
        (index + 1, size, leaf, proof, root),
        (index ^ 2, size, leaf, proof, root),
        (index, size * 2, leaf, proof, root),
        (index, size // 2, leaf, proof, root),
        (index, size, b"WrongLeaf", proof, root),
        (index, size, leaf, proof, merkle.EMPTY_ROOT),
        (index, size, leaf, proof, some),
        (index, size, leaf, [*proof, b""], root),
        (index, size, leaf, [*proof, root], root),
        (index, size, leaf, [b"", *proof], root),
        (index, size, leaf, [root, *proof], root),
    ]
    for i in range(len(proof)):
        wrong = list(proof)
        wrong[i] = bytes([wrong[i][0] ^ 8]) + wrong[i][1:]
        out.append((index, size, leaf, wrong, root))
    if proof:
        out.append((index, size, leaf, proof[:-1], root))
    if len(proof) > 1:
        out.append((index, size, leaf, [proof[0], some, *proof[1:]], root))
    return out


def _corrupt_consistency(first: int, second: int, r1: bytes, r2: bytes, proof: list[bytes]) -> list[tuple]:
    out = [
        (first - 1, second, r1, r2, proof),
        (first + 1, second, r1, r2, proof),
        (first ^ 2, second, r1, r2, proof),
        (first, second * 2, r1, r2, proof),
        (first, second // 2, r1, r2, proof),
        (first, second, b"WrongRoot", r2, proof),
        (first, second, r1, b"WrongRoot", proof),
        (first, second, r2, r1, proof),
        (first, second, r1, r2, []),
        (first, second, r1, r2, [*proof, b""]),
        (first, second, r1, r2, [*proof, r1]),
        (first, second, r1, r2, [*proof, r2]),
        (first, second, r1, r2, [b"", *proof]),
        (first, second, r1, r2, [r1, *proof]),
        (first, second, r1, r2, [r2, *proof]),
        (first, second, r1, r2, [proof[0], *proof]),
        (first, second, r1, r2, proof[:-1]),
    ]
    for i in range(len(proof)):
        wrong = list(proof)
        wrong[i] = bytes([wrong[i][0] ^ 16]) + wrong[i][1:]
        out.append((first, second, r1, r2, wrong))
    return out


def test_trivial_consistency_cases() -> None:
    a, b = b"don't care 1", b"don't care 2"
    merkle.verify_consistency(0, 0, a, a, [])
    merkle.verify_consistency(0, 1, a, b, [])
    merkle.verify_consistency(1, 1, b, b, [])
    for bad in [
        (0, 0, a, b, []),
        (1, 1, a, b, []),
        (1, 0, a, b, []),
        (2, 1, a, b, []),
        (1, 2, a, b, []),
        (1, 1, merkle.EMPTY_ROOT, merkle.EMPTY_ROOT, [merkle.EMPTY_ROOT]),
        (0, 1, merkle.EMPTY_ROOT, merkle.EMPTY_ROOT, [merkle.EMPTY_ROOT]),
    ]:
        with pytest.raises(ProofError):
            merkle.verify_consistency(*bad)


def _tree(n: int, salt: int) -> list[bytes]:
    return [merkle.leaf_hash(f"{salt}:{i}".encode()) for i in range(n)]


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 70), salt=st.integers(0, 10**6))
def test_every_inclusion_proof_verifies_against_the_rfc_tree(n: int, salt: int) -> None:
    leaves = _tree(n, salt)
    builder = merkle.RootBuilder()
    for size in range(1, n + 1):
        builder.append(leaves[size - 1])
        root = merkle.range_hash(leaves, 0, size)
        assert builder.root() == root == merkle.root_from_leaf_hashes(leaves[:size])
    for index in range(n):
        proof = merkle.inclusion_proof(leaves, index, n)
        merkle.verify_inclusion(index, n, leaves[index], proof, root)
        with pytest.raises(ProofError):
            merkle.verify_inclusion(index, n, merkle.leaf_hash(b"other"), proof, root)
        if n > 1:
            with pytest.raises(ProofError):
                merkle.verify_inclusion((index + 1) % n, n, leaves[index], proof, root)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 48), salt=st.integers(0, 10**6))
def test_every_pair_of_sizes_is_consistent(n: int, salt: int) -> None:
    leaves = _tree(n, salt)
    roots = [merkle.range_hash(leaves, 0, s) for s in range(n + 1)]
    for second in range(n + 1):
        for first in range(second + 1):
            proof = merkle.consistency_proof(leaves, first, second)
            merkle.verify_consistency(first, second, roots[first], roots[second], proof)
            if 0 < first < second:
                with pytest.raises(ProofError):
                    merkle.verify_consistency(first, second, roots[first], merkle.leaf_hash(b"x"), proof)


@settings(max_examples=200, deadline=None)
@given(lo_level=st.integers(0, 20), lo_index=st.integers(0, 1000), n=st.integers(1, 5000))
def test_decompose_covers_the_range_with_aligned_complete_subtrees(lo_level: int, lo_index: int, n: int) -> None:
    # proof ranges start at a multiple of a power of two at least as large as their length
    if n > 1 << lo_level:
        n = 1 << lo_level
    lo = lo_index << lo_level
    pos = lo
    for level, index in merkle.decompose(lo, lo + n):
        assert index << level == pos
        pos += 1 << level
    assert pos == lo + n


def test_inclusion_subtrees_are_the_decomposed_ranges() -> None:
    """The store's bit-twiddled proof path is the RFC's PATH split into complete subtrees: every index of every
    size up to 260, and random ones up to 2**40."""
    for n in range(1, 261):
        for i in range(n):
            want = [merkle.decompose(lo, hi) for lo, hi in merkle.inclusion_ranges(i, n)]
            assert merkle.inclusion_subtrees(i, n) == want, (i, n)
    rng = random.Random(7)
    for _ in range(20_000):
        n = rng.randrange(1, 1 << rng.randrange(1, 41))
        i = rng.randrange(n)
        assert merkle.inclusion_subtrees(i, n) == [merkle.decompose(lo, hi) for lo, hi in merkle.inclusion_ranges(i, n)]
    with pytest.raises(ValueError):
        merkle.inclusion_subtrees(5, 5)


def test_subtree_hash_is_the_rfc_hash() -> None:
    leaves = [merkle.leaf_hash(b"%d" % i) for i in range(32)]
    for k in range(6):
        assert merkle.subtree_hash(leaves[: 1 << k]) == merkle.range_hash(leaves, 0, 1 << k)


@settings(max_examples=100, deadline=None)
@given(n=st.integers(1, 300), salt=st.integers(0, 10**6), data=st.data())
def test_ranges_fold_from_stored_subtrees(n: int, salt: int, data: st.DataObject) -> None:
    """Proof ranges folded from complete subtrees (what the DB store does) equal the RFC hashes."""
    leaves = _tree(n, salt)
    nodes: dict[tuple[int, int], bytes] = {(0, i): h for i, h in enumerate(leaves)}
    nodes.update(((lv, ix), hh) for lv, ix, hh in merkle.RootBuilder().extend(leaves, record_from=1))
    index = data.draw(st.integers(0, n - 1))
    first = data.draw(st.integers(0, n))
    for lo, hi in [*merkle.inclusion_ranges(index, n), *merkle.consistency_ranges(first, n), (0, n)]:
        parts = merkle.decompose(lo, hi)
        assert merkle.fold([nodes[k] for k in parts]) == merkle.range_hash(leaves, lo, hi)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 300), st.integers(1, 300), st.integers(0, 6))
def test_extend_records_every_subtree_its_leaves_complete(start: int, n: int, min_level: int) -> None:
    """The sequencer's bulk path: after leaf p (size p + 1), the subtrees ending there are completed, smallest
    first; those of at least ``record_from`` come back with their hashes, and the builder ends as appending
    leaf by leaf leaves it (root, frontier, size)."""
    leaves = [merkle.leaf_hash(b"%d" % i) for i in range(start + n)]
    one = merkle.RootBuilder()
    for h in leaves[:start]:
        one.append(h)
    bulk = merkle.RootBuilder(one.frontier, one.size)
    expected = [
        (level, ((p + 1) >> level) - 1, merkle.range_hash(leaves, (p + 1) - (1 << level), p + 1))
        for p in range(start, start + n)
        for level in range(1, (p + 1).bit_length())
        if (p + 1) % (1 << level) == 0 and level >= min_level
    ]
    assert bulk.extend(leaves[start:], record_from=min_level) == expected
    for h in leaves[start:]:
        one.append(h)
    assert (bulk.root(), bulk.frontier, bulk.size) == (one.root(), one.frontier, one.size)
    assert bulk.root() == merkle.range_hash(leaves, 0, start + n)
