from __future__ import annotations

import csv
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlalchemy import func, select, text

from dataspace.errors import InvalidInput, NotFound
from dataspace.ingest.service import ingest_file, ingest_rows
from dataspace.subjects.models import Subject, SubjectKey, SubjectProfile
from dataspace.subjects.store import read_profile, shred
from tests.factories.catalog import customer_row, load_demo_catalog


def write_csv(path, rows):
    cols = list(dict.fromkeys(k for r in rows for k in r))
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols)
        w.writeheader()
        w.writerows(rows)
    return path


def subject_id(ctx, ref):
    with ctx.db.session() as s:
        return s.scalar(select(Subject.id).where(Subject.blind_ref == ctx.keys.blind_index(ref)))


def count(ctx, model):
    with ctx.db.session() as s:
        return s.scalar(select(func.count()).select_from(model))


def test_csv_ingest_stores_good_rows_encrypted_and_reports_bad_rows(ctx, tmp_path):
    load_demo_catalog(ctx)
    rows = [
        customer_row("C1"),
        customer_row("C2", age=17),  # below minimum
        customer_row("C3", city="Atlantis"),  # not in enum
        customer_row("C4", monthly_card_spend="lots"),  # not a number
        customer_row("C1"),  # duplicate id
        customer_row("C5", age="", gender=""),  # age required
        customer_row("C6", ev_owner="maybe", policy_renewal_month=13),
        customer_row("C7"),
    ]
    report = ingest_file(ctx.db, ctx.keys, ctx.vault, write_csv(tmp_path / "in.csv", rows))
    assert (report.rows, report.accepted, report.rejected) == (8, 2, 6)
    by_row = {}
    for e in report.errors:
        by_row.setdefault(e.row, []).append((e.column, e.reason))
    assert by_row[2] == [("age", "below minimum 18")]
    assert by_row[3] == [("city", "not one of the allowed values")]
    assert by_row[4] == [("monthly_card_spend", "not a number")]
    assert by_row[5] == [("customer_id", "duplicate customer id (first at row 1)")]
    assert by_row[6] == [("age", "value is required")]
    assert sorted(by_row[7]) == [
        ("ev_owner", "not a boolean (true/false)"),
        ("policy_renewal_month", "above maximum 12"),
    ]
    assert count(ctx, Subject) == 2
    # Values round-trip with their types; nothing is stored in plaintext.
    with ctx.db.session() as s:
        profile = read_profile(s, ctx.vault, subject_id(ctx, "C1"))
    assert profile == {
        "age": 41,
        "gender": "female",
        "city": "Hangzhou",
        "app_sessions_30d": 23,
        "monthly_card_spend": 5230.5,
        "deposit_balance": 88000.0,
        "ev_owner": True,
        "policy_renewal_month": 3,
    }
    with ctx.db.engine.connect() as conn:
        dump = repr(conn.execute(text("select * from subject_profiles")).all())
        dump += repr(conn.execute(text("select * from subjects")).all())
    for needle in ("Hangzhou", "female", "5230", "C1"):
        assert needle not in dump


def test_parquet_ingest_and_update_merges_values(ctx, tmp_path):
    load_demo_catalog(ctx)
    table = pa.table({"customer_id": ["P1", "P2"], "age": [30, 55], "deposit_balance": [10.5, 2000.0]})
    pq.write_table(table, tmp_path / "in.parquet")
    report = ingest_file(ctx.db, ctx.keys, ctx.vault, tmp_path / "in.parquet")
    assert (report.accepted, report.created) == (2, 2)
    report = ingest_rows(ctx.db, ctx.keys, ctx.vault, [{"customer_id": "P1", "city": "Shanghai"}])
    assert (report.accepted, report.created, report.updated) == (1, 0, 1)
    with ctx.db.session() as s:
        assert read_profile(s, ctx.vault, subject_id(ctx, "P1")) == {
            "age": 30,
            "deposit_balance": 10.5,
            "city": "Shanghai",
        }


def test_unknown_or_retired_columns_reject_the_file_and_store_nothing(ctx, tmp_path):
    load_demo_catalog(ctx)
    with pytest.raises(InvalidInput, match="not in the catalog: shoe_size"):
        ingest_file(ctx.db, ctx.keys, ctx.vault, write_csv(tmp_path / "a.csv", [customer_row("X1", shoe_size=42)]))
    with pytest.raises(InvalidInput, match="missing the id column"):
        ingest_rows(ctx.db, ctx.keys, ctx.vault, [{"age": 30}])
    with pytest.raises(InvalidInput, match="nested values"):
        ingest_rows(ctx.db, ctx.keys, ctx.vault, [{"customer_id": "X", "age": {"a": 1}}])
    with pytest.raises(InvalidInput, match="file not found"):
        ingest_file(ctx.db, ctx.keys, ctx.vault, tmp_path / "missing.csv")
    (tmp_path / "b.xlsx").write_text("x")
    with pytest.raises(InvalidInput, match="unsupported file type"):
        ingest_file(ctx.db, ctx.keys, ctx.vault, tmp_path / "b.xlsx")
    assert count(ctx, Subject) == 0


def test_crypto_shredding_makes_values_unrecoverable(ctx):
    load_demo_catalog(ctx)
    ingest_rows(ctx.db, ctx.keys, ctx.vault, [customer_row("S1"), customer_row("S2", city="Wuhan")])
    sid = subject_id(ctx, "S1")
    with ctx.db.session() as s:
        sealed = s.scalar(select(SubjectProfile.sealed).where(SubjectProfile.subject_id == sid))
        other = s.execute(
            select(SubjectKey.epoch, SubjectKey.wrapped_key).where(SubjectKey.subject_id == subject_id(ctx, "S2"))
        ).one()
    with ctx.db.transaction() as s:
        shred(s, sid)
    with ctx.db.session() as s, pytest.raises(NotFound):
        read_profile(s, ctx.vault, sid)
    # Even a copy of the old ciphertext (a backup) cannot be opened: the data key is gone, and no other
    # subject's key opens it.
    from dataspace.vault import DecryptionError, Vault

    other_dek = ctx.vault.unwrap(other.wrapped_key, subject_id(ctx, "S2"), other.epoch)
    with pytest.raises(DecryptionError):
        Vault.open(other_dek, sealed, sid)
    # A later ingest does not resurrect an erased subject.
    report = ingest_rows(ctx.db, ctx.keys, ctx.vault, [customer_row("S1")])
    assert report.updated == 0
    assert report.created == 0
    with ctx.db.session() as s:
        assert s.get(Subject, sid).erased_at is not None
        assert read_profile(s, ctx.vault, subject_id(ctx, "S2"))["city"] == "Wuhan"


def test_values_never_reach_the_logs(ctx, tmp_path, caplog):
    load_demo_catalog(ctx)
    caplog.set_level("DEBUG")
    ingest_rows(ctx.db, ctx.keys, ctx.vault, [customer_row("L1", city="Chengdu"), customer_row("L2", age=5)])
    logged = caplog.text + json.dumps([r.__dict__ for r in caplog.records], default=str)
    assert "Chengdu" not in logged
    assert "L1" not in logged
