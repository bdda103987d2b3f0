"""The backup and restore drill (see the package docstring for what is checked and promised)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sqlite3
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from dataspace import __version__
from dataspace.db import Database, utcnow
from dataspace.errors import Conflict, InvalidInput, Unavailable
from dataspace.keys import KeyRing
from dataspace.settings import Settings
from dataspace.tlog import LOGS, witness
from dataspace.tlog.log import consistency_proof, latest_checkpoint, sequence, verifier_keys
from dataspace.tlog.models import TLogEntry, TLogHead
from dataspace.vault import Vault
from transparency import merkle
from transparency.note import Checkpoint, CheckpointError, open_checkpoint

log = logging.getLogger("dataspace.backup")

FORMAT = 1
MANIFEST = "manifest.json"
_DUMPS = {"postgresql": "database.pgdump", "sqlite": "database.sqlite"}


@dataclass
class Manifest:
    format: int
    created_at: str
    backend: str
    dump: str
    sha256: str
    bytes: int
    version: str
    checkpoints: dict[str, str | None]  # log -> the signed note published just before the copy


@dataclass
class LogCheck:
    log: str
    size: int
    backup_size: int
    kept_size: int | None  # the copy kept outside the database (None: none kept)
    lost: int = 0  # entries published after the backup that the restore rolled back (accepted)


@dataclass
class RestoreReport:
    manifest: Manifest
    logs: list[LogCheck] = field(default_factory=list)
    reconciled: dict[str, int] = field(default_factory=dict)


# --- backup ----------------------------------------------------------------------------------------------
def backup(settings: Settings, db: Database, keys: KeyRing, dest: Path) -> Manifest:
    """Write a backup of the configured database into the new or empty directory ``dest``."""
    if dest.exists() and any(dest.iterdir()):
        raise Conflict(f"{dest} is not empty; a backup goes into a new directory")
    dest.mkdir(mode=0o700, parents=True, exist_ok=True)
    checkpoints: dict[str, str | None] = {}
    for name in LOGS:
        sequence(settings, db, keys, name)  # the checkpoint below then covers every entry committed so far
        with db.session() as session:
            cp = latest_checkpoint(session, log=name)
        checkpoints[name] = cp.note if cp is not None else None
        if cp is not None:
            witness.record_quietly(settings.resolved_checkpoint_dir, name, cp.note)
    backend = db.engine.dialect.name
    dump = dest / _DUMPS[backend]
    if backend == "sqlite":
        _sqlite_copy(_sqlite_path(db), dump)
    else:
        _run(["pg_dump", "--format=custom", "--no-owner", "--no-privileges", "--file", str(dump)], db.url)
    os.chmod(dump, 0o600)
    manifest = Manifest(
        format=FORMAT,
        created_at=utcnow().isoformat(),
        backend=backend,
        dump=dump.name,
        sha256=_sha256(dump),
        bytes=dump.stat().st_size,
        version=__version__,
        checkpoints=checkpoints,
    )
    tmp = dest / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(asdict(manifest), indent=2) + "\n")
    os.chmod(tmp, 0o600)
    tmp.replace(dest / MANIFEST)
    return manifest


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _sqlite_path(db: Database) -> Path:
    name = make_url(db.url).database
    if not name or name == ":memory:":
        raise InvalidInput("an in-memory SQLite database cannot be backed up")
    return Path(name)


def _sqlite_copy(src: Path, dst: Path) -> None:
    """SQLite's online backup API: a consistent snapshot while other connections keep writing."""
    source = sqlite3.connect(f"file:{src}?mode=ro", uri=True)
    target = sqlite3.connect(dst)
    try:
        source.backup(target)
    finally:
        target.close()
        source.close()


def _run(argv: list[str], url: str) -> None:
    """Run a PostgreSQL client tool against ``url`` (password through the environment, not the argv)."""
    if shutil.which(argv[0]) is None:
        raise Unavailable(f"{argv[0]} is not installed (Debian: apt-get install postgresql-client)")
    u = make_url(url)
    env = dict(os.environ)
    if u.password is not None:
        env["PGPASSWORD"] = str(u.password)
    libpq = u.set(drivername="postgresql", password=None).render_as_string(hide_password=False)
    done = subprocess.run([*argv, "--dbname", libpq], env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        log.error("%s failed: %s", argv[0], done.stderr[-2000:])
        raise Unavailable(f"{argv[0]} failed (exit {done.returncode}); see the server log")


# --- restore ---------------------------------------------------------------------------------------------
def read_manifest(src: Path) -> Manifest:
    try:
        data = json.loads((src / MANIFEST).read_text())
        manifest = Manifest(**data)
    except (OSError, ValueError, TypeError) as exc:
        raise InvalidInput(f"{src} holds no readable backup manifest") from exc
    if manifest.format != FORMAT or manifest.backend not in _DUMPS or manifest.dump != _DUMPS[manifest.backend]:
        raise InvalidInput("unknown backup format")
    return manifest


def restore(
    settings: Settings, db: Database, keys: KeyRing, vault: Vault, src: Path, *, accept_log_rollback: bool = False
) -> RestoreReport:
    """Restore the backup in ``src`` into the configured (empty) database and check its logs."""
    manifest = read_manifest(src)
    backend = db.engine.dialect.name
    if manifest.backend != backend:
        raise InvalidInput(f"this is a {manifest.backend} backup; the configured database is {backend}")
    dump = src / manifest.dump
    if not dump.is_file() or _sha256(dump) != manifest.sha256:
        raise InvalidInput("the backup's database copy does not match its manifest (damaged or altered)")
    if db.table_names():
        raise Conflict("the target database is not empty; restore into a new, empty database")
    if backend == "sqlite":
        target = _sqlite_path(db)
        staging = target.with_name(target.name + ".restoring")
        staging.unlink(missing_ok=True)
        _sqlite_copy(dump, staging)
        restored = Database(f"sqlite:///{staging}")
        try:
            checks = _check_logs(settings, keys, restored, manifest, accept_log_rollback=accept_log_rollback)
        except BaseException:
            restored.dispose()
            staging.unlink(missing_ok=True)
            raise
        restored.dispose()
        db.dispose()
        for suffix in ("-wal", "-shm"):
            Path(str(target) + suffix).unlink(missing_ok=True)
        staging.replace(target)  # only a checked copy is ever moved into place
    else:
        _run(
            ["pg_restore", "--no-owner", "--no-privileges", "--exit-on-error", "--single-transaction", str(dump)],
            db.url,
        )
        try:
            checks = _check_logs(settings, keys, db, manifest, accept_log_rollback=accept_log_rollback)
        except BaseException:
            _empty_postgres(db)
            raise
    report = RestoreReport(manifest, checks)
    report.reconciled = _reconcile_keys(settings, db, keys, vault)
    if any(c.lost for c in checks):
        _record_rollback(settings, db, manifest, checks)
    for name in LOGS:  # what the restore itself recorded is published before anything else is served
        sequence(settings, db, keys, name)
    return report


def _empty_postgres(db: Database) -> None:
    with db.engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))


def _open(note: str, vkeys: list[str], what: str) -> Checkpoint:
    try:
        return open_checkpoint(note, vkeys)
    except CheckpointError:
        raise InvalidInput(f"{what} does not verify with this server's keys") from None


def _check_logs(
    settings: Settings, keys: KeyRing, db: Database, manifest: Manifest, *, accept_log_rollback: bool
) -> list[LogCheck]:
    vkeys = verifier_keys(settings, keys)
    out = []
    with db.session() as session:
        for name in LOGS:
            note = manifest.checkpoints.get(name)
            at_backup = _open(note, vkeys, f"the backup's {name} checkpoint") if note else None
            kept_note = witness.read(settings.resolved_checkpoint_dir, name)
            kept = _open(kept_note, vkeys, f"the kept copy of the {name} checkpoint") if kept_note else None
            out.append(_check_log(session, name, vkeys, at_backup, kept, accept_log_rollback=accept_log_rollback))
    return out


def _check_log(
    session: Session,
    name: str,
    vkeys: list[str],
    at_backup: Checkpoint | None,
    kept: Checkpoint | None,
    *,
    accept_log_rollback: bool,
) -> LogCheck:
    head = session.get(TLogHead, name)
    size, root = (head.size, bytes(head.root_hash)) if head is not None else (0, merkle.EMPTY_ROOT)
    latest = latest_checkpoint(session, log=name)
    if latest is not None:
        own = _open(latest.note, vkeys, f"the restored {name} checkpoint")
        if own.size != size or own.root_hash != root:
            raise InvalidInput(f"the restored {name} log does not match its own latest checkpoint")
    backup_size = at_backup.size if at_backup is not None else 0
    if backup_size > size:
        raise InvalidInput(
            f"the restored {name} log has {size} entries, fewer than the {backup_size} its backup's checkpoint "
            "commits to: the backup is damaged or was altered"
        )
    lost = 0
    if kept is not None and kept.size > size:
        lost = kept.size - size
        if not accept_log_rollback:
            raise Conflict(
                f"the restored {name} log ends at {size} entries but {kept.size} were published: restoring would "
                f"silently roll back {lost} entries (pass --accept-log-rollback to restore anyway, recorded "
                "in the audit trail)"
            )
    trusted = [cp for cp in (at_backup, kept) if cp is not None and cp.size <= size]
    _rebuild(session, name, size, root, trusted)
    for cp in trusted:
        if cp.size:
            proof = consistency_proof(session, log=name, first=cp.size, second=size)
            try:
                merkle.verify_consistency(cp.size, size, cp.root_hash, root, proof.hashes)
            except merkle.ProofError:
                raise InvalidInput(f"the restored {name} log is not consistent with a published checkpoint") from None
    return LogCheck(name, size, backup_size, kept.size if kept is not None else None, lost)


def _rebuild(session: Session, name: str, size: int, root: bytes, trusted: list[Checkpoint]) -> None:
    """Recompute every leaf hash from its entry and the tree from the leaves; compare the roots at every
    trusted size and at the head (stored subtree hashes are not trusted: they are what a doctored copy
    would leave unchanged)."""
    want = {cp.size: cp.root_hash for cp in trusted}
    builder = merkle.RootBuilder()
    if want.get(0, merkle.EMPTY_ROOT) != merkle.EMPTY_ROOT:
        raise InvalidInput(f"the restored {name} log is not consistent with a published checkpoint")
    rows = session.execute(
        TLogEntry.__table__.select()
        .with_only_columns(TLogEntry.idx, TLogEntry.entry, TLogEntry.leaf_hash)
        .where(TLogEntry.log == name, TLogEntry.idx.is_not(None), TLogEntry.idx < size)
        .order_by(TLogEntry.idx)
        .execution_options(yield_per=20_000)
    )
    for idx, body, leaf in rows:
        if idx != builder.size or merkle.leaf_hash(body.encode()) != bytes(leaf):
            raise InvalidInput(f"the restored {name} log has a missing or altered entry at index {builder.size}")
        builder.append(bytes(leaf))
        expected = want.get(builder.size)
        if expected is not None and builder.root() != expected:
            raise InvalidInput(f"the restored {name} log is not consistent with a published checkpoint")
    if builder.size != size or (size and builder.root() != root):
        raise InvalidInput(f"the restored {name} log does not match its head")


def _record_rollback(settings: Settings, db: Database, manifest: Manifest, checks: list[LogCheck]) -> None:
    """The operator accepted losing entries published after the backup: say so in the audit trail and archive
    the old kept copies (they belong to the history that was lost); the caller publishes new checkpoints."""
    from dataspace.audit import record_event

    with db.transaction() as session:
        record_event(
            session,
            actor=None,
            action="backup.restored",
            target="database",
            details={
                "backup_created_at": manifest.created_at,
                "logs": {
                    c.log: {"restored_size": c.size, "published_size": c.kept_size, "lost": c.lost} for c in checks
                },
            },
        )
    directory = settings.resolved_checkpoint_dir
    stamp = utcnow().strftime("%Y%m%dT%H%M%SZ")
    for c in checks:
        if c.lost:
            kept = witness.path_for(directory, c.log)
            kept.replace(kept.with_name(f"{kept.name}.rolled-back-{stamp}"))


def _reconcile_keys(settings: Settings, db: Database, keys: KeyRing, vault: Vault) -> dict[str, int]:
    """Bring the restored wrapped data keys in line with the epoch key store: wrappings under keys retired
    since the backup are replaced from the journal, and subjects erased since the backup are shredded; then
    their erasure is completed again (the backup still has their active consents, decisions and accounts).
    Partner contributions (linkage runs) whose key was destroyed since the backup are shredded again."""
    from dataspace.subjects import epochs

    result = epochs.reconcile(db, vault)
    for subject_id in result.shredded:
        _finish_erasure(settings, db, keys, subject_id)
    from dataspace.linkage import service as linkage
    from dataspace.linkage.keys import PartnerKeys

    with db.transaction() as session:  # partner runs shredded since the backup: their keys are gone
        partner_runs = linkage.reconcile(session, PartnerKeys.of(vault))
    return {"rewrapped": result.rewrapped, "shredded": len(result.shredded), "partner_runs": len(partner_runs)}


def _finish_erasure(settings: Settings, db: Database, keys: KeyRing, subject_id: int) -> None:
    """Run the erasure again for a subject whose keys were destroyed after the backup: consents withdrawn
    (with receipts), decisions deleted, accounts disabled and their tokens revoked, all recorded."""
    from dataspace.compliance.service import erase_subject
    from dataspace.principal import Principal
    from dataspace.subjects.models import Subject

    with db.transaction() as session:
        subject = session.get(Subject, subject_id)
        if subject is None:
            return
        subject.erased_at = None  # reconcile marked it; erase_subject refuses an already-erased subject
        session.flush()
        erase_subject(
            settings,
            keys,
            session,
            subject_id=subject_id,
            actor=Principal("dataspace restore", "steward", "dataspace-cli"),
        )
