"""Catalog routes: the data manual (read by every role) and the steward's writes."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query
from sqlalchemy.orm import Session

from dataspace.catalog import service
from dataspace.catalog.models import Field
from dataspace.catalog.promise import declared, shared_as
from dataspace.catalog.schemas import CatalogDocument, FieldIn, FieldRead, FieldUpdate, PartnerIn, PurposeIn
from dataspace.http.deps import WriteSession, authorize, read_session
from dataspace.principal import Principal

router = APIRouter(prefix="/v1", tags=["catalog"])


def _field(f: Field) -> FieldRead:
    transforms = declared(f.transforms)
    return FieldRead(
        dimension=f.dimension_key,
        transforms=transforms,
        shared_as=shared_as(f.data_type, f.constraints or {}, transforms),
        **{k: getattr(f, k) for k in FieldRead.model_fields if k not in {"dimension", "transforms", "shared_as"}},
    )


@router.get("/catalog/fields", response_model=list[FieldRead])
def list_fields(
    include_retired: bool = Query(False),
    session: Session = Depends(read_session),
    _: Principal = Depends(authorize("catalog", "read")),
) -> list[FieldRead]:
    return [_field(f) for f in service.list_fields(session, include_retired=include_retired)]


@router.get("/catalog/manual")
def data_manual(
    session: Session = Depends(read_session), _: Principal = Depends(authorize("catalog", "read"))
) -> list[dict[str, Any]]:
    """The data manual: every active field, grouped by dimension, in plain language."""
    return [
        {**{k: v for k, v in d.items() if k != "fields"}, "fields": [_field(f) for f in d["fields"]]}
        for d in service.data_manual(session)
    ]


@router.get("/catalog/fields/{key}", response_model=FieldRead)
def get_field(
    key: str, session: Session = Depends(read_session), _: Principal = Depends(authorize("catalog", "read"))
) -> FieldRead:
    return _field(service.get_field(session, key))


@router.get("/catalog/fields/{key}/history")
def field_history(
    key: str, session: Session = Depends(read_session), _: Principal = Depends(authorize("catalog", "read"))
) -> list[dict[str, Any]]:
    return [
        {
            "version": v.version,
            "change": v.change,
            "changed_by": v.changed_by,
            "changed_at": v.changed_at.isoformat(),
            "snapshot": v.snapshot,
        }
        for v in service.field_history(session, key)
    ]


@router.post("/catalog/fields", response_model=FieldRead, status_code=201)
def create_field(
    spec: FieldIn,
    session: WriteSession,
    principal: Principal = Depends(authorize("catalog", "write")),
) -> FieldRead:
    return _field(service.create_field(session, spec, actor=principal))


@router.patch("/catalog/fields/{key}", response_model=FieldRead)
def update_field(
    key: str,
    changes: FieldUpdate,
    session: WriteSession,
    principal: Principal = Depends(authorize("catalog", "write")),
) -> FieldRead:
    return _field(service.update_field(session, key, changes, actor=principal))


@router.delete("/catalog/fields/{key}", response_model=FieldRead)
def retire_field(
    key: str,
    session: WriteSession,
    principal: Principal = Depends(authorize("catalog", "write")),
) -> FieldRead:
    """Retire a field: it takes no new data and leaves the manual, but keeps its history."""
    return _field(service.retire_field(session, key, actor=principal))


@router.get("/catalog/purposes")
def list_purposes(
    session: Session = Depends(read_session), _: Principal = Depends(authorize("catalog", "read"))
) -> list[dict[str, Any]]:
    return [
        {
            "key": p.key,
            "label": p.label,
            "description": p.description,
            "dpv_term": p.dpv_term,
            "lawful_basis": p.lawful_basis,
            "parent": p.parent_key,
            "i18n": p.i18n,
        }
        for p in service.list_purposes(session)
    ]


@router.post("/catalog/purposes", status_code=201)
def upsert_purpose(
    spec: PurposeIn,
    session: WriteSession,
    principal: Principal = Depends(authorize("catalog", "write")),
) -> dict[str, str]:
    purpose = service.upsert_purpose(session, spec)
    return {"key": purpose.key}


@router.post("/catalog/load")
def load_catalog(
    doc: CatalogDocument,
    session: WriteSession,
    principal: Principal = Depends(authorize("catalog", "write")),
) -> dict[str, int]:
    """Load a whole catalog document (all or nothing)."""
    return service.load_document(session, doc, actor=principal)


@router.get("/partners")
def list_partners(
    session: Session = Depends(read_session), _: Principal = Depends(authorize("catalog", "read"))
) -> list[dict[str, Any]]:
    """Partners (name and category only), so customers know who may receive their data."""
    return [
        {
            "key": p.key,
            "name": p.name,
            "category": p.category,
            "description": p.description,
            "i18n": p.i18n,
            "status": p.status,
        }
        for p in service.list_partners(session)
    ]


@router.post("/partners", status_code=201)
def upsert_partner(
    spec: PartnerIn,
    session: WriteSession,
    principal: Principal = Depends(authorize("partners", "write")),
) -> dict[str, str]:
    partner = service.upsert_partner(session, spec)
    return {"key": partner.key}
