"""A job's shards as subject lists: contiguous, balanced slices of the ascending eligible ids, stored
packed, and the sample the plan's quantile cut points are computed over. The state machine that plans and
runs them is ``dataspace.jobs.engine``.
"""

from __future__ import annotations

import zlib

import numpy as np
import numpy.typing as npt

PLAN_SAMPLE = 500_000  # subjects whose values set the quantile cut points (all of them below this)
MAX_SHARDS = 10_000


# --- subject lists -------------------------------------------------------------------------------------
def pack_subjects(ids: npt.ArrayLike) -> bytes:
    """Ascending ids as zlib-compressed deltas (a dense id range packs to ~12 bytes per thousand ids)."""
    arr = np.asarray(ids, dtype=np.int64).reshape(-1)
    deltas = np.diff(arr, prepend=np.int64(0)) if arr.size else arr
    return zlib.compress(deltas.astype("<i8").tobytes(), 6)


def unpack_subjects(blob: bytes) -> npt.NDArray[np.int64]:
    return np.cumsum(np.frombuffer(zlib.decompress(blob), dtype="<i8")).astype(np.int64)


def split_subjects(ids: npt.NDArray[np.int64], shard_subjects: int) -> list[npt.NDArray[np.int64]]:
    """Contiguous, balanced slices of the ascending eligible ids; always at least one (maybe empty)."""
    if shard_subjects < 1:
        raise ValueError("shard_subjects must be positive")
    count = max(1, min(MAX_SHARDS, -(-ids.size // shard_subjects)))
    return [np.ascontiguousarray(p) for p in np.array_split(ids, count)]


def sample_for_cuts(ids: npt.NDArray[np.int64], job_id: int) -> npt.NDArray[np.int64]:
    """The subjects whose values set a job's quantile cut points: all of them up to ``PLAN_SAMPLE``, else a
    uniform sample of that many."""
    if ids.size <= PLAN_SAMPLE:
        return ids
    rng = np.random.default_rng(job_id)  # deterministic: a re-planned job gets the same cut points
    return np.sort(rng.choice(ids, PLAN_SAMPLE, replace=False))
