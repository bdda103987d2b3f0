"""The vectorized evaluator answers exactly like the single-check rule, on random grant histories."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from consent import (
    FieldRef,
    GrantTable,
    Granularity,
    InvalidGrant,
    PartnerRef,
    Scope,
    evaluate,
    expire,
    is_permitted,
    new_grant,
    permitted_for_all,
    renew,
    withdraw,
)

T0 = datetime(2025, 1, 1, tzinfo=UTC)
MIN = timedelta(minutes=1)
FIELDS = [
    FieldRef("age", "identity"),
    FieldRef("health", "identity", sensitive=True),
    FieldRef("income", "assets"),
    FieldRef("balance", "assets"),
    FieldRef("clicks", "behaviour"),
]
PARTNERS = [PartnerRef("acme", "insurer"), PartnerRef("safeco", "insurer"), PartnerRef("volt", "charging")]
PURPOSES = ["underwriting", "marketing"]

scopes = st.builds(
    lambda purpose, target, recipient: Scope(purpose, **target, **recipient),
    st.sampled_from(PURPOSES),
    st.one_of(
        st.sampled_from(FIELDS).map(lambda f: {"field": f.key}),
        st.sampled_from(["identity", "assets", "behaviour", "unknown"]).map(lambda d: {"dimension": d}),
    ),
    st.one_of(
        st.sampled_from(PARTNERS).map(lambda p: {"partner": p.key}),
        st.sampled_from(["insurer", "charging"]).map(lambda c: {"partner_category": c}),
    ),
)

ops = st.tuples(
    st.integers(1, 3),  # subject
    scopes,
    st.sampled_from(list(Granularity)),
    # Small integer minutes, so evaluations often land exactly on window boundaries.
    st.integers(0, 8),  # minute the grant is given
    st.integers(0, 3),  # valid_from delay
    st.one_of(st.none(), st.integers(1, 8)),  # window length
    st.sampled_from(["keep", "withdraw", "renew", "expire"]),
    st.integers(0, 10),  # minutes until the follow-up action
    st.one_of(st.none(), st.integers(1, 8)),  # renewal length
)


def build_history(raw_ops):
    grants = []
    for gid, (subject, scope, gran, t, delay, length, action, later, renewal) in enumerate(raw_ops, 1):
        now = T0 + t * MIN
        start = now + delay * MIN
        until = None if length is None else start + length * MIN
        g = new_grant(
            id=gid, subject_id=subject, scope=scope, now=now, valid_from=start, valid_until=until, granularity=gran
        )
        when = now + later * MIN
        try:
            if action == "withdraw":
                g = withdraw(g, when)
            elif action == "renew":
                g = renew(g, when, None if renewal is None else when + renewal * MIN)
            elif action == "expire":
                g = expire(g, when)
        except InvalidGrant:
            pass  # the transition was not allowed at that time; keep the grant as it was
        grants.append(g)
    return grants


def _aimed_query(data, grants):
    """Evaluation parameters aimed at one of the grants (its purpose, a matching partner, a boundary time),
    so the comparison is not trivially "nobody is permitted"."""
    g = data.draw(st.sampled_from(grants))
    partners = [p for p in PARTNERS if g.scope.recipient in (f"p:{p.key}", f"c:{p.category}")] or PARTNERS
    end = g.effective_end
    times = [g.valid_from, g.valid_from - MIN / 60] + ([end, end - timedelta(microseconds=1)] if end else [])
    fields = [f for f in FIELDS if g.scope.field == f.key or g.scope.dimension == f.dimension]
    return (
        g.scope.purpose,
        data.draw(st.sampled_from(partners)),
        data.draw(st.sampled_from(times)),
        g.subject_id,
        fields,
    )


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    raw_ops=st.lists(ops, max_size=30),
    population=st.lists(st.integers(1, 4), unique=True, min_size=1, max_size=4),
    requested=st.lists(st.sampled_from(FIELDS), min_size=1, max_size=6),
    aimed=st.integers(0, 3).map(bool),
    partner=st.sampled_from([*PARTNERS, PartnerRef("nobody", "none")]),
    purpose=st.sampled_from([*PURPOSES, "unknown"]),
    minute=st.integers(0, 25),
    granularity=st.sampled_from(list(Granularity)),
    data=st.data(),
)
def test_bulk_equals_single(raw_ops, population, requested, aimed, partner, purpose, minute, granularity, data):
    grants = build_history(raw_ops)
    at = T0 + minute * MIN
    if aimed and grants:
        purpose, partner, at, subject, fields = _aimed_query(data, grants)
        population = population if subject in population else [*population, subject]
        requested = [*requested, *fields]
    matrix = evaluate(
        GrantTable.from_grants(grants),
        subjects=population,
        fields=requested,
        partner=partner,
        purpose=purpose,
        at=at,
        granularity=granularity,
    )
    expected = np.array(
        [
            [
                is_permitted(
                    grants, subject_id=s, field=f, partner=partner, purpose=purpose, at=at, granularity=granularity
                )
                for f in requested
            ]
            for s in population
        ],
        dtype=bool,
    ).reshape(len(population), len(requested))
    assert np.array_equal(matrix, expected)
    event("some permitted" if expected.any() else "none permitted")


def _boundaries(grants):
    """Every instant where some grant's answer can change, and the instant just before it."""
    edges = {T0}
    for g in grants:
        for t in (g.valid_from, g.effective_end):
            if t is not None:
                edges.update((t, t - timedelta(microseconds=1)))
    return sorted(edges)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw_ops=st.lists(ops, min_size=1, max_size=12))
def test_bulk_equals_single_everywhere(raw_ops):
    """For one history, compare every (subject, field) cell for every partner, purpose, granularity and
    boundary instant: a disagreement anywhere in that history is found."""
    grants = build_history(raw_ops)
    table = GrantTable.from_grants(grants)
    subjects = [1, 2, 3, 4]
    permitted_cells = 0
    for at in _boundaries(grants):
        for partner in PARTNERS:
            for purpose in PURPOSES:
                for granularity in Granularity:
                    matrix = evaluate(
                        table,
                        subjects=subjects,
                        fields=FIELDS,
                        partner=partner,
                        purpose=purpose,
                        at=at,
                        granularity=granularity,
                    )
                    for i, s in enumerate(subjects):
                        mine = [g for g in grants if g.subject_id == s]
                        for j, f in enumerate(FIELDS):
                            single = is_permitted(
                                mine,
                                subject_id=s,
                                field=f,
                                partner=partner,
                                purpose=purpose,
                                at=at,
                                granularity=granularity,
                            )
                            assert matrix[i, j] == single, (s, f, partner, purpose, at, granularity)
                            permitted_cells += single
    event("some permitted" if permitted_cells else "none permitted")


def test_sparse_subject_ids_use_the_search_path():
    scope = Scope("u", field="age", partner="acme")
    grants = [new_grant(id=1, subject_id=10**12, scope=scope, now=T0)]
    m = evaluate(
        GrantTable.from_grants(grants),
        subjects=[5, 10**12],
        fields=[FIELDS[0]],
        partner=PARTNERS[0],
        purpose="u",
        at=T0,
    )
    assert m.tolist() == [[False], [True]]


def test_duplicate_subjects_are_refused():
    grants = [new_grant(id=1, subject_id=1, scope=Scope("u", field="age", partner="acme"), now=T0)]
    with pytest.raises(ValueError, match="distinct"):
        evaluate(
            GrantTable.from_grants(grants), subjects=[1, 1], fields=[FIELDS[0]], partner=PARTNERS[0], purpose="u", at=T0
        )


def test_a_contract_needs_every_field():
    m = np.array([[True, True], [True, False], [False, False]])
    assert permitted_for_all(m).tolist() == [True, False, False]
    assert permitted_for_all(np.zeros((3, 0), bool)).tolist() == [False, False, False]
