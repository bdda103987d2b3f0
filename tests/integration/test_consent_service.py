"""The consent service on SQLite and PostgreSQL: changes, receipts, ownership, bad input, expiry, bulk."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest
from sqlalchemy import func, select

from consent import InvalidReceipt, verify_receipt
from dataspace.consents import changes as consent_changes
from dataspace.consents import queries as consent_queries
from dataspace.consents import stats
from dataspace.consents.changes import GrantRequest
from dataspace.db import utcnow
from dataspace.errors import Conflict, InvalidInput, NotFound
from dataspace.grants import evaluation
from dataspace.grants.models import ConsentEvent, ConsentGrant, ConsentReceipt
from dataspace.principal import Principal
from tests.factories.catalog import load_demo_catalog
from tests.factories.identities import make_partner, make_subject


class Clock:
    def __init__(self):
        self.now = utcnow()

    def __call__(self):
        return self.now

    def advance(self, **kw):
        self.now += timedelta(**kw)


@pytest.fixture
def world(ctx):
    load_demo_catalog(ctx)
    return ctx


def who(subject_id):
    return Principal(subject=f"user{subject_id}", role="customer", client_id="test", subject_id=subject_id)


def do_grant(ctx, subject_id, clock=None, **kw):
    kw.setdefault("purpose", "insurance_offer")
    if "dimension" not in kw:
        kw.setdefault("field", "age")
    if "partner_category" not in kw:
        kw.setdefault("partner", "harbor_insurance")
    with ctx.db.transaction() as s:
        return consent_changes.grant(
            s,
            subject_id=subject_id,
            request=GrantRequest(**kw),
            signer=ctx.keys.signing_key,
            actor=who(subject_id),
            clock=clock or utcnow,
        )


def do_withdraw(ctx, subject_id, grant_id, clock=None):
    with ctx.db.transaction() as s:
        return consent_changes.withdraw(
            s,
            subject_id=subject_id,
            grant_id=grant_id,
            signer=ctx.keys.signing_key,
            actor=who(subject_id),
            clock=clock or utcnow,
        )


def permitted(ctx, subject_id, field="age", partner="harbor_insurance", purpose="insurance_offer", at=None):
    with ctx.db.session() as s:
        return evaluation.is_permitted(
            s, subject_id=subject_id, field_key=field, partner_key=partner, purpose_key=purpose, at=at
        )


def counts(ctx):
    with ctx.db.session() as s:
        return tuple(
            s.scalar(select(func.count()).select_from(t)) for t in (ConsentGrant, ConsentEvent, ConsentReceipt)
        )


def public_keys(ctx):
    return {k.kid: k.public_bytes for k in ctx.keys.signing_keys}


def test_grant_is_idempotent_and_receipted(world):
    sid = make_subject(world)
    assert not permitted(world, sid)  # nothing by default
    first = do_grant(world, sid)
    again = do_grant(world, sid)
    assert first.changed
    assert not again.changed
    assert again.grant.id == first.grant.id
    assert again.receipt_id == first.receipt_id
    assert counts(world) == (1, 1, 1)
    assert permitted(world, sid)
    with world.db.session() as s:
        body = consent_queries.get_receipt(s, subject_id=sid, receipt_id=first.receipt_id).body
    receipt = verify_receipt(body, public_keys(world))
    assert receipt["state"] == "dpv:ConsentGiven"
    assert receipt["pii_principal_id"] == f"subject:{sid}"
    assert receipt["recipient_third_parties"][0]["name"] == "Harbor Insurance"
    assert receipt["purposes"][0]["dpv"] == "dpv:ServicePersonalisation"
    assert receipt["retention_period"] == "P3650D"


def test_same_scope_with_other_terms_is_a_conflict(world):
    sid = make_subject(world)
    do_grant(world, sid)
    with pytest.raises(Conflict):
        do_grant(world, sid, granularity="pseudonymized-raw")
    assert counts(world) == (1, 1, 1)


def test_withdrawal_is_immediate_and_idempotent(world):
    sid = make_subject(world)
    g = do_grant(world, sid).grant
    w = do_withdraw(world, sid, g.id)
    assert w.changed
    assert w.grant.state == "withdrawn"
    assert not permitted(world, sid)
    again = do_withdraw(world, sid, g.id)
    assert not again.changed
    assert again.receipt_id == w.receipt_id
    with world.db.session() as s:
        events = consent_queries.history(s, subject_id=sid)
        body = consent_queries.get_receipt(s, subject_id=sid, receipt_id=w.receipt_id).body
    assert [e.kind for e in events] == ["withdrawn", "granted"]
    receipt = verify_receipt(body, public_keys(world))
    assert receipt["state"] == "dpv:ConsentWithdrawn"
    assert [e["state"] for e in receipt["events"]] == ["dpv:ConsentGiven", "dpv:ConsentWithdrawn"]
    # A fresh grant after withdrawal is a new grant with a new history.
    g2 = do_grant(world, sid)
    assert g2.changed
    assert g2.grant.id != g.id
    assert permitted(world, sid)


def test_another_customers_grant_and_receipt_are_not_found(world):
    alice, bob = make_subject(world), make_subject(world)
    g = do_grant(world, alice)
    with pytest.raises(NotFound):
        do_withdraw(world, bob, g.grant.id)
    with pytest.raises(NotFound), world.db.session() as s:
        consent_queries.get_receipt(s, subject_id=bob, receipt_id=g.receipt_id)
    with pytest.raises(NotFound), world.db.transaction() as s:
        consent_changes.renew(s, subject_id=bob, grant_id=g.grant.id, valid_until=None, signer=world.keys.signing_key)
    assert permitted(world, alice)


@pytest.mark.parametrize(
    "kw",
    [
        {"field": "no_such_field"},
        {"purpose": "no_such_purpose"},
        {"partner": "no_such_partner"},
        {"dimension": "no_such_dimension"},
        {"partner_category": "no_such_category"},
        {"field": "age", "dimension": "identity"},
        {"granularity": "everything"},
        {"valid_until": "past"},
        {"valid_from": "past"},
        {"valid_until": "inverted"},
    ],
)
def test_bad_input_is_rejected_without_writes(world, kw):
    sid = make_subject(world)
    now = utcnow()
    if kw.get("valid_until") == "past":
        kw["valid_until"] = now - timedelta(days=1)
    if kw.get("valid_from") == "past":
        kw["valid_from"] = now - timedelta(days=1)
    if kw.get("valid_until") == "inverted":
        kw.update(valid_from=now + timedelta(days=2), valid_until=now + timedelta(days=1))
    with pytest.raises(InvalidInput):
        do_grant(world, sid, **kw)
    assert counts(world) == (0, 0, 0)


def test_expiry_renewal_and_the_sweep(world):
    sid = make_subject(world)
    clock = Clock()
    g = do_grant(world, sid, clock=clock, valid_until=clock.now + timedelta(hours=1)).grant
    with world.db.transaction() as s:
        r = consent_changes.renew(
            s,
            subject_id=sid,
            grant_id=g.id,
            valid_until=clock.now + timedelta(hours=2),
            signer=world.keys.signing_key,
            clock=clock,
        )
    assert r.changed
    clock.advance(hours=1, minutes=30)
    assert permitted(world, sid, at=clock.now)
    clock.advance(hours=1)
    assert not permitted(world, sid, at=clock.now)  # expired by itself, before any sweep
    with pytest.raises(Conflict), world.db.transaction() as s:
        consent_changes.renew(
            s, subject_id=sid, grant_id=g.id, valid_until=None, signer=world.keys.signing_key, clock=clock
        )
    with world.db.transaction() as s:
        assert consent_changes.expire_due(s, signer=world.keys.signing_key, clock=clock) == 1
    with world.db.transaction() as s:
        assert consent_changes.expire_due(s, signer=world.keys.signing_key, clock=clock) == 0
    with world.db.session() as s:
        kinds = [e.kind for e in consent_queries.history(s, subject_id=sid)]
        last = s.scalar(select(ConsentReceipt).order_by(ConsentReceipt.created_at.desc()).limit(1))
    assert kinds == ["expired", "renewed", "granted"]
    assert verify_receipt(last.body, public_keys(world))["state"] == "dpv:ConsentExpired"


def test_a_lapsed_grant_is_expired_when_the_scope_is_granted_again(world):
    sid = make_subject(world)
    clock = Clock()
    g = do_grant(world, sid, clock=clock, valid_until=clock.now + timedelta(minutes=5)).grant
    clock.advance(minutes=10)
    g2 = do_grant(world, sid, clock=clock)
    assert g2.changed
    assert g2.grant.id != g.id
    with world.db.session() as s:
        assert s.get(ConsentGrant, g.id).state == "expired"


def test_sensitive_fields_need_their_own_partner_grant(world):
    sid = make_subject(world)
    do_grant(world, sid, field=None, dimension="identity")
    do_grant(world, sid, field="health_condition", partner_category="insurer", partner=None)
    assert permitted(world, sid, field="age")
    assert not permitted(world, sid, field="health_condition")
    do_grant(world, sid, field="health_condition")
    assert permitted(world, sid, field="health_condition")


def test_bulk_selection_matches_single_checks(world):
    make_partner(world, "shield", category="insurer")
    subjects = [make_subject(world) for _ in range(6)]
    a, b, c, d, e, _f = subjects
    do_grant(world, a, field="age")
    do_grant(world, a, field="city")
    do_grant(world, b, field=None, dimension="identity", partner=None, partner_category="insurer")
    do_grant(world, c, field="age")
    g = do_grant(world, d, field=None, dimension="identity").grant
    do_withdraw(world, d, g.id)
    do_grant(world, e, field="age", purpose="marketing")
    do_grant(world, e, field="city", purpose="marketing")
    fields = ["age", "city"]
    for partner in ("harbor_insurance", "shield"):
        with world.db.session() as s:
            chosen = evaluation.permitted_subjects(
                s, partner_key=partner, purpose_key="insurance_offer", field_keys=fields, subjects=subjects
            )
        single = [sid for sid in subjects if all(permitted(world, sid, field=f, partner=partner) for f in fields)]
        assert chosen.tolist() == single
    assert single == [b]  # for "shield" only the category grant counts
    with world.db.session() as s:
        chosen = evaluation.permitted_subjects(
            s, partner_key="harbor_insurance", purpose_key="insurance_offer", field_keys=fields
        )
    assert chosen.tolist() == [a, b]
    assert isinstance(chosen, np.ndarray)


def test_matrix_shows_manual_points_and_cells(world):
    sid = make_subject(world)
    g = do_grant(world, sid, field="health_condition").grant
    with world.db.session() as s:
        m = consent_queries.matrix(s, subject_id=sid)
    health = next(f for f in m.fields if f.key == "health_condition")
    assert health.points_value == 300
    assert health.sensitivity == "sensitive"
    assert health.description
    assert health.storage_location
    on = [c.model_dump() for c in m.cells if c.permitted]
    assert on == [
        {
            "field": "health_condition",
            "purpose": "insurance_offer",
            "partner": "harbor_insurance",
            "permitted": True,
            "grant_ids": [g.id],
        }
    ]
    assert len(m.cells) == len(m.fields) * len(m.purposes) * len(m.partners)


def test_stats_authorization_rate_over_time(world):
    clock = Clock()
    start = clock.now
    subjects = [make_subject(world) for _ in range(4)]
    for sid in subjects[:3]:
        do_grant(world, sid, clock=clock)
    clock.advance(days=1)
    with world.db.session() as s:
        first = consent_queries.list_grants(s, subject_id=subjects[0])[0]
    do_withdraw(world, subjects[0], first.id, clock=clock)
    with world.db.session() as s:
        out = stats.stats(
            s,
            since=start + timedelta(hours=1),
            until=start + timedelta(days=1, hours=1),
            field_keys=["age"],
            purpose_keys=["insurance_offer"],
            partner_keys=["harbor_insurance"],
        )
    assert [(r.permitted, r.subjects, r.rate) for r in out.series] == [(3, 4, 0.75), (2, 4, 0.5)]
    with pytest.raises(InvalidInput), world.db.session() as s:
        stats.stats(s, since=start, until=start - timedelta(days=1))


def test_history_and_receipts_are_append_only(world):
    sid = make_subject(world)
    do_grant(world, sid)
    with world.db.transaction() as s:
        s.scalar(select(ConsentEvent)).kind = "withdrawn"
        with pytest.raises(RuntimeError, match="append-only"):
            s.flush()
        s.rollback()
    with world.db.transaction() as s:
        s.delete(s.scalar(select(ConsentReceipt)))
        with pytest.raises(RuntimeError, match="append-only"):
            s.flush()
        s.rollback()
    assert counts(world) == (1, 1, 1)


def test_receipts_do_not_verify_under_another_key(world):
    sid = make_subject(world)
    g = do_grant(world, sid)
    with world.db.session() as s:
        body = consent_queries.get_receipt(s, subject_id=sid, receipt_id=g.receipt_id).body
    with pytest.raises(InvalidReceipt):
        verify_receipt(body.replace("ConsentGiven", "ConsentWithdrawn"), public_keys(world))


def test_what_a_change_returns_and_signs_is_what_is_stored(world):
    """A change writes with plain INSERTs and does not read its rows back: the grant it returns and the history
    its receipt signs must still be exactly what the database holds (times in UTC whatever the clock's zone)."""
    from datetime import timezone

    from consent.receipts import iso

    sid = make_subject(world)
    clock = Clock()
    clock.now = clock.now.astimezone(timezone(timedelta(hours=8)))
    granted = do_grant(world, sid, clock=clock, valid_until=clock.now + timedelta(days=3)).grant
    clock.advance(minutes=1)
    with world.db.transaction() as s:
        consent_changes.renew(
            s,
            subject_id=sid,
            grant_id=granted.id,
            valid_until=clock.now + timedelta(days=5),
            signer=world.keys.signing_key,
            clock=clock,
        )
    clock.advance(minutes=1)
    withdrawn = do_withdraw(world, sid, granted.id, clock=clock)
    with world.db.session() as s:
        stored = s.get(ConsentGrant, granted.id)
        events = list(
            s.scalars(select(ConsentEvent).where(ConsentEvent.grant_id == granted.id).order_by(ConsentEvent.id))
        )
        body = consent_queries.get_receipt(s, subject_id=sid, receipt_id=withdrawn.receipt_id).body
    assert stored is not None
    for name in ("id", "state", "version", "valid_from", "valid_until", "withdrawn_at", "created_at", "updated_at"):
        assert getattr(withdrawn.grant, name) == getattr(stored, name), name
    for when in (granted.created_at, granted.valid_from, withdrawn.grant.updated_at, withdrawn.grant.withdrawn_at):
        assert when is not None
        assert when.utcoffset() == timedelta(0)
    assert withdrawn.grant.active_scope_key is None
    receipt = verify_receipt(body, public_keys(world))
    assert [(e["event"], e["time"]) for e in receipt["events"]] == [(e.kind, iso(e.at)) for e in events]
    assert [e["validity"]["until"] for e in receipt["events"]] == [iso(e.valid_until) for e in events]
    assert [e.kind for e in events] == ["granted", "renewed", "withdrawn"]
    assert receipt["issued_at"] == iso(events[-1].at)
    assert receipt["issued_at"].endswith("Z")
