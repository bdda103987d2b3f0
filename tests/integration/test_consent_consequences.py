"""A consent change credits the one-time authorization bonus and emits the partner's event, atomically."""

from __future__ import annotations

from sqlalchemy import select

from dataspace.consents import changes
from dataspace.db import utcnow
from dataspace.events.models import OutboxEvent
from dataspace.ingest.service import ingest_rows
from dataspace.points import invariants
from dataspace.points import queries as points_queries
from dataspace.subjects.models import Subject
from tests.factories.catalog import customer_row, load_demo_catalog


def _setup(ctx):
    load_demo_catalog(ctx)
    ingest_rows(ctx.db, ctx.keys, ctx.vault, [customer_row("B1")])
    with ctx.db.session() as s:
        return s.scalar(select(Subject.id).where(Subject.blind_ref == ctx.keys.blind_index("B1")))


def _grant(ctx, sid, **kw):
    with ctx.db.transaction() as s:
        return changes.grant(
            s,
            subject_id=sid,
            request=changes.GrantRequest(purpose="insurance_offer", **kw),
            signer=ctx.keys.signing_key,
        )


def _balance(ctx, sid):
    with ctx.db.session() as s:
        return points_queries.get_summary(s, subject_id=sid, now=utcnow()).balance


def test_bonus_is_earned_once_per_field_even_after_toggling(ctx):
    sid = _setup(ctx)
    change = _grant(ctx, sid, field="app_sessions_30d", partner="harbor_insurance")
    assert _balance(ctx, sid) == 100  # the catalog's points value
    with ctx.db.transaction() as s:
        changes.withdraw(s, subject_id=sid, grant_id=change.grant.id, signer=ctx.keys.signing_key)
    _grant(ctx, sid, field="app_sessions_30d", partner="harbor_insurance")
    _grant(ctx, sid, field="app_sessions_30d", partner="voltgrid")
    assert _balance(ctx, sid) == 100
    # A dimension grant earns for each normal field of the dimension not yet rewarded, never sensitive ones.
    _grant(ctx, sid, dimension="identity", partner_category="insurer")
    assert _balance(ctx, sid) == 100 + 50 + 20 + 50  # age, gender, city; not health_condition
    with ctx.db.session() as s:
        invariants.check_invariants(s)


def test_partner_named_in_a_grant_gets_an_event_without_customer_identifiers(ctx):
    sid = _setup(ctx)
    change = _grant(ctx, sid, field="city", partner="voltgrid")
    with ctx.db.transaction() as s:
        changes.withdraw(s, subject_id=sid, grant_id=change.grant.id, signer=ctx.keys.signing_key)
    _grant(ctx, sid, field="age", partner_category="insurer")  # no partner named: no event
    with ctx.db.session() as s:
        events = s.scalars(select(OutboxEvent).order_by(OutboxEvent.id)).all()
    assert [e.type for e in events] == ["consent.granted", "consent.withdrawn"]
    text = repr([e.data for e in events])
    assert str(sid) not in text
    assert "B1" not in text
    assert events[0].data["field"] == "city"
