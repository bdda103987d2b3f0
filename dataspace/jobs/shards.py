"""A job's shards as subject lists: contiguous, balanced slices of the ascending eligible ids, stored
packed, and the sample the plan's quantile cut points are computed over. The state machine that plans and
runs them is ``dataspace.jobs.engine``.

How large the sample is. Between two adjacent sample quantiles of ``n`` uniformly drawn subjects lies a
share of the whole population whose mean is the nominal ``w = 1/q`` and whose variance is about
``w (1 - w) / n`` (the gap between two uniform order statistics), so a bin's share has a relative standard
error of ``sqrt((q - 1) / n)``. ``cut_sample_size`` draws enough subjects for that to be ``CUT_PRECISION``
(1%: a 20% bin of ``q = 5`` holds 20% +- 0.2% of the population), capped at ``PLAN_SAMPLE`` (1.4% at
``q = 100``, the most a contract may ask for). The sample never changes which bins exist or who is in a
shard, only where the cuts fall; every shard of the job bins with the same cuts.
"""

from __future__ import annotations

import zlib

import numpy as np
import numpy.typing as npt

CUT_PRECISION = 0.01  # one standard error of a quantile bin's population share, relative to its nominal 1/q
PLAN_SAMPLE = 500_000  # the most subjects whose values set the quantile cut points
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


def cut_sample_size(q: int) -> int:
    """Subjects to sample for ``q`` quantile bins whose shares are within ``CUT_PRECISION`` (one standard
    error, relative) of ``1/q`` (see the module docstring): 40,000 for ``q = 5``, 90,000 for ``q = 10``."""
    return min(PLAN_SAMPLE, round((q - 1) / CUT_PRECISION**2))


def sample_for_cuts(ids: npt.NDArray[np.int64], job_id: int, q: int) -> npt.NDArray[np.int64]:
    """The subjects whose values set a job's quantile cut points for at most ``q`` bins per feature: all
    of them up to ``cut_sample_size(q)``, else a uniform sample of that many."""
    size = cut_sample_size(q)
    if ids.size <= size:
        return ids
    rng = np.random.default_rng(job_id)  # deterministic: a re-planned job gets the same cut points
    return np.sort(rng.choice(ids, size, replace=False))
