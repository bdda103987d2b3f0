"""Subject-id arrays: ``ascending_distinct`` is ``np.unique`` on ids, without its slow path."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from dataspace.subjects.ids import ascending_distinct


@given(st.lists(st.integers(-(2**62), 2**62), max_size=200))
def test_ascending_distinct_is_np_unique(ids: list[int]) -> None:
    got = ascending_distinct(ids)
    assert got.dtype == np.int64
    assert np.array_equal(got, np.unique(np.asarray(ids, dtype=np.int64)))


def test_ascending_distinct_returns_a_new_array() -> None:
    ids = np.arange(5, dtype=np.int64)
    out = ascending_distinct(ids)
    out[0] = 99
    assert ids[0] == 0
