"""The public privacy notice (GET /privacy): who the controller is, what is processed for which purpose on
which legal basis, and the customer's rights. Receipts name it as their notice (``policyUrl``); it answers
without a token, since people read it before they have an account. Holds no customer data."""

from __future__ import annotations

from html import escape
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from sqlalchemy.orm import Session

from dataspace.catalog import service as catalog
from dataspace.compliance.controller import NOTICE_PATH, controller_of
from dataspace.consents.receipts import processing_operations
from dataspace.context import Context
from dataspace.http.deps import get_context, read_session
from dataspace.http.routes.pages import HEADERS

router = APIRouter(tags=["compliance"])

RIGHTS = [
    "see every consent you gave and every signed receipt, and withdraw any of them at once in your data account",
    "see every use of your data (the usage ledger) and check it against the signed log",
    "download everything held about you (GET /v1/me/export)",
    "have your account erased (DELETE /v1/me): your data is crypto-shredded",
    "complain to the data protection officer or to your supervisory authority",
]


def notice_document(session: Session, ctx: Context) -> dict[str, Any]:
    controller = controller_of(ctx.settings)
    return {
        "controller": controller.party.as_json(),
        "jurisdiction": controller.jurisdiction,
        "purposes": [
            {
                "key": p.key,
                "label": p.label,
                "description": p.description,
                "dpv": p.dpv_term,
                "lawful_basis": p.lawful_basis,
            }
            for p in catalog.list_purposes(session)
        ],
        "data_manual": "/v1/catalog/fields",
        "processing_operations": processing_operations("generalized"),
        "rights": RIGHTS,
        "withdrawal": "Switch any consent off in your data account; it takes effect immediately.",
    }


def _html(doc: dict[str, Any]) -> str:
    c = doc["controller"]
    purposes = "".join(
        f"<li><strong>{escape(p['label'])}</strong> ({escape(p['dpv'])}): {escape(p['description'])}"
        f" Legal basis: {escape(p['lawful_basis'])}.</li>"
        for p in doc["purposes"]
    )
    ops = "".join(
        f"<li>{escape(o['operation'])}: {escape(o['description'])}</li>" for o in doc["processing_operations"]
    )
    rights = "".join(f"<li>{escape(r)}</li>" for r in doc["rights"])
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Privacy notice</title></head><body>'
        f"<h1>Privacy notice of {escape(c['name'])}</h1>"
        f"<h2>Controller</h2><p>{escape(c['name'])}<br>{escape(c['address'])}<br>"
        f"E-mail: {escape(c['email'])}<br>Telephone: {escape(c['phone'])}<br>"
        f"Data protection officer: {escape(c['dpo'])}<br>Governing law: {escape(doc['jurisdiction'])}</p>"
        f"<h2>Purposes and legal bases</h2><ul>{purposes}</ul>"
        f"<h2>What is done with your data</h2><ul>{ops}</ul>"
        f"<p>What each kind of data is, where it comes from and where it is stored: the data manual "
        f"(<code>{escape(doc['data_manual'])}</code>, also in your data account).</p>"
        f"<h2>Your rights</h2><ul>{rights}</ul><p>{escape(doc['withdrawal'])}</p></body></html>"
    )


@router.get(NOTICE_PATH, response_class=HTMLResponse)
def privacy_notice(
    request: Request, session: Session = Depends(read_session), ctx: Context = Depends(get_context)
) -> Response:
    """Public: the controller's privacy notice (HTML; JSON when the client asks for application/json)."""
    doc = notice_document(session, ctx)
    if "application/json" in request.headers.get("accept", ""):
        return JSONResponse(doc)
    return HTMLResponse(_html(doc), headers=HEADERS)
