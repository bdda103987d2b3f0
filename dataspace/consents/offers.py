"""What a customer is actually asked for: the partner x purpose offers that exist, with the fields each reads.

An offer is a partner's data contract that is proposed or approved and not yet ended: a grant for a field,
purpose and partner only matters if some such contract reads that field for that purpose. The consent screen
shows these instead of every field x purpose x partner combination (most of which nobody asks for).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from dataspace.agreements.models import Contract
from dataspace.partners.models import Partner

OFFERING = ("proposed", "approved")


def list_offers(session: Session, *, now: datetime) -> list[dict[str, Any]]:
    """One entry per (partner, purpose): the fields its contracts read, their titles, and whether any of
    them is approved (a proposed contract is an offer the operator has not agreed to yet)."""
    rows = session.execute(
        select(Contract, Partner)
        .join(Partner, Partner.id == Contract.partner_id)
        .where(Contract.status.in_(OFFERING), Contract.valid_until > now, Partner.status == "active")
        .order_by(Partner.key, Contract.purpose_key, Contract.id)
    )
    offers: dict[tuple[str, str], dict[str, Any]] = {}
    for contract, partner in rows:
        offer = offers.setdefault(
            (partner.key, contract.purpose_key),
            {
                "partner": partner.key,
                "partner_name": partner.name,
                "partner_category": partner.category,
                "partner_description": partner.description,
                "partner_i18n": partner.i18n,
                "purpose": contract.purpose_key,
                "fields": [],
                "titles": [],
                "approved": False,
                "valid_until": contract.valid_until,
            },
        )
        for feature in contract.features:
            key = feature.get("field")
            if isinstance(key, str) and key not in offer["fields"]:
                offer["fields"].append(key)
        if contract.title and contract.title not in offer["titles"]:
            offer["titles"].append(contract.title)
        offer["approved"] = offer["approved"] or contract.status == "approved"
        offer["valid_until"] = max(offer["valid_until"], contract.valid_until)
    return list(offers.values())
