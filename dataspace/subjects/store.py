"""Sealing and opening subject profiles (envelope encryption of the values the operator holds).

A profile is the compact JSON of ``{field_key: value}``, sealed under the subject's own data key; the data
key is stored wrapped by its bucket's epoch key (``dataspace.vault``). ``shred`` deletes the wrapped key and
marks the bucket for retirement, after which no backup can open the profile either.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import orjson
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from dataspace.db import allocate_ids, bulk_insert, utcnow
from dataspace.errors import NotFound
from dataspace.subjects.epochs import generations, request_retirement
from dataspace.subjects.models import Subject, SubjectKey, SubjectProfile
from dataspace.vault import DecryptionError, Vault


def _dumps(values: Mapping[str, Any]) -> bytes:
    return orjson.dumps(values, option=orjson.OPT_SORT_KEYS)


def seal_profile(vault: Vault, subject_id: int, generation: int, values: Mapping[str, Any]) -> tuple[bytes, bytes]:
    """Return ``(wrapped_key, sealed)`` for a new subject, its key wrapped under ``generation``."""
    dek, wrapped = vault.new_data_key(subject_id, generation)
    return wrapped, Vault.seal(dek, _dumps(values), subject_id)


def open_profile(vault: Vault, subject_id: int, epoch: int, wrapped_key: bytes, sealed: bytes) -> dict[str, Any]:
    dek = vault.unwrap(wrapped_key, subject_id, epoch)
    data: dict[str, Any] = orjson.loads(Vault.open(dek, sealed, subject_id))
    return data


def reseal_profile(vault: Vault, subject_id: int, epoch: int, wrapped_key: bytes, values: Mapping[str, Any]) -> bytes:
    dek = vault.unwrap(wrapped_key, subject_id, epoch)
    return Vault.seal(dek, _dumps(values), subject_id)


def read_profile(session: Session, vault: Vault, subject_id: int) -> dict[str, Any]:
    """The subject's decrypted values; ``NotFound`` if erased (shredded) or unknown."""
    row = session.execute(
        select(SubjectKey.epoch, SubjectKey.wrapped_key, SubjectProfile.sealed)
        .join(SubjectProfile, SubjectProfile.subject_id == SubjectKey.subject_id)
        .where(SubjectKey.subject_id == subject_id)
    ).first()
    if row is None:
        raise NotFound("no profile for this subject")
    return open_profile(vault, subject_id, row.epoch, row.wrapped_key, row.sealed)


def store_profiles(
    session: Session, vault: Vault, rows: Iterable[tuple[str, Mapping[str, Any]]], keys_blind_index: Any
) -> dict[str, int]:
    """Upsert profiles by external reference; merges values into an existing profile.

    ``keys_blind_index`` maps an external reference to its blind index (``KeyRing.blind_index``).
    Returns ``{"created": n, "updated": m}``. Runs in the caller's transaction.
    """
    rows = list(rows)
    blind = [keys_blind_index(ref) for ref, _ in rows]
    existing: dict[str, int] = {}
    for chunk_start in range(0, len(blind), 5000):
        chunk = blind[chunk_start : chunk_start + 5000]
        existing.update(
            session.execute(select(Subject.blind_ref, Subject.id).where(Subject.blind_ref.in_(chunk))).all()
        )
    now = utcnow()
    new_rows = [(b, v) for b, (_, v) in zip(blind, rows, strict=True) if b not in existing]
    created = 0
    if new_rows:
        # Reserve ids, seal each profile under the subject's own new data key, then bulk insert.
        ids = allocate_ids(session, "subjects", len(new_rows))
        epoch_of = generations(session, vault, (vault.bucket(sid) for sid in ids))
        subject_rows, key_rows, profile_rows = [], [], []
        for sid, (b, values) in zip(ids, new_rows, strict=True):
            bucket = vault.bucket(sid)
            wrapped, sealed = seal_profile(vault, sid, epoch_of[bucket], values)
            subject_rows.append((sid, b, now))
            key_rows.append((sid, bucket, epoch_of[bucket], wrapped))
            profile_rows.append((sid, sealed, 1, now))
        bulk_insert(session, "subjects", ("id", "blind_ref", "created_at"), subject_rows)
        bulk_insert(session, "subject_keys", ("subject_id", "bucket", "epoch", "wrapped_key"), key_rows)
        bulk_insert(session, "subject_profiles", ("subject_id", "sealed", "version", "updated_at"), profile_rows)
        created = len(new_rows)
    updated = 0
    for b, (_, values) in zip(blind, rows, strict=True):
        existing_id = existing.get(b)
        if existing_id is None:
            continue
        sid = existing_id
        try:
            current = read_profile(session, vault, sid)
        except (NotFound, DecryptionError):
            continue  # erased subjects are not resurrected by a later ingest
        current.update(values)
        key = session.execute(
            select(SubjectKey.epoch, SubjectKey.wrapped_key).where(SubjectKey.subject_id == sid)
        ).one()
        session.execute(
            update(SubjectProfile)
            .where(SubjectProfile.subject_id == sid)
            .values(
                sealed=reseal_profile(vault, sid, key.epoch, key.wrapped_key, current),
                version=SubjectProfile.version + 1,
                updated_at=now,
            )
        )
        updated += 1
    return {"created": created, "updated": updated}


def shred(session: Session, subject_id: int) -> None:
    """Crypto-shred: destroy the subject's wrapped data key and the sealed profile, and mark its bucket for
    retirement (which makes backups unable to open it; ``dataspace.subjects.epochs.retire``)."""
    request_retirement(session, subject_id)  # locks the bucket first: the one lock order
    session.execute(delete(SubjectProfile).where(SubjectProfile.subject_id == subject_id))
    session.execute(delete(SubjectKey).where(SubjectKey.subject_id == subject_id))
    session.execute(update(Subject).where(Subject.id == subject_id).values(erased_at=utcnow()))
