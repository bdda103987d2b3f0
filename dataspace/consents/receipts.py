"""Consent receipts: what they say about the controller (``ReceiptPolicy``), the processing a grant allows,
and the receipt body (ISO/IEC TS 27560 / Kantara fields) for one change of a grant."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import consent
from consent import (
    Granularity,
    ReceiptEvent,
    ReceiptParty,
)
from dataspace.consents.lookup import ChangeCatalog
from dataspace.grants.convert import to_domain
from dataspace.grants.models import ConsentGrant


@dataclass(frozen=True)
class ReceiptPolicy:
    """What receipts say about the controller (the operator) and where to withdraw."""

    controller: ReceiptParty = field(
        default_factory=lambda: ReceiptParty(
            name="Dataspace operator", contact="privacy@operator.example", url="https://operator.example/privacy"
        )
    )
    jurisdiction: str = "CN"
    language: str = "en"


DEFAULT_POLICY = ReceiptPolicy()

# --- receipts -------------------------------------------------------------------------------------------
# What is done with data under a grant (W3C DPV processing terms), in the order of a partner job's data flow.
_PROCESSING = (
    ("dpv:Store", "kept encrypted with a key of your own in the operator's data space"),
    ("dpv:Pseudonymise", "shown to the partner only under a pseudonym made for that partner alone"),
    ("dpv:Analyse", "the partner's model runs on it inside an isolated sandbox; the data never leaves"),
    ("dpv:Derive", "the model's decision about you is stored for the operator"),
    ("dpv:Aggregate", "the partner sees only noised statistics over many customers, never your data"),
)
_GENERALISE = ("dpv:Transform", "generalised before use (bands, tiers, top-coding), never the exact value")


def processing_operations(granularity: str) -> list[dict[str, str]]:
    """The processing a grant of this granularity allows, as receipts list it."""
    ops = list(_PROCESSING)
    if granularity == Granularity.GENERALIZED.value:
        ops.insert(2, _GENERALISE)
    return [{"operation": op, "description": text} for op, text in ops]


def receipt_body(
    row: ConsentGrant, events: Sequence[ReceiptEvent], receipt_id: str, policy: ReceiptPolicy, catalog: ChangeCatalog
) -> dict[str, Any]:
    purpose, fields, partner = catalog.purpose, catalog.fields, catalog.partner
    if row.field_key is not None:
        f = fields[0]
        pii = [
            {
                "field": f.key,
                "label": f.label,
                "dimension": f.dimension_key,
                "sensitive": f.sensitivity == "sensitive",
                "data_source": {"collected_by": policy.controller.name, "collection": f.collection_purpose},
            }
        ]
    else:
        pii = [
            {
                "dimension": row.dimension_key,
                "label": catalog.dimension_label if catalog.dimension_label is not None else row.dimension_key,
                "sensitive": False,
                "fields": [f.key for f in fields],
                "data_source": {
                    "collected_by": policy.controller.name,
                    "collection": {f.key: f.collection_purpose for f in fields},
                },
            }
        ]
    if row.partner_key is not None:
        recipients = [
            {
                "partner": row.partner_key,
                "name": partner.name if partner else row.partner_key,
                "category": partner.category if partner else None,
            }
        ]
    else:
        recipients = [
            {"partner_category": row.partner_category, "name": f"any partner of category {row.partner_category}"}
        ]
    return consent.build_receipt(
        receipt_id=receipt_id,
        grant=to_domain(row),
        pii_principal_id=f"subject:{row.subject_id}",
        issued_at=events[-1].at,
        events=events,
        purposes=[
            {
                "purpose": row.purpose_key,
                "label": purpose.label if purpose else row.purpose_key,
                "dpv": purpose.dpv_term if purpose else "",
                "lawful_basis": purpose.lawful_basis if purpose else "dpv:Consent",
            }
        ],
        pii_information=pii,
        controller=policy.controller,
        storage_locations=[f.storage_location for f in fields],
        retention_days=max((f.retention_days for f in fields), default=0),
        jurisdiction=policy.jurisdiction,
        recipient_third_parties=recipients,
        withdrawal_method=f"Switch it off in your data account, or DELETE /v1/me/consents/{row.id}",
        language=policy.language,
        processing_operations=processing_operations(row.granularity),
        notice={"url": policy.controller.url, "language": policy.language},
    )
