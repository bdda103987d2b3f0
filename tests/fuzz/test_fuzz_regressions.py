"""Regressions for what the fuzz suites found, each named after the request that used to fail."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from dataspace.app import create_app
from dataspace.context import Context
from tests.factories.catalog import load_demo_catalog
from tests.factories.identities import bearer, issue_token, make_client


@pytest.fixture
def client(ctx: Context) -> TestClient:
    # raise_server_exceptions (the default): a 500 fails the test with the server's own traceback
    return TestClient(create_app(ctx))


def _is_problem(response, status: int) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert {"type", "title", "status", "detail"} <= response.json().keys()


FIELD = {
    "key": "nickname",
    "dimension": "identity",
    "label": "Nickname",
    "data_type": "string",
    "sensitivity": "normal",
}


@pytest.mark.parametrize("pattern", ["\\", "(", "[a-", "*"])
def test_field_with_a_pattern_that_does_not_compile_is_invalid_input(ctx, client, pattern):
    load_demo_catalog(ctx)
    steward = bearer(issue_token(ctx, "steward"))
    body = {**FIELD, "constraints": {"pattern": pattern}}
    _is_problem(client.post("/v1/catalog/fields", json=body, headers=steward), 422)
    doc = {"dimensions": [], "purposes": [], "partners": [], "fields": [body]}
    _is_problem(client.post("/v1/catalog/load", json=doc, headers=steward), 422)


def test_non_ascii_response_type_is_rejected_not_a_server_error(ctx, client):
    r = client.get("/oauth/authorize", params={"response_type": "÷I`Å", "client_id": "x"})
    assert r.status_code == 400
    assert r.headers["content-type"].startswith("text/html")
    r = client.post("/oauth/authorize", data={"response_type": "÷", "username": "u", "password": "p"})
    assert r.status_code == 400


def test_non_ascii_redirect_uri_of_a_known_client_is_rejected_without_redirecting(ctx, client):
    make_client(ctx, "customer", public=True, client_id="portal-x", redirect_uris=["http://127.0.0.1/callback"])
    params = {
        "response_type": "code",
        "client_id": "portal-x",
        "redirect_uri": "http://127.0.0.1/callbäck",
        "code_challenge": "a" * 43,
        "code_challenge_method": "S256",
    }
    r = client.get("/oauth/authorize", params=params, follow_redirects=False)
    assert r.status_code == 400
    assert "location" not in r.headers


def test_openapi_documents_problem_json_and_streamed_exports(client):
    spec = client.get("/openapi.json").json()
    invalid = spec["paths"]["/v1/catalog/fields"]["post"]["responses"]["422"]
    assert list(invalid["content"]) == ["application/problem+json"]
    assert invalid["content"]["application/problem+json"]["schema"] == {"$ref": "#/components/schemas/Problem"}
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    export = spec["paths"]["/v1/audit/export"]["get"]["responses"]["200"]["content"]
    assert set(export) == {"application/x-ndjson", "text/csv"}


def test_validation_error_matches_the_documented_problem_schema(ctx, client):
    steward = bearer(issue_token(ctx, "steward"))
    r = client.get("/v1/catalog/fields", params={"include_retired": "maybe"}, headers=steward)
    _is_problem(r, 422)
    schema = client.get("/openapi.json").json()["components"]["schemas"]["Problem"]
    body = r.json()
    for name in schema["required"]:
        assert name in body
    assert isinstance(body["status"], int)
    assert body["code"] == "invalid_input"


def test_dimension_position_out_of_storage_range_is_invalid_input(ctx, client):
    """POST /v1/catalog/load with a dimension position of 5855015657 (PostgreSQL: integer out of range)."""
    steward = bearer(issue_token(ctx, "steward"))
    doc = {"dimensions": [{"key": "extra", "label": "Extra", "position": 5_855_015_657}]}
    _is_problem(client.post("/v1/catalog/load", json=doc, headers=steward), 422)


def test_a_value_the_database_cannot_store_is_a_422_problem(ctx):
    """The safety net behind validation: a DataError from the driver is the request's fault, not a 500."""
    from fastapi import Depends
    from sqlalchemy import text

    from dataspace.http.deps import unit_of_work

    if ctx.db.is_sqlite:
        pytest.skip("SQLite's driver raises OverflowError before any SQL; ids are bounded at the edge instead")
    app = create_app(ctx)

    @app.get("/test-only/overflow")
    def overflow(session=Depends(unit_of_work, scope="function")):
        session.execute(
            text(
                "INSERT INTO catalog_dimensions (key, label, description, position, i18n) "
                "VALUES ('x', 'x', '', :p, '{}')"
            ),
            {"p": 2**40},  # past PostgreSQL INTEGER
        )

    _is_problem(TestClient(app, raise_server_exceptions=False).get("/test-only/overflow"), 422)


def test_consent_stats_for_an_unknown_field_is_an_empty_answer(ctx, client):
    """``field=<unknown>`` left no field to evaluate; the bulk loader then built a CASE without branches."""
    load_demo_catalog(ctx)
    steward = bearer(issue_token(ctx, "steward"))
    r = client.get("/v1/consents/stats", params={"field": "no_such_field"}, headers=steward)
    assert r.status_code == 200, r.text
    assert r.json()["series"] == []


@pytest.mark.parametrize("body", [b"a\rb,c\n1,2\n", b"customer_ref\r,age\nc1,40\n"])
def test_a_csv_header_with_a_bare_carriage_return_is_invalid_input(ctx, client, body):
    load_demo_catalog(ctx)
    steward = bearer(issue_token(ctx, "steward"))
    r = client.post("/v1/ingest/csv", content=body, headers={**steward, "content-type": "text/csv"})
    _is_problem(r, 422)
    assert "not a valid CSV" in r.json()["detail"]
