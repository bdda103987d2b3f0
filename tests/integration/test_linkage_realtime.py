"""Real-time decisions under a contract with a linked run see the partner's columns (``dataspace.linkage.join``)."""

from __future__ import annotations

from sqlalchemy import select

from dataspace.agreements import contracts
from dataspace.consents import changes
from dataspace.context import Context
from dataspace.linkage import service as linkage
from dataspace.subjects.store import store_profiles
from dataspace.tlog.models import TLogEntry
from tests.factories.jobs import PARTNER, PURPOSE, partner_principal, steward
from tests.integration.test_linkage import COLUMNS, SpecPartner, complete, message, phone, start


def test_real_time_decisions_see_the_partner_columns_of_linked_customers(ctx: Context) -> None:
    """The warm pool of a contract with a linked run takes the partner columns; a linked customer's values go
    in (and into the ledger), an unlinked customer's are nulls."""
    import json
    from datetime import timedelta

    from fastapi.testclient import TestClient

    from dataspace.agreements.contracts import ContractProposal
    from dataspace.app import create_app
    from dataspace.db import utcnow
    from tests.factories import jobs as js
    from tests.factories.identities import bearer, issue_token

    ctx.settings = ctx.settings.model_copy(update={"realtime_pool_size": 1, "realtime_max_decisions": 1000})
    w = js.build_world(ctx, n=30)
    with ctx.db.transaction() as s:
        store_profiles(s, ctx.vault, [(f"c{i:05d}", {"phone": phone(i)}) for i in range(30)], ctx.keys.blind_index)
        for i, sid in enumerate(w.subjects):
            if i % 2 == 0:
                changes.grant(
                    s,
                    subject_id=sid,
                    request=changes.GrantRequest(purpose=PURPOSE, dimension="linkage", partner=PARTNER),
                    signer=ctx.keys.signing_key,
                )
    with ctx.db.transaction() as s:
        contract_id = contracts.propose(
            s,
            principal=partner_principal(ctx),
            proposal=ContractProposal(
                purpose=PURPOSE,
                features=js.FEATURES,
                decision_schema={"labels": js.LABELS},
                k_min=5,
                epsilon_per_release=1.0,
                valid_until=utcnow() + timedelta(days=30),
                decision_service={"events": ["policy.renewal_due"]},
            ),
        ).id
        linkage.declare(s, principal=partner_principal(ctx), contract_id=contract_id, kind="phone", columns=COLUMNS)
    with ctx.db.transaction() as s:
        contracts.approve(s, principal=steward("alice"), contract_id=contract_id)
    run = start(ctx, contract_id)
    records = [(phone(i), {"policy_expiry_month": 3, "claims_band": "many"}) for i in range(30)]
    p = SpecPartner()
    complete(ctx, run.id, p.reply(run.id, run.public_key, message(ctx, run.id), records))
    js.upload_onnx(ctx, contract_id, js.logistic_regression([*js.WEIGHTS, 0.2, 0.1], js.BIAS))

    client = TestClient(create_app(ctx))
    operator = bearer(issue_token(ctx, "steward"))
    for event, ref in (("evt-linked", "c00002"), ("evt-unlinked", "c00001")):
        r = client.post(
            f"/v1/decisions/{contract_id}",
            json={"event_id": event, "event_type": "policy.renewal_due", "customer_ref": ref},
            headers=operator,
        )
        assert r.status_code == 200, r.text
        assert r.json()["outcome"] == "decided"
    pool = client.app.state.decisions.pool(contract_id)  # type: ignore[attr-defined]
    assert pool is not None
    assert pool.feature_names[-2:] == ("partner__policy_expiry_month", "partner__claims_band")
    with ctx.db.session() as s:
        used = [
            json.loads(e)["subject_id"]
            for e in s.scalars(select(TLogEntry.entry).where(TLogEntry.log == "usage"))
            if '"partner:claims_band"' in e
        ]
    assert used == [w.subjects[2]]
