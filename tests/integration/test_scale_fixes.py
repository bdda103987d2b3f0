"""Fixes found by the load and fault tests (tests/faults, bench/load.py)."""

from __future__ import annotations

import threading

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from dataspace.app import create_app
from dataspace.auth.models import PolicyRule
from dataspace.auth.policy import Authorizer, default_rules
from dataspace.context import Context
from dataspace.db import Database


def test_concurrent_first_use_seeds_the_policy_once(ctx: Context) -> None:
    # Every replica (and every request thread of one) may find the rule table empty at the same time.
    authorizers = [Authorizer(ctx.db) for _ in range(4)]
    barrier = threading.Barrier(8)
    errors: list[Exception] = []

    def first_use(az: Authorizer) -> None:
        barrier.wait()
        try:
            assert az.allows("customer", "me.consents", "write")
        except Exception as exc:  # noqa: BLE001  (collected and asserted on below)
            errors.append(exc)

    threads = [threading.Thread(target=first_use, args=(authorizers[i % 4],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    with ctx.db.session() as session:
        assert session.scalar(select(func.count()).select_from(PolicyRule)) == len(dict.fromkeys(default_rules()))


def test_an_unreachable_database_is_a_clean_503(ctx: Context) -> None:
    down = Database("postgresql+psycopg://postgres@127.0.0.1:1/nowhere")  # nothing listens on port 1
    try:
        app = create_app(Context(settings=ctx.settings, db=down, keys=ctx.keys))
        with TestClient(app, raise_server_exceptions=True) as client:
            r = client.get("/healthz")
            assert r.status_code == 503
            assert r.headers["content-type"].startswith("application/problem+json")
            assert r.json()["code"] == "unavailable"
            assert r.headers["retry-after"] == "1"
            r = client.get("/v1/me/consents", headers={"Authorization": "Bearer x.y.z"})
            assert r.status_code in (401, 503)
    finally:
        down.dispose()
