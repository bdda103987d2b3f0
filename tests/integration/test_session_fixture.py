"""The ``session`` fixture: one session whose work is rolled back after the test, on both backends."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from dataspace.points import earning, invariants
from dataspace.points import queries as points_queries
from dataspace.subjects.models import Subject
from tests.factories.points import NOW


def _subjects(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(Subject)) or 0


@pytest.mark.parametrize("run", [1, 2])  # the second run starts as empty as the first: nothing was kept
def test_work_is_rolled_back_and_commits_are_savepoints(session: Session, run: int) -> None:
    assert _subjects(session) == 0
    session.add(Subject(blind_ref=f"kept-{run}"))
    session.commit()  # releases a savepoint: still visible in this session
    session.add(Subject(blind_ref=f"dropped-{run}"))
    session.flush()
    session.rollback()  # back to the last savepoint
    assert _subjects(session) == 1


def test_services_run_on_the_session(session: Session) -> None:
    subject = Subject(blind_ref="points")
    session.add(subject)
    session.flush()
    credited = earning.award_authorization_bonus(session, subject_id=subject.id, field_key="income", points=50, now=NOW)
    assert credited == 50
    assert points_queries.get_summary(session, subject_id=subject.id, now=NOW).balance == 50
    invariants.check_invariants(session)
