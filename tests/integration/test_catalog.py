from __future__ import annotations

import pytest
from sqlalchemy import func, select

from dataspace.catalog import service as catalog
from dataspace.catalog.models import Field, FieldVersion
from dataspace.catalog.schemas import FieldIn, FieldUpdate
from dataspace.errors import Conflict, InvalidInput, NotFound
from tests.factories.catalog import DEMO_CATALOG, load_demo_catalog


def test_load_demo_catalog_groups_fields_by_dimension(ctx):
    counts = load_demo_catalog(ctx)
    assert counts["fields_created"] == 12
    with ctx.db.session() as s:
        manual = catalog.data_manual(s)
        assert [d["key"] for d in manual] == ["identity", "behaviour", "assets"]
        identity = {f.key for f in manual[0]["fields"]}
        assert {"age", "city", "health_condition"} <= identity
        age = catalog.get_field(s, "age")
        assert age.sensitivity == "normal"
        assert age.points_value == 50
        assert catalog.get_field(s, "health_condition").sensitivity == "sensitive"
        assert catalog.get_purpose(s, "insurance_offer").dpv_term == "dpv:ServicePersonalisation"
        assert {p.key for p in catalog.list_partners(s)} == {"harbor_insurance", "voltgrid"}


def test_loading_twice_changes_nothing(ctx):
    load_demo_catalog(ctx)
    counts = load_demo_catalog(ctx)
    assert counts["fields_created"] == 0
    assert counts["fields_updated"] == 0
    with ctx.db.session() as s:
        assert s.scalar(select(func.count()).select_from(FieldVersion)) == 12


def test_update_appends_a_version_and_retire_keeps_history(ctx):
    load_demo_catalog(ctx)
    with ctx.db.transaction() as s:
        catalog.update_field(s, "age", FieldUpdate(points_value=80, description="Age in whole years."))
    with ctx.db.transaction() as s:
        catalog.retire_field(s, "age")
    with ctx.db.session() as s:
        history = catalog.field_history(s, "age")
        assert [(h.version, h.change) for h in history] == [(1, "created"), (2, "updated"), (3, "retired")]
        assert history[0].snapshot["points_value"] == 50
        assert history[1].snapshot["points_value"] == 80
        assert "age" not in {f.key for f in catalog.list_fields(s)}
        assert "age" in {f.key for f in catalog.list_fields(s, include_retired=True)}
    with ctx.db.transaction() as s, pytest.raises(Conflict):
        catalog.update_field(s, "age", FieldUpdate(points_value=1))


def test_invalid_field_definitions_are_refused_without_partial_writes(ctx):
    load_demo_catalog(ctx)
    spec = FieldIn.model_validate(
        {
            "key": "shoe_size",
            "dimension": "nowhere",
            "label": "Shoe size",
            "description": "d",
            "collection_purpose": "p",
            "storage_location": "s",
            "sharing_scope": "x",
            "retention_days": 30,
            "data_type": "integer",
        }
    )
    with pytest.raises(InvalidInput, match="unknown dimension"), ctx.db.transaction() as s:
        catalog.create_field(s, spec)
    with pytest.raises(InvalidInput, match="enum"):
        catalog.parse_document(
            {
                "fields": [
                    {
                        "key": "colour",
                        "dimension": "identity",
                        "label": "c",
                        "description": "d",
                        "collection_purpose": "p",
                        "storage_location": "s",
                        "sharing_scope": "x",
                        "retention_days": 30,
                        "data_type": "category",
                    }
                ]
            }
        )
    with pytest.raises(InvalidInput, match="unknown transform"):
        catalog.parse_document(
            {
                "fields": [
                    {
                        "key": "colour",
                        "dimension": "identity",
                        "label": "c",
                        "description": "d",
                        "collection_purpose": "p",
                        "storage_location": "s",
                        "sharing_scope": "x",
                        "retention_days": 30,
                        "data_type": "string",
                        "transforms": ["raw_export"],
                    }
                ]
            }
        )
    doc = catalog.read_document(DEMO_CATALOG)
    doc.fields[0].data_type = "string"
    with pytest.raises(Conflict, match="data type cannot change"), ctx.db.transaction() as s:
        catalog.load_document(s, doc)
    with ctx.db.session() as s:
        assert s.scalar(select(func.count()).select_from(Field)) == 12
        assert catalog.get_field(s, "age").data_type == "integer"
    with ctx.db.session() as s, pytest.raises(NotFound):
        catalog.get_field(s, "nope")


def test_catalog_file_errors_are_one_line(tmp_path):
    bad = tmp_path / "c.yaml"
    bad.write_text("fields: [ {key: 1")
    with pytest.raises(InvalidInput, match="not valid YAML"):
        catalog.read_document(bad)
    with pytest.raises(InvalidInput, match="cannot read"):
        catalog.read_document(tmp_path / "missing.yaml")
