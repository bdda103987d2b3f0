"""What a partner learns from a job: differentially private aggregates, released once, paid from its budget.

Label decisions are released as counts per label through OpenDP's Laplace mechanism on the count vector
(one subject changes one count by one: L1 sensitivity 1, so scale = 1/epsilon); numeric decisions as a
noisy count and a noisy bounded sum (epsilon split in half), from which a bounded mean is derived. The
epsilon charged is what the measurements' privacy maps say, checked against the contract and rounded up
to micro-epsilon. Noisy counts below the contract's ``k_min`` are suppressed (post-processing, free).
The release is stored, so asking again returns the same numbers: no re-spending, no averaging attack.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import opendp.prelude as dp
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from dataspace.agreements import budget, contracts
from dataspace.agreements.models import Contract
from dataspace.audit import record_event
from dataspace.db import utcnow
from dataspace.errors import Conflict
from dataspace.jobs import outcomes, service
from dataspace.jobs.models import Decision, Release
from dataspace.principal import Principal

dp.enable_features("contrib")

# Privacy maps are computed in floating point; allow this much above the contract's epsilon before refusing.
_MAP_SLACK = 1e-9


def _label_counts(session: Session, job_id: int, labels: list[str]) -> list[int]:
    rows = session.execute(
        select(Decision.label, func.count()).where(Decision.job_id == job_id).group_by(Decision.label)
    ).all()
    counts = {label: int(n) for label, n in rows}
    return [counts.get(label, 0) for label in labels]


def _release_labels(counts: list[int], labels: list[str], epsilon: float, k: int) -> tuple[float, dict[str, Any]]:
    meas = dp.m.make_laplace(dp.vector_domain(dp.atom_domain(T=int)), dp.l1_distance(T=int), scale=1.0 / epsilon)
    charged = float(meas.map(1))  # type: ignore[no-untyped-call]
    if charged > epsilon + _MAP_SLACK:
        raise Conflict("the release mechanism would cost more than the contract's epsilon")
    noisy = [int(x) for x in meas(counts)]
    released = {label: (n if n >= k else None) for label, n in zip(labels, noisy, strict=True)}
    return charged, {
        "kind": "label_counts",
        "counts": released,
        "suppressed": [label for label, n in released.items() if n is None],
    }


def _release_mean(
    session: Session, job_id: int, *, lo: float, hi: float, epsilon: float, k: int
) -> tuple[float, dict[str, Any]]:
    count, total = session.execute(
        select(func.count(), func.coalesce(func.sum(Decision.value), 0.0)).where(Decision.job_id == job_id)
    ).one()
    half = epsilon / 2.0
    count_meas = dp.m.make_laplace(dp.atom_domain(T=int), dp.absolute_distance(T=int), scale=1.0 / half)
    charged = float(count_meas.map(1))  # type: ignore[no-untyped-call]
    noisy_count = int(count_meas(int(count)))
    sensitivity = max(abs(lo), abs(hi))  # adding or removing one subject moves the sum by at most this
    noisy_sum = 0.0
    if sensitivity > 0:
        sum_meas = dp.m.make_laplace(
            dp.atom_domain(T=float, nan=False), dp.absolute_distance(T=float), scale=sensitivity / half
        )
        charged += float(sum_meas.map(sensitivity))  # type: ignore[no-untyped-call]
        clamped = min(max(float(total or 0.0), lo * int(count)), hi * int(count))
        noisy_sum = float(sum_meas(clamped))
    if charged > epsilon + _MAP_SLACK:
        raise Conflict("the release mechanism would cost more than the contract's epsilon")
    if noisy_count < k:
        return charged, {"kind": "bounded_mean", "count": None, "mean": None, "suppressed": True}
    mean = min(max(noisy_sum / noisy_count, lo), hi)
    return charged, {
        "kind": "bounded_mean",
        "count": noisy_count,
        "mean": mean,
        "bounds": [lo, hi],
        "suppressed": False,
    }


# Each released number's own interval: Laplace noise of scale b stays within b * ln(1 / (1 - c)) with
# probability c.
CONFIDENCE = 0.95


def noise_interval(epsilon: float, result: Mapping[str, Any]) -> dict[str, float]:
    """Half-widths of the ``CONFIDENCE`` intervals of the noise in a release (``count`` for each label count
    or for the noisy count, ``mean`` for a bounded mean). They follow from epsilon, the mechanism and the
    released (already noisy) numbers alone: post-processing, free, and no exact count goes into them."""
    z = math.log(1.0 / (1.0 - CONFIDENCE))
    if epsilon <= 0:
        return {"confidence": CONFIDENCE}
    if result.get("kind") == "label_counts":
        return {"confidence": CONFIDENCE, "count": z / epsilon}
    half = epsilon / 2.0
    out = {"confidence": CONFIDENCE, "count": z / half}
    bounds, count, mean = result.get("bounds"), result.get("count"), result.get("mean")
    if isinstance(bounds, list) and len(bounds) == 2 and isinstance(count, int) and count > 0 and mean is not None:
        lo, hi = float(bounds[0]), float(bounds[1])
        sum_width = z * max(abs(lo), abs(hi)) / half
        # first order: mean = sum / count, both noisy; never wider than the bounds themselves
        out["mean"] = min((sum_width + abs(float(mean)) * out["count"]) / count, hi - lo)
    return out


def get_release(session: Session, *, job_id: int) -> Release | None:
    return session.scalar(select(Release).where(Release.job_id == job_id))


def release_results(
    session: Session, *, principal: Principal, job_id: int, schedule: outcomes.ReleaseSchedule | None = None
) -> Release:
    """The job's DP aggregate: computed the first time (paid at submission, ``dataspace.agreements.budget``), the
    stored release afterwards."""
    job = service.get_owned(session, principal=principal, job_id=job_id)
    state = outcomes.partner_state(job, utcnow(), schedule or outcomes.ReleaseSchedule())
    if state.status != "succeeded":  # what the partner sees: an outcome not shown yet is not "succeeded"
        raise Conflict(f"job is {state.status}; results exist only for a succeeded job")
    existing = get_release(session, job_id=job.id)
    if existing is not None:
        return existing
    contract = session.get(Contract, job.contract_id)
    assert contract is not None
    schema = contracts.decision_schema_of(contract.decision_schema)
    epsilon, k = float(contract.epsilon_per_release), int(contract.k_min)
    if schema.labels is not None:
        labels = list(schema.labels)
        charged, result = _release_labels(_label_counts(session, job.id, labels), labels, epsilon, k)
        mechanism = "laplace/l1-count-vector"
    else:
        assert schema.minimum is not None
        assert schema.maximum is not None
        charged, result = _release_mean(session, job.id, lo=schema.minimum, hi=schema.maximum, epsilon=epsilon, k=k)
        mechanism = "laplace/count+bounded-sum"
    micro = contracts.to_micro(charged)
    if job.micro_epsilon_reserved:  # paid when the job was submitted: nothing more to spend
        if micro > job.micro_epsilon_reserved + 1:  # +1: to_micro rounds the map's float up
            raise Conflict("the release mechanism would cost more than the job paid")
        micro = job.micro_epsilon_reserved
    else:
        budget.charge(session, partner_id=job.partner_id, purpose_key=contract.purpose_key, micro=micro)
    result = {**result, "epsilon": micro / contracts.MICRO, "k_min": k}
    release = Release(job_id=job.id, micro_epsilon=micro, mechanism=mechanism, result=result, created_at=utcnow())
    try:
        with session.begin_nested():
            session.add(release)
            session.flush()
    except IntegrityError:
        raise Conflict("the results were released concurrently; ask again") from None
    record_event(
        session,
        actor=principal,
        action="release.created",
        target=f"job:{job.id}",
        details={"purpose": contract.purpose_key, "epsilon": micro / contracts.MICRO, "mechanism": mechanism},
    )
    return release


def budget_view(session: Session, *, partner_id: int) -> list[dict[str, Any]]:
    return [
        {
            "purpose": b.purpose_key,
            "epsilon_total": b.micro_epsilon_total / contracts.MICRO,
            "epsilon_spent": b.micro_epsilon_spent / contracts.MICRO,
            "epsilon_remaining": (b.micro_epsilon_total - b.micro_epsilon_spent) / contracts.MICRO,
        }
        for b in contracts.budgets_for_partner(session, partner_id=partner_id)
    ]
