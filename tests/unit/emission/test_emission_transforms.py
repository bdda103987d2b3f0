"""Column transforms, pseudonyms and k-anonymity suppression."""

from __future__ import annotations

import hashlib
import hmac

import numpy as np
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from dataspace.emission.specs import Group
from dataspace.emission.transforms import (
    bin_index,
    encode,
    group_labels,
    group_sizes,
    k_suppress,
    pseudonym,
    pseudonym_digests,
    quantile_edges,
    quantile_index,
    top_code,
)

NAN = float("nan")


def test_bin_index_is_left_closed_and_keeps_missing() -> None:
    values = np.array([10, 18, 24.9, 25, 64, 65, 99, NAN])
    out = bin_index(values, [18, 25, 35, 50, 65])
    assert out[:-1].tolist() == [0, 1, 1, 2, 4, 5, 5]
    assert np.isnan(out[-1])


def test_quantiles_split_the_population_evenly() -> None:
    values = np.arange(1000, dtype=np.float64)
    idx = quantile_index(values, quantile_edges(values, 5))
    assert np.bincount(idx.astype(int)).tolist() == [200] * 5


def test_quantiles_merge_duplicate_cut_points_and_ignore_missing() -> None:
    values = np.array([1.0] * 90 + [2.0] * 10 + [NAN] * 50)
    edges = quantile_edges(values, 4)
    assert edges.tolist() == [1.0]
    idx = quantile_index(values, edges)
    assert set(idx[:100].tolist()) == {0.0, 1.0}
    assert np.isnan(idx[100:]).all()
    assert quantile_edges(np.array([NAN]), 4).size == 0


def test_top_code_clamps_and_rounds() -> None:
    values = np.array([-5.0, 0.0, 12345.0, 250000.0, NAN])
    clipped = top_code(values, 0, 200000, None)
    assert clipped[:4].tolist() == [0.0, 0.0, 12345.0, 200000.0]
    stepped = top_code(values, 0, 200000, 50000)
    assert stepped[:4].tolist() == [0.0, 0.0, 0.0, 200000.0]
    assert np.isnan(stepped[4])
    assert top_code(np.array([1e9]), None, 10, None).tolist() == [10.0]


def test_group_maps_to_labels_other_and_keeps_nulls() -> None:
    spec = Group("city", (("tier1", ("Beijing", "Shanghai")), ("tier2", ("Chengdu",))), other="other")
    out = group_labels(pa.array(["Beijing", "Chengdu", "Lhasa", None, "Shanghai"]), spec)
    assert out.to_pylist() == ["tier1", "tier2", "other", None, "tier1"]
    dropped = Group("city", (("tier1", ("Beijing",)),), other=None)
    assert group_labels(pa.array(["Lhasa", "Beijing"]), dropped).to_pylist() == [None, "tier1"]


def test_group_of_booleans_uses_json_spelling() -> None:
    spec = Group("flag", (("yes", ("true",)),), other="no")
    assert group_labels(pa.array([True, False, None]), spec).to_pylist() == ["yes", "no", None]


def test_pseudonym_is_hmac_sha256_under_the_partner_key() -> None:
    key = b"k" * 32
    ids = np.array([1, 42, 10**12], dtype=np.int64)
    for sid, digest in zip(ids.tolist(), pseudonym_digests(key, "job-7", ids), strict=True):
        expected = hmac.new(key, b"subject/v1/job-7/%d" % sid, hashlib.sha256).digest()[:16]
        assert hmac.compare_digest(digest, expected)
    long_key = b"x" * 100
    assert (
        pseudonym_digests(long_key, "", ids[:1])[0]
        == hmac.new(long_key, b"subject/v1//1", hashlib.sha256).digest()[:16]
    )
    assert len(pseudonym(key, "", 1)) == 32
    assert pseudonym(key, "", 1) != pseudonym(key, "other-job", 1)
    assert pseudonym(key, "", 1) != pseudonym(b"j" * 32, "", 1)


def test_encode_round_trips_with_null_as_code_zero() -> None:
    column = pa.array([2.5, None, 2.5, 7.0])
    codes, decoder = encode(column)
    assert codes.tolist()[1] == 0
    assert codes[0] == codes[2] != 0
    assert decoder.take(pa.array(codes)).to_pylist() == column.to_pylist()


def _combination_counts(columns: list[np.ndarray], keep: np.ndarray) -> list[int]:
    rows = [tuple(int(c[i]) for c in columns) for i in np.flatnonzero(keep)]
    counts: dict[tuple[int, ...], int] = {}
    for r in rows:
        counts[r] = counts.get(r, 0) + 1
    return list(counts.values())


tables = st.integers(1, 4).flatmap(
    lambda width: st.lists(st.tuples(*[st.integers(0, 4)] * width), min_size=1, max_size=120)
)


@settings(max_examples=150, deadline=None)
@given(rows=tables, k=st.integers(1, 6))
def test_k_suppression_leaves_only_groups_of_k(rows: list[tuple[int, ...]], k: int) -> None:
    original = [np.array(col, dtype=np.int32) for col in zip(*rows, strict=True)]
    fast = [c.copy() for c in original]
    result = k_suppress(fast, k)
    assert all(count >= k for count in _combination_counts(fast, result.keep))
    assert result.suppressed_rows == int((~result.keep).sum())
    # Only blanking happens: an emitted cell is either its original value or null (0).
    for before, after in zip(original, fast, strict=True):
        assert np.all((after == before) | (after == 0))
    # Rows that were already in groups of k are untouched.
    already = group_sizes(original, len(rows)) >= k
    for before, after in zip(original, fast, strict=True):
        assert np.array_equal(before[already], after[already])
    assert result.keep[already].all()
    # The incremental fast path is the same as recounting everything at every step.
    slow = [c.copy() for c in original]
    reference = k_suppress(slow, k, incremental=False)
    assert np.array_equal(reference.keep, result.keep)
    assert all(np.array_equal(a, b) for a, b in zip(slow, fast, strict=True))
    assert reference.suppressed_cells == result.suppressed_cells


def test_group_sizes_survive_keys_wider_than_int64() -> None:
    rng = np.random.default_rng(0)
    columns = [rng.integers(0, 70000, 500).astype(np.int32) for _ in range(5)]
    columns.append(np.zeros(500, dtype=np.int32))
    assert group_sizes(columns, 500).tolist() == [1] * 500
    same = [np.full(10, 60000, dtype=np.int32)] * 5
    assert group_sizes(same, 10).tolist() == [10] * 10
    result = k_suppress([c.copy() for c in columns], 3)
    assert result.suppressed_rows == 0  # all columns blanked: 500 identical rows
