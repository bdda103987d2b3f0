"""Benchmark feature emission: N subjects x 10 features, from sealed profiles in SQLite to Arrow batches.

    .venv/bin/python bench/emission.py --n 20000        # quick
    .venv/bin/python bench/emission.py --n 1000000      # target: < 10 s, peak RSS < 1.5 GB

Phase 1 (timed separately, cached per N under --dir): generate correlated synthetic profiles, seal them
with the vault in worker processes, store them with executemany. Phase 2 runs in a fresh child process so
its peak RSS is the emission's alone: emit 10 features for 95% of the subjects (k=5), drain every batch.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

FEATURES = [
    {"field": "age", "transform": "bin", "edges": [18, 25, 35, 50, 65]},
    {"field": "balance", "transform": "quantile", "q": 5},
    {"field": "income", "transform": "topcode", "upper": 200000, "lower": 0, "step": 50000},
    {
        "field": "city",
        "transform": "group",
        "groups": {"tier1": ["Beijing", "Shanghai"], "tier2": ["Hangzhou", "Chengdu"]},
        "other": "other",
    },
    {"field": "segment", "transform": "identity"},
    {"field": "tenure_years", "transform": "bin", "edges": [1, 3, 5, 10]},
    {"field": "monthly_txn", "transform": "quantile", "q": 4},
    {"field": "has_mortgage", "transform": "identity"},
    {"field": "channel", "transform": "identity"},
    {"field": "credit_score", "transform": "bin", "edges": [580, 670, 740, 800]},
]
FIELD_TYPES = {
    "age": "integer",
    "balance": "number",
    "income": "number",
    "city": "category",
    "segment": "category",
    "tenure_years": "integer",
    "monthly_txn": "integer",
    "has_mortgage": "boolean",
    "channel": "category",
    "credit_score": "integer",
}
CITIES = ["Beijing", "Shanghai", "Hangzhou", "Chengdu", "Wuhan", "Xian"]
SEGMENTS = ["mass", "affluent", "private", "sme"]
CHANNELS = ["app", "branch", "web"]


def _profiles(start: int, stop: int, seed: int) -> list[dict[str, object]]:
    """Profiles driven by a latent class, so generalized combinations repeat as in real customer bases."""
    rng = np.random.default_rng(seed)
    n = stop - start
    z = rng.integers(0, 12, n)
    noise = rng.random((n, 6)) < 0.08
    out = []
    for i in range(n):
        c = int(z[i])
        out.append(
            {
                "age": int(20 + 4 * c + rng.integers(0, 4)) if not noise[i, 0] else int(rng.integers(18, 90)),
                "balance": float(1000 * (c + 1) ** 2 + rng.random() * 500),
                "income": float(20000 * (c % 6) + rng.random() * 9000),
                "city": CITIES[c % 6] if not noise[i, 1] else CITIES[int(rng.integers(0, 6))],
                "segment": SEGMENTS[c % 4],
                "tenure_years": int(c % 7 + (1 if noise[i, 2] else 0)),
                "monthly_txn": int(10 * (c % 5) + rng.integers(0, 3)),
                "has_mortgage": bool(c % 2) != bool(noise[i, 3]),
                "channel": CHANNELS[c % 3] if not noise[i, 4] else CHANNELS[int(rng.integers(0, 3))],
                "credit_score": int(560 + 25 * c + rng.integers(0, 10)),
            }
        )
    return out


def _seal_range(epoch_dir: Path, start: int, stop: int) -> tuple[list[tuple[int, ...]], list[tuple[int, bytes]]]:
    from dataspace.subjects.store import seal_profile
    from dataspace.vault import file_vault

    vault = file_vault(epoch_dir)
    keys, profiles = [], []
    for offset, values in enumerate(_profiles(start, stop, seed=start)):
        sid = start + offset
        wrapped, sealed = seal_profile(vault, sid, 0, values)
        keys.append((sid, vault.bucket(sid), 0, wrapped))
        profiles.append((sid, sealed))
    return keys, profiles


def generate(n: int, directory: Path) -> None:
    from dataspace import migrations
    from dataspace.catalog.models import Dimension, Field
    from dataspace.db import Database
    from dataspace.keys import KeyRing, save_key_file

    directory.mkdir(parents=True, exist_ok=True)
    db_path = directory / "bench.db"
    db_path.unlink(missing_ok=True)
    ring = KeyRing.generate()
    save_key_file(directory / "keys.json", ring)
    import shutil

    from dataspace.vault import file_vault

    epoch_dir = directory / "epochs"
    shutil.rmtree(epoch_dir, ignore_errors=True)
    vault = file_vault(epoch_dir)
    for bucket in range(vault.buckets):  # generation 0 of every bucket up front: workers only read the store
        vault.current_generation(bucket)
    db = Database(f"sqlite:///{db_path}")
    migrations.upgrade(db.engine)
    with db.transaction() as s:
        s.add(Dimension(key="bench", label="Bench"))
        s.flush()
        for key, data_type in FIELD_TYPES.items():
            # The catalog's promise: every bench feature stays within 10 distinct values.
            transforms: dict[str, dict[str, int]] = (
                {"bin": {"max_values": 10}, "quantile": {"max_values": 10}, "topcode": {"max_values": 10}}
                if data_type in ("integer", "number")
                else {"group": {"max_values": 10}}
            )
            transforms["identity"] = {}
            s.add(
                Field(
                    key=key,
                    dimension_key="bench",
                    label=key,
                    description=key,
                    collection_purpose="bench",
                    storage_location="db",
                    sharing_scope="none",
                    retention_days=365,
                    sensitivity="normal",
                    data_type=data_type,
                    transforms=transforms,
                )
            )
    t0 = time.perf_counter()
    step = 50_000
    ranges = [(a, min(a + step, n + 1)) for a in range(1, n + 1, step)]
    raw = db.engine.raw_connection()
    try:
        cur = raw.cursor()
        cur.execute("BEGIN")
        with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [pool.submit(_seal_range, epoch_dir, a, b) for a, b in ranges]
            for (a, b), fut in zip(ranges, futures, strict=True):
                keys, profiles = fut.result()
                cur.executemany(
                    "INSERT INTO subjects (id, blind_ref, created_at) VALUES (?, ?, ?)",
                    [(i, f"bench-{i}", "2025-01-01 00:00:00.000000") for i in range(a, b)],
                )
                cur.executemany(
                    "INSERT INTO subject_keys (subject_id, bucket, epoch, wrapped_key) VALUES (?, ?, ?, ?)", keys
                )
                cur.executemany(
                    "INSERT INTO subject_profiles (subject_id, sealed, version, updated_at) "
                    "VALUES (?, ?, 1, '2025-01-01 00:00:00.000000')",
                    profiles,
                )
        cur.execute("COMMIT")
    finally:
        raw.close()
        db.dispose()
    print(f"generate: {n} sealed profiles stored in {time.perf_counter() - t0:.1f} s ({db_path})")


def run_emission(directory: Path, k: int) -> None:
    from dataspace.db import Database
    from dataspace.emission import emit, parse_features
    from dataspace.keys import load_key_file
    from dataspace.vault import file_vault

    ring = load_key_file(directory / "keys.json")
    db = Database(f"sqlite:///{directory / 'bench.db'}")
    with db.session() as s:
        n = s.connection().exec_driver_sql("SELECT max(id) FROM subjects").scalar_one()
    rng = np.random.default_rng(7)
    eligible = np.flatnonzero(rng.random(n) < 0.95).astype(np.int64) + 1
    specs = parse_features(FEATURES)
    t0, c0 = time.perf_counter(), time.process_time()
    with db.session() as s:
        emission = emit(
            s,
            file_vault(directory / "epochs"),
            ring,
            partner_key="bench-partner",
            features=specs,
            k=k,
            eligible_subject_ids=eligible,
            pseudonym_scope="job-1",
        )
        t_emit = time.perf_counter() - t0
        rows = sum(b.num_rows for b in emission.batches())
    elapsed = time.perf_counter() - t0
    cpu_main = time.process_time() - c0
    kids_usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_workers = kids_usage.ru_utime + kids_usage.ru_stime
    me = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(json.dumps(emission.stats.as_dict()))
    print(
        f"emission: {rows} rows x {len(specs)} features in {elapsed:.2f} s "
        f"(emit {t_emit:.2f} s, batches {elapsed - t_emit:.2f} s); "
        f"{emission.stats.eligible / elapsed:,.0f} eligible subjects/s"
    )
    print(f"cpu: main {cpu_main:.2f} s, workers {cpu_workers:.2f} s; load average {os.getloadavg()[0]:.2f}")
    print(f"peak RSS: main {me:.0f} MB, largest worker {kids:.0f} MB, sum bound {me + 2 * kids:.0f} MB")
    db.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "dataspace-bench-emission")
    parser.add_argument("--regenerate", action="store_true")
    parser.add_argument("--emit-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    directory = args.dir / str(args.n)
    if args.emit_only:
        run_emission(directory, args.k)
        return
    if args.regenerate or not (directory / "bench.db").exists():
        generate(args.n, directory)
    else:
        print(f"generate: reusing {directory / 'bench.db'}")
    subprocess.run(
        [sys.executable, __file__, "--n", str(args.n), "--k", str(args.k), "--dir", str(args.dir), "--emit-only"],
        check=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


if __name__ == "__main__":
    main()
