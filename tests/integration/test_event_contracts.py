"""Business event contracts through the HTTP API with real tokens (both databases): approval by both sides,
versioning, validation, deduplication, consent filtering of event fields, dead letters and replay, and the
specification downloads; at-least-once delivery to a consumer process killed mid-delivery."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from dataspace.app import create_app
from dataspace.consents import changes
from dataspace.context import Context
from dataspace.db import utcnow
from dataspace.emission.transforms import pseudonym
from dataspace.events import delivery
from dataspace.events.contract_models import BusinessEvent, EventDelivery
from dataspace.events.publish import PSEUDONYM_SCOPE
from dataspace.events.service import InvalidSignature, verify_signature
from dataspace.ingest.service import ingest_rows
from dataspace.partners.models import Partner
from dataspace.subjects.models import Subject
from tests.factories.catalog import customer_row, load_demo_catalog
from tests.factories.identities import bearer, issue_token

INSURER, CHARGER = "harbor_insurance", "voltgrid"  # both in the demo catalog
PURPOSE = "insurance_offer"
TYPE = "battery_swap.booked"
ROOT = Path(__file__).resolve().parents[2]


def schema(*, extra: dict | None = None, drop: str | None = None) -> dict:
    props = {
        "booking_id": {"type": "string", "description": "The booking's id in the operator's app."},
        "station_id": {"type": "string", "description": "The swap station."},
        "booked_at": {"type": "string", "format": "date-time", "description": "When the customer booked."},
        "battery_kwh": {"type": "number", "minimum": 0, "x-unit": "kWh", "description": "Battery capacity."},
        "age": {"type": "integer", "x-catalog-field": "age", "x-unit": "years", "description": "Customer's age."},
        "monthly_card_spend": {
            "type": "number",
            "x-catalog-field": "monthly_card_spend",
            "x-unit": "CNY",
            "description": "Card spend of the last month.",
        },
    }
    props.update(extra or {})
    if drop:
        props.pop(drop)
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["booking_id", "station_id", "booked_at"],
        "properties": props,
    }


def proposal(version: str = "1.0.0", **kw: object) -> dict:
    body = {
        "event_type": TYPE,
        "version": version,
        "title": "Battery swap booked",
        "description": "A customer booked a battery swap in the operator's app.",
        "producer": "operator",
        "consumers": [INSURER, CHARGER],
        "purpose": PURPOSE,
        "schema": schema(),
        "latency_ms": 2000,
        "retry": {"backoff_seconds": 1, "multiplier": 2, "max_backoff_seconds": 10, "max_attempts": 3},
    }
    body.update(kw)
    return body


class World:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        load_demo_catalog(ctx)
        with ctx.db.session() as s:
            self.insurer = s.scalars(select(Partner).where(Partner.key == INSURER)).one()
            self.charger = s.scalars(select(Partner).where(Partner.key == CHARGER)).one()
        report = ingest_rows(ctx.db, ctx.keys, ctx.vault, [customer_row("c-ada", age=41), customer_row("c-bo", age=33)])
        assert report.accepted == 2
        with ctx.db.session() as s:
            self.ada = s.scalar(select(Subject.id).where(Subject.blind_ref == ctx.keys.blind_index("c-ada")))
        # Ada lets the insurer have her raw age for offers; nothing else, nobody else.
        with ctx.db.transaction() as s:
            self.age_grant = changes.grant(
                s,
                subject_id=self.ada,
                request=changes.GrantRequest(
                    purpose=PURPOSE, field="age", partner=INSURER, granularity="pseudonymized-raw"
                ),
                signer=ctx.keys.signing_key,
            ).grant.id
        self.client = TestClient(create_app(ctx))
        self.steward = bearer(issue_token(ctx, "steward"))
        self.insurer_h = bearer(issue_token(ctx, "partner", partner_key=INSURER))
        self.charger_h = bearer(issue_token(ctx, "partner", partner_key=CHARGER))

    def approved_contract(self, **kw: object) -> dict:
        r = self.client.post("/v1/event-contracts", json=proposal(**kw), headers=self.steward)
        assert r.status_code == 201, r.text
        for h in (self.insurer_h, self.charger_h):
            r = self.client.post(f"/v1/partner/event-contracts/{r.json()['id']}/approve", headers=h)
            assert r.status_code == 200, r.text
        assert r.json()["status"] == "approved"
        return r.json()

    def publish(self, event_id: str = "evt-1", **kw: object) -> object:
        body = {
            "id": event_id,
            "type": TYPE,
            "occurred_at": "2026-12-01T08:00:00Z",
            "customer_ref": "c-ada",
            "data": {
                "booking_id": "b-1",
                "station_id": "st-9",
                "booked_at": "2026-12-01T07:59:00+00:00",
                "battery_kwh": 75.0,
                "age": 41,
                "monthly_card_spend": 5230.5,
            },
        }
        body.update(kw)
        return self.client.post("/v1/events", json=body, headers=self.steward)


@pytest.fixture
def world(ctx: Context) -> World:
    ctx.settings = ctx.settings.model_copy(update={"webhook_allow_private": True})
    return World(ctx)


def deliveries(ctx: Context, event_id: str) -> dict[int, EventDelivery]:
    with ctx.db.session() as s:
        rows = s.scalars(
            select(EventDelivery)
            .join(BusinessEvent, BusinessEvent.id == EventDelivery.event_id)
            .where(BusinessEvent.event_id == event_id)
        )
        return {d.partner_id: d for d in rows}


# --- the registry ------------------------------------------------------------------------------------------
def test_a_contract_is_usable_only_when_both_sides_approved(world: World) -> None:
    c = world.client
    r = c.post("/v1/partner/event-contracts", json=proposal(), headers=world.insurer_h)
    assert r.status_code == 201, r.text
    contract = r.json()
    assert contract["status"] == "proposed"
    assert contract["pending_approvals"] == ["steward", f"partner:{world.charger.id}"]
    # Not approved yet: nobody can publish under it.
    assert world.publish().status_code == 404
    # The proposer cannot approve twice; a partner outside the contract cannot see or approve it.
    assert c.post(f"/v1/partner/event-contracts/{contract['id']}/approve", headers=world.insurer_h).status_code == 409
    outsider = bearer(issue_token(world.ctx, "partner"))
    assert c.get(f"/v1/partner/event-contracts/{contract['id']}", headers=outsider).status_code == 404
    assert c.post(f"/v1/partner/event-contracts/{contract['id']}/approve", headers=outsider).status_code == 404
    assert c.get("/v1/partner/event-contracts", headers=outsider).json() == []
    # A partner cannot approve for the operator through the steward's routes.
    assert c.post(f"/v1/event-contracts/{contract['id']}/approve", headers=world.charger_h).status_code == 403
    r = c.post(f"/v1/event-contracts/{contract['id']}/approve", headers=world.steward)
    assert r.json()["status"] == "proposed"
    r = c.post(f"/v1/partner/event-contracts/{contract['id']}/approve", headers=world.charger_h)
    assert r.json()["status"] == "approved"
    assert set(r.json()["approvals"]) == {"steward", f"partner:{world.insurer.id}", f"partner:{world.charger.id}"}
    assert world.publish().status_code == 201
    # Each side's decision is in the audit trail.
    from dataspace.audit.search import list_actions

    with world.ctx.db.session() as s:
        assert {"event_contract.proposed", "event_contract.approved"} <= set(list_actions(s))


def test_versions_compatible_minor_accepted_breaking_minor_refused_major_reapproved(world: World) -> None:
    c = world.client
    v1 = world.approved_contract()
    optional = {"swap_minutes": {"type": "integer", "x-unit": "min", "description": "Expected swap duration."}}
    r = c.post("/v1/event-contracts", json=proposal("1.1.0", schema=schema(extra=optional)), headers=world.steward)
    assert r.status_code == 201, r.text
    assert (r.json()["status"], r.json()["change"], r.json()["previous_id"]) == ("approved", "minor", v1["id"])

    # Removing a field, retyping one or adding a required one is breaking: a minor version is refused...
    renamed = schema(extra=optional, drop="station_id")
    renamed["properties"]["station"] = {"type": "string", "description": "The swap station."}
    renamed["required"] = ["booking_id", "station", "booked_at"]
    r = c.post("/v1/event-contracts", json=proposal("1.2.0", schema=renamed), headers=world.steward)
    assert r.status_code == 422, r.text
    problem = r.json()
    assert problem["required"] == "major"
    found = {(e["path"], e["change"]) for e in problem["errors"]}
    assert ("station_id", "field removed or renamed") in found
    assert ("station", "new required field") in found
    retyped = schema(extra={**optional, "battery_kwh": {"type": "string", "description": "Battery capacity."}})
    r = c.post("/v1/event-contracts", json=proposal("1.2.0", schema=retyped), headers=world.steward)
    assert r.status_code == 422
    assert any(e["path"] == "battery_kwh" and "type changed" in e["change"] for e in r.json()["errors"])
    # ...and so is a version that skips a major or is not newer.
    assert (
        c.post("/v1/event-contracts", json=proposal("3.0.0", schema=renamed), headers=world.steward).status_code == 422
    )
    assert c.post("/v1/event-contracts", json=proposal("1.0.0"), headers=world.steward).status_code == 409

    # A new major version: proposed, both sides approve again; the old major stays usable meanwhile.
    r = c.post("/v1/event-contracts", json=proposal("2.0.0", schema=renamed), headers=world.steward)
    assert r.status_code == 201, r.text
    v2 = r.json()
    assert (v2["status"], v2["change"]) == ("proposed", "major")
    assert v2["pending_approvals"] == [f"partner:{world.insurer.id}", f"partner:{world.charger.id}"]
    assert world.publish("old-major", version="1.1.0").status_code == 201
    v2_data = {"booking_id": "b", "station": "s", "booked_at": "2026-12-01T07:59:00Z"}
    assert world.publish("new-major", version="2.0.0", data=v2_data).status_code == 404
    for h in (world.insurer_h, world.charger_h):
        r = c.post(f"/v1/partner/event-contracts/{v2['id']}/approve", headers=h)
    assert r.json()["status"] == "approved"
    assert world.publish("new-major", version="2.0.0", data=v2_data).status_code == 201


def test_contract_schemas_are_checked_and_every_problem_listed(world: World) -> None:
    bad = schema(
        extra={
            "no_meaning": {"type": "string"},
            "nested": {"type": "object", "description": "x", "properties": {"inner": {"type": "integer"}}},
            "secret": {"type": "string", "x-catalog-field": "no_such_field", "description": "Made up."},
            "odd": {"type": "string", "x-catalog-field": {"key": "age"}, "description": "Not a name."},
        }
    )
    bad["required"] = [*bad["required"], "age"]
    r = world.client.post("/v1/event-contracts", json=proposal(schema=bad), headers=world.steward)
    assert r.status_code == 422
    assert r.headers["content-type"].startswith("application/problem+json")
    problems = {(e["path"], e["problem"]) for e in r.json()["errors"]}
    assert ("no_meaning", "every field needs a description (its meaning)") in problems
    assert ("nested.inner", "every field needs a description (its meaning)") in problems
    assert ("secret", "unknown catalog field 'no_such_field'") in problems
    assert ("odd", "x-catalog-field names a catalog field (a string)") in problems
    assert ("age", "a customer-data field cannot be required (consent drops it)") in problems
    # A schema that would fetch something, or hide fields from the description check, is refused.
    remote = schema(extra={"x": {"$ref": "http://169.254.169.254/latest/meta-data", "description": "Bait."}})
    hidden = schema()
    hidden["anyOf"] = [{"properties": {"undocumented": {"type": "string"}}}]
    for bad_schema in (remote, hidden):
        r = world.client.post("/v1/event-contracts", json=proposal(schema=bad_schema), headers=world.steward)
        assert r.status_code == 422, r.text
    assert r.json()["errors"] == [
        {"path": "anyOf[0]/properties", "problem": "declare fields as plain properties, not in combinators"}
    ]
    # Not JSON Schema at all.
    r = world.client.post("/v1/event-contracts", json=proposal(schema={"type": "objekt"}), headers=world.steward)
    assert r.status_code == 422
    # A partner cannot produce events carrying the operator's customer data, nor propose for others.
    r = world.client.post(
        "/v1/partner/event-contracts", json=proposal(producer=INSURER, consumers=[CHARGER]), headers=world.insurer_h
    )
    assert r.status_code == 422
    assert any("only the operator" in e["problem"] for e in r.json()["errors"])
    outsider = bearer(issue_token(world.ctx, "partner"))
    assert world.client.post("/v1/partner/event-contracts", json=proposal(), headers=outsider).status_code == 403
    # The server's own event types are not up for proposal.
    r = world.client.post("/v1/event-contracts", json=proposal(event_type="job.completed"), headers=world.steward)
    assert r.status_code == 422


# --- publishing --------------------------------------------------------------------------------------------
def test_an_invalid_event_is_refused_with_every_violation(world: World) -> None:
    world.approved_contract()
    r = world.publish(
        occurred_at="yesterday",
        surprise=1,
        data={"booking_id": 7, "booked_at": "not a time", "battery_kwh": -1, "age": 41, "colour": "red"},
    )
    assert r.status_code == 422
    paths = {e["path"] for e in r.json()["errors"]}
    assert {"surprise", "occurred_at", "data/booking_id", "data/booked_at", "data/battery_kwh", "data"} <= paths
    assert r.json()["error_count"] == len(r.json()["errors"]) >= 7  # station_id missing, colour not allowed too
    # JSON numbers only: NaN and Infinity (which Python's parser lets through) are violations, not a 500.
    raw = (
        '{"id": "nan", "type": "' + TYPE + '", "occurred_at": "2026-12-01T08:00:00Z", "data": {"booking_id": "b", '
        '"station_id": "s", "booked_at": "2026-12-01T07:59:00Z", "battery_kwh": NaN}}'
    )
    r = world.client.post("/v1/events", content=raw, headers={**world.steward, "content-type": "application/json"})
    assert r.status_code == 422
    assert {"path": "data/battery_kwh", "problem": "not a finite number (JSON has no NaN or Infinity)"} in r.json()[
        "errors"
    ]
    with world.ctx.db.session() as s:
        assert s.scalars(select(BusinessEvent)).first() is None
    # A partner cannot publish the operator's events (the same answer as for an unknown type).
    r = world.client.post("/v1/partner/events", json={"id": "x", "type": TYPE, "data": {}}, headers=world.insurer_h)
    assert r.status_code == 404


def test_events_are_deduplicated_by_id(world: World) -> None:
    world.approved_contract()
    first = world.publish("evt-dup")
    assert first.status_code == 201, first.text
    again = world.publish("evt-dup")
    assert again.status_code == 200
    assert again.json()["duplicate"] is True
    assert again.json()["signature"] == first.json()["signature"]
    changed = world.publish("evt-dup", occurred_at="2026-12-01T08:00:01Z")
    assert changed.status_code == 409
    assert len(deliveries(world.ctx, "evt-dup")) == 2  # one per consumer, not one per request


def test_customer_fields_reach_a_partner_only_with_consent_and_pseudonymised(world: World) -> None:
    world.approved_contract()
    assert world.publish("evt-c1").status_code == 201
    got = deliveries(world.ctx, "evt-c1")
    insurer, charger = got[world.insurer.id].payload, got[world.charger.id].payload
    # The insurer gets the age Ada allowed, under its own pseudonym; not her card spend, not her id.
    assert insurer["data"]["age"] == 41
    assert "monthly_card_spend" not in insurer["data"]
    expected = pseudonym(world.ctx.keys.partner_pseudonym_key(INSURER), PSEUDONYM_SCOPE, world.ada)
    assert insurer["subject"] == expected
    assert "c-ada" not in json.dumps(insurer)
    # The charger has no consent at all: no customer data and no pseudonym, only the business facts.
    assert charger["data"] == {
        "booking_id": "b-1",
        "station_id": "st-9",
        "booked_at": "2026-12-01T07:59:00+00:00",
        "battery_kwh": 75.0,
    }
    assert "subject" not in charger
    # The stored event keeps no customer values; the steward sees what was dropped, by name only.
    with world.ctx.db.session() as s:
        stored = s.scalar(select(BusinessEvent).where(BusinessEvent.event_id == "evt-c1"))
        assert stored is not None
        assert "age" not in stored.data
        assert "monthly_card_spend" not in stored.data
    summary = world.client.get(
        f"/v1/event-contracts/{got[world.insurer.id].contract_id}/deliveries", headers=world.steward
    ).json()
    by_partner = {row["partner_id"]: row["dropped_fields"] for row in summary}
    assert by_partner == {
        world.insurer.id: {"monthly_card_spend": 1},
        world.charger.id: {"age": 1, "monthly_card_spend": 1},
    }
    assert (
        world.client.get(
            f"/v1/event-contracts/{got[world.insurer.id].contract_id}/deliveries", headers=world.insurer_h
        ).status_code
        == 403
    )

    # Withdrawn consent takes effect at the next event.
    with world.ctx.db.transaction() as s:
        changes.withdraw(s, subject_id=world.ada, grant_id=world.age_grant, signer=world.ctx.keys.signing_key)
    assert world.publish("evt-c2").status_code == 201
    after = deliveries(world.ctx, "evt-c2")[world.insurer.id]
    assert "age" not in after.payload["data"]
    assert "subject" not in after.payload
    assert after.dropped_fields == ["age", "monthly_card_spend"]


# --- delivery ----------------------------------------------------------------------------------------------
class Receiver:
    """A consumer endpoint in this process: verifies signatures, counts events by id, fails when told to."""

    def __init__(self, ctx: Context) -> None:
        self.keys = {k.kid: k.public_bytes for k in ctx.keys.signing_keys}
        self.fail = True
        self.seen: dict[str, int] = {}
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                if receiver.fail:
                    self.send_response(503)
                    self.end_headers()
                    return
                try:
                    verify_signature(self.headers["dataspace-signature"], body, receiver.keys)
                except InvalidSignature:
                    self.send_response(401)
                    self.end_headers()
                    return
                event_id = json.loads(body)["id"]
                receiver.seen[event_id] = receiver.seen.get(event_id, 0) + 1
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/events"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_failures_retry_per_contract_then_dead_letter_and_replay(world: World) -> None:
    world.approved_contract()
    receiver = Receiver(world.ctx)
    try:
        r = world.client.post(
            "/v1/partner/event-subscriptions", json={"url": receiver.url, "events": [TYPE]}, headers=world.insurer_h
        )
        assert r.status_code == 201, r.text
        # A partner cannot subscribe to a type it does not consume.
        other = bearer(issue_token(world.ctx, "partner"))
        r = world.client.post(
            "/v1/partner/event-subscriptions", json={"url": receiver.url, "events": [TYPE]}, headers=other
        )
        assert r.status_code == 422
        with world.ctx.db.transaction() as s:  # published through the service: no immediate background send
            from dataspace.events.publish import publish
            from tests.factories.jobs import steward

            publish(s, world.ctx.keys, principal=steward(), body=json.loads(json.dumps(PUBLISHED)))
        d_id = deliveries(world.ctx, "evt-dl")[world.insurer.id].id
        now = utcnow()
        # The contract: 3 attempts, 1 s then 2 s apart.
        gaps = []
        for _ in range(3):
            counts = delivery.deliver_due(world.ctx.db, world.ctx.keys, now=now, delivery_ids=[d_id])
            with world.ctx.db.session() as s:
                d = s.get(EventDelivery, d_id)
                assert d is not None
                gaps.append((d.next_attempt_at - now).total_seconds())
                now = d.next_attempt_at
        assert counts == {"delivered": 0, "retry": 0, "dead": 1}
        assert gaps[:2] == [1.0, 2.0]
        dead = world.client.get("/v1/event-deliveries?status=dead", headers=world.steward).json()
        assert [x["id"] for x in dead] == [d_id]
        assert dead[0]["last_error"] == "http_503"
        with world.ctx.db.transaction() as s:  # an attempt whose lease ran out, ending late, changes nothing
            assert delivery._record(s, d_id, None, "ConnectError", utcnow()) == "dead"
        assert world.client.get("/v1/event-deliveries?status=dead", headers=world.steward).json() == dead
        assert world.client.post(f"/v1/event-deliveries/{d_id}/replay", headers=world.insurer_h).status_code == 403

        receiver.fail = False
        r = world.client.post(f"/v1/event-deliveries/{d_id}/replay", headers=world.steward)
        assert (r.status_code, r.json()["status"], r.json()["replays"]) == (200, "pending", 1)
        assert delivery.deliver_due(world.ctx.db, world.ctx.keys, delivery_ids=[d_id])["delivered"] == 1
        assert receiver.seen == {"evt-dl": 1}
        with world.ctx.db.session() as s:
            d = s.get(EventDelivery, d_id)
            assert d is not None
            assert d.status == "delivered"
            assert d.latency_ms is not None
            assert d.within_requirement is (d.latency_ms <= 2000)
        # The charger never subscribed: its copy keeps failing with "no_endpoint" until it does.
        charger_d = deliveries(world.ctx, "evt-dl")[world.charger.id]
        assert charger_d.status == "pending"
    finally:
        receiver.close()


PUBLISHED = {
    "id": "evt-dl",
    "type": TYPE,
    "occurred_at": "2026-12-01T08:00:00Z",
    "data": {"booking_id": "b-2", "station_id": "st-1", "booked_at": "2026-12-01T07:00:00Z"},
}


def test_published_events_are_delivered_at_once_through_the_api(world: World) -> None:
    world.approved_contract()
    receiver = Receiver(world.ctx)
    receiver.fail = False
    try:
        for h in (world.insurer_h, world.charger_h):
            world.client.post(
                "/v1/partner/event-subscriptions", json={"url": receiver.url, "events": [TYPE]}, headers=h
            )
        r = world.publish("evt-now")
        assert r.status_code == 201
        assert r.json()["consumers"] == 2
        # The TestClient runs the background send before returning: both consumers already have it.
        assert receiver.seen == {"evt-now": 2}
        rows = world.client.get("/v1/event-deliveries", headers=world.steward).json()
        assert {x["status"] for x in rows} == {"delivered"}
        assert all(x["latency_ms"] is not None for x in rows)
    finally:
        receiver.close()


def _start_receiver(port: int, log: Path, mode: str) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.integration.event_receiver", str(port), str(log), mode],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("ready "), line
    return proc, int(line.split()[1])


def test_at_least_once_to_a_consumer_killed_mid_delivery(world: World, tmp_path: Path) -> None:
    world.approved_contract()
    log = tmp_path / "received.jsonl"
    proc, port = _start_receiver(0, log, "hang")
    try:
        url = f"http://127.0.0.1:{port}/events"
        world.client.post(
            "/v1/partner/event-subscriptions", json={"url": url, "events": [TYPE]}, headers=world.insurer_h
        )
        with world.ctx.db.transaction() as s:
            from dataspace.events.publish import publish
            from tests.factories.jobs import steward

            publish(s, world.ctx.keys, principal=steward(), body=json.loads(json.dumps(PUBLISHED)))
        d_id = deliveries(world.ctx, "evt-dl")[world.insurer.id].id
        result: dict[str, int] = {}
        sender = threading.Thread(
            target=lambda: result.update(delivery.deliver_due(world.ctx.db, world.ctx.keys, delivery_ids=[d_id]))
        )
        sender.start()
        deadline = time.monotonic() + 60
        while not (log.exists() and log.read_text()):  # the consumer has the request and has not answered
            assert time.monotonic() < deadline
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        sender.join(60)
        assert result == {"delivered": 0, "retry": 1, "dead": 0}
        with world.ctx.db.session() as s:
            d = s.get(EventDelivery, d_id)
            assert d is not None
            assert (d.status, d.attempts) == ("pending", 1)
            retry_at = d.next_attempt_at

        proc, _ = _start_receiver(port, log, "ok")  # the consumer comes back on its address
        counts = delivery.deliver_due(world.ctx.db, world.ctx.keys, delivery_ids=[d_id], now=retry_at)
        assert counts["delivered"] == 1
        lines = [json.loads(x) for x in log.read_text().splitlines()]
        assert [json.loads(x["body"])["id"] for x in lines] == ["evt-dl", "evt-dl"]  # at least once: twice
        keys = {k.kid: k.public_bytes for k in world.ctx.keys.signing_keys}
        for x in lines:
            verify_signature(x["sig"], x["body"].encode(), keys, now=retry_at.timestamp())
        with world.ctx.db.session() as s:
            d = s.get(EventDelivery, d_id)
            assert d is not None
            assert (d.status, d.attempts) == ("delivered", 2)
    finally:
        proc.kill()
        proc.wait()


# --- specifications ----------------------------------------------------------------------------------------
def test_specifications_download_in_english_and_chinese(world: World) -> None:
    contract = world.approved_contract(description="Booked in the app <script>alert(1)</script>")
    base = f"/v1/partner/event-contracts/{contract['id']}/spec"
    md_en = world.client.get(base, params={"format": "md", "lang": "en"}, headers=world.insurer_h)
    assert md_en.status_code == 200
    assert md_en.headers["content-type"].startswith("text/markdown")
    assert md_en.headers["content-disposition"] == f'attachment; filename="{TYPE}-1.0.0.en.md"'
    assert "| `battery_kwh` | number | no | kWh |  | Battery capacity. |" in md_en.text
    assert "| `age` | integer | no | years | age | Customer's age. |" in md_en.text
    assert "2000 ms" in md_en.text
    md_zh = world.client.get(base, params={"format": "md", "lang": "zh"}, headers=world.insurer_h)
    assert "事件契约规范" in md_zh.text
    assert "投递时延要求" in md_zh.text
    html_zh = world.client.get(base, params={"format": "html", "lang": "zh"}, headers=world.insurer_h)
    assert html_zh.headers["content-type"].startswith("text/html")
    assert '<html lang="zh-CN">' in html_zh.text
    assert "<script>" not in html_zh.text
    assert "&lt;script&gt;" in html_zh.text
    html_en = world.client.get(
        f"/v1/event-contracts/{contract['id']}/spec", params={"format": "html", "lang": "en"}, headers=world.steward
    )
    assert "<td><code>station_id</code></td>" in html_en.text
    assert world.client.get(base, params={"format": "pdf"}, headers=world.insurer_h).status_code == 422
    outsider = bearer(issue_token(world.ctx, "partner"))
    assert world.client.get(base, headers=outsider).status_code == 404


def test_old_events_do_not_move_with_the_clock(world: World) -> None:
    """A delivery not yet due is not sent by a round (the backoff holds even across rounds)."""
    world.approved_contract()
    with world.ctx.db.transaction() as s:
        from dataspace.events.publish import publish
        from tests.factories.jobs import steward

        publish(s, world.ctx.keys, principal=steward(), body=json.loads(json.dumps(PUBLISHED)))
    early = utcnow() - timedelta(seconds=30)
    assert delivery.deliver_due(world.ctx.db, world.ctx.keys, now=early) == {"delivered": 0, "retry": 0, "dead": 0}


def test_a_partner_publishes_its_own_events_and_the_operator_reads_them(world: World) -> None:
    accepted = {
        "type": "object",
        "required": ["offer_id", "accepted_at"],
        "properties": {
            "offer_id": {"type": "string", "description": "The renewal offer the operator showed."},
            "accepted_at": {"type": "string", "format": "date-time", "description": "When it was accepted."},
            "premium": {"type": "number", "x-unit": "CNY/year", "description": "Agreed yearly premium."},
        },
    }
    body = proposal(event_type="offer.accepted", producer=INSURER, consumers=["operator"], schema=accepted)
    r = world.client.post("/v1/partner/event-contracts", json=body, headers=world.insurer_h)
    assert r.status_code == 201, r.text
    assert r.json()["pending_approvals"] == ["steward"]
    world.client.post(f"/v1/event-contracts/{r.json()['id']}/approve", headers=world.steward)
    event = {
        "id": "acc-1",
        "type": "offer.accepted",
        "occurred_at": "2026-12-01T09:00:00Z",
        "data": {"offer_id": "o-1", "accepted_at": "2026-12-01T08:59:00Z", "premium": 3100.0},
    }
    assert world.client.post("/v1/partner/events", json=event, headers=world.insurer_h).status_code == 201
    # Only its producer may publish it; an event naming a customer is refused (partners' events carry none).
    assert world.client.post("/v1/partner/events", json=event, headers=world.charger_h).status_code == 404
    assert world.client.post("/v1/events", json=event, headers=world.steward).status_code == 404
    r = world.client.post(
        "/v1/partner/events", json={**event, "id": "acc-2", "customer_ref": "c-ada"}, headers=world.insurer_h
    )
    assert r.status_code == 422
    feed = world.client.get("/v1/events", params={"type": "offer.accepted"}, headers=world.steward).json()
    assert [(e["id"], e["producer"], e["data"]["premium"]) for e in feed] == [
        ("acc-1", f"partner:{world.insurer.id}", 3100.0)
    ]
    assert world.client.get("/v1/events", headers=world.insurer_h).status_code == 403
    # The producer's collaboration dashboard counts the events it published (its own records); nobody else's.
    mine = world.client.get("/v1/partner/collaboration", params={"bucket": "day"}, headers=world.insurer_h)
    assert [(p["event_type"], p["published"]) for p in mine.json()["published"]] == [("offer.accepted", 1)]
    theirs = world.client.get("/v1/partner/collaboration", params={"bucket": "day"}, headers=world.charger_h)
    assert theirs.json()["published"] == []


def test_an_operator_event_triggers_the_real_time_decisions_that_name_it(ctx: Context) -> None:
    """The hook into ``dataspace.realtime``: a data contract whose decision service names the event type is
    asked about the event's customer; the answer goes to the operator only."""
    from dataspace.agreements import contracts as data_contracts
    from dataspace.agreements.contracts import ContractProposal
    from tests.factories import jobs as js

    ctx.settings = ctx.settings.model_copy(update={"realtime_pool_size": 1, "webhook_allow_private": True})
    world = js.build_world(ctx, 12)
    with ctx.db.transaction() as s:
        decision = data_contracts.propose(
            s,
            principal=js.partner_principal(ctx),
            proposal=ContractProposal(
                purpose=js.PURPOSE,
                features=js.FEATURES,
                decision_schema={"labels": js.LABELS},
                k_min=5,
                epsilon_per_release=1.0,
                valid_until=utcnow() + timedelta(days=30),
                decision_service={"events": ["policy.renewal_due"]},
            ),
        ).id
    with ctx.db.transaction() as s:
        data_contracts.approve(s, principal=js.steward("alice"), contract_id=decision)
    js.upload_onnx(ctx, decision)
    client = TestClient(create_app(ctx))
    steward_h = bearer(issue_token(ctx, "steward"))
    due = {
        "type": "object",
        "required": ["policy_id", "expires_on"],
        "properties": {
            "policy_id": {"type": "string", "description": "The customer's policy."},
            "expires_on": {"type": "string", "format": "date", "description": "Last day of cover."},
        },
    }
    body = proposal(event_type="policy.renewal_due", consumers=[js.PARTNER], purpose=None, schema=due)
    r = client.post("/v1/event-contracts", json=body, headers=steward_h)
    assert r.status_code == 201, r.text
    client.post(
        f"/v1/partner/event-contracts/{r.json()['id']}/approve",
        headers=bearer(issue_token(ctx, "partner", partner_key=js.PARTNER)),
    )
    event = {
        "id": "due-1",
        "type": "policy.renewal_due",
        "occurred_at": "2026-12-01T09:00:00Z",
        "customer_ref": "c00001",
        "data": {"policy_id": "p-1", "expires_on": "2027-01-31"},
    }
    r = client.post("/v1/events", json=event, headers=steward_h)
    assert r.status_code == 201, r.text
    [answer] = r.json()["decisions"]
    assert (answer["contract_id"], answer["outcome"]) == (decision, "decided")
    assert answer["decision"] in js.LABELS
    # A customer without consent for every feature: no decision (the model does not run).
    r = client.post("/v1/events", json={**event, "id": "due-2", "customer_ref": "c00000"}, headers=steward_h)
    assert [a["outcome"] for a in r.json()["decisions"]] == ["not_permitted"]
    # The same event again is a duplicate: nothing decided twice.
    again = client.post("/v1/events", json=event, headers=steward_h)
    assert (again.status_code, "decisions" in again.json()) == (200, False)
    # The partner's copy names no customer (the contract carries no customer data it could be paired with).
    assert "subject" not in deliveries(ctx, "due-1")[js.partner_principal(ctx).partner_id].payload
    assert world.consenting[0] == world.subjects[1]
    client.app.state.decisions.close()  # type: ignore[attr-defined]


def test_concurrent_dispatchers_send_each_delivery_once(world: World) -> None:
    """Several replicas' dispatchers share the outbox: a claimed delivery is not claimed again (row locks with
    SKIP LOCKED on PostgreSQL, the write lock on SQLite), so without failures each event arrives once."""
    from dataspace.events.publish import publish
    from tests.factories.jobs import steward

    world.approved_contract()
    receiver = Receiver(world.ctx)
    receiver.fail = False
    try:
        world.client.post(
            "/v1/partner/event-subscriptions", json={"url": receiver.url, "events": [TYPE]}, headers=world.insurer_h
        )
        with world.ctx.db.transaction() as s:
            for i in range(30):
                publish(s, world.ctx.keys, principal=steward(), body={**PUBLISHED, "id": f"evt-{i}"})

        def dispatcher() -> None:
            # Until a round finds nothing due (the charger, without an endpoint, is retried then dead-lettered).
            while sum(delivery.deliver_due(world.ctx.db, world.ctx.keys, limit=4).values()):
                pass

        threads = [threading.Thread(target=dispatcher) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert receiver.seen == {f"evt-{i}": 1 for i in range(30)}
    finally:
        receiver.close()


def test_erasure_removes_the_customer_from_stored_event_copies(world: World) -> None:
    from dataspace.compliance.service import erase_subject
    from tests.factories.jobs import steward

    world.approved_contract()
    assert world.publish("evt-erase").status_code == 201
    before = deliveries(world.ctx, "evt-erase")[world.insurer.id].payload
    assert ("age" in before["data"], "subject" in before) == (True, True)
    with world.ctx.db.transaction() as s:
        erase_subject(world.ctx.settings, world.ctx.keys, s, subject_id=world.ada, actor=steward())
    after = deliveries(world.ctx, "evt-erase")[world.insurer.id].payload
    assert "age" not in after["data"]
    assert "subject" not in after
    assert after["data"]["booking_id"] == "b-1"  # the business facts stay
    with world.ctx.db.session() as s:
        assert s.scalar(select(BusinessEvent.subject_id).where(BusinessEvent.event_id == "evt-erase")) is None


def test_the_same_event_published_concurrently_is_stored_once(world: World) -> None:
    """A producer retrying while its first request is still running: one event, one delivery per consumer;
    the loser answers the stored event or a retryable conflict, never a second copy."""
    from dataspace.errors import ConcurrentChange
    from dataspace.events.publish import publish
    from tests.factories.jobs import steward

    world.approved_contract()
    barrier = threading.Barrier(4)
    outcomes: list[str] = []

    def producer() -> None:
        barrier.wait()
        try:
            with world.ctx.db.transaction() as s:
                result = publish(s, world.ctx.keys, principal=steward(), body={**PUBLISHED, "id": "evt-race"})
                outcomes.append("duplicate" if result.duplicate else "stored")
        except ConcurrentChange:
            outcomes.append("retry")

    threads = [threading.Thread(target=producer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert outcomes.count("stored") == 1
    assert len(outcomes) == 4
    assert len(deliveries(world.ctx, "evt-race")) == 2
