"""The backup and restore drill (issue 21 §4) on both databases: ``dataspace backup`` / ``dataspace restore``.

A real backup (pg_dump / the SQLite online backup API), then life goes on (a subject is erased, the logs grow
and their checkpoints are published), then the backup is restored into a fresh database: the restore refuses
to roll the published logs back unless told to, records it when told to, and the erased subject stays
unreadable while everyone else's profile opens. Then the attacks: a damaged dump, a forged manifest
checkpoint, a log rewritten before the backup was taken.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select, text
from typer.testing import CliRunner

from dataspace.backup import backup, restore
from dataspace.cli import app as cli_app
from dataspace.compliance import service as compliance
from dataspace.consents import changes
from dataspace.consents import queries as consent_queries
from dataspace.context import Context
from dataspace.db import Database
from dataspace.errors import Conflict, InvalidInput, NotFound
from dataspace.ingest.service import ingest_rows
from dataspace.keys import save_key_file
from dataspace.principal import Principal
from dataspace.subjects.epochs import retire
from dataspace.subjects.models import Subject, SubjectKey, SubjectProfile
from dataspace.subjects.store import open_profile, read_profile
from dataspace.tlog import LOGS, witness
from dataspace.tlog.log import latest_checkpoint, sequence, tree_size
from dataspace.tlog.models import TLogEntry
from dataspace.vault import DecryptionError
from tests.conftest import PG_ADMIN_URL, _pg_url
from tests.factories.catalog import customer_row, load_demo_catalog

BUCKETS = 4  # several subjects share the erased one's bucket (their keys are re-wrapped, not lost)


@pytest.fixture
def source(ctx: Context, tmp_path: Path) -> Context:
    settings = ctx.settings.model_copy(update={"data_dir": tmp_path / "var", "epoch_buckets": BUCKETS})
    return Context(settings=settings, db=ctx.db, keys=ctx.keys)


@pytest.fixture
def fresh(source: Context, tmp_path: Path) -> Iterator[Callable[[], Context]]:
    """``fresh()``: a context of the same deployment (keys, key store, checkpoint copies) on a new, empty
    database of the same kind."""
    made: list[str] = []
    opened: list[Context] = []

    def make() -> Context:
        if source.db.is_sqlite:
            url = f"sqlite:///{tmp_path / f'restored-{uuid.uuid4().hex[:6]}.db'}"
        else:
            name = f"dataspace_drill_{uuid.uuid4().hex[:12]}"
            admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
            admin.dispose()
            made.append(name)
            url = _pg_url(name)
        settings = source.settings.model_copy(update={"database_url": url})
        target = Context(settings=settings, db=Database(url), keys=source.keys)
        opened.append(target)
        return target

    yield make
    for target in opened:
        target.close()
    if made:
        admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            for name in made:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _people(ctx: Context, n: int = 12) -> dict[int, int]:
    load_demo_catalog(ctx)
    ingest_rows(ctx.db, ctx.keys, ctx.vault, [customer_row(f"D{i}", age=20 + i) for i in range(n)])
    refs = {ctx.keys.blind_index(f"D{i}"): 20 + i for i in range(n)}
    with ctx.db.session() as s:
        return {sid: refs[b] for sid, b in s.execute(select(Subject.id, Subject.blind_ref))}


def _erase(ctx: Context, sid: int) -> None:
    with ctx.db.transaction() as s:
        compliance.erase_subject(
            ctx.settings, ctx.keys, s, subject_id=sid, actor=Principal("t", "customer", "c", subject_id=sid)
        )


def _sealed(ctx: Context, sid: int) -> tuple[int, bytes, bytes]:
    with ctx.db.session() as s:
        row = s.execute(
            select(SubjectKey.epoch, SubjectKey.wrapped_key, SubjectProfile.sealed)
            .join(SubjectProfile, SubjectProfile.subject_id == SubjectKey.subject_id)
            .where(SubjectKey.subject_id == sid)
        ).one()
    return int(row.epoch), bytes(row.wrapped_key), bytes(row.sealed)


def test_the_whole_drill(source: Context, fresh: Callable[[], Context], tmp_path: Path) -> None:
    ages = _people(source)
    erased = sorted(ages)[5]
    with source.db.transaction() as s:
        changes.grant(
            s,
            subject_id=erased,
            request=changes.GrantRequest(purpose="insurance_offer", field="age", partner="harbor_insurance"),
            signer=source.keys.signing_key,
        )
    as_backed_up = _sealed(source, erased)
    manifest = backup(source.settings, source.db, source.keys, tmp_path / "b1")
    assert (tmp_path / "b1" / manifest.dump).stat().st_mode & 0o077 == 0  # customer data: owner only
    with source.db.session() as s:
        backed_up = {name: tree_size(s, log=name) for name in LOGS}
    assert backed_up["audit"] > 0
    assert manifest.checkpoints["audit"] is not None
    assert f"\n{backed_up['audit']}\n" in manifest.checkpoints["audit"]

    # After the backup: an erasure (and its bucket's retirement, the erasure's time bound), published.
    _erase(source, erased)
    retire(source.db, source.vault)
    sequence(source.settings, source.db, source.keys, "audit")
    with source.db.session() as s:
        published = tree_size(s, log="audit")
    assert published > backed_up["audit"]

    # Restoring would silently drop what was published since: refused, and the target stays empty.
    target = fresh()
    with pytest.raises(Conflict, match="roll back"):
        restore(target.settings, target.db, target.keys, target.vault, tmp_path / "b1")
    assert target.db.table_names() == []

    # The operator accepts the loss in so many words: restored, recorded, re-published.
    report = restore(target.settings, target.db, target.keys, target.vault, tmp_path / "b1", accept_log_rollback=True)
    audit = next(c for c in report.logs if c.log == "audit")
    assert (audit.size, audit.backup_size, audit.kept_size) == (backed_up["audit"], backed_up["audit"], published)
    assert audit.lost == published - backed_up["audit"]
    assert report.reconciled["shredded"] == 1
    with target.db.session() as s:
        restored_size = tree_size(s, log="audit")
        since = list(
            s.scalars(
                select(TLogEntry.action)
                .where(TLogEntry.log == "audit", TLogEntry.idx >= backed_up["audit"])
                .order_by(TLogEntry.idx)
            )
        )
        note = s.execute(
            select(TLogEntry.entry).where(TLogEntry.log == "audit", TLogEntry.action == "backup.restored")
        ).scalar_one()
        kept = latest_checkpoint(s, log="audit")
    # Published by the restore: the erasure done again (it is after the backup) and the restore itself.
    assert restored_size == backed_up["audit"] + len(since)
    assert "subject.erased" in since
    assert since[-1] == "backup.restored"
    assert json.loads(note)["details"]["logs"]["audit"]["lost"] == audit.lost
    assert kept is not None
    assert kept.size == restored_size
    assert witness.read(target.settings.resolved_checkpoint_dir, "audit") == kept.note
    assert list(target.settings.resolved_checkpoint_dir.glob("audit.checkpoint.rolled-back-*"))

    # The erasure made after the backup stays in force; everyone else's profile opens.
    with target.db.session() as s:
        with pytest.raises(NotFound):
            read_profile(s, target.vault, erased)
        for sid, age in ages.items():
            if sid != erased:
                assert read_profile(s, target.vault, sid)["age"] == age
    with pytest.raises(DecryptionError):  # what the backup holds for the erased subject: unreadable for good
        open_profile(target.vault, erased, *as_backed_up)
    # ... and the rest of the erasure is done again: the consent the backup still had is withdrawn.
    with target.db.session() as s:
        assert consent_queries.list_grants(s, subject_id=erased) == []
        assert consent_queries.list_grants(s, subject_id=erased, include_ended=True)

    # The next drill from the restored database needs no override: its logs extend the kept checkpoints.
    manifest2 = backup(target.settings, target.db, target.keys, tmp_path / "b2")
    again = fresh()
    report2 = restore(again.settings, again.db, again.keys, again.vault, tmp_path / "b2")
    assert all(c.lost == 0 for c in report2.logs)
    assert manifest2.checkpoints["audit"] is not None
    with again.db.session() as s:
        assert tree_size(s, log="audit") == restored_size


def test_a_damaged_dump_or_a_forged_checkpoint_is_refused(
    source: Context, fresh: Callable[[], Context], tmp_path: Path
) -> None:
    _people(source, 4)
    manifest = backup(source.settings, source.db, source.keys, tmp_path / "b")
    dump = tmp_path / "b" / manifest.dump
    good = dump.read_bytes()
    dump.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
    target = fresh()
    with pytest.raises(InvalidInput, match="does not match its manifest"):
        restore(target.settings, target.db, target.keys, target.vault, tmp_path / "b")
    dump.write_bytes(good)

    # A manifest whose checkpoint was edited (a larger tree, to excuse a shorter log): its signature fails.
    path = tmp_path / "b" / "manifest.json"
    doc = json.loads(path.read_text())
    lines = doc["checkpoints"]["audit"].split("\n")
    lines[1] = str(int(lines[1]) + 5)
    doc["checkpoints"]["audit"] = "\n".join(lines)
    path.write_text(json.dumps(doc))
    with pytest.raises(InvalidInput, match="does not verify"):
        restore(target.settings, target.db, target.keys, target.vault, tmp_path / "b")
    assert target.db.table_names() == []


def test_a_log_rewritten_before_the_backup_is_refused(
    source: Context, fresh: Callable[[], Context], tmp_path: Path
) -> None:
    _people(source, 4)
    for name in LOGS:
        sequence(source.settings, source.db, source.keys, name)
    # An insider rewrites a sequenced audit entry (stored hashes untouched), then a backup is taken.
    with source.db.transaction() as s:
        first = s.execute(
            select(TLogEntry.id, TLogEntry.entry).where(TLogEntry.log == "audit", TLogEntry.idx == 0)
        ).one()
        s.execute(
            TLogEntry.__table__.update()
            .where(TLogEntry.id == first.id)
            .values(entry=first.entry.replace('"ok"', '"denied"', 1) + " ")
        )
    backup(source.settings, source.db, source.keys, tmp_path / "b")
    target = fresh()
    with pytest.raises(InvalidInput, match="altered entry at index 0"):
        restore(target.settings, target.db, target.keys, target.vault, tmp_path / "b", accept_log_rollback=True)
    assert target.db.table_names() == []


def test_the_cli_runs_the_drill(source: Context, fresh: Callable[[], Context], tmp_path: Path) -> None:
    _people(source, 3)
    key_file = tmp_path / "keys.json"
    save_key_file(key_file, source.keys)
    env = {
        "DATASPACE_DATA_DIR": str(source.settings.data_dir),
        "DATASPACE_KEY_FILE": str(key_file),
        "DATASPACE_EPOCH_BUCKETS": str(BUCKETS),
        "DATASPACE_DATABASE_URL": source.db.url,
    }
    runner = CliRunner()
    made = runner.invoke(cli_app, ["backup", str(tmp_path / "b")], env=env)
    assert made.exit_code == 0, made.output
    assert "audit:" in made.output
    target = fresh()
    env["DATASPACE_DATABASE_URL"] = target.db.url
    done = runner.invoke(cli_app, ["restore", str(tmp_path / "b")], env=env)
    assert done.exit_code == 0, done.output
    assert "consistent with the published checkpoints" in done.output
    refused = runner.invoke(cli_app, ["restore", str(tmp_path / "b")], env=env)  # not empty any more
    assert refused.exit_code == 1
    assert "not empty" in refused.output
