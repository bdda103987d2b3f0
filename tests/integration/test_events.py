"""Outbox + webhooks against a real HTTP receiver on 127.0.0.1."""

from __future__ import annotations

import json
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from sqlalchemy import func, select, text

from dataspace.db import utcnow
from dataspace.events import service
from dataspace.events.models import OutboxEvent, WebhookDelivery
from dataspace.events.service import MAX_ATTEMPTS, verify_signature
from tests.factories.identities import make_partner


class Receiver:
    """A partner's webhook endpoint: verifies signatures, dedupes by event id, can be told to fail."""

    def __init__(self, public_keys):
        self.public_keys = public_keys
        self.fail_next = 0
        self.seen: dict[str, int] = {}
        self.bad_signatures = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["content-length"]))
                if receiver.fail_next:
                    receiver.fail_next -= 1
                    self.send_response(503)
                    self.end_headers()
                    return
                try:
                    verify_signature(self.headers["dataspace-signature"], body, receiver.public_keys)
                except service.InvalidSignature:
                    receiver.bad_signatures += 1
                    self.send_response(401)
                    self.end_headers()
                    return
                event = json.loads(body)
                assert event["id"] == self.headers["dataspace-event-id"]
                receiver.seen[event["id"]] = receiver.seen.get(event["id"], 0) + 1
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver(ctx):
    r = Receiver({k.kid: k.public_bytes for k in ctx.keys.signing_keys})
    yield r
    r.close()


def _job_event(session, partner_id, job_id=1):
    return service.emit(
        session, "job.completed", {"job_id": job_id, "contract_id": 1, "status": "succeeded"}, partner_id=partner_id
    )


def test_event_is_sent_iff_its_transaction_commits(ctx, receiver):
    partner = make_partner(ctx)
    with ctx.db.transaction() as s:
        service.subscribe(s, partner_id=partner.id, url=receiver.url, event_types=["job.completed"], allow_private=True)

    def failing_change() -> None:
        with ctx.db.transaction() as s:
            _job_event(s, partner.id, job_id=1)
            raise RuntimeError("the change failed")

    with pytest.raises(RuntimeError):
        failing_change()
    with ctx.db.transaction() as s:
        committed = _job_event(s, partner.id, job_id=2)
    counts = service.deliver_due(ctx.db, ctx.keys)
    assert counts == {"delivered": 1, "retry": 0, "dead": 0}
    assert receiver.seen == {committed: 1}
    assert receiver.bad_signatures == 0
    with ctx.db.session() as s:
        assert s.scalar(select(func.count()).select_from(OutboxEvent)) == 1


def test_only_subscribed_types_of_the_own_partner_are_delivered(ctx, receiver):
    mine, other = make_partner(ctx), make_partner(ctx)
    with ctx.db.transaction() as s:
        service.subscribe(s, partner_id=mine.id, url=receiver.url, event_types=["job.completed"], allow_private=True)
        _job_event(s, other.id)
        service.emit(s, "contract.decided", {"contract_id": 3, "status": "approved"}, partner_id=mine.id)
        wanted = _job_event(s, mine.id)
    service.deliver_due(ctx.db, ctx.keys)
    assert set(receiver.seen) == {wanted}


def test_retries_back_off_then_dead_letter_then_replay(ctx, receiver):
    partner = make_partner(ctx)
    with ctx.db.transaction() as s:
        service.subscribe(s, partner_id=partner.id, url=receiver.url, event_types=["job.completed"], allow_private=True)
        event_id = _job_event(s, partner.id)
    receiver.fail_next = 100
    now = utcnow()
    delays = []
    for _ in range(MAX_ATTEMPTS):
        counts = service.deliver_due(ctx.db, ctx.keys, now=now)
        assert counts["delivered"] == 0
        with ctx.db.session() as s:
            d = s.scalar(select(WebhookDelivery))
        if d.status == "dead":
            break
        delays.append((d.next_attempt_at - now).total_seconds())
        # Nothing is due before the backoff expires.
        assert service.deliver_due(ctx.db, ctx.keys, now=now + timedelta(seconds=1))["retry"] == 0
        now = d.next_attempt_at
    assert d.status == "dead"
    assert d.attempts == MAX_ATTEMPTS
    assert delays == [2, 4, 8, 16, 32, 64, 128]  # exponential
    assert receiver.seen == {}
    # The dead-letter list shows it; replay delivers the same event id once the receiver is back.
    with ctx.db.session() as s:
        dead = service.list_deliveries(s, partner_id=partner.id, status="dead")
    assert [e.event_id for _, e in dead] == [event_id]
    receiver.fail_next = 0
    with ctx.db.transaction() as s:
        service.replay(s, partner_id=partner.id, delivery_id=dead[0][0].id, now=now)
    assert service.deliver_due(ctx.db, ctx.keys, now=now)["delivered"] == 1
    # A second replay re-sends the same id: the receiver can dedupe.
    with ctx.db.transaction() as s:
        service.replay(s, partner_id=partner.id, delivery_id=dead[0][0].id, now=now)
    service.deliver_due(ctx.db, ctx.keys, now=now)
    assert receiver.seen == {event_id: 2}


def test_a_crashed_dispatchers_claim_expires_and_is_retried(ctx, receiver):
    partner = make_partner(ctx)
    with ctx.db.transaction() as s:
        service.subscribe(s, partner_id=partner.id, url=receiver.url, event_types=["job.completed"], allow_private=True)
        event_id = _job_event(s, partner.id)
    now = utcnow()

    def crash(url, body, headers):
        raise SystemExit("dispatcher killed mid-send")

    with pytest.raises(SystemExit):
        service.deliver_due(ctx.db, ctx.keys, send=crash, now=now)
    assert service.deliver_due(ctx.db, ctx.keys, now=now)["delivered"] == 0  # still leased
    assert service.deliver_due(ctx.db, ctx.keys, now=now + service.LEASE)["delivered"] == 1
    assert receiver.seen == {event_id: 1}


def test_unknown_event_types_and_other_partners_deliveries_are_refused(ctx):
    from dataspace.errors import InvalidInput, NotFound

    a, b = make_partner(ctx), make_partner(ctx)
    with ctx.db.transaction() as s, pytest.raises(InvalidInput):
        service.subscribe(
            s, partner_id=a.id, url="http://127.0.0.1:1/x", event_types=["job.exploded"], allow_private=True
        )
    with ctx.db.transaction() as s:
        sub = service.subscribe(
            s, partner_id=a.id, url="http://127.0.0.1:1/x", event_types=["job.completed"], allow_private=True
        )
    with ctx.db.transaction() as s, pytest.raises(NotFound):
        service.unsubscribe(s, partner_id=b.id, subscription_id=sub.id)


def test_dispatchers_of_two_replicas_fan_out_different_events(ctx, backend):
    """Each replica runs a dispatcher: one that is fanning out a batch holds its events, another skips them
    (no duplicate deliveries, no waiting), and every event is fanned out exactly once."""
    if backend == "sqlite":
        pytest.skip("SQLite has one writer at a time: dispatchers cannot overlap")
    partner = make_partner(ctx)
    with ctx.db.transaction() as s:
        service.subscribe(
            s, partner_id=partner.id, url="http://127.0.0.1:1/x", event_types=["job.completed"], allow_private=True
        )
        first = [_job_event(s, partner.id, job_id=i) for i in range(3)]
        _job_event(s, None, job_id=99)  # an event for no partner: marked, never delivered
    with ctx.db.transaction() as a:
        assert service.fan_out(a) == 3  # holds the four events until it commits
        with ctx.db.transaction() as s:
            later = _job_event(s, partner.id, job_id=3)
        with ctx.db.transaction() as b:
            b.execute(text("SET LOCAL lock_timeout = '5s'"))  # a dispatcher that waited on ``a`` fails, not hangs
            assert service.fan_out(b) == 1  # only the event ``a`` does not hold
    with ctx.db.transaction() as c:
        assert service.fan_out(c) == 0
    with ctx.db.session() as s:
        delivered = s.scalars(
            select(OutboxEvent.event_id).join(WebhookDelivery, WebhookDelivery.event_id == OutboxEvent.id)
        ).all()
        assert sorted(delivered) == sorted([*first, later])
        assert s.scalar(select(func.count()).select_from(OutboxEvent).where(OutboxEvent.fanned_out_at.is_(None))) == 0
