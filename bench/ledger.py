"""Ledger bench: bulk append + sequencing throughput, inclusion-proof latency, offline export verification.

    .venv/bin/python bench/ledger.py --n 1000000 [--db postgresql+psycopg://postgres@127.0.0.1:5432/test]

Targets: append >= 20,000 entries/s; inclusion proof at 1M entries < 5 ms; verify a 1M export < 10 s.
With --db pointing at PostgreSQL a fresh database is created and dropped.

Floor, in the same run: pymerkle (``SqliteTree``, a bench-only dependency: ``pip install -e '.[bench]'``) fed
the same entries (their canonical JSON, read back from the log in ``--job-size`` chunks; only its
``append_entries`` calls are timed) and asked for inclusion proofs at the same random indices and tree size.
Targets: sequencing >= 0.5x pymerkle's raw append; inclusion proofs >= 20x faster than pymerkle's.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

from sqlalchemy import create_engine, select, text

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import _report

from dataspace import migrations
from dataspace.context import Context
from dataspace.db import Database
from dataspace.keys import KeyRing
from dataspace.settings import Settings
from dataspace.tlog.export import write_export
from dataspace.tlog.log import inclusion_proof, latest_checkpoint, sequence, verifier_keys
from dataspace.tlog.models import TLogEntry
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


def pymerkle_floor(db: Database, tmp: Path, n: int, chunk: int, indices: list[int]) -> tuple[float, list[float]]:
    """pymerkle's ``SqliteTree`` given the log's entries (read back in chunks, untimed) and asked for the
    inclusion proofs of ``indices``: (seconds spent in ``append_entries``, proof latencies in ms)."""
    from pymerkle import SqliteTree

    tree = SqliteTree(str(tmp / "pymerkle.db"))
    try:
        spent = 0.0
        last = -1
        while True:
            with db.session() as s:
                rows = s.execute(
                    select(TLogEntry.idx, TLogEntry.entry)
                    .where(TLogEntry.log == "usage", TLogEntry.idx > last)
                    .order_by(TLogEntry.idx)
                    .limit(chunk)
                ).all()
            if not rows:
                break
            last = rows[-1][0]
            entries = [e.encode() for _, e in rows]
            del rows
            a = time.perf_counter()
            tree.append_entries(entries)
            spent += time.perf_counter() - a
        assert tree.get_size() == n, (tree.get_size(), n)
        lat = []
        for i in indices:
            a = time.perf_counter()
            tree.prove_inclusion(i + 1, n)  # pymerkle counts leaves from 1
            lat.append((time.perf_counter() - a) * 1000)
        return spent, lat
    finally:
        tree.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--job-size", type=int, default=100_000, help="entries per append transaction (one job)")
    ap.add_argument("--proofs", type=int, default=1000)
    ap.add_argument("--db", default=None, help="PostgreSQL admin URL (default: a temporary SQLite file)")
    ap.add_argument("--pymerkle-proofs", type=int, default=200, help="inclusion proofs asked of pymerkle")
    ap.add_argument("--no-pymerkle", action="store_true", help="skip the pymerkle floor")
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
                                1 + done // args.job_size,
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
            res = sequence(ctx.settings, ctx.db, ctx.keys, "usage")
            t_seq = time.perf_counter() - t1
            assert res.size == args.n
            print(f"append (queue, committed):   {args.n / t_append:12,.0f} entries/s  ({t_append:.2f} s)")
            print(f"sequence (tree + checkpoint): {args.n / t_seq:12,.0f} entries/s  ({t_seq:.2f} s)")
            print(f"append end to end:           {args.n / (t_append + t_seq):12,.0f} entries/s")

            rng = random.Random(1)
            indices = [rng.randrange(args.n) for _ in range(args.proofs)]
            lat = []
            with db.session() as s:
                cp = latest_checkpoint(s, log="usage")
                assert cp is not None
                for i in indices:
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
            report = verify_export(path, verifier_keys(ctx.settings, ctx.keys))
            t_verify = time.perf_counter() - a
            assert report.ok, report
            mb = path.stat().st_size / 1e6
            print(f"export jsonl: {t_export:.2f} s ({mb:.0f} MB); offline verify: {t_verify:.2f} s")
            if not args.no_pymerkle:
                pm_append, pm_lat = pymerkle_floor(db, tmp, args.n, args.job_size, indices[: args.pymerkle_proofs])
                print("\nagainst pymerkle (SqliteTree), same entries, same indices, same session:")
                _report.compare(
                    "sequencing (tree + checkpoint)",
                    args.n / t_seq,
                    args.n / pm_append,
                    unit="entries/s",
                    better="higher",
                    target=0.5,
                    floor_name="pymerkle append_entries",
                )
                _report.compare(
                    "append end to end (queue + sequence)",
                    args.n / (t_append + t_seq),
                    args.n / pm_append,
                    unit="entries/s",
                    better="higher",
                    floor_name="pymerkle append_entries",
                )
                ours, theirs = statistics.median(lat), statistics.median(pm_lat)
                _report.compare(
                    f"inclusion proof p50 at {cp.size:,}",
                    ours,
                    theirs,
                    unit="ms",
                    better="lower",
                    target=1 / 20,
                    floor_name="pymerkle prove_inclusion p50",
                )
                _report.value("inclusion proof speed-up over pymerkle (p50)", theirs / ours, unit="x", target=">= 20x")
        finally:
            db.dispose()
            drop()
    _report.peak_rss()


if __name__ == "__main__":
    main()
