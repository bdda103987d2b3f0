"""Epoch keys in the database's view: which generation new wrappings use, retiring the buckets of erased
subjects, and reconciling a database restored from backup with the key store.

The guarantees and the failure cases are stated in ``dataspace.vault``'s module doc; this module is the
database half of them. Lock order, everywhere: the bucket's ``key_epochs`` row, then ``subject_keys`` rows.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from dataspace.db import Database, utcnow
from dataspace.errors import ConfigurationError
from dataspace.subjects.models import KeyEpoch, Subject, SubjectKey, SubjectProfile
from dataspace.vault import DecryptionError, Vault

log = logging.getLogger("dataspace.epochs")


def generations(session: Session, vault: Vault, buckets: Iterable[int]) -> dict[int, int]:
    """The current generation of each bucket, read FOR SHARE (a retirement of one of them waits for the
    caller's transaction, so wrappings made under these generations are re-wrapped by it, never lost)."""
    wanted = sorted(set(buckets))
    found: dict[int, int] = {}
    for start in range(0, len(wanted), 1000):
        part = wanted[start : start + 1000]
        stmt = select(KeyEpoch.bucket, KeyEpoch.generation).where(KeyEpoch.bucket.in_(part))
        found.update(session.execute(stmt.with_for_update(read=True)).all())
    missing = [b for b in wanted if b not in found]
    if missing:
        rows = [{"bucket": b, "generation": vault.current_generation(b)} for b in missing]
        insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
        session.execute(insert(KeyEpoch).on_conflict_do_nothing(index_elements=["bucket"]), rows)
        stmt = select(KeyEpoch.bucket, KeyEpoch.generation).where(KeyEpoch.bucket.in_(missing))
        found.update(session.execute(stmt.with_for_update(read=True)).all())
    return found


def request_retirement(session: Session, subject_id: int) -> None:
    """Mark the subject's bucket for retirement (call before deleting its ``subject_keys`` row). A bucket
    without a ``key_epochs`` row (keys written around ``store_profiles``) gets one: no erasure goes unmarked."""
    row = session.execute(
        select(SubjectKey.bucket, SubjectKey.epoch).where(SubjectKey.subject_id == subject_id)
    ).first()
    if row is None:
        return
    now = utcnow()
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    stmt = insert(KeyEpoch).values(bucket=row.bucket, generation=row.epoch, retire_requested_at=now)
    session.execute(
        stmt.on_conflict_do_update(
            index_elements=["bucket"],
            set_={
                "retire_requested_at": func.coalesce(KeyEpoch.retire_requested_at, stmt.excluded.retire_requested_at)
            },
        )
    )


@dataclass
class RetireReport:
    buckets: int = 0
    rewrapped: int = 0
    keys_destroyed: int = 0


def retire(db: Database, vault: Vault, *, every_bucket: bool = False) -> RetireReport:
    """Retire every bucket marked by an erasure (or, with ``every_bucket``, every bucket: a full rotation
    of the wrapping keys); then destroy the keys no live wrapping uses. Each bucket commits on its own."""
    report = RetireReport()
    with db.transaction() as session:
        if every_bucket:
            session.execute(update(KeyEpoch).values(retire_requested_at=utcnow()))
        marked = list(session.scalars(select(KeyEpoch.bucket).where(KeyEpoch.retire_requested_at.is_not(None))))
    for bucket in marked:
        done = _retire_bucket(db, vault, bucket)
        if done is not None:
            report.buckets += 1
            report.rewrapped += done[1]
            report.keys_destroyed += len(vault.destroy_older(bucket, done[0]))
    report.keys_destroyed += _destroy_superseded(db, vault)
    if report.buckets:
        log.info("epochs retired", extra={"buckets": report.buckets, "rewrapped": report.rewrapped})
    return report


def _retire_bucket(db: Database, vault: Vault, bucket: int) -> tuple[int, int] | None:
    """Re-wrap the bucket under a new key and journal it; returns ``(new generation, rewrapped)``."""
    with db.transaction() as session:
        epoch = session.execute(select(KeyEpoch).where(KeyEpoch.bucket == bucket).with_for_update()).scalar()
        if epoch is None or epoch.retire_requested_at is None:
            return None  # another process retired it meanwhile
        new = vault.next_generation(bucket, epoch.generation)
        rows = session.execute(
            select(SubjectKey.subject_id, SubjectKey.epoch, SubjectKey.wrapped_key).where(SubjectKey.bucket == bucket)
        ).all()
        wrapped: dict[int, bytes] = {}
        changes = []
        for sid, generation, blob in rows:
            if generation == new:
                wrapped[sid] = blob
                continue
            try:
                dek = vault.unwrap(blob, sid, generation)
            except DecryptionError:
                continue  # already unreadable (a restored row nobody reconciled): nothing to carry over
            wrapped[sid] = vault.wrap(dek, sid, new)
            changes.append({"subject_id": sid, "epoch": new, "wrapped_key": wrapped[sid]})
        if changes:
            session.execute(update(SubjectKey), changes)
        # Journal before COMMIT: if the commit fails, the journal still holds valid wrappings under ``new``
        # (kept: the next pass reuses it). It never holds a subject erased before this pass.
        vault.write_journal(bucket, new, wrapped)
        epoch.generation = new
        epoch.retire_requested_at = None
    return new, len(changes)


def _destroy_superseded(db: Database, vault: Vault) -> int:
    """Destroy keys older than their bucket's current generation (left by a pass that died after its
    commit). Keys newer than the database's generation (a pass that died before it) are kept for reuse, and
    a bucket still marked is left to its retirement (which re-wraps before it destroys)."""
    inventory = vault.inventory()
    several = [b for b, gens in inventory.items() if len(gens) > 1]
    if not several:
        return 0
    with db.session() as session:
        current = dict(
            session.execute(
                select(KeyEpoch.bucket, KeyEpoch.generation).where(
                    KeyEpoch.bucket.in_(several), KeyEpoch.retire_requested_at.is_(None)
                )
            ).all()
        )
    return sum(len(vault.destroy_older(b, g)) for b, g in current.items())


@dataclass
class ReconcileReport:
    rewrapped: int = 0
    shredded: list[int] = field(default_factory=list)  # subjects whose data the journal no longer holds


def reconcile(db: Database, vault: Vault) -> ReconcileReport:
    """Bring a database restored from backup in line with the key store (see ``dataspace.vault`` §4).

    Wrappings under destroyed keys are replaced from the journal; the subjects missing from it were erased
    after the backup: their rows are shredded and they are marked erased (the caller finishes the rest of
    their erasure: consents, decisions, accounts). Idempotent. Refuses (``ConfigurationError``, nothing
    changed) a key store that holds no key for a bucket the database uses: it is not this database's store.
    """
    report = ReconcileReport()
    inventory = vault.inventory()
    with db.transaction() as session:
        pairs = session.execute(select(SubjectKey.bucket, SubjectKey.epoch).distinct()).all()
        stale: dict[int, list[int]] = defaultdict(list)
        for bucket, generation in pairs:
            if generation not in inventory.get(bucket, ()):
                stale[bucket].append(generation)
        # A retirement creates the bucket's new key before it destroys the old one, so a bucket with rows
        # and no key at all means the wrong key store (or a lost one): shredding would destroy everyone.
        orphans = [b for b in stale if not inventory.get(b)]
        if orphans:
            raise ConfigurationError(
                f"the key store holds no key for {len(orphans)} bucket(s) this database uses: wrong or lost key "
                "store (DATASPACE_EPOCH_DIR / the HSM token); nothing was changed"
            )
        now = utcnow()
        for bucket, gens in sorted(stale.items()):
            journal = vault.read_journal(bucket)
            rows = session.execute(
                select(SubjectKey.subject_id).where(SubjectKey.bucket == bucket, SubjectKey.epoch.in_(gens))
            ).scalars()
            changes, lost = [], []
            for sid in rows:
                if journal is not None and sid in journal[1] and journal[0] in inventory.get(bucket, ()):
                    changes.append({"subject_id": sid, "epoch": journal[0], "wrapped_key": journal[1][sid]})
                else:
                    lost.append(sid)
            if changes:
                session.execute(update(SubjectKey), changes)
            if lost:
                session.execute(delete(SubjectProfile).where(SubjectProfile.subject_id.in_(lost)))
                session.execute(delete(SubjectKey).where(SubjectKey.subject_id.in_(lost)))
                session.execute(
                    update(Subject).where(Subject.id.in_(lost), Subject.erased_at.is_(None)).values(erased_at=now)
                )
            report.rewrapped += len(changes)
            report.shredded += lost
        oldest = dict(
            session.execute(select(SubjectKey.bucket, func.min(SubjectKey.epoch)).group_by(SubjectKey.bucket)).all()
        )
        for epoch in session.scalars(select(KeyEpoch)):
            held = inventory.get(epoch.bucket)
            if held and held[-1] != epoch.generation:
                # The backup predates retirements of this bucket: new wrappings use the newest key. Rows still
                # under an older live key (a pass that died) get a retirement, which re-wraps before it destroys.
                epoch.generation = held[-1]
                if oldest.get(epoch.bucket, held[-1]) < held[-1]:
                    epoch.retire_requested_at = epoch.retire_requested_at or now
    return report
