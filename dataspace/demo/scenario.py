"""Demo scenario: rewards, customers' consents (some, not all: nothing is granted by default), an approved
insurer contract with its ONNX model (also serving real-time decisions), one submitted job, and the
collaboration loop of ``dataspace.demo.collaboration`` (battery-swap bookings, real-time renewal offers,
acceptances), so a newcomer finds something on every page.

``renewal_offer.onnx`` is a 4-node logistic regression (age band, app-usage quartile, card spend) built with
the onnx helper API; the same model the tests build (``tests/factories/jobs.logistic_regression``).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select

from dataspace.agreements import contracts
from dataspace.agreements.contracts import ContractProposal
from dataspace.compliance.controller import receipt_policy
from dataspace.consents import changes
from dataspace.context import Context
from dataspace.db import utcnow
from dataspace.demo import collaboration
from dataspace.jobs import service as jobs
from dataspace.jobs import uploads
from dataspace.partners.models import Partner
from dataspace.points import rewards as points_rewards
from dataspace.points.schemas import RewardCreate
from dataspace.principal import Principal
from dataspace.subjects.models import Subject

MODEL = Path(__file__).with_name("renewal_offer.onnx")
PARTNER, PURPOSE = "harbor_insurance", "insurance_offer"
CHARGING_PARTNER = "voltgrid"
FEATURES: list[dict[str, Any]] = [
    {"field": "age", "transform": "bin", "edges": [30, 45, 60]},
    {"field": "app_sessions_30d", "transform": "quantile", "q": 4},
    {"field": "monthly_card_spend", "transform": "topcode", "upper": 8000, "lower": 0, "step": 1000},
]
REWARDS = [
    ("coffee", "Coffee voucher", 200, 5000, "咖啡券"),
    ("charging_credit", "EV charging credit (50 kWh)", 500, 2000, "电动车充电额度（50千瓦时）"),
    ("lounge", "Airport lounge access", 2000, 300, "机场贵宾厅"),
    ("health_check", "Annual health check-up", 3000, 100, "年度健康体检"),
]
CONSENTING_CUSTOMERS = 600  # of the population; two in three grant every contract field


def build(ctx: Context, accounts: Any, progress: Callable[[str], None]) -> None:
    _rewards(ctx)
    granted = _consents(ctx)
    progress(f"consents: {granted} grants by customers (each with a signed receipt and points)")
    contract_id, job_id = _contract_and_job(ctx)
    progress(f"partner job {job_id} submitted (the server's worker runs it in the sandbox)")
    collaboration.play(ctx, contract_id, progress)
    _charging_offer(ctx)
    progress("VoltGrid proposed a charging-suggestions contract (awaiting a steward's approval)")


def _rewards(ctx: Context) -> None:
    with ctx.db.transaction() as s:
        for key, name, cost, stock, zh in REWARDS:
            points_rewards.create_reward(
                s, data=RewardCreate(key=key, name=name, cost=cost, stock=stock, i18n={"zh-CN": {"name": zh}})
            )


def _consents(ctx: Context) -> int:
    with ctx.db.session() as s:
        subjects = list(s.scalars(select(Subject.id).order_by(Subject.id).limit(CONSENTING_CUSTOMERS)))
    count = 0
    with ctx.db.transaction() as s:
        for i, sid in enumerate(subjects):
            # alice (1st) grants all three, bob (2nd) only age, chen (3rd) nothing; then a mix.
            fields = [f["field"] for f in FEATURES] if i % 3 == 0 else (["age"] if i % 3 == 1 else [])
            for field in fields:
                changes.grant(
                    s,
                    subject_id=sid,
                    request=changes.GrantRequest(purpose=PURPOSE, field=field, partner=PARTNER),
                    signer=ctx.keys.signing_key,
                    policy=receipt_policy(ctx.settings),
                )
                count += 1
    return count


def _contract_and_job(ctx: Context) -> tuple[int, int]:
    with ctx.db.session() as s:
        partner_id = s.scalar(select(Partner.id).where(Partner.key == PARTNER))
    partner = Principal(subject=PARTNER, role="partner", client_id=PARTNER, partner_id=partner_id, partner_key=PARTNER)
    with ctx.db.transaction() as s:
        contract = contracts.propose(
            s,
            principal=partner,
            proposal=ContractProposal(
                purpose=PURPOSE,
                features=FEATURES,
                decision_schema={"labels": ["standard", "premium"]},
                k_min=5,
                epsilon_per_release=1.0,
                valid_until=utcnow() + timedelta(days=90),
                title="Renewal bundle for your car and health policies",
                # The same model also decides in real time when a customer books a battery swap.
                decision_service={"events": [collaboration.BOOKED]},
            ),
        )
        contract_id = contract.id
    with ctx.db.transaction() as s:
        contracts.approve(
            s, principal=Principal(subject="steward", role="steward", client_id="demo"), contract_id=contract_id
        )
    with ctx.db.transaction() as s:
        model = uploads.upload(s, principal=partner, contract_id=contract_id, kind="onnx", data=MODEL.read_bytes())
        model_id = model.id
    with ctx.db.transaction() as s:
        return contract_id, jobs.submit(s, principal=partner, model_id=model_id).id


def _charging_offer(ctx: Context) -> None:
    """A second partner's offer, only proposed: the consent centre shows it (marked as not yet approved) and
    the steward console has a contract to review."""
    with ctx.db.session() as s:
        partner_id = s.scalar(select(Partner.id).where(Partner.key == CHARGING_PARTNER))
    if partner_id is None:
        return
    partner = Principal(
        subject=CHARGING_PARTNER,
        role="partner",
        client_id=CHARGING_PARTNER,
        partner_id=partner_id,
        partner_key=CHARGING_PARTNER,
    )
    with ctx.db.transaction() as s:
        contracts.propose(
            s,
            principal=partner,
            proposal=ContractProposal(
                purpose="charging_booking",
                features=[
                    {"field": "ev_owner", "transform": "identity"},
                    {"field": "app_sessions_30d", "transform": "quantile", "q": 4},
                ],
                decision_schema={"labels": ["suggest_slot", "no_suggestion"]},
                k_min=10,
                epsilon_per_release=0.5,
                valid_until=utcnow() + timedelta(days=180),
                title="Charging-slot suggestions near you",
            ),
        )
