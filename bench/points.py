"""Points ledger benchmark: bulk usage awards, sequential and concurrent redemptions, invariant check.

    .venv/bin/python bench/points.py --n 2000 [--url postgresql+psycopg://postgres@127.0.0.1:5432/test]

Without --url it uses a fresh SQLite file. With --url it creates (and drops) a scratch database next to
the given one on PostgreSQL. Prints rows/s, redemption latency p50/p99, and peak RSS.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from sqlalchemy import create_engine, text

from dataspace import migrations
from dataspace.db import Database, utcnow
from dataspace.errors import InsufficientFunds
from dataspace.points import earning, invariants, rewards
from dataspace.points import redemption as points_redemption
from dataspace.points.schemas import RewardCreate
from dataspace.subjects.models import Subject


def _pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] if len(values) > 1 else values[0]


def run(db: Database, n: int, workers: int) -> None:
    now = utcnow()
    with db.transaction() as session:
        subjects = [Subject(blind_ref=uuid.uuid4().hex) for _ in range(n)]
        session.add_all(subjects)
        session.flush()
        ids = [s.id for s in subjects]
        rewards.create_reward(session, data=RewardCreate(key="coffee", name="Coffee", cost=5, stock=10 * n))

    t = time.perf_counter()
    with db.transaction() as session:
        credited = earning.award_usage(session, job_id="bench-1", credits=[(s, 100) for s in ids], now=now)
    dt = time.perf_counter() - t
    print(f"award_usage bulk: {credited} customers in {dt:.2f}s = {credited / dt:,.0f} credits/s")

    count = min(n, 1000)
    lat: list[float] = []
    t = time.perf_counter()
    for i in range(count):
        s = time.perf_counter()
        with db.transaction() as session:
            points_redemption.redeem(
                session, subject_id=ids[i], reward_key="coffee", idempotency_key=f"seq{i}", now=now
            )
        lat.append((time.perf_counter() - s) * 1000)
    dt = time.perf_counter() - t
    print(
        f"redeem sequential: {count} in {dt:.2f}s = {count / dt:,.0f}/s, "
        f"p50 {_pct(lat, 50):.2f} ms, p99 {_pct(lat, 99):.2f} ms"
    )

    def one(i: int) -> float:
        s = time.perf_counter()
        try:
            with db.transaction() as session:
                points_redemption.redeem(
                    session, subject_id=ids[i % len(ids)], reward_key="coffee", idempotency_key=f"par{i}", now=now
                )
        except InsufficientFunds:
            pass
        return (time.perf_counter() - s) * 1000

    t = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        lat = list(pool.map(one, range(count)))
    dt = time.perf_counter() - t
    print(
        f"redeem concurrent ({workers} threads, distinct customers): {count} in {dt:.2f}s = "
        f"{count / dt:,.0f}/s, p50 {_pct(lat, 50):.2f} ms, p99 {_pct(lat, 99):.2f} ms"
    )

    t = time.perf_counter()
    with db.session() as session:
        invariants.check_invariants(session)
    print(f"check_invariants: {time.perf_counter() - t:.2f}s")
    print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=2000, help="customers (and up to 1000 redemptions)")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--url", default=None, help="a PostgreSQL URL to create a scratch database beside")
    args = parser.parse_args()
    if args.url is None:
        with tempfile.TemporaryDirectory() as tmp:
            db = Database(f"sqlite:///{Path(tmp) / 'bench.db'}")
            migrations.upgrade(db.engine)
            print(f"backend: sqlite, n={args.n}")
            run(db, args.n, args.workers)
            db.dispose()
        return
    name = f"dataspace_bench_{uuid.uuid4().hex[:8]}"
    base = args.url.rpartition("/")[0]
    admin = create_engine(args.url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        db = Database(f"{base}/{name}")
        migrations.upgrade(db.engine)
        print(f"backend: postgresql, n={args.n}")
        run(db, args.n, args.workers)
        db.dispose()
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


if __name__ == "__main__":
    main()
