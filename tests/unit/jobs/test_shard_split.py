"""Shard splitting and subject-list packing: every eligible subject in exactly one shard, lossless; the
quantile cut-point sample: deterministic, and as precise as its size promises."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dataspace.emission.transforms import quantile_edges, quantile_index
from dataspace.jobs.shards import (
    CUT_PRECISION,
    PLAN_SAMPLE,
    cut_sample_size,
    pack_subjects,
    sample_for_cuts,
    split_subjects,
    unpack_subjects,
)

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


def test_cut_sample_sized_for_the_bins_precision() -> None:
    assert cut_sample_size(5) == 40_000
    assert cut_sample_size(10) == 90_000
    assert cut_sample_size(100) == PLAN_SAMPLE
    ids = np.arange(1, 40_001, dtype=np.int64)
    assert sample_for_cuts(ids, 7, 5) is ids  # at most the sample size: everyone
    sample = sample_for_cuts(np.arange(1, 1_000_001, dtype=np.int64), 7, 5)
    assert sample.size == 40_000
    assert np.array_equal(sample, np.unique(sample))
    assert np.array_equal(sample, sample_for_cuts(np.arange(1, 1_000_001, dtype=np.int64), 7, 5))  # re-plan: same


@pytest.mark.parametrize("q", [5, 10, 100])
def test_cuts_from_the_sample_split_the_population_into_near_equal_bins(q: int) -> None:
    # A skewed population of 1M values (each subject's value indexed by its id): every bin cut at the
    # sample's quantiles holds 1/q of the population to within 4 standard errors of its share.
    values = np.random.default_rng(3).lognormal(8, 1.5, 1_000_000)
    ids = np.arange(1, values.size + 1, dtype=np.int64)
    sample = sample_for_cuts(ids, 11, q)
    edges = quantile_edges(values[sample - 1], q)
    shares = np.bincount(quantile_index(values, edges).astype(np.int64), minlength=q) / values.size
    relative_error = np.sqrt((q - 1) / sample.size)
    assert relative_error <= 1.5 * CUT_PRECISION
    assert np.abs(shares * q - 1).max() <= 4 * relative_error
