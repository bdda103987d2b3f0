"""Shard splitting and subject-list packing: every eligible subject in exactly one shard, lossless."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from dataspace.jobs.shards import pack_subjects, split_subjects, unpack_subjects

ids_strategy = st.lists(st.integers(1, 2**40), max_size=300, unique=True).map(lambda xs: np.array(sorted(xs), np.int64))


@given(ids_strategy, st.integers(1, 500))
def test_split_covers_every_subject_once_in_balanced_ascending_shards(ids: np.ndarray, size: int) -> None:
    parts = split_subjects(ids, size)
    assert len(parts) == max(1, -(-ids.size // size))
    assert np.array_equal(np.concatenate(parts), ids)
    assert max(p.size for p in parts) - min(p.size for p in parts) <= 1
    assert all(p.size <= size for p in parts)


@given(ids_strategy)
def test_pack_round_trips(ids: np.ndarray) -> None:
    assert np.array_equal(unpack_subjects(pack_subjects(ids)), ids)


def test_dense_ids_pack_small() -> None:
    assert len(pack_subjects(np.arange(1, 1_000_001, dtype=np.int64))) < 20_000  # 8 MB of ids -> ~12 kB
