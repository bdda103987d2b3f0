"""The customer's consent reads: grants, history, receipts and the consent matrix. What routes receive is
the pydantic ``*Read`` schemas. Another customer's receipt is "not found"."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from consent import (
    GrantState,
)
from dataspace.catalog.models import Field, Purpose
from dataspace.db import utcnow
from dataspace.errors import NotFound
from dataspace.grants.convert import Clock, current_state, field_ref, grant_read, partner_ref, to_domain
from dataspace.grants.models import ConsentEvent, ConsentGrant, ConsentReceipt
from dataspace.grants.schemas import EventRead, MatrixRead
from dataspace.partners.models import Partner


# --- reads ----------------------------------------------------------------------------------------------
def list_grants(session: Session, *, subject_id: int, include_ended: bool = False) -> list[ConsentGrant]:
    stmt = select(ConsentGrant).where(ConsentGrant.subject_id == subject_id).order_by(ConsentGrant.id)
    if not include_ended:
        stmt = stmt.where(ConsentGrant.state == GrantState.ACTIVE.value)
    return list(session.scalars(stmt))


def history(session: Session, *, subject_id: int, limit: int = 500, before_id: int | None = None) -> list[ConsentEvent]:
    stmt = select(ConsentEvent).where(ConsentEvent.subject_id == subject_id)
    if before_id is not None:
        stmt = stmt.where(ConsentEvent.id < before_id)
    return list(session.scalars(stmt.order_by(ConsentEvent.id.desc()).limit(limit)))


def history_view(
    session: Session, *, subject_id: int, limit: int = 500, before_id: int | None = None, clock: Clock = utcnow
) -> list[EventRead]:
    """The subject's consent events, newest first, each with what its grant covers and the grant's state as
    of now (a grant past its window reads as expired before the sweep has recorded it)."""
    now = clock()
    stmt = (
        select(ConsentEvent, ConsentGrant)
        .join(ConsentGrant, ConsentGrant.id == ConsentEvent.grant_id)
        .where(ConsentEvent.subject_id == subject_id)
    )
    if before_id is not None:
        stmt = stmt.where(ConsentEvent.id < before_id)
    out = []
    for event, grant in session.execute(stmt.order_by(ConsentEvent.id.desc()).limit(limit)):
        out.append(
            EventRead.model_validate(
                {
                    "id": event.id,
                    "grant_id": event.grant_id,
                    "kind": event.kind,
                    "state": event.state,
                    "at": event.at,
                    "valid_from": event.valid_from,
                    "valid_until": event.valid_until,
                    "granularity": event.granularity,
                    "receipt_id": event.receipt_id,
                    "grant_state": current_state(grant, now),
                    "field": grant.field_key,
                    "dimension": grant.dimension_key,
                    "purpose": grant.purpose_key,
                    "partner": grant.partner_key,
                    "partner_category": grant.partner_category,
                }
            )
        )
    return out


def get_receipt(session: Session, *, subject_id: int, receipt_id: str) -> ConsentReceipt:
    row = session.get(ConsentReceipt, receipt_id)
    if row is None or row.subject_id != subject_id:
        raise NotFound("no such receipt")
    return row


def matrix(session: Session, *, subject_id: int, clock: Clock = utcnow) -> MatrixRead:
    """The customer's consent matrix: every active field (with its data-manual text and the points it
    would earn) x purpose x partner, whether it is permitted now and by which grants."""
    now = clock()
    fields = list(
        session.scalars(select(Field).where(Field.status == "active").order_by(Field.dimension_key, Field.key))
    )
    purposes = list(session.scalars(select(Purpose).order_by(Purpose.key)))
    partners = list(session.scalars(select(Partner).where(Partner.status == "active").order_by(Partner.key)))
    rows = list_grants(session, subject_id=subject_id)
    grants = [to_domain(r) for r in rows]
    # What the customer sees is true now: a grant past its window reads as expired before the sweep runs.
    shown = [grant_read(r, now) for r in rows]
    cells = []
    for f in fields:
        fr = field_ref(f)
        for p in purposes:
            for partner in partners:
                pr = partner_ref(partner)
                by = [g.id for g in grants if g.in_force(now) and g.scope.covers(fr, pr, p.key)]
                cells.append(
                    {"field": f.key, "purpose": p.key, "partner": partner.key, "permitted": bool(by), "grant_ids": by}
                )
    return MatrixRead.model_validate(
        {
            "at": now,
            "fields": [
                {
                    "key": f.key,
                    "dimension": f.dimension_key,
                    "label": f.label,
                    "description": f.description,
                    "collection_purpose": f.collection_purpose,
                    "used_for": f.used_for,
                    "storage_location": f.storage_location,
                    "sharing_scope": f.sharing_scope,
                    "retention_days": f.retention_days,
                    "sensitivity": f.sensitivity,
                    "points_value": f.points_value,
                    "i18n": f.i18n,
                }
                for f in fields
            ],
            "purposes": [
                {
                    "key": p.key,
                    "label": p.label,
                    "description": p.description,
                    "dpv_term": p.dpv_term,
                    "lawful_basis": p.lawful_basis,
                    "i18n": p.i18n,
                }
                for p in purposes
            ],
            "partners": [
                {"key": p.key, "name": p.name, "category": p.category, "description": p.description, "i18n": p.i18n}
                for p in partners
            ],
            "grants": shown,
            "cells": cells,
        }
    )
