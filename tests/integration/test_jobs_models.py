"""Model uploads: ONNX checked against the contract in the sandbox; Python runs only after approval."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from dataspace.agreements.models import PartnerModel
from dataspace.context import Context
from dataspace.errors import Conflict, InvalidInput
from dataspace.jobs import service, uploads
from dataspace.jobs.models import Decision, Job
from tests.factories import jobs as js

PYTHON_MODULE = """
def score(table):
    ages = table.column("age").to_pylist()
    return ["premium" if (a or 0) >= 2 else "standard" for a in ages]
"""


def test_bad_models_are_refused_and_nothing_is_stored(ctx: Context) -> None:
    js.build_world(ctx, 6)
    contract_id = js.approved_contract(ctx)
    bad = {
        b"": "empty",
        b"\x08\x01garbage": "not a valid ONNX model",
        js.logistic_regression([1.0, 2.0], 0.0): "features",  # 2 inputs, the contract has 3
        js.logistic_regression([1.0, 2.0, 3.0], 0.0, input_name="x"): "features|not a valid ONNX model",
    }
    for data, reason in bad.items():
        with pytest.raises(InvalidInput, match=reason):
            js.upload_onnx(ctx, contract_id, data)
    with pytest.raises(InvalidInput, match="limit"):
        js.upload_onnx(ctx, contract_id, b"\0" * (uploads.MAX_ONNX_BYTES + 1))
    # A contract emitting categories cannot take an ONNX model at all.
    categorical = js.approved_contract(
        ctx, features=[{"field": "city", "transform": "group", "groups": {"t1": ["Beijing", "Shanghai"]}}]
    )
    with pytest.raises(InvalidInput, match="non-numeric"):
        js.upload_onnx(ctx, categorical)
    with ctx.db.session() as s:
        assert s.scalars(select(PartnerModel)).all() == []


def test_python_module_runs_only_after_steward_approval(ctx: Context) -> None:
    world = js.build_world(ctx, 30)
    contract_id = js.approved_contract(ctx, k_min=2)
    partner = js.partner_principal(ctx)
    with ctx.db.transaction() as s:
        model_id = uploads.upload(
            s, principal=partner, contract_id=contract_id, kind="python", data=PYTHON_MODULE.encode()
        ).id
    with pytest.raises(Conflict, match="approval"), ctx.db.transaction() as s:
        service.submit(s, principal=partner, model_id=model_id)
    with pytest.raises(InvalidInput), ctx.db.transaction() as s:
        uploads.upload(s, principal=partner, contract_id=contract_id, kind="python", data=b"def (:")
    with ctx.db.transaction() as s:
        assert uploads.approve(s, principal=js.steward(), model_id=model_id).status == "approved"
    with ctx.db.transaction() as s:
        job_id = service.submit(s, principal=partner, model_id=model_id).id
    result = ctx.jobs.run_job(job_id)
    assert result.status == "succeeded", result.error
    with ctx.db.session() as s:
        decided = dict(s.execute(select(Decision.subject_id, Decision.label)).all())
    assert decided
    assert set(decided) <= set(world.consenting)
    assert set(decided.values()) <= set(js.LABELS)


def test_a_failing_model_fails_the_job_with_a_reason(ctx: Context) -> None:
    js.build_world(ctx, 30)
    contract_id = js.approved_contract(ctx, k_min=2)
    partner = js.partner_principal(ctx)
    with ctx.db.transaction() as s:
        model_id = uploads.upload(
            s,
            principal=partner,
            contract_id=contract_id,
            kind="python",
            data=b"def score(table):\n    return ['bogus'] * table.num_rows\n",
        ).id
    with ctx.db.transaction() as s:
        uploads.approve(s, principal=js.steward(), model_id=model_id)
        job_id = service.submit(s, principal=partner, model_id=model_id).id
    result = ctx.jobs.run_job(job_id)
    assert result.status == "failed"
    assert result.error == "output_invalid"  # the partner's reason: a fixed code
    with ctx.db.session() as s:
        detail = s.get(Job, job_id).error_detail or ""  # type: ignore[union-attr]
    assert "label not in the schema" in detail  # the steward's detail says what went wrong
    assert js.counts(ctx)["decisions"] == js.counts(ctx)["usage"] == 0
