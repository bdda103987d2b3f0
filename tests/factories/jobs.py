"""Shared set-up for the partner-job tests: a demo population with real consents, principals, ONNX models."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import numpy as np
from onnx import TensorProto, helper, numpy_helper
from sqlalchemy import select

from dataspace.agreements import contracts
from dataspace.agreements.contracts import ContractProposal
from dataspace.agreements.models import Contract, PartnerModel
from dataspace.consents import changes
from dataspace.context import Context
from dataspace.db import utcnow
from dataspace.ingest.service import ingest_rows
from dataspace.jobs import uploads
from dataspace.partners.models import Partner
from dataspace.principal import Principal
from dataspace.subjects.models import Subject
from tests.factories.catalog import customer_row, load_demo_catalog

PARTNER = "harbor_insurance"
PURPOSE = "insurance_offer"
FEATURES = [
    {"field": "age", "transform": "bin", "edges": [30, 45, 60]},
    {"field": "app_sessions_30d", "transform": "quantile", "q": 4},
    {"field": "monthly_card_spend", "transform": "topcode", "upper": 8000, "lower": 0, "step": 1000},
]
FIELDS = [f["field"] for f in FEATURES]
LABELS = ["standard", "premium"]
# Weights over (age band, sessions quartile, spend): older and richer customers get "premium".
WEIGHTS = [1.2, 0.3, 0.0004]
BIAS = -3.0


def logistic_regression(weights: list[float], bias: float, *, input_name: str = "features") -> bytes:
    """score = sigmoid(impute(features) @ weights + bias), shape [N, 1]; built with the onnx helper API.

    Cells blanked by k-anonymity arrive as NaN; the model imputes 0 for them (as a partner's model must)."""
    w = numpy_helper.from_array(np.asarray(weights, dtype=np.float32).reshape(-1, 1), "W")
    b = numpy_helper.from_array(np.asarray([bias], dtype=np.float32), "B")
    zero = numpy_helper.from_array(np.asarray([0.0], dtype=np.float32), "ZERO")
    nodes = [
        helper.make_node("IsNaN", [input_name], ["missing"]),
        helper.make_node("Where", ["missing", "ZERO", input_name], ["x"]),
        helper.make_node("MatMul", ["x", "W"], ["z0"]),
        helper.make_node("Add", ["z0", "B"], ["z"]),
        helper.make_node("Sigmoid", ["z"], ["score"]),
    ]
    graph = helper.make_graph(
        nodes,
        "lr",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["N", len(weights)])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N", 1])],
        [w, b, zero],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def partner_principal(ctx: Context, key: str = PARTNER) -> Principal:
    with ctx.db.session() as s:
        partner = s.scalar(select(Partner).where(Partner.key == key))
        if partner is None:
            raise LookupError(key)
    return Principal(
        subject=f"client-{key}", role="partner", client_id=f"client-{key}", partner_id=partner.id, partner_key=key
    )


def steward(name: str = "alice") -> Principal:
    return Principal(subject=name, role="steward", client_id="console")


@dataclass
class World:
    subjects: list[int]  # every subject, by row number
    consenting: list[int]  # granted every contract field
    grant_ids: dict[int, list[int]]  # subject -> its grant ids


def build_world(ctx: Context, n: int = 300) -> World:
    """``n`` customers ingested; 2 of 3 grant every contract field to the partner, the rest only ``age``."""
    load_demo_catalog(ctx)
    rows = [
        customer_row(
            f"c{i:05d}",
            age=20 + (i * 7) % 60,
            app_sessions_30d=(i * 13) % 90,
            monthly_card_spend=float((i * 379) % 9000),
        )
        for i in range(n)
    ]
    report = ingest_rows(ctx.db, ctx.keys, ctx.vault, rows)
    assert report.accepted == n, report.as_dict()
    with ctx.db.session() as s:
        ids = dict(s.execute(select(Subject.blind_ref, Subject.id)).all())
    subjects = [ids[ctx.keys.blind_index(f"c{i:05d}")] for i in range(n)]
    consenting: list[int] = []
    grants: dict[int, list[int]] = {}
    with ctx.db.transaction() as s:
        for i, sid in enumerate(subjects):
            wanted = FIELDS if i % 3 else ["age"]
            for field in wanted:
                change = changes.grant(
                    s,
                    subject_id=sid,
                    request=changes.GrantRequest(purpose=PURPOSE, field=field, partner=PARTNER),
                    signer=ctx.keys.signing_key,
                )
                grants.setdefault(sid, []).append(change.grant.id)
            if i % 3:
                consenting.append(sid)
    return World(subjects=subjects, consenting=consenting, grant_ids=grants)


def propose(
    ctx: Context,
    *,
    features: list[dict] | None = None,
    labels: list[str] | None = None,
    k_min: int = 5,
    epsilon: float = 1.0,
    valid_for: timedelta = timedelta(days=30),
    schema: dict | None = None,
    partner: str = PARTNER,
) -> int:
    with ctx.db.transaction() as s:
        contract = contracts.propose(
            s,
            principal=partner_principal(ctx, partner),
            proposal=ContractProposal(
                purpose=PURPOSE,
                features=features or FEATURES,
                decision_schema=schema or {"labels": LABELS if labels is None else labels},
                k_min=k_min,
                epsilon_per_release=epsilon,
                valid_until=utcnow() + valid_for,
            ),
        )
        return contract.id


def approved_contract(ctx: Context, **kw: object) -> int:
    contract_id = propose(ctx, **kw)  # type: ignore[arg-type]
    with ctx.db.transaction() as s:
        contracts.approve(s, principal=steward("alice"), contract_id=contract_id)
    return contract_id


def upload_onnx(ctx: Context, contract_id: int, data: bytes | None = None, *, partner: str = PARTNER) -> int:
    with ctx.db.transaction() as s:
        model = uploads.upload(
            s,
            principal=partner_principal(ctx, partner),
            contract_id=contract_id,
            kind="onnx",
            data=data if data is not None else logistic_regression(WEIGHTS, BIAS),
        )
        return model.id


def counts(ctx: Context) -> dict[str, int]:
    from sqlalchemy import func

    from dataspace.jobs.models import Decision, Job, Release
    from dataspace.tlog.models import TLogEntry

    with ctx.db.session() as s:
        return {
            "contracts": s.scalar(select(func.count()).select_from(Contract)) or 0,
            "models": s.scalar(select(func.count()).select_from(PartnerModel)) or 0,
            "jobs": s.scalar(select(func.count()).select_from(Job)) or 0,
            "decisions": s.scalar(select(func.count()).select_from(Decision)) or 0,
            "releases": s.scalar(select(func.count()).select_from(Release)) or 0,
            "usage": s.scalar(select(func.count()).select_from(TLogEntry).where(TLogEntry.log == "usage")) or 0,
        }
