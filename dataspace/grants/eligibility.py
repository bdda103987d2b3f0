"""Who may be scored: subjects with a grant in force for *every* contract field, for this partner and
purpose, at the granularity each field's transform needs (``identity`` emits the raw value, pseudonymized;
every other transform emits a generalization). Delegates to the consent service's bulk evaluator."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import numpy.typing as npt
from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

import consent
from consent import Granularity
from dataspace.catalog.models import Field
from dataspace.emission import FeatureSpec, Identity
from dataspace.grants.convert import field_ref, partner_ref, to_domain
from dataspace.grants.evaluation import permitted_subjects
from dataspace.grants.models import ConsentGrant
from dataspace.partners.models import Partner
from dataspace.subjects.ids import ascending_distinct
from dataspace.subjects.models import Subject

_IN_CHUNK = 2_000
_FEW = 5_000  # changed grants to re-check above which the bulk evaluator is cheaper than loading them


def eligible_subjects(
    session: Session,
    *,
    partner_key: str,
    purpose_key: str,
    specs: list[FeatureSpec],
    at: datetime,
    subjects: npt.NDArray[np.int64] | None = None,
) -> npt.NDArray[np.int64]:
    """Ascending subject ids permitted for all fields (restricted to ``subjects`` when given)."""
    by_level: dict[Granularity, list[str]] = {}
    for spec in specs:
        level = Granularity.PSEUDONYMIZED_RAW if isinstance(spec, Identity) else Granularity.GENERALIZED
        keys = by_level.setdefault(level, [])
        if spec.field not in keys:
            keys.append(spec.field)
    result: npt.NDArray[np.int64] | None = None
    for level, keys in by_level.items():
        ids = permitted_subjects(
            session,
            partner_key=partner_key,
            purpose_key=purpose_key,
            field_keys=keys,
            at=at,
            granularity=level,
            subjects=subjects if result is None else result,
        )
        result = ids if result is None else np.intersect1d(result, ids, assume_unique=True)
        if result.size == 0:
            break
    return result if result is not None else np.empty(0, dtype=np.int64)


def _evaluate_few(
    session: Session,
    *,
    partner_key: str,
    purpose_key: str,
    specs: list[FeatureSpec],
    at: datetime,
    subjects: npt.NDArray[np.int64],
) -> npt.NDArray[np.int64]:
    """``eligible_subjects`` for a handful of subjects: loads only their grants (same evaluator)."""
    partner = session.scalar(select(Partner).where(Partner.key == partner_key))
    if partner is None or subjects.size == 0:
        return np.empty(0, dtype=np.int64)
    keys = list(dict.fromkeys(s.field for s in specs))
    fields = {f.key: field_ref(f) for f in session.scalars(select(Field).where(Field.key.in_(keys)))}
    if len(fields) != len(keys):
        return np.empty(0, dtype=np.int64)
    grants: list[consent.Grant] = []
    ids = subjects.tolist()
    for start in range(0, len(ids), _IN_CHUNK):
        rows = session.scalars(
            select(ConsentGrant).where(
                ConsentGrant.purpose_key == purpose_key, ConsentGrant.subject_id.in_(ids[start : start + _IN_CHUNK])
            )
        )
        grants += [to_domain(r) for r in rows]
    table = consent.GrantTable.from_grants(grants)
    ok = np.ones(subjects.size, dtype=bool)
    for spec in specs:
        level = Granularity.PSEUDONYMIZED_RAW if isinstance(spec, Identity) else Granularity.GENERALIZED
        matrix = consent.evaluate(
            table,
            subjects=subjects,
            fields=[fields[spec.field]],
            partner=partner_ref(partner),
            purpose=purpose_key,
            at=at,
            granularity=level,
        )
        ok &= consent.permitted_for_all(matrix)
    return subjects[ok]


# How far before a plan's time the re-check looks for changed grants and erasures: a bound on a consent write's
# transaction (group-committed, milliseconds) plus the clock skew between the servers stamping rows and the
# worker planning the job (NTP keeps it well under a second).
RECHECK_SKEW = timedelta(minutes=5)


def still_eligible(
    session: Session,
    *,
    partner_key: str,
    purpose_key: str,
    specs: list[FeatureSpec],
    since: datetime,
    at: datetime,
    subjects: npt.NDArray[np.int64],
) -> npt.NDArray[np.bool_]:
    """For subjects that were eligible at ``since``: are they still at ``at``? Only subjects whose grants
    for this purpose changed (withdrawn, expired, renewed, granted) or lapsed in between, or who were erased,
    can have lost eligibility, so only they are evaluated again.

    "Changed since" is read from the rows' timestamps, which the writer stamps when its transaction starts,
    by its own host's clock. A withdrawal stamped just before ``since`` whose transaction commits after the
    plan's read, or stamped by a server whose clock runs behind, would look older than the plan although the
    plan never saw it. So the window reaches back ``RECHECK_SKEW`` before ``since``: subjects changed in it
    are evaluated again too (an evaluation at ``at`` is right whatever the plan saw; it only costs time)."""
    since = since - RECHECK_SKEW
    changed_rows = select(ConsentGrant.subject_id).where(
        ConsentGrant.purpose_key == purpose_key,
        or_(
            ConsentGrant.updated_at >= since,
            and_(
                ConsentGrant.valid_until.is_not(None),
                ConsentGrant.valid_until <= at,
                ConsentGrant.valid_until > since,
            ),
        ),
    )
    erased = session.scalars(select(Subject.id).where(Subject.erased_at.is_not(None), Subject.erased_at >= since)).all()
    keep = np.ones(subjects.size, dtype=bool)
    # Many changes (a bulk consent import, or grants written just before the plan, inside the look-back): the
    # bulk evaluator, about a microsecond per subject of the purpose, instead of reading every changed id and
    # loading each one's grants (a hundred). The count stops at the first _FEW + 1 rows.
    many = session.scalar(select(func.count()).select_from(changed_rows.limit(_FEW + 1).subquery())) or 0
    if many > _FEW:
        everyone = eligible_subjects(session, partner_key=partner_key, purpose_key=purpose_key, specs=specs, at=at)
        keep &= np.isin(subjects, everyone)
        if erased:
            keep &= ~np.isin(subjects, np.asarray(erased, dtype=np.int64))
        return keep
    changed = session.scalars(changed_rows.distinct()).all() if many else []
    if not changed and not erased:
        return keep  # the usual case: nothing to evaluate, and no pass over the (large) subject array
    candidates = ascending_distinct([*changed, *erased])
    candidates = candidates[np.isin(candidates, subjects)]
    if candidates.size:
        ok = _evaluate_few(
            session, partner_key=partner_key, purpose_key=purpose_key, specs=specs, at=at, subjects=candidates
        )
        lost = np.setdiff1d(candidates, ok, assume_unique=True)
        keep &= ~np.isin(subjects, lost)
    return keep
