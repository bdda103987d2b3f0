"""Catalog service: the steward's writes (create, update, retire, load a file) and the data manual reads.

Every change to a field appends an immutable ``FieldVersion`` snapshot; retired fields stay readable with
their whole history but take no new data.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from dataspace.audit import record_event
from dataspace.catalog.models import Dimension, Field, FieldVersion, Purpose
from dataspace.catalog.schemas import (
    CatalogDocument,
    DimensionIn,
    FieldIn,
    FieldUpdate,
    PartnerIn,
    PurposeIn,
    transforms_json,
)
from dataspace.db import utcnow
from dataspace.errors import Conflict, InvalidInput, NotFound
from dataspace.partners.models import Partner
from dataspace.principal import SYSTEM, Principal

_SNAPSHOT = (
    "key",
    "dimension_key",
    "label",
    "description",
    "collection_purpose",
    "used_for",
    "storage_location",
    "sharing_scope",
    "retention_days",
    "sensitivity",
    "points_value",
    "data_type",
    "constraints",
    "transforms",
    "i18n",
    "status",
    "version",
)


def _snapshot(field: Field) -> dict[str, Any]:
    return {name: getattr(field, name) for name in _SNAPSHOT}


def _field_values(spec: FieldIn) -> dict[str, Any]:
    data = spec.model_dump(exclude={"dimension", "constraints"})
    data["dimension_key"] = spec.dimension
    data["constraints"] = spec.constraints.model_dump(exclude_none=True)
    data["transforms"] = transforms_json(spec.transforms)
    return data


# --- reads ------------------------------------------------------------------------------------------
def list_fields(session: Session, *, include_retired: bool = False) -> list[Field]:
    stmt = select(Field).order_by(Field.dimension_key, Field.key)
    if not include_retired:
        stmt = stmt.where(Field.status == "active")
    return list(session.scalars(stmt))


def get_field(session: Session, key: str) -> Field:
    field = session.scalar(select(Field).where(Field.key == key))
    if field is None:
        raise NotFound(f"no field {key!r} in the catalog")
    return field


def field_history(session: Session, key: str) -> list[FieldVersion]:
    field = get_field(session, key)
    return list(
        session.scalars(select(FieldVersion).where(FieldVersion.field_id == field.id).order_by(FieldVersion.version))
    )


def list_dimensions(session: Session) -> list[Dimension]:
    return list(session.scalars(select(Dimension).order_by(Dimension.position, Dimension.key)))


def list_purposes(session: Session) -> list[Purpose]:
    return list(session.scalars(select(Purpose).order_by(Purpose.key)))


def get_purpose(session: Session, key: str) -> Purpose:
    purpose = session.get(Purpose, key)
    if purpose is None:
        raise NotFound(f"no purpose {key!r}")
    return purpose


def list_partners(session: Session) -> list[Partner]:
    return list(session.scalars(select(Partner).order_by(Partner.key)))


def get_partner(session: Session, key: str) -> Partner:
    partner = session.scalar(select(Partner).where(Partner.key == key))
    if partner is None:
        raise NotFound(f"no partner {key!r}")
    return partner


def data_manual(session: Session) -> list[dict[str, Any]]:
    """The data manual: active fields grouped by dimension, in display order."""
    fields = list_fields(session)
    out = []
    for dim in list_dimensions(session):
        members = [f for f in fields if f.dimension_key == dim.key]
        out.append(
            {
                "key": dim.key,
                "label": dim.label,
                "description": dim.description,
                "i18n": dim.i18n,
                "fields": members,
            }
        )
    return out


# --- writes -----------------------------------------------------------------------------------------
def upsert_dimension(session: Session, spec: DimensionIn) -> Dimension:
    dim = session.get(Dimension, spec.key)
    if dim is None:
        dim = Dimension(key=spec.key)
        session.add(dim)
    dim.label, dim.description, dim.position, dim.i18n = (
        spec.label,
        spec.description,
        spec.position,
        spec.i18n,
    )
    return dim


def upsert_purpose(session: Session, spec: PurposeIn) -> Purpose:
    if spec.parent is not None and spec.parent != spec.key and session.get(Purpose, spec.parent) is None:
        raise InvalidInput(f"purpose {spec.key!r}: unknown parent purpose {spec.parent!r}")
    purpose = session.get(Purpose, spec.key)
    if purpose is None:
        purpose = Purpose(key=spec.key)
        session.add(purpose)
    purpose.label, purpose.description, purpose.dpv_term = spec.label, spec.description, spec.dpv_term
    purpose.parent_key, purpose.i18n, purpose.lawful_basis = spec.parent, spec.i18n, spec.lawful_basis
    return purpose


def upsert_partner(session: Session, spec: PartnerIn) -> Partner:
    partner = session.scalar(select(Partner).where(Partner.key == spec.key))
    if partner is None:
        partner = Partner(key=spec.key)
        session.add(partner)
    partner.name, partner.category, partner.description = spec.name, spec.category, spec.description
    if spec.i18n is not None:
        partner.i18n = spec.i18n
    elif partner.i18n is None:
        partner.i18n = {}
    return partner


def create_field(session: Session, spec: FieldIn, *, actor: Principal = SYSTEM) -> Field:
    if session.get(Dimension, spec.dimension) is None:
        raise InvalidInput(f"field {spec.key!r}: unknown dimension {spec.dimension!r}")
    if session.scalar(select(Field.id).where(Field.key == spec.key)) is not None:
        raise Conflict(f"field {spec.key!r} already exists")
    now = utcnow()
    field = Field(**_field_values(spec), status="active", version=1, created_at=now, updated_at=now)
    session.add(field)
    session.flush()
    _append_version(session, field, "created", actor)
    return field


def update_field(session: Session, key: str, changes: FieldUpdate, *, actor: Principal = SYSTEM) -> Field:
    field = get_field(session, key)
    if field.status == "retired":
        raise Conflict(f"field {key!r} is retired; retired fields cannot change")
    data = changes.model_dump(exclude_unset=True)
    if "constraints" in data and changes.constraints is not None:
        data["constraints"] = changes.constraints.model_dump(exclude_none=True)
    if "transforms" in data and changes.transforms is not None:
        data["transforms"] = transforms_json(changes.transforms)
    # Re-validate the whole field after the change (e.g. a category must keep its enum).
    merged = {**_spec_dict(field), **data}
    try:
        FieldIn.model_validate(merged)
    except ValidationError as exc:
        raise InvalidInput(_first_error(exc)) from exc
    changed = {k: v for k, v in data.items() if getattr(field, k) != v}
    if not changed:
        return field
    for name, value in changed.items():
        setattr(field, name, value)
    field.version += 1
    field.updated_at = utcnow()
    session.flush()
    _append_version(session, field, "updated", actor)
    return field


def retire_field(session: Session, key: str, *, actor: Principal = SYSTEM) -> Field:
    field = get_field(session, key)
    if field.status == "retired":
        return field
    field.status = "retired"
    field.retired_at = field.updated_at = utcnow()
    field.version += 1
    session.flush()
    _append_version(session, field, "retired", actor)
    return field


def _spec_dict(field: Field) -> dict[str, Any]:
    return {
        "key": field.key,
        "dimension": field.dimension_key,
        "label": field.label,
        "description": field.description,
        "collection_purpose": field.collection_purpose,
        "used_for": field.used_for,
        "storage_location": field.storage_location,
        "sharing_scope": field.sharing_scope,
        "retention_days": field.retention_days,
        "sensitivity": field.sensitivity,
        "points_value": field.points_value,
        "data_type": field.data_type,
        "constraints": field.constraints,
        "transforms": field.transforms,
        "i18n": field.i18n,
    }


def _append_version(session: Session, field: Field, change: str, actor: Principal) -> None:
    session.add(
        FieldVersion(
            field_id=field.id,
            version=field.version,
            snapshot=json.loads(json.dumps(_snapshot(field), default=str)),
            change=change,
            changed_by=actor.actor,
        )
    )
    record_event(
        session,
        actor=actor,
        action=f"catalog.field.{change}",
        target=f"field:{field.key}",
        details={"version": field.version},
    )


# --- loading a catalog file -------------------------------------------------------------------------
def parse_document(data: Any) -> CatalogDocument:
    try:
        return CatalogDocument.model_validate(data)
    except ValidationError as exc:
        raise InvalidInput(_first_error(exc), extra={"errors": _errors(exc)}) from exc


def read_document(path: Path) -> CatalogDocument:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc.strerror}") from exc
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise InvalidInput(f"{path} is not valid {'JSON' if path.suffix == '.json' else 'YAML'}") from exc
    return parse_document(data)


def load_document(session: Session, doc: CatalogDocument, *, actor: Principal = SYSTEM) -> dict[str, int]:
    """Create or update everything in ``doc`` in the caller's transaction (all or nothing)."""
    counts = {"dimensions": 0, "purposes": 0, "fields_created": 0, "fields_updated": 0, "partners": 0}
    for dim in doc.dimensions:
        upsert_dimension(session, dim)
        counts["dimensions"] += 1
    session.flush()
    # Parents first, whatever the file's order.
    pending = list(doc.purposes)
    known = {p.key for p in list_purposes(session)}
    while pending:
        ready = [p for p in pending if p.parent is None or p.parent in known or p.parent == p.key]
        if not ready:
            raise InvalidInput(f"purpose {pending[0].key!r}: unknown parent purpose {pending[0].parent!r}")
        for p in ready:
            upsert_purpose(session, p)
            session.flush()
            known.add(p.key)
            counts["purposes"] += 1
        pending = [p for p in pending if p not in ready]
    for spec in doc.fields:
        existing = session.scalar(select(Field).where(Field.key == spec.key))
        if existing is None:
            create_field(session, spec, actor=actor)
            counts["fields_created"] += 1
            continue
        if existing.data_type != spec.data_type:
            raise Conflict(f"field {spec.key!r}: data type cannot change ({existing.data_type} -> {spec.data_type})")
        if existing.dimension_key != spec.dimension:
            raise Conflict(f"field {spec.key!r}: dimension cannot change")
        before = existing.version
        update_field(
            session,
            spec.key,
            FieldUpdate.model_validate(spec.model_dump(exclude={"key", "dimension", "data_type"})),
            actor=actor,
        )
        counts["fields_updated"] += existing.version != before
    for partner in doc.partners:
        upsert_partner(session, partner)
        counts["partners"] += 1
    record_event(session, actor=actor, action="catalog.loaded", target="catalog", details=counts)
    return counts


def _errors(exc: ValidationError) -> list[dict[str, str]]:
    return [{"loc": ".".join(str(p) for p in e["loc"]), "msg": e["msg"]} for e in exc.errors()]


def _first_error(exc: ValidationError) -> str:
    first = _errors(exc)[0]
    return f"{first['loc']}: {first['msg']}" if first["loc"] else first["msg"]
