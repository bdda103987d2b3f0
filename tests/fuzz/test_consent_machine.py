"""A hypothesis state machine over consent (both databases): customers grant, withdraw and renew consent for
a few fields (one sensitive) or a whole dimension, x purposes, x a partner or a partner category, while time
moves on and the expiry sweep runs. After every step, for every (subject, field, partner, purpose):
the single check (``is_permitted``), the bulk evaluator (``permitted_subjects``) and a reference model kept
here agree; there is at most one active grant per scope; and the history only ever grows.

The reference model is the product rule in its plainest form: a grant counts while it was granted, is not
withdrawn, and ``valid_from <= now < valid_until``; a sensitive field is covered only by a grant that names
that field and that partner.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule, run_state_machine_as_test
from sqlalchemy import func, select

import consent
from dataspace.consents import changes
from dataspace.consents.changes import GrantRequest
from dataspace.context import Context
from dataspace.db import utcnow
from dataspace.errors import Conflict, NotFound
from dataspace.grants import evaluation
from dataspace.grants.models import ConsentEvent, ConsentGrant, ConsentReceipt
from tests.conftest import truncate_all
from tests.factories.catalog import load_demo_catalog
from tests.factories.identities import make_subject

MACHINE_SETTINGS = settings(
    max_examples=10,
    stateful_step_count=15,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
# field -> (dimension, sensitive), as in the demo catalog
FIELDS = {"age": ("identity", False), "health_condition": ("identity", True), "app_sessions_30d": ("behaviour", False)}
PARTNERS = {"harbor_insurance": "insurer", "voltgrid": "charging"}
PURPOSES = ("insurance_offer", "marketing")
TARGETS = [("field", f) for f in FIELDS] + [("dimension", "identity")]
RECIPIENTS = [("partner", p) for p in PARTNERS] + [("partner_category", "insurer")]
UNTIL = st.sampled_from([None, timedelta(hours=1), timedelta(days=2)])


@dataclass
class ModelGrant:
    id: int
    subject: int
    target: tuple[str, str]
    recipient: tuple[str, str]
    purpose: str
    valid_from: datetime
    valid_until: datetime | None
    withdrawn_at: datetime | None = None
    swept: bool = False  # materialized as expired (by the sweep, or by a grant/withdraw that found it lapsed)

    @property
    def scope(self) -> tuple[int, tuple[str, str], tuple[str, str], str]:
        return (self.subject, self.target, self.recipient, self.purpose)

    def running(self, now: datetime) -> bool:
        """Granted, not withdrawn, and its window not over."""
        return self.withdrawn_at is None and (self.valid_until is None or now < self.valid_until)

    def covers(self, subject: int, field: str, partner: str, purpose: str, now: datetime) -> bool:
        dimension, sensitive = FIELDS[field]
        if subject != self.subject or purpose != self.purpose or not self.running(now) or now < self.valid_from:
            return False
        kind, target = self.target
        field_ok = target == field if kind == "field" else (target == dimension and not sensitive)
        kind, recipient = self.recipient
        partner_ok = recipient == partner if kind == "partner" else (recipient == PARTNERS[partner] and not sensitive)
        return field_ok and partner_ok


def test_consent_state_machine(ctx: Context) -> None:
    database = ctx.db
    signer = ctx.keys.signing_key

    class Consents(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            truncate_all(database)
            load_demo_catalog(ctx)
            self.now = utcnow()
            self.subjects = [make_subject(ctx) for _ in range(2)]
            self.grants: dict[int, ModelGrant] = {}
            self.events_seen: dict[int, tuple[int, str]] = {}
            self.receipts_seen = 0

        def clock(self) -> datetime:
            return self.now

        def live_for(self, scope: tuple[object, ...]) -> ModelGrant | None:
            """The grant the service treats as active for this scope (not withdrawn, not yet swept)."""
            for g in self.grants.values():
                if g.scope == scope and g.withdrawn_at is None and not g.swept:
                    return g
            return None

        # --- rules --------------------------------------------------------------------------------------
        @rule(
            who=st.integers(0, 1),
            what=st.sampled_from(TARGETS),
            recipient=st.sampled_from(RECIPIENTS),
            purpose=st.sampled_from(PURPOSES),
            until=UNTIL,
        )
        def grant(
            self,
            who: int,
            what: tuple[str, str],
            recipient: tuple[str, str],
            purpose: str,
            until: timedelta | None,
        ) -> None:
            subject = self.subjects[who]
            valid_until = self.now + until if until else None
            terms = {what[0]: what[1], recipient[0]: recipient[1]}
            request = GrantRequest(purpose=purpose, valid_until=valid_until, **terms)
            scope = (subject, what, recipient, purpose)
            live = self.live_for(scope)
            if live is not None and not live.running(self.now):
                live.swept = True  # the grant call expires it first
                live = None
            try:
                with database.transaction() as session:
                    change = changes.grant(
                        session, subject_id=subject, request=request, signer=signer, clock=self.clock
                    )
                    grant_id, changed = change.grant.id, change.changed
            except Conflict:
                assert live is not None, "a conflict needs a running grant of the same scope"
                assert live.valid_until != valid_until
                return
            if live is not None:
                assert not changed, "the same grant again is a no-op"
                assert grant_id == live.id
                assert live.valid_until == valid_until
                return
            assert changed
            assert grant_id not in self.grants
            self.grants[grant_id] = ModelGrant(grant_id, subject, what, recipient, purpose, self.now, valid_until)

        @precondition(lambda self: bool(self.grants))
        @rule(data=st.data(), as_other=st.booleans())
        def withdraw(self, data: st.DataObject, as_other: bool) -> None:
            g = self.grants[data.draw(st.sampled_from(sorted(self.grants)))]
            subject = g.subject if not as_other else next(s for s in self.subjects if s != g.subject)
            try:
                with database.transaction() as session:
                    change = changes.withdraw(
                        session, subject_id=subject, grant_id=g.id, signer=signer, clock=self.clock
                    )
                    changed = change.changed
            except NotFound:
                assert as_other, "a customer's own grant is always found"
                return
            assert not as_other, "another customer's grant is not found"
            if g.running(self.now):
                assert changed
                g.withdrawn_at = self.now
            elif g.withdrawn_at is None and not g.swept:
                assert changed, "a lapsed grant is expired on the way"
                g.swept = True
            else:
                assert not changed

        @precondition(lambda self: bool(self.grants))
        @rule(data=st.data(), until=UNTIL)
        def renew(self, data: st.DataObject, until: timedelta | None) -> None:
            g = self.grants[data.draw(st.sampled_from(sorted(self.grants)))]
            valid_until = self.now + until if until else None
            try:
                with database.transaction() as session:
                    change = changes.renew(
                        session,
                        subject_id=g.subject,
                        grant_id=g.id,
                        valid_until=valid_until,
                        signer=signer,
                        clock=self.clock,
                    )
                    changed = change.changed
            except Conflict:
                assert not g.running(self.now), "a running grant can be renewed"
                return
            assert g.running(self.now), "only a running grant can be renewed"
            assert changed == (g.valid_until != valid_until)
            g.valid_until = valid_until

        @rule(minutes=st.sampled_from([1, 59, 61, 60 * 24, 60 * 49]), sweep=st.booleans())
        def advance_time(self, minutes: int, sweep: bool) -> None:
            self.now += timedelta(minutes=minutes)
            if sweep:
                with database.transaction() as session:
                    expired = changes.expire_due(session, signer=signer, clock=self.clock)
                due = [
                    g
                    for g in self.grants.values()
                    if g.withdrawn_at is None and not g.swept and not g.running(self.now)
                ]
                assert expired == len(due)
                for g in due:
                    g.swept = True

        # --- invariants ---------------------------------------------------------------------------------
        @invariant()
        def single_bulk_and_model_agree(self) -> None:
            fields = list(FIELDS)
            with database.session() as session:
                for partner in PARTNERS:
                    for purpose in PURPOSES:
                        # The bulk evaluator, as ``permitted_subjects`` runs it, one column per field.
                        partner_ref, refs = evaluation._refs(session, partner, purpose, fields)
                        table = evaluation.load_grant_table(
                            session, purpose=purpose, partner=partner_ref, fields=refs, at=self.now
                        )
                        bulk = consent.evaluate(
                            table,
                            subjects=self.subjects,
                            fields=refs,
                            partner=partner_ref,
                            purpose=purpose,
                            at=self.now,
                        )
                        everything = set(
                            evaluation.permitted_subjects(
                                session, partner_key=partner, purpose_key=purpose, field_keys=fields, at=self.now
                            ).tolist()
                        )
                        for i, subject in enumerate(self.subjects):
                            for j, field in enumerate(fields):
                                single = evaluation.is_permitted(
                                    session,
                                    subject_id=subject,
                                    field_key=field,
                                    partner_key=partner,
                                    purpose_key=purpose,
                                    at=self.now,
                                )
                                model = any(
                                    g.covers(subject, field, partner, purpose, self.now) for g in self.grants.values()
                                )
                                where = (subject, field, partner, purpose)
                                assert single == bool(bulk[i, j]), f"single != bulk for {where}"
                                assert single == model, f"service says {single}, model {model} for {where}"
                            assert (subject in everything) == bool(bulk[i].all()), "contract needs every field"

        @invariant()
        def one_active_grant_per_scope(self) -> None:
            with database.session() as session:
                per_scope = session.execute(
                    select(ConsentGrant.subject_id, ConsentGrant.scope_key, func.count())
                    .where(ConsentGrant.state == "active")
                    .group_by(ConsentGrant.subject_id, ConsentGrant.scope_key)
                ).all()
            assert all(n == 1 for _, _, n in per_scope), per_scope

        @invariant()
        def history_is_append_only(self) -> None:
            with database.session() as session:
                events = {e.id: (e.grant_id, e.kind) for e in session.scalars(select(ConsentEvent))}
                receipts = session.scalar(select(func.count()).select_from(ConsentReceipt)) or 0
            for event_id, seen in self.events_seen.items():
                assert events.get(event_id) == seen, f"event {event_id} changed or vanished"
            assert receipts >= self.receipts_seen
            assert receipts == len(events), "one signed receipt per change"
            self.events_seen, self.receipts_seen = events, receipts

    run_state_machine_as_test(Consents, settings=MACHINE_SETTINGS)
