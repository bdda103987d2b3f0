"""Open a chunk of sealed profiles and turn it into transformed columns (runs in worker processes too).

Kept free of the database and the ORM so a spawned worker imports little. Decrypted plaintext lives only
inside ``decrypt_chunk``; what leaves it is already generalized, except raw numbers of quantile features,
whose cut points need the whole population.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.json as pajson

from dataspace.emission.specs import FeatureSpec, _category
from dataspace.emission.transforms import apply_local, pseudonym_digests, raw_type
from dataspace.keystore import KeyStoreSpec
from dataspace.vault import DecryptionError, Vault, open_store

# One vault per key store in each worker process: its epoch-key cache outlives a chunk.
_worker_vaults: dict[KeyStoreSpec, Vault] = {}


@dataclass(frozen=True)
class ChunkJob:
    key_store: KeyStoreSpec  # names the store; epoch keys never travel to workers in a message
    partner_key: bytes
    scope: str
    specs: tuple[FeatureSpec, ...]
    data_types: tuple[str, ...]

    def __repr__(self) -> str:  # keys must never reach a log line
        return f"ChunkJob(features={len(self.specs)})"


@dataclass
class ChunkResult:
    subject_ids: npt.NDArray[np.int64]
    digests: bytes  # PSEUDONYM_BYTES per kept row, in row order
    columns: list[pa.Array]
    unreadable: int


def _coerce(value: Any, data_type: str) -> Any:
    """Slow path: a value of an unexpected JSON type becomes null instead of failing the job."""
    if value is None:
        return None
    if data_type in ("integer", "number"):
        return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
    if data_type == "boolean":
        return value if isinstance(value, bool) else None
    return _category(value) if isinstance(value, str | int | float | bool) else None


def _parse(plaintexts: list[bytes], keys: Sequence[str], data_types: Sequence[str]) -> list[pa.Array]:
    if not plaintexts:
        return [pa.array([], raw_type(t)) for t in data_types]
    if len(plaintexts) <= _SMALL_CHUNK:
        return _parse_rows(plaintexts, keys, data_types)
    schema = pa.schema([(k, raw_type(t)) for k, t in zip(keys, data_types, strict=True)])
    try:
        # Arrow's JSON reader parses the whole chunk in C++ (compact JSON holds no raw newline). The block holds
        # the whole chunk, and no more: a fixed 64 MiB block costs milliseconds for a single profile (real-time
        # decisions emit one subject).
        data = b"\n".join(plaintexts)
        table = pajson.read_json(
            io.BytesIO(data),
            read_options=pajson.ReadOptions(block_size=min(1 << 26, max(1 << 12, len(data) + 1)), use_threads=False),
            parse_options=pajson.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore"),
        )
        return [table.column(k).combine_chunks() for k in keys]
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return _parse_rows(plaintexts, keys, data_types)


# Up to this many profiles, Python's JSON parser is cheaper than setting up Arrow's reader (about 2 ms, most of a
# real-time decision's CPU, which emits one subject). Both give the same values: Arrow's reader refuses a value of
# an unexpected type and the chunk then takes this path anyway.
_SMALL_CHUNK = 16


def _parse_rows(plaintexts: list[bytes], keys: Sequence[str], data_types: Sequence[str]) -> list[pa.Array]:
    rows = [json.loads(p) for p in plaintexts]
    return [pa.array([_coerce(r.get(k), t) for r in rows], raw_type(t)) for k, t in zip(keys, data_types, strict=True)]


def decrypt_chunk(
    job: ChunkJob,
    subject_ids: npt.NDArray[np.int64],
    epochs: list[int],
    wrapped: list[bytes],
    sealed: list[bytes],
    *,
    vault: Vault | None = None,
) -> ChunkResult:
    """Open, parse and locally transform one chunk; ``vault`` defaults to one on the job's key store."""
    if vault is None:
        vault = _worker_vaults.get(job.key_store) or _worker_vaults.setdefault(job.key_store, open_store(job.key_store))
    plaintexts: list[bytes] = []
    ok = np.ones(len(wrapped), dtype=np.bool_)
    sids = subject_ids.tolist()
    open_ = Vault.open
    for i, (sid, dek, s) in enumerate(zip(sids, vault.unwrap_all(sids, epochs, wrapped), sealed, strict=True)):
        if dek is None:
            ok[i] = False  # tampered, shredded or retired mid-flight: skip the row, count it
            continue
        try:
            plaintexts.append(open_(dek, s, sid))
        except DecryptionError:
            ok[i] = False
    ids = subject_ids[ok]
    keys = [s.field for s in job.specs]
    raw = _parse(plaintexts, keys, job.data_types)
    del plaintexts
    columns = [apply_local(s, r, t) for s, r, t in zip(job.specs, raw, job.data_types, strict=True)]
    return ChunkResult(
        subject_ids=ids,
        digests=b"".join(pseudonym_digests(job.partner_key, job.scope, ids)),
        columns=columns,
        unreadable=int((~ok).sum()),
    )
