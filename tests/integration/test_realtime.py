"""Real-time decisions through the HTTP API with real tokens and real warm sandboxes (both databases)."""

from __future__ import annotations

import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from dataspace.agreements import contracts
from dataspace.agreements.contracts import ContractProposal
from dataspace.app import create_app
from dataspace.consents import changes
from dataspace.context import Context
from dataspace.db import utcnow
from dataspace.errors import InvalidInput
from dataspace.jobs import revocation
from dataspace.realtime import DecisionService
from dataspace.realtime.models import RealtimeDecision
from dataspace.tlog.models import TLogEntry
from tests.factories import jobs as js
from tests.factories.identities import bearer, issue_token

EVENT = "policy.renewal_due"


def decision_contract(ctx: Context, *, partner: str = js.PARTNER, events: list[str] | None = None) -> int:
    with ctx.db.transaction() as s:
        contract = contracts.propose(
            s,
            principal=js.partner_principal(ctx, partner),
            proposal=ContractProposal(
                purpose=js.PURPOSE,
                features=js.FEATURES,
                decision_schema={"labels": js.LABELS},
                k_min=5,
                epsilon_per_release=1.0,
                valid_until=utcnow() + timedelta(days=30),
                decision_service={"events": events or [EVENT]},
            ),
        )
        contract_id = contract.id
    with ctx.db.transaction() as s:
        contracts.approve(s, principal=js.steward("alice"), contract_id=contract_id)
    return contract_id


def usage_entries(ctx: Context) -> int:
    with ctx.db.session() as s:
        return s.scalar(select(func.count()).select_from(TLogEntry).where(TLogEntry.log == "usage")) or 0


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A reaped child is gone; a zombie would still answer kill(0): look at its state.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.fixture
def served(ctx: Context) -> tuple[Context, js.World, int, TestClient]:
    ctx.settings = ctx.settings.model_copy(update={"realtime_pool_size": 1, "realtime_max_decisions": 1000})
    world = js.build_world(ctx, 30)
    contract_id = decision_contract(ctx)
    js.upload_onnx(ctx, contract_id)
    return ctx, world, contract_id, TestClient(create_app(ctx))


def ask(client: TestClient, headers: dict[str, str], contract_id: int, event_id: str, **who: object) -> dict:
    r = client.post(
        f"/v1/decisions/{contract_id}", json={"event_id": event_id, "event_type": EVENT, **who}, headers=headers
    )
    assert r.status_code == 200, r.text
    return r.json()


def test_consent_decides_who_gets_a_decision_and_the_customer_sees_it(served) -> None:
    ctx, world, contract_id, client = served
    operator = bearer(issue_token(ctx, "steward"))
    service: DecisionService = client.app.state.decisions  # type: ignore[attr-defined]
    consenting, refusing = world.subjects[1], world.subjects[0]  # row 0 granted only `age`

    before = usage_entries(ctx)
    got = ask(client, operator, contract_id, "evt-1", customer_ref="c00001")
    assert got["outcome"] == "decided"
    assert got["decision"] in js.LABELS
    assert got["subject_id"] == consenting
    assert usage_entries(ctx) == before + 1
    pool = service.pool(contract_id)
    assert pool is not None
    assert pool.stats().served == 1

    # No consent for every field: no decision, the model is not run, nothing enters the ledger.
    refused = ask(client, operator, contract_id, "evt-2", subject_id=refusing)
    assert refused["outcome"] == "not_permitted"
    assert refused["decision"] is None
    assert pool.stats().served == 1
    assert usage_entries(ctx) == before + 1

    # The same event again: the stored answer, the model not run twice, no second ledger entry.
    again = ask(client, operator, contract_id, "evt-1", customer_ref="c00001")
    assert again["replayed"] is True
    assert (again["id"], again["decision"]) == (got["id"], got["decision"])
    assert pool.stats().served == 1

    # The customer sees the use: every contract field, the partner, the real-time decision and its result.
    customer = bearer(issue_token(ctx, "customer", subject_id=consenting))
    usage = client.get("/v1/me/usage", headers=customer).json()
    fields = {f["field"]: f["uses"] for f in usage["fields"]}
    assert set(fields) == set(js.FIELDS)
    use = fields["age"][0]
    assert (use["partner"], use["decision_id"], use["job_id"], use["result"]) == (
        js.PARTNER,
        got["id"],
        None,
        got["decision"],
    )
    # ...and the refused customer sees no use at all.
    other = bearer(issue_token(ctx, "customer", subject_id=refusing))
    assert client.get("/v1/me/usage", headers=other).json()["fields"] == []

    # Withdrawal takes effect at the very next request.
    with ctx.db.transaction() as s:
        changes.withdraw(s, subject_id=consenting, grant_id=world.grant_ids[consenting][1], signer=ctx.keys.signing_key)
    after = ask(client, operator, contract_id, "evt-3", subject_id=consenting)
    assert after["outcome"] == "not_permitted"
    assert pool.stats().served == 1
    assert usage_entries(ctx) == before + 1

    # The operator can list the answers; the stored rows match.
    listed = client.get(f"/v1/decisions?contract_id={contract_id}", headers=operator).json()
    assert [d["event_id"] for d in listed] == ["evt-3", "evt-2", "evt-1"]


def test_the_partner_never_reads_a_decision(served) -> None:
    ctx, _world, contract_id, client = served
    operator = bearer(issue_token(ctx, "steward"))
    partner = bearer(issue_token(ctx, "partner", partner_key=js.PARTNER))
    got = ask(client, operator, contract_id, "evt-secret-7f3a", customer_ref="c00002")
    assert got["outcome"] == "decided"

    # Neither ask nor list: forbidden for a partner token, as problem+json.
    r = client.post(
        f"/v1/decisions/{contract_id}", json={"event_id": "x", "event_type": EVENT, "subject_id": 1}, headers=partner
    )
    assert r.status_code == 403
    assert r.headers["content-type"].startswith("application/problem+json")
    assert client.get("/v1/decisions", headers=partner).status_code == 403
    # No partner route (every GET under /v1/partner without a path parameter, plus its contract) mentions it.
    paths = [
        route.path  # type: ignore[attr-defined]
        for route in client.app.routes  # type: ignore[attr-defined]
        if getattr(route, "path", "").startswith("/v1/partner") and "GET" in getattr(route, "methods", set())
    ]
    paths = [p for p in paths if "{" not in p] + [f"/v1/partner/contracts/{contract_id}"]
    assert paths
    for path in paths:
        r = client.get(path, headers=partner)
        assert "evt-secret-7f3a" not in r.text, path
        assert "decision_id" not in r.text, path


def test_pool_recycles_after_n_decisions_and_on_contract_or_model_change(served) -> None:
    ctx, world, contract_id, client = served
    ctx.settings = ctx.settings.model_copy(update={"realtime_max_decisions": 2})
    client = TestClient(create_app(ctx))
    service: DecisionService = client.app.state.decisions  # type: ignore[attr-defined]
    operator = bearer(issue_token(ctx, "steward"))
    consenting = world.consenting

    ask(client, operator, contract_id, "e1", subject_id=consenting[0])
    pool = service.pool(contract_id)
    assert pool is not None
    first = pool.pids()
    ask(client, operator, contract_id, "e2", subject_id=consenting[1])  # the 2nd answer retires the runner
    ask(client, operator, contract_id, "e3", subject_id=consenting[2])
    assert pool.stats().started >= 2
    assert pool.stats().retired >= 1
    assert not any(alive(pid) for pid in first)
    assert pool.pids()
    assert set(pool.pids()).isdisjoint(first)

    # A new model under the contract: a new pool; the old one's sandboxes are gone.
    old_pids = pool.pids()
    js.upload_onnx(ctx, contract_id, js.logistic_regression([0.0, 0.0, 0.0], 5.0))
    assert ask(client, operator, contract_id, "e4", subject_id=consenting[0])["decision"] == "premium"
    fresh = service.pool(contract_id)
    assert fresh is not None
    assert fresh is not pool
    assert pool.closed
    assert not any(alive(pid) for pid in old_pids)

    # The contract revoked: refused, and its sandboxes are discarded at once.
    live = fresh.pids()
    with ctx.db.transaction() as s:
        revocation.revoke(s, principal=js.steward("bob"), contract_id=contract_id)
    r = client.post(
        f"/v1/decisions/{contract_id}",
        json={"event_id": "e5", "event_type": EVENT, "subject_id": consenting[0]},
        headers=operator,
    )
    assert r.status_code == 409
    assert service.pool(contract_id) is None
    assert not any(alive(pid) for pid in live)
    with ctx.db.session() as s:
        assert (
            s.scalar(select(func.count()).select_from(RealtimeDecision).where(RealtimeDecision.event_id == "e5")) == 0
        )


def test_two_partners_never_share_a_sandbox(served) -> None:
    ctx, world, contract_id, client = served
    operator = bearer(issue_token(ctx, "steward"))
    service: DecisionService = client.app.state.decisions  # type: ignore[attr-defined]
    other = decision_contract(ctx, partner="voltgrid")
    js.upload_onnx(ctx, other, partner="voltgrid")
    ask(client, operator, contract_id, "a1", subject_id=world.consenting[0])
    ask(client, operator, other, "b1", subject_id=world.consenting[0])  # no grant to voltgrid: not run
    mine, theirs = service.pool(contract_id), service.pool(other)
    assert mine is not None
    assert theirs is not None
    assert mine is not theirs
    assert mine.stats().served == 1
    assert theirs.stats().served == 0
    # Both pools warm their own runners: disjoint processes.
    for _ in range(300):
        if mine.pids() and theirs.pids():
            break
        time.sleep(0.1)
    assert mine.pids()
    assert theirs.pids()
    assert set(mine.pids()).isdisjoint(theirs.pids())


def test_requests_outside_the_declared_service_are_refused(served) -> None:
    ctx, world, contract_id, client = served
    operator = bearer(issue_token(ctx, "steward"))
    url = f"/v1/decisions/{contract_id}"
    sid = world.consenting[0]
    # An event type the contract does not declare.
    r = client.post(
        url, json={"event_id": "z1", "event_type": "device.first_activated", "subject_id": sid}, headers=operator
    )
    assert r.status_code == 422
    # Both or neither customer names.
    assert client.post(url, json={"event_id": "z2", "event_type": EVENT}, headers=operator).status_code == 422
    r = client.post(
        url, json={"event_id": "z3", "event_type": EVENT, "subject_id": sid, "customer_ref": "c00001"}, headers=operator
    )
    assert r.status_code == 422
    # An unknown customer, an unknown contract.
    assert (
        client.post(
            url, json={"event_id": "z4", "event_type": EVENT, "customer_ref": "nobody"}, headers=operator
        ).status_code
        == 404
    )
    assert (
        client.post(
            "/v1/decisions/99999", json={"event_id": "z5", "event_type": EVENT, "subject_id": sid}, headers=operator
        ).status_code
        == 404
    )
    # A contract without a decision service.
    plain = js.approved_contract(ctx)
    js.upload_onnx(ctx, plain)
    r = client.post(
        f"/v1/decisions/{plain}", json={"event_id": "z6", "event_type": EVENT, "subject_id": sid}, headers=operator
    )
    assert r.status_code == 409
    # A malformed declaration is refused at proposal.
    with pytest.raises(InvalidInput, match="decision_service"), ctx.db.transaction() as s:
        contracts.propose(
            s,
            principal=js.partner_principal(ctx),
            proposal=ContractProposal(
                purpose=js.PURPOSE,
                features=js.FEATURES,
                decision_schema={"labels": js.LABELS},
                k_min=5,
                epsilon_per_release=1.0,
                valid_until=utcnow() + timedelta(days=30),
                decision_service={"events": ["not an event; drop table"]},
            ),
        )


def test_a_catalog_change_to_a_field_it_reads_rebuilds_the_pool(served) -> None:
    from dataspace.catalog import service as catalog
    from dataspace.catalog.schemas import FieldUpdate

    ctx, world, contract_id, client = served
    operator = bearer(issue_token(ctx, "steward"))
    service: DecisionService = client.app.state.decisions  # type: ignore[attr-defined]
    ask(client, operator, contract_id, "c1", subject_id=world.consenting[0])
    before = service.pool(contract_id)
    assert before is not None
    old = before.pids()
    with ctx.db.transaction() as s:
        catalog.update_field(s, "age", FieldUpdate(description="Age in whole years, as of the last update."))
    ask(client, operator, contract_id, "c2", subject_id=world.consenting[0])
    after = service.pool(contract_id)
    assert after is not None
    assert after is not before
    assert before.closed
    assert not any(alive(pid) for pid in old)


def test_a_failing_model_answers_503_without_its_text_and_its_sandbox_is_replaced(ctx: Context) -> None:
    from tests.unit.sandbox import onnx_factory

    ctx.settings = ctx.settings.model_copy(update={"realtime_pool_size": 1})
    world = js.build_world(ctx, 30)
    contract_id = decision_contract(ctx)
    # label = int(age band): bands 2 and 3 index past the two labels, so the runner fails for older customers.
    js.upload_onnx(ctx, contract_id, onnx_factory.label_of_first_feature(3))
    client = TestClient(create_app(ctx))
    service: DecisionService = client.app.state.decisions  # type: ignore[attr-defined]
    operator = bearer(issue_token(ctx, "steward"))
    ages = {sid: 20 + (i * 7) % 60 for i, sid in enumerate(world.subjects)}
    young = next(s for s in world.consenting if ages[s] < 30)
    old = next(s for s in world.consenting if ages[s] >= 45)
    assert ask(client, operator, contract_id, "ok-1", subject_id=young)["decision"] == "standard"
    pool = service.pool(contract_id)
    assert pool is not None
    (sandbox,) = pool.pids()
    r = client.post(
        f"/v1/decisions/{contract_id}",
        json={"event_id": "bad-1", "event_type": EVENT, "subject_id": old},
        headers=operator,
    )
    assert r.status_code == 503
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["detail"] == "the partner's model failed: model output does not match the decision schema"
    assert not alive(sandbox)
    with ctx.db.session() as s:
        assert (
            s.scalar(select(func.count()).select_from(RealtimeDecision).where(RealtimeDecision.event_id == "bad-1"))
            == 0
        )
    assert ask(client, operator, contract_id, "ok-2", subject_id=young)["decision"] == "standard"
    assert sandbox not in pool.pids()


def _burst(ctx: Context, client: TestClient, headers: dict[str, str], contract_id: int, requests) -> list[dict]:
    """Ask for every (event id, subject) at once while the group committer is busy: they queue behind it and
    reach it together. Returns the answers and checks they formed one batch (duplicates then run alone)."""
    batches = ctx.writes.batches
    hold = threading.Event()
    blocker = ctx.writes.submit(lambda _s: hold.wait(30))
    with ThreadPoolExecutor(len(requests)) as pool:
        futures = [pool.submit(ask, client, headers, contract_id, e, subject_id=sid) for e, sid in requests]
        deadline = time.monotonic() + 30
        while ctx.writes.queued() < len(requests) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert ctx.writes.queued() == len(requests)
        hold.set()
        answers = [f.result() for f in futures]
    blocker.result()
    assert ctx.writes.batches - batches == 2  # the blocker's, then the burst's
    return answers


def test_a_burst_stored_in_one_batch_gets_one_row_and_one_ledger_entry_each(served) -> None:
    """Decisions that reach the group committer together are stored together (one consent query, one INSERT,
    one ledger append): each answer still gets its own id, its own ledger entry naming it and its customer,
    and a repeated event its first answer."""
    ctx, world, contract_id, client = served
    operator = bearer(issue_token(ctx, "steward"))
    ask(client, operator, contract_id, "warm", subject_id=world.consenting[0])  # the pool is built
    before = usage_entries(ctx)
    people = world.subjects[:12]  # a mix of consenting and not
    first = {
        a["event_id"]: a
        for a in _burst(ctx, client, operator, contract_id, [(f"b{i}", s) for i, s in enumerate(people)])
    }
    assert not any(a["replayed"] for a in first.values())
    decided = {a["id"]: a for a in first.values() if a["outcome"] == "decided"}
    assert {a["subject_id"] for a in decided.values()} == set(people) & set(world.consenting)
    assert all(a["subject_id"] not in world.consenting for a in first.values() if a["outcome"] != "decided")
    with ctx.db.session() as s:
        rows = s.scalars(select(RealtimeDecision).where(RealtimeDecision.event_id.in_(list(first)))).all()
        entries = [
            json.loads(e)
            for e in s.scalars(
                select(TLogEntry.entry).where(TLogEntry.log == "usage").order_by(TLogEntry.id).offset(before)
            )
        ]
    assert {r.id: (r.subject_id, r.outcome, r.label) for r in rows} == {
        a["id"]: (a["subject_id"], a["outcome"], a["decision"]) for a in first.values()
    }
    assert sorted((e["decision_id"], e["subject_id"], e["decision"]) for e in entries) == sorted(
        (i, a["subject_id"], a["decision"]) for i, a in decided.items()
    )

    # The same new event three times in one burst: the batch fails on the unique event, runs again one request
    # at a time, and all three get the one stored answer; the burst's other event is stored once.
    again = _burst(ctx, client, operator, contract_id, [("new", people[1])] * 3 + [("other", people[2])])
    stored = [a for a in again if not a["replayed"]]
    assert sorted(a["event_id"] for a in stored) == ["new", "other"]
    (new,) = [a for a in stored if a["event_id"] == "new"]
    assert [(a["id"], a["decision"]) for a in again if a["event_id"] == "new"] == [(new["id"], new["decision"])] * 3
    assert usage_entries(ctx) == before + len(decided) + sum(a["outcome"] == "decided" for a in stored)


def test_a_withdrawal_while_the_model_runs_wins(served) -> None:
    """Consent is checked again when the answer is stored: a customer who withdraws while the sandbox computes
    gets not_permitted, and nothing enters the ledger."""
    ctx, world, contract_id, client = served
    operator = bearer(issue_token(ctx, "steward"))
    service: DecisionService = client.app.state.decisions  # type: ignore[attr-defined]
    sid = world.consenting[3]
    ask(client, operator, contract_id, "warm", subject_id=world.consenting[0])
    pool = service.pool(contract_id)
    assert pool is not None
    before = usage_entries(ctx)
    real_decide = pool.decide

    def withdraw_then_decide(pseudonym: str, values: list) -> object:
        answer = real_decide(pseudonym, values)  # the real sandbox answers ...
        with ctx.db.transaction() as s:  # ... while the customer withdraws, before the answer is stored
            changes.withdraw(s, subject_id=sid, grant_id=world.grant_ids[sid][1], signer=ctx.keys.signing_key)
        return answer

    pool.decide = withdraw_then_decide  # type: ignore[method-assign]
    try:
        got = ask(client, operator, contract_id, "during", subject_id=sid)
    finally:
        del pool.decide
    assert (got["outcome"], got["decision"]) == ("not_permitted", None)
    assert pool.stats().served == 2  # the model did run
    assert usage_entries(ctx) == before
