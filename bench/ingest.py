"""Ingest throughput: N rows x 10 fields from a CSV into a fresh embedded (SQLite) database.

    python bench/ingest.py --n 1000000 [--database-url postgresql+psycopg://postgres@127.0.0.1/test]

Prints rows/s and peak RSS. Target: 1,000,000 rows x 10 fields in under 2 minutes.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import pyarrow.csv as pacsv

from dataspace import migrations
from dataspace.catalog import service as catalog
from dataspace.context import Context
from dataspace.db import Database
from dataspace.demo.population import generate
from dataspace.ingest.service import ingest_file
from dataspace.keys import KeyRing
from dataspace.settings import Settings

CATALOG = Path(__file__).resolve().parents[1] / "dataspace" / "demo" / "catalog.yaml"
FIELDS = [
    "customer_id",
    "age",
    "gender",
    "city",
    "app_sessions_30d",
    "branch_visits_12m",
    "service_calls_90d",
    "ev_owner",
    "monthly_card_spend",
    "deposit_balance",
    "policy_renewal_month",
]


def make_csv(path: Path, n: int) -> None:
    """The demo population generator, 10 fields plus the customer id."""
    pacsv.write_csv(generate(n).select(FIELDS), path)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--database-url", default=None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        csv_path = Path(tmp) / "customers.csv"
        t0 = time.perf_counter()
        make_csv(csv_path, args.n)
        print(
            f"generated {args.n:,} rows x 10 fields ({csv_path.stat().st_size / 1e6:.0f} MB) "
            f"in {time.perf_counter() - t0:.1f}s"
        )
        url = args.database_url or f"sqlite:///{Path(tmp) / 'bench.db'}"
        db = Database(url)
        migrations.upgrade(db.engine)
        ctx = Context(settings=Settings(data_dir=Path(tmp), database_url=url), db=db, keys=KeyRing.generate())
        with db.transaction() as session:
            catalog.load_document(session, catalog.read_document(CATALOG))
        t0 = time.perf_counter()
        report = ingest_file(ctx.db, ctx.keys, ctx.vault, csv_path)
        dt = time.perf_counter() - t0
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"backend: {db.engine.dialect.name}")
        print(
            f"ingested {report.accepted:,} rows ({report.rejected} rejected) in {dt:.1f}s "
            f"= {report.accepted / dt:,.0f} rows/s; peak RSS {rss:.0f} MB"
        )
        db.dispose()


if __name__ == "__main__":
    main()
