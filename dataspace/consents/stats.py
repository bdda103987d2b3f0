"""Steward statistics: authorization rates over time, aggregates only (no subject is named)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

import consent
from dataspace.catalog.models import Field, Purpose
from dataspace.errors import InvalidInput
from dataspace.grants.convert import field_ref, partner_ref
from dataspace.grants.evaluation import load_grant_table
from dataspace.grants.schemas import StatsRead
from dataspace.partners.models import Partner
from dataspace.subjects.models import Subject

# --- steward statistics ---------------------------------------------------------------------------------
MAX_BUCKETS = 366


def stats(
    session: Session,
    *,
    since: datetime,
    until: datetime,
    step: timedelta = timedelta(days=1),
    field_keys: Sequence[str] | None = None,
    purpose_keys: Sequence[str] | None = None,
    partner_keys: Sequence[str] | None = None,
) -> StatsRead:
    """Authorization rate per (field, purpose, partner) at the end of each step in [since, until]:
    permitting subjects / subjects not erased. Aggregates only; no subject is named."""
    if until < since:
        raise InvalidInput("until must not be before since")
    if step <= timedelta(0):
        raise InvalidInput("step must be positive")
    points: list[datetime] = []
    t = since
    while t <= until:
        points.append(t)
        if len(points) > MAX_BUCKETS:
            raise InvalidInput(f"at most {MAX_BUCKETS} time points; use a larger step")
        t += step
    fields_q = select(Field).where(Field.status == "active")
    if field_keys:
        fields_q = fields_q.where(Field.key.in_(list(field_keys)))
    fields = list(session.scalars(fields_q.order_by(Field.key)))
    purposes = list(purpose_keys) if purpose_keys else list(session.scalars(select(Purpose.key).order_by(Purpose.key)))
    partners_q = select(Partner).order_by(Partner.key)
    if partner_keys:
        partners_q = partners_q.where(Partner.key.in_(list(partner_keys)))
    partners = list(session.scalars(partners_q))
    population = np.fromiter(session.scalars(select(Subject.id).where(Subject.erased_at.is_(None))), np.int64)
    refs = [field_ref(f) for f in fields]
    series = []
    for purpose in purposes:
        for partner in partners:
            pr = partner_ref(partner)
            for at in points:
                table = load_grant_table(session, purpose=purpose, partner=pr, fields=refs, at=at)
                m = consent.evaluate(table, subjects=population, fields=refs, partner=pr, purpose=purpose, at=at)
                counts = m.sum(axis=0)
                for j, f in enumerate(fields):
                    permitted = int(counts[j]) if len(population) else 0
                    series.append(
                        {
                            "at": at,
                            "field": f.key,
                            "purpose": purpose,
                            "partner": partner.key,
                            "permitted": permitted,
                            "subjects": len(population),
                            "rate": permitted / len(population) if len(population) else 0.0,
                        }
                    )
    return StatsRead.model_validate(
        {"since": since, "until": until, "step_seconds": int(step.total_seconds()), "series": series}
    )
