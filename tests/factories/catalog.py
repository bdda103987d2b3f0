"""Catalog factories: the demo catalog loaded through the catalog service, a customer's ingest row."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dataspace.catalog import service as catalog
from dataspace.context import Context

DEMO_CATALOG = Path(__file__).resolve().parents[2] / "dataspace" / "demo" / "catalog.yaml"


def load_demo_catalog(ctx: Context) -> dict[str, int]:
    doc = catalog.read_document(DEMO_CATALOG)
    with ctx.db.transaction() as session:
        return catalog.load_document(session, doc)


def customer_row(ref: str, **overrides: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "customer_id": ref,
        "age": 41,
        "gender": "female",
        "city": "Hangzhou",
        "app_sessions_30d": 23,
        "monthly_card_spend": 5230.5,
        "deposit_balance": 88000,
        "ev_owner": True,
        "policy_renewal_month": 3,
    }
    row.update(overrides)
    return row
