"""Arrays of subject ids in the form every bulk step (eligibility, emission, linkage) works on: ascending,
distinct, int64."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


def ascending_distinct(ids: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """The distinct ids, ascending, as a new int64 array.

    A sort and a comparison with the neighbour rather than ``np.unique``: since numpy 2.3 a values-only
    ``np.unique`` goes through a hash table, which took 1.0 s for 950k distinct ids on the bench machine
    against 8 ms for this (bench/jobs.py paid it in eligibility and in every shard's emission).
    """
    arr = np.sort(np.asarray(ids, dtype=np.int64).reshape(-1))
    if arr.size < 2:
        return arr
    return arr[np.concatenate(([True], arr[1:] != arr[:-1]))]
