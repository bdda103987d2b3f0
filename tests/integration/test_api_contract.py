"""The OpenAPI document describes the server: the OAuth 2 security scheme with its flows and the scopes of
``dataspace.auth.scopes``, each guarded operation's scope, every error status as an RFC 7807 problem, the
201 of a new grant, and request bodies whose booleans and numbers are strict (``"active": 0`` is not a
boolean). The schemathesis run (tests/fuzz/test_api_fuzz.py) holds the live server to the same document."""

from __future__ import annotations

import typing
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import BaseModel, ValidationError

from dataspace.app import create_app
from dataspace.auth.scopes import SCOPE_DESCRIPTIONS, required_scope
from dataspace.context import Context
from dataspace.http.openapi import OWN_FORMAT_PREFIXES, api_routes, route_policy
from dataspace.http.problems import PROBLEM
from dataspace.http.security import PUBLIC_PATHS, PUBLIC_PREFIXES
from dataspace.points import rewards as points_rewards
from dataspace.points.schemas import RewardCreate
from tests.factories.catalog import load_demo_catalog
from tests.factories.identities import bearer, issue_token

PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}


@pytest.fixture
def app(ctx: Context) -> FastAPI:
    return create_app(ctx)


def _operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(m.upper(), path, op) for path, item in doc["paths"].items() for m, op in item.items()]


def test_the_security_scheme_offers_both_flows_with_the_server_scopes(app: FastAPI) -> None:
    scheme = app.openapi()["components"]["securitySchemes"]["oauth2"]
    assert scheme["type"] == "oauth2"
    code = scheme["flows"]["authorizationCode"]
    assert (code["authorizationUrl"], code["tokenUrl"]) == ("/oauth/authorize", "/oauth/token")
    assert code["scopes"] == SCOPE_DESCRIPTIONS
    assert "PKCE" in scheme["description"]
    credentials = scheme["flows"]["clientCredentials"]
    assert credentials["tokenUrl"] == "/oauth/token"
    assert set(credentials["scopes"]) <= set(SCOPE_DESCRIPTIONS)


def test_each_operation_names_the_scope_its_route_checks(app: FastAPI) -> None:
    doc = app.openapi()
    checked = 0
    for route in api_routes(app.routes):
        for method in route.methods - {"HEAD", "OPTIONS"}:
            operation = doc["paths"].get(route.path_format, {}).get(method.lower())
            if operation is None:
                continue
            policy = route_policy(route)
            if policy is None:
                assert route.path_format in PUBLIC_PATHS or route.path_format.startswith(PUBLIC_PREFIXES)
                assert operation["security"] == [], route.path_format
                continue
            assert operation["security"] == [{"oauth2": [required_scope(*policy)]}], (method, route.path_format)
            for status in ("401", "403"):
                assert status in operation["responses"], (method, route.path_format, status)
            if "{" in route.path_format:
                assert "404" in operation["responses"], (method, route.path_format)
            checked += 1
    assert checked > 50


def test_every_error_answer_is_documented_as_a_problem(app: FastAPI) -> None:
    doc = app.openapi()
    assert doc["components"]["schemas"]["Problem"]["required"] == ["type", "title", "status", "detail"]
    for method, path, operation in _operations(doc):
        if path.startswith(OWN_FORMAT_PREFIXES):
            continue
        for status, response in operation["responses"].items():
            if int(status) >= 400:
                assert response["content"] == {PROBLEM: {"schema": PROBLEM_REF}}, (method, path, status)
        if operation.get("parameters") or operation.get("requestBody"):
            assert "422" in operation["responses"], (method, path)


def test_a_new_grant_is_201_and_a_repeated_one_200_as_documented(ctx: Context, app: FastAPI) -> None:
    responses = app.openapi()["paths"]["/v1/me/consents"]["post"]["responses"]
    assert {"200", "201"} <= set(responses)
    load_demo_catalog(ctx)
    token = issue_token(ctx, "customer")
    body = {"purpose": "insurance_offer", "field": "age", "partner": "harbor_insurance"}
    with TestClient(app) as client:
        first = client.post("/v1/me/consents", json=body, headers=bearer(token))
        again = client.post("/v1/me/consents", json=body, headers=bearer(token))
    assert (first.status_code, first.json()["changed"]) == (201, True)
    assert (again.status_code, again.json()["changed"]) == (200, False)


def _models_in(annotation: Any, found: dict[str, type[BaseModel]]) -> None:
    """Every model ``annotation`` names, nested ones (in fields, lists, dicts, unions) included."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        if annotation.__name__ not in found:
            found[annotation.__name__] = annotation
            for info in annotation.model_fields.values():
                _models_in(info.annotation, found)
        return
    for arg in typing.get_args(annotation):
        _models_in(arg, found)


def _body_models(app: FastAPI) -> dict[str, type[BaseModel]]:
    models: dict[str, type[BaseModel]] = {}
    for route in api_routes(app.routes):
        for param in route.dependant.body_params:
            _models_in(param.field_info.annotation, models)
    return models


# A value lax validation would coerce, per JSON Schema type: none of them is that type in JSON.
COERCIBLE = {"boolean": [0, 1, "true", "yes"], "integer": ["1", 1.0, True], "number": ["1.5", True]}


def _types(schema: dict[str, Any]) -> set[str]:
    found = {schema["type"]} if isinstance(schema.get("type"), str) else set()
    for option in schema.get("anyOf", []):
        found |= _types(option)
    return found


def test_request_bodies_take_booleans_and_numbers_only_as_such(app: FastAPI) -> None:
    models = _body_models(app)
    assert {"GrantCreate", "RewardCreate", "RewardUpdate"} <= set(models)
    lax: list[str] = []
    for name, model in sorted(models.items()):
        properties = model.model_json_schema()["properties"]
        for field, schema in properties.items():
            for kind in _types(schema) & set(COERCIBLE):
                for value in COERCIBLE[kind]:
                    if kind == "number" and "integer" in _types(schema):
                        continue
                    try:
                        model.model_validate({field: value})
                    except ValidationError as exc:
                        if any(tuple(e["loc"][:1]) == (field,) for e in exc.errors()):
                            continue
                    lax.append(f"{name}.{field} accepted {value!r} as {kind}")
    assert lax == []


def test_active_zero_is_not_a_boolean(ctx: Context, app: FastAPI) -> None:
    with ctx.db.transaction() as s:
        points_rewards.create_reward(s, data=RewardCreate(key="lounge", name="Lounge", cost=50, stock=5))
    token = issue_token(ctx, "steward")
    with TestClient(app) as client:
        refused = client.patch("/v1/rewards/lounge", json={"active": 0}, headers=bearer(token))
        assert refused.status_code == 422, refused.text
        assert refused.headers["content-type"].startswith(PROBLEM)
        created = client.post(
            "/v1/rewards", json={"key": "spa", "name": "Spa", "cost": "50", "stock": 1}, headers=bearer(token)
        )
        assert created.status_code == 422, created.text
        ok = client.patch("/v1/rewards/lounge", json={"active": False}, headers=bearer(token))
        assert ok.status_code == 200, ok.text
        assert ok.json()["active"] is False
