"""Bulk consent evaluation: N subjects x F fields for one (partner, purpose).

    .venv/bin/python bench/consent.py --n 1000000 --fields 10 --db-n 20000

Grants are generated directly as columnar arrays (about 0.8 x N x F rows for the target partner and purpose,
plus dimension-level, category-level, withdrawn, expired and other-purpose rows), then ``consent.evaluate``
is timed. ``--db-n`` also times loading grants from a SQLite database through the service (0 to skip).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

# This script is named like the package it measures: put the repository root, not this directory, first.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [str(_HERE.parent)] + [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import numpy as np  # noqa: E402

from consent import FieldRef, GrantTable, Granularity, PartnerRef, evaluate, permitted_for_all  # noqa: E402
from consent.bulk import OPEN_END, to_micros  # noqa: E402


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def make_table(n: int, f: int, now: datetime, rng: np.random.Generator) -> GrantTable:
    t = to_micros(now)
    day = 86_400_000_000
    dims = 3
    # Field-level grants for the target (partner p:target, purpose 0): each (subject, field) with p = 0.8.
    subj = np.repeat(np.arange(1, n + 1, dtype=np.int64), f)
    field = np.tile(np.arange(f, dtype=np.int32), n)
    keep = rng.random(n * f) < 0.8
    subj, field = subj[keep], field[keep]
    m = len(subj)
    # Extra rows: dimension-level grants (10% of subjects), category grants (5%), other purposes/partners.
    k_dim = n // 10
    k_cat = n // 20
    k_other = n // 5
    subjects = np.concatenate([subj, rng.integers(1, n + 1, k_dim + k_cat + k_other)])
    target = np.concatenate(
        [
            field,
            f + rng.integers(0, dims, k_dim).astype(np.int32),  # codes f.. are dimensions
            rng.integers(0, f, k_cat + k_other).astype(np.int32),
        ]
    )
    recipient = np.concatenate(
        [
            np.zeros(m + k_dim, np.int32),  # p:target
            np.ones(k_cat, np.int32),  # c:insurer
            rng.integers(0, 4, k_other).astype(np.int32),
        ]
    )
    purpose = np.concatenate([np.zeros(m + k_dim + k_cat, np.int32), rng.integers(1, 4, k_other).astype(np.int32)])
    total = len(subjects)
    start = t - rng.integers(1, 365, total) * day
    end = np.full(total, OPEN_END, np.int64)
    ended = rng.random(total) < 0.1  # withdrawn or expired before now
    end[ended] = t - rng.integers(0, 30, int(ended.sum())) * day
    later = rng.random(total) < 0.2
    end[later & ~ended] = t + rng.integers(1, 365, int((later & ~ended).sum())) * day
    level = np.where(rng.random(total) < 0.3, 2, 1).astype(np.int8)
    return GrantTable(
        subject=subjects,
        target=target,
        recipient=recipient,
        purpose=purpose,
        level=level,
        start=start,
        end=end,
        targets=tuple([f"f:field{j}" for j in range(f)] + [f"d:dim{d}" for d in range(dims)]),
        recipients=("p:target", "c:insurer", "p:other1", "p:other2"),
        purposes=("underwriting", "marketing", "analytics", "service"),
    )


def bench_memory(n: int, f: int, repeats: int) -> None:
    now = datetime.now(UTC)
    rng = np.random.default_rng(42)
    t0 = time.perf_counter()
    table = make_table(n, f, now, rng)
    gen_s = time.perf_counter() - t0
    fields = [FieldRef(f"field{j}", f"dim{j % 3}", sensitive=(j == f - 1)) for j in range(f)]
    partner = PartnerRef("target", "insurer")
    population = np.arange(1, n + 1, dtype=np.int64)
    rss_before = peak_rss_mb()
    print(f"grants: {len(table):,} rows generated in {gen_s:.2f}s; peak RSS so far {rss_before:.0f} MiB")
    times = []
    selected = 0
    for _ in range(repeats):
        t0 = time.perf_counter()
        matrix = evaluate(
            table,
            subjects=population,
            fields=fields,
            partner=partner,
            purpose="underwriting",
            at=now,
            granularity=Granularity.GENERALIZED,
        )
        selected = int(permitted_for_all(matrix).sum())
        times.append(time.perf_counter() - t0)
    best, median = min(times), statistics.median(times)
    print(f"evaluate {n:,} subjects x {f} fields: best {best:.3f}s, median {median:.3f}s over {repeats} runs")
    print(f"  {n / median:,.0f} subjects/s ({n * f / median:,.0f} cells/s); {selected:,} subjects permit all fields")
    print(f"  peak RSS {peak_rss_mb():.0f} MiB (before evaluation {rss_before:.0f} MiB)")
    target = 2.0
    print(f"  target < {target:.1f}s for 1M x 10: {'met' if median < target or n < 1_000_000 else 'MISSED'}")


def bench_database(n: int, f: int) -> None:
    from sqlalchemy import insert

    from dataspace.catalog.models import Dimension, Field, Purpose
    from dataspace.db import Database
    from dataspace.grants import evaluation as consent_evaluation
    from dataspace.grants.models import ConsentGrant
    from dataspace.models import Base
    from dataspace.partners.models import Partner
    from dataspace.subjects.models import Subject

    now = datetime.now(UTC)
    rng = np.random.default_rng(7)
    with tempfile.TemporaryDirectory() as tmp:
        db = Database(f"sqlite:///{Path(tmp) / 'bench.db'}")
        Base.metadata.create_all(db.engine)
        t0 = time.perf_counter()
        with db.transaction() as s:
            s.add(Dimension(key="dim0", label="Dim"))
            s.add(Purpose(key="underwriting", label="U", dpv_term="dpv:Purpose"))
            s.add(Partner(key="target", name="Target", category="insurer"))
            s.flush()
            for j in range(f):
                s.add(
                    Field(
                        key=f"field{j}",
                        dimension_key="dim0",
                        label="F",
                        description="",
                        collection_purpose="",
                        storage_location="x",
                        sharing_scope="",
                        retention_days=1,
                        sensitivity="normal",
                        data_type="integer",
                    )
                )
            s.execute(insert(Subject), [{"id": i, "blind_ref": f"r{i}"} for i in range(1, n + 1)])
            rows = []
            for sid in range(1, n + 1):
                for j in np.flatnonzero(rng.random(f) < 0.8):
                    scope = f"f:field{j}|u:underwriting|p:target"
                    rows.append(
                        {
                            "subject_id": sid,
                            "scope_key": scope,
                            "active_scope_key": f"{sid}|{scope}",
                            "field_key": f"field{j}",
                            "purpose_key": "underwriting",
                            "partner_key": "target",
                            "granularity": "generalized",
                            "valid_from": now - timedelta(days=1),
                            "state": "active",
                            "version": 1,
                            "created_at": now,
                            "updated_at": now,
                        }
                    )
            s.execute(insert(ConsentGrant), rows)
        setup_s = time.perf_counter() - t0
        with db.session() as s:
            t0 = time.perf_counter()
            chosen = consent_evaluation.permitted_subjects(
                s, partner_key="target", purpose_key="underwriting", field_keys=[f"field{j}" for j in range(f)], at=now
            )
            load_s = time.perf_counter() - t0
        print(
            f"database (SQLite): {len(rows):,} grants for {n:,} subjects inserted in {setup_s:.2f}s; "
            f"load + evaluate {load_s:.3f}s ({len(rows) / load_s:,.0f} grants/s, {n / load_s:,.0f} subjects/s); "
            f"{len(chosen):,} selected"
        )
        db.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=1_000_000, help="subjects")
    parser.add_argument("--fields", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--db-n", type=int, default=20_000, help="subjects for the database load timing (0: skip)")
    args = parser.parse_args()
    bench_memory(args.n, args.fields, args.repeats)
    if args.db_n:
        bench_database(args.db_n, args.fields)


if __name__ == "__main__":
    main()
