"""Hostile partner input that used to reach a 500 (or worse) is refused with a 422 problem."""

from __future__ import annotations

import json
from datetime import timedelta

from fastapi.testclient import TestClient

from dataspace.agreements.contracts import MAX_DECISION_MAGNITUDE
from dataspace.app import create_app
from dataspace.context import Context
from dataspace.db import utcnow
from tests.factories import jobs as js
from tests.factories.identities import bearer, issue_token


def _contract(schema: dict[str, object] | str) -> dict[str, object] | str:
    return {
        "purpose": js.PURPOSE,
        "features": js.FEATURES,
        "decision_schema": "SCHEMA" if isinstance(schema, str) else schema,
        "k_min": 3,
        "epsilon_per_release": 1.0,
        "valid_until": (utcnow() + timedelta(days=30)).isoformat(),
    }


def test_decision_ranges_that_break_dp_releases_are_refused_at_contract_time(ctx: Context) -> None:
    js.build_world(ctx, 3)
    client = TestClient(create_app(ctx))
    partner = bearer(issue_token(ctx, "partner", partner_key=js.PARTNER))
    for schema in (
        {"min": -1e308, "max": 1e308},  # every release failed: OpenDP's scale must be finite
        {"min": 0, "max": MAX_DECISION_MAGNITUDE * 10},
        {"min": 0, "max": 10**400},  # an integer beyond any float
        {"min": 1, "max": 1},
        {"min": 2, "max": 1},
    ):
        r = client.post("/v1/partner/contracts", json=_contract(schema), headers=partner)
        assert r.status_code == 422, (schema, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
    # Non-finite numbers, which JSON parsers accept as literals.
    for literal in ("Infinity", "-Infinity", "NaN"):
        text = json.dumps(_contract("SCHEMA")).replace('"SCHEMA"', '{"min": 0, "max": ' + literal + "}")
        r = client.post("/v1/partner/contracts", content=text, headers={**partner, "content-type": "application/json"})
        assert r.status_code == 422, (literal, r.text)
    ok = {"min": -MAX_DECISION_MAGNITUDE, "max": MAX_DECISION_MAGNITUDE}
    assert client.post("/v1/partner/contracts", json=_contract(ok), headers=partner).status_code == 201


def test_deeply_nested_python_is_refused_without_harming_the_server(ctx: Context) -> None:
    js.build_world(ctx, 3)
    contract_id = js.approved_contract(ctx)
    client = TestClient(create_app(ctx))
    partner = bearer(issue_token(ctx, "partner", partner_key=js.PARTNER))
    url = f"/v1/partner/models?contract_id={contract_id}&kind=python"
    for source in (
        b"x = " + b"(" * 200_000 + b"1" + b")" * 200_000,  # the parser's recursion (RecursionError / MemoryError)
        b"x = " + b"-" * 200_000 + b"1",  # the compiler's recursion on a deep unary chain
        b"x = " + b"[" * 100_000 + b"]" * 100_000,
        b"def score(table):\n    return " + b"+".join([b"1"] * 60_000) + b"\n",  # a deep binary-op chain
    ):
        r = client.post(url, content=source, headers=partner)
        assert r.status_code == 422, r.text[:300]
        assert r.headers["content-type"].startswith("application/problem+json")
    # The server is still there and accepts a normal module.
    r = client.post(url, content=b"def score(table):\n    return ['standard'] * table.num_rows\n", headers=partner)
    assert r.status_code == 201, r.text
