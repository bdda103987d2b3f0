"""Conversions between stored consent rows and the ``consent`` library's types, and the state a person is
shown (a grant past its window reads as expired before the sweep runs)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import consent
from consent import (
    FieldRef,
    GrantState,
    Granularity,
    PartnerRef,
    Scope,
)
from dataspace.catalog.models import Field
from dataspace.grants.models import ConsentGrant
from dataspace.grants.schemas import GrantRead
from dataspace.partners.models import Partner

Clock = Callable[[], datetime]


def scope_of(row: ConsentGrant) -> Scope:
    return Scope(
        row.purpose_key,
        field=row.field_key,
        dimension=row.dimension_key,
        partner=row.partner_key,
        partner_category=row.partner_category,
    )


def to_domain(row: ConsentGrant) -> consent.Grant:
    return consent.Grant(
        id=row.id,
        subject_id=row.subject_id,
        scope=scope_of(row),
        granularity=Granularity(row.granularity),
        valid_from=row.valid_from,
        valid_until=row.valid_until,
        state=GrantState(row.state),
        withdrawn_at=row.withdrawn_at,
    )


def current_state(row: ConsentGrant, now: datetime) -> str:
    """The state as of ``now`` (an active grant past its window reads as expired before the sweep runs)."""
    if row.state == GrantState.ACTIVE and row.valid_until is not None and row.valid_until <= now:
        return GrantState.EXPIRED.value
    return row.state


def grant_read(row: ConsentGrant, now: datetime) -> GrantRead:
    """The grant as a person is shown it, its state as of ``now``."""
    return GrantRead.model_validate(
        {
            "id": row.id,
            "field_key": row.field_key,
            "dimension_key": row.dimension_key,
            "purpose_key": row.purpose_key,
            "partner_key": row.partner_key,
            "partner_category": row.partner_category,
            "granularity": row.granularity,
            "valid_from": row.valid_from,
            "valid_until": row.valid_until,
            "state": current_state(row, now),
            "withdrawn_at": row.withdrawn_at,
            "created_at": row.created_at,
            "updated_at": row.updated_at,
        }
    )


def field_ref(field: Field) -> FieldRef:
    return FieldRef(field.key, field.dimension_key, sensitive=field.sensitivity == "sensitive")


def partner_ref(partner: Partner) -> PartnerRef:
    return PartnerRef(partner.key, partner.category)
