"""Ledger bench: bulk append + sequencing throughput, inclusion-proof latency, offline export verification.

    .venv/bin/python bench/ledger.py --n 1000000 [--db postgresql+psycopg://postgres@127.0.0.1:5432/test]

Targets: append >= 20,000 entries/s; inclusion proof at 1M entries < 5 ms; verify a 1M export < 10 s.
With --db pointing at PostgreSQL a fresh database is created and dropped.
"""

from __future__ import annotations

import argparse
import random
import resource
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from sqlalchemy import create_engine, text

from dataspace import migrations
from dataspace.context import Context
from dataspace.db import Database
from dataspace.keys import KeyRing
from dataspace.settings import Settings
from dataspace.tlog.export import write_export
from dataspace.tlog.log import inclusion_proof, latest_checkpoint, sequence, verifier_keys
from dataspace.usage import UsageEntry, record_usage
from transparency import merkle
from transparency.export import verify_export

FIELDS = ["income", "age", "postcode_area", "tenure", "product_count"]


def _database(url: str | None, tmp: Path) -> tuple[str, callable]:  # type: ignore[valid-type]
    if not url:
        return f"sqlite:///{tmp / 'bench.db'}", lambda: None
    name = f"dataspace_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return url.rpartition("/")[0] + "/" + name, drop


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--job-size", type=int, default=100_000, help="entries per append transaction (one job)")
    ap.add_argument("--proofs", type=int, default=1000)
    ap.add_argument("--db", default=None, help="PostgreSQL admin URL (default: a temporary SQLite file)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        url, drop = _database(args.db, tmp)
        db = Database(url)
        try:
            migrations.upgrade(db.engine)
            ctx = Context(settings=Settings(data_dir=tmp, database_url=url), db=db, keys=KeyRing.generate())
            print(f"backend={db.engine.dialect.name} n={args.n:,}")

            t0 = time.perf_counter()
            done = 0
            while done < args.n:
                k = min(args.job_size, args.n - done)
                with db.transaction() as s:
                    record_usage(
                        s,
                        (
                            UsageEntry(
                                f"job-{done // args.job_size}",
                                (done + i) % 50_000,
                                (FIELDS[i % 5],),
                                "acme",
                                "insurance.offer",
                                "bundle-x",
                            )
                            for i in range(k)
                        ),
                    )
                done += k
            t_append = time.perf_counter() - t0
            t1 = time.perf_counter()
            res = sequence(ctx, "usage")
            t_seq = time.perf_counter() - t1
            assert res.size == args.n
            print(f"append (queue, committed):   {args.n / t_append:12,.0f} entries/s  ({t_append:.2f} s)")
            print(f"sequence (tree + checkpoint): {args.n / t_seq:12,.0f} entries/s  ({t_seq:.2f} s)")
            print(f"append end to end:           {args.n / (t_append + t_seq):12,.0f} entries/s")

            rng = random.Random(1)
            lat = []
            with db.session() as s:
                cp = latest_checkpoint(s, log="usage")
                assert cp is not None
                for _ in range(args.proofs):
                    i = rng.randrange(args.n)
                    a = time.perf_counter()
                    p = inclusion_proof(s, log="usage", index=i, size=cp.size)
                    lat.append((time.perf_counter() - a) * 1000)
                    merkle.verify_inclusion(i, cp.size, p.leaf_hash, p.hashes, cp.root_hash)
            lat.sort()
            print(
                f"inclusion proof at {cp.size:,}: p50 {statistics.median(lat):.2f} ms  "
                f"p99 {lat[int(len(lat) * 0.99) - 1]:.2f} ms  max {lat[-1]:.2f} ms"
            )

            path = tmp / "usage.jsonl"
            a = time.perf_counter()
            with db.session() as s:
                write_export(s, path, cp=cp, fmt="jsonl")
            t_export = time.perf_counter() - a
            a = time.perf_counter()
            report = verify_export(path, verifier_keys(ctx))
            t_verify = time.perf_counter() - a
            assert report.ok, report
            mb = path.stat().st_size / 1e6
            print(f"export jsonl: {t_export:.2f} s ({mb:.0f} MB); offline verify: {t_verify:.2f} s")
        finally:
            db.dispose()
            drop()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS: {rss:.0f} MB")


if __name__ == "__main__":
    main()
