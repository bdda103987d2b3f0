"""Erasure survives a restore from backup (issue 21 §1; the design is in ``dataspace.vault``).

A real backup is taken (``pg_dump`` on PostgreSQL, the SQLite online backup API), a subject is erased and
its bucket retired, the backup is restored into a fresh database, and with the current key store the
erased subject cannot be opened while every other subject can.
"""

from __future__ import annotations

import sqlite3
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select, text

from dataspace.compliance import service as compliance
from dataspace.context import Context
from dataspace.db import Database
from dataspace.errors import NotFound
from dataspace.ingest.service import ingest_rows
from dataspace.principal import Principal
from dataspace.subjects.epochs import _retire_bucket, reconcile, retire
from dataspace.subjects.models import KeyEpoch, Subject, SubjectKey, SubjectProfile
from dataspace.subjects.store import read_profile
from dataspace.vault import DecryptionError, Vault
from tests.conftest import PG_ADMIN_URL, _pg_url
from tests.factories.catalog import customer_row, load_demo_catalog
from tests.softhsm import MODULE, TokenPool, softhsm  # noqa: F401  (the fixture)

BUCKETS = 4  # small, so that several subjects share the erased subject's bucket


@pytest.fixture(params=["file", "pkcs11"])
def small_ctx(request: pytest.FixtureRequest, ctx: Context, tmp_path: Path) -> Context:
    """The test context with a 4-bucket key store: the key file directory, or a SoftHSM2 token."""
    update: dict[str, object] = {"data_dir": tmp_path, "epoch_buckets": BUCKETS}
    if request.param == "pkcs11":
        pool: TokenPool = request.getfixturevalue("softhsm")
        update |= {
            "key_backend": "pkcs11",
            "pkcs11_module": MODULE,
            "pkcs11_token_label": pool.take(),
            "pkcs11_pin_env": "DATASPACE_TEST_PKCS11_PIN",
        }
    settings = ctx.settings.model_copy(update=update)
    return Context(settings=settings, db=ctx.db, keys=ctx.keys)


def _people(ctx: Context, n: int = 12) -> dict[int, int]:
    """Ingest n customers; returns {subject_id: age} (each has a distinct age)."""
    load_demo_catalog(ctx)
    ingest_rows(ctx.db, ctx.keys, ctx.vault, [customer_row(f"P{i}", age=20 + i) for i in range(n)])
    with ctx.db.session() as s:
        refs = {ctx.keys.blind_index(f"P{i}"): 20 + i for i in range(n)}
        return {sid: refs[b] for sid, b in s.execute(select(Subject.id, Subject.blind_ref))}


def _erase(ctx: Context, sid: int) -> None:
    with ctx.db.transaction() as s:
        compliance.erase_subject(
            ctx.settings, ctx.keys, s, subject_id=sid, actor=Principal("t", "customer", "c", subject_id=sid)
        )


@contextmanager
def _backup(ctx: Context, tmp_path: Path) -> Iterator[callable]:  # type: ignore[valid-type]
    """Take a real backup now; yields ``restore()`` which restores it into a fresh database."""
    made: list[str] = []
    if ctx.db.is_sqlite:
        copy = tmp_path / "backup.db"
        src = sqlite3.connect(ctx.db.url.removeprefix("sqlite:///"))
        dst = sqlite3.connect(copy)
        src.backup(dst)  # the online backup API: a consistent copy while the server runs
        src.close()
        dst.close()

        def restore() -> Database:
            target = tmp_path / f"restored-{uuid.uuid4().hex[:6]}.db"
            target.write_bytes(copy.read_bytes())
            return Database(f"sqlite:///{target}")
    else:
        dump = tmp_path / "backup.dump"
        libpq = ctx.db.url.replace("+psycopg", "")
        subprocess.run(["pg_dump", "-Fc", "-f", str(dump), libpq], check=True)

        def restore() -> Database:
            name = f"dataspace_restore_{uuid.uuid4().hex[:12]}"
            admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
            admin.dispose()
            made.append(name)
            url = _pg_url(name)
            subprocess.run(
                ["pg_restore", "--no-owner", "-d", url.replace("+psycopg", ""), str(dump)],
                check=True,
            )
            return Database(url)

    try:
        yield restore
    finally:
        if made:
            admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                for name in made:
                    conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()


def _age(db: Database, vault: Vault, sid: int) -> int:
    with db.session() as s:
        return int(read_profile(s, vault, sid)["age"])


def test_a_restored_backup_cannot_open_an_erased_subject_but_opens_everyone_else(small_ctx, tmp_path):
    ctx = small_ctx
    vault = ctx.vault
    ages = _people(ctx)
    erased = sorted(ages)[5]
    mates = [sid for sid in ages if sid != erased and vault.bucket(sid) == vault.bucket(erased)]
    assert len(mates) >= 2
    with _backup(ctx, tmp_path) as restore:
        _erase(ctx, erased)
        report = retire(ctx.db, vault)
        assert (report.buckets, report.rewrapped, report.keys_destroyed) == (1, len(mates), 1)

        restored = restore()
        try:
            with restored.session() as s:
                old = s.execute(
                    select(SubjectKey.bucket, SubjectKey.epoch, SubjectKey.wrapped_key).where(
                        SubjectKey.subject_id == erased
                    )
                ).one()
            # The backup holds the erased subject's sealed profile and wrapped key, and the current key
            # store cannot open them: not through the database, nor with any key the store still holds.
            with pytest.raises(DecryptionError):
                _age(restored, vault, erased)
            for generation in vault.inventory()[old.bucket]:
                with pytest.raises(DecryptionError):
                    vault.unwrap(old.wrapped_key, erased, generation)
            journal = vault.read_journal(old.bucket)
            assert journal is not None
            assert erased not in journal[1]
            assert set(journal[1]) == set(mates)
            # Subjects of other buckets open straight away.
            for sid, age in ages.items():
                if vault.bucket(sid) != old.bucket:
                    assert _age(restored, vault, sid) == age

            # Reconciling the restored database with the key store brings the erased subject's bucket-mates
            # back and finishes shredding the erased subject.
            result = reconcile(restored, vault)
            assert (result.rewrapped, result.shredded) == (len(mates), [erased])
            for sid, age in ages.items():
                if sid != erased:
                    assert _age(restored, vault, sid) == age
            with restored.session() as s:
                with pytest.raises(NotFound):
                    read_profile(s, vault, erased)
                assert s.get(Subject, erased).erased_at is not None
                assert s.get(SubjectProfile, erased) is None
            assert reconcile(restored, vault).rewrapped == 0  # idempotent
        finally:
            restored.dispose()

    # The live database: everyone but the erased subject still opens, under the new epoch key.
    for sid, age in ages.items():
        if sid != erased:
            assert _age(ctx.db, vault, sid) == age


def test_a_backup_restored_before_the_retirement_still_opens_the_subject(small_ctx, tmp_path):
    """The time bound is real: until its bucket is retired an erasure holds only in the live database."""
    ctx = small_ctx
    vault = ctx.vault
    ages = _people(ctx, 4)
    erased = min(ages)
    with _backup(ctx, tmp_path) as restore:
        _erase(ctx, erased)
        with pytest.raises(NotFound):
            _age(ctx.db, vault, erased)
        restored = restore()
        try:
            assert _age(restored, vault, erased) == ages[erased]
            retire(ctx.db, vault)
            with pytest.raises(DecryptionError):
                _age(restored, vault, erased)
            with pytest.raises(DecryptionError):  # nor in another process (a fresh vault on the same store)
                _age(restored, Vault(vault.keys, vault.directory), erased)
        finally:
            restored.dispose()


def test_ingest_during_and_after_a_retirement_uses_the_new_key(small_ctx):
    ctx = small_ctx
    vault = ctx.vault
    ages = _people(ctx, 8)
    _erase(ctx, min(ages))
    retire(ctx.db, vault)
    ingest_rows(ctx.db, ctx.keys, ctx.vault, [customer_row(f"N{i}", age=70 + i) for i in range(8)])
    with ctx.db.session() as s:
        current = dict(s.execute(select(KeyEpoch.bucket, KeyEpoch.generation)).all())
        rows = s.execute(select(SubjectKey.subject_id, SubjectKey.bucket, SubjectKey.epoch)).all()
    for _sid, bucket, epoch in rows:
        assert epoch == current[bucket]
        assert vault.inventory()[bucket] == [epoch]


def test_a_pass_that_died_after_its_commit_has_its_old_key_destroyed_by_the_next(small_ctx):
    ctx = small_ctx
    vault = ctx.vault
    ages = _people(ctx, 8)
    erased = min(ages)
    bucket = vault.bucket(erased)
    _erase(ctx, erased)
    assert _retire_bucket(ctx.db, vault, bucket) is not None  # committed; "died" before destroying
    assert vault.inventory()[bucket] == [0, 1]
    report = retire(ctx.db, vault)
    assert (report.buckets, report.keys_destroyed) == (0, 1)
    assert vault.inventory()[bucket] == [1]
    for sid, age in ages.items():
        if sid != erased:
            assert _age(ctx.db, vault, sid) == age


def test_full_rotation_rewraps_everyone_and_destroys_every_old_key(small_ctx):
    ctx = small_ctx
    vault = ctx.vault
    ages = _people(ctx, 8)
    before = vault.inventory()
    report = retire(ctx.db, vault, every_bucket=True)
    assert report.rewrapped == len(ages)
    after = vault.inventory()
    assert all(after[b] == [gens[-1] + 1] for b, gens in before.items())
    for sid, age in ages.items():
        assert _age(ctx.db, vault, sid) == age


@pytest.mark.parametrize("small_ctx", ["file"], indirect=True)  # the CLI reads its settings from the environment
def test_the_cli_retires_and_reconciles(small_ctx, tmp_path, monkeypatch):
    """``dataspace keys retire-epochs`` and ``dataspace keys reconcile`` on the configured key store."""
    from typer.testing import CliRunner

    from dataspace.cli import app as cli_app
    from dataspace.keys import save_key_file

    ctx = small_ctx
    ages = _people(ctx, 6)
    erased = min(ages)
    save_key_file(tmp_path / "keys.json", ctx.keys)
    monkeypatch.setenv("DATASPACE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("DATASPACE_DATABASE_URL", ctx.db.url)
    _erase(ctx, erased)
    runner = CliRunner()
    out = runner.invoke(cli_app, ["keys", "retire-epochs"])
    assert out.exit_code == 0, out.output
    assert "buckets retired: 1" in out.output
    assert "epoch keys destroyed: 1" in out.output
    out = runner.invoke(cli_app, ["keys", "reconcile"])
    assert out.exit_code == 0, out.output
    assert "subjects erased since the backup: 0" in out.output  # the live database is already in line
    out = runner.invoke(cli_app, ["keys", "retire-epochs", "--all"])
    assert out.exit_code == 0, out.output
    for sid, age in ages.items():
        if sid != erased:
            assert _age(ctx.db, Vault(ctx.vault.keys, ctx.vault.directory), sid) == age


def test_an_erasure_in_a_bucket_nobody_registered_is_still_retired(small_ctx):
    """Keys written around ``store_profiles`` (a bulk load) leave no ``key_epochs`` row: the erasure adds it."""
    ctx = small_ctx
    vault = ctx.vault
    ages = _people(ctx, 8)
    erased = min(ages)
    with ctx.db.transaction() as s:
        s.execute(text("DELETE FROM key_epochs"))
    _erase(ctx, erased)
    report = retire(ctx.db, vault)
    assert report.buckets == 1
    assert vault.inventory()[vault.bucket(erased)] == [1]
    for sid, age in ages.items():
        if sid != erased:
            assert _age(ctx.db, vault, sid) == age


def test_a_retirement_waits_for_an_ingest_that_wraps_under_the_old_key(small_ctx, backend):
    """The race that would lose data: an ingest wraps new subjects under a bucket's current key while a
    retirement re-wraps that bucket and destroys the key. The ingest holds the bucket's row FOR SHARE, so
    the retirement waits for its commit and re-wraps its rows too; nobody is left under a destroyed key."""
    import threading

    from dataspace.subjects.store import store_profiles

    if backend != "postgresql":
        pytest.skip("SQLite runs one writer at a time; the race needs concurrent transactions")
    ctx = small_ctx
    vault = ctx.vault
    ages = _people(ctx, 8)
    in_ingest, release = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def ingest() -> None:
        try:
            with ctx.db.transaction() as s:
                store_profiles(s, vault, [(f"LATE{i}", {"age": 90 + i}) for i in range(4)], ctx.keys.blind_index)
                in_ingest.set()
                release.wait(30)
        except BaseException as exc:  # noqa: BLE001  (reported by the test below)
            errors.append(exc)
            in_ingest.set()

    writer = threading.Thread(target=ingest)
    writer.start()
    assert in_ingest.wait(30)
    done = threading.Event()
    retirer = threading.Thread(target=lambda: (retire(ctx.db, vault, every_bucket=True), done.set()))
    retirer.start()
    assert not done.wait(1.0)  # blocked on the ingest's FOR SHARE lock (if it were not, it would be done)
    release.set()
    writer.join(30)
    retirer.join(60)
    assert not errors
    assert done.is_set()
    with ctx.db.session() as s:
        late = [
            s.scalar(select(Subject.id).where(Subject.blind_ref == ctx.keys.blind_index(f"LATE{i}"))) for i in range(4)
        ]
        current = dict(s.execute(select(KeyEpoch.bucket, KeyEpoch.generation)).all())
        rows = s.execute(select(SubjectKey.bucket, SubjectKey.epoch)).all()
    assert all(epoch == current[bucket] for bucket, epoch in rows)
    assert all(vault.inventory()[b] == [g] for b, g in current.items())
    for i, sid in enumerate(late):
        assert _age(ctx.db, vault, sid) == 90 + i
    for sid, age in ages.items():
        assert _age(ctx.db, vault, sid) == age


def test_reconcile_refuses_a_key_store_that_is_not_this_databases(small_ctx, tmp_path):
    """Pointing a restore at the wrong (or an empty) key store must not shred everyone."""
    from dataspace.errors import ConfigurationError
    from dataspace.vault import file_vault

    ctx = small_ctx
    ages = _people(ctx, 6)
    wrong = file_vault(tmp_path / "another-store", buckets=BUCKETS)
    with pytest.raises(ConfigurationError, match="nothing was changed"):
        reconcile(ctx.db, wrong)
    for sid, age in ages.items():
        assert _age(ctx.db, ctx.vault, sid) == age
