"""The partner-visible side of a job: reason codes carry no numbers, times sit on the published ticks."""

from __future__ import annotations

import re
import typing
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from dataspace.events.schemas import JobReason
from dataspace.jobs.outcomes import REASONS, ReleaseSchedule, reason_of_sandbox

# Every reason text the sandbox produces today, several of them carrying numbers the model chose.
SANDBOX_REASONS = {
    "timeout": "timeout",
    "output too large": "resource_limit",
    "killed: memory limit": "resource_limit",
    "killed: cpu limit": "resource_limit",
    "killed: cpu or memory limit": "resource_limit",
    "killed by signal SIGSEGV": "model_failed",
    "sandbox exited with status 31": "model_failed",
    "model failed while scoring": "model_failed",
    "model could not be loaded": "model_failed",
    "sandbox protocol error": "model_failed",
    "model output does not match the decision schema": "output_invalid",
    "output invalid: 400 decisions outside [0, 1]": "output_invalid",
    "output invalid: 3 decisions missing": "output_invalid",
    "output invalid: decisions for pseudonyms not in the input": "output_invalid",
}


def test_sandbox_reasons_map_to_number_free_codes() -> None:
    for reason, code in SANDBOX_REASONS.items():
        assert reason_of_sandbox(reason) == code
    for code, text in REASONS.items():
        assert not re.search(r"\d", code + text)


def test_the_event_contract_publishes_exactly_the_documented_reasons() -> None:
    assert set(typing.get_args(JobReason)) == set(REASONS)


@given(
    created=st.datetimes(min_value=datetime(2025, 1, 1), max_value=datetime(2030, 1, 1), timezones=st.just(UTC)),
    ran=st.floats(min_value=0, max_value=7200),
    tick=st.sampled_from([1, 5, 60, 300]),
    hold=st.sampled_from([0, 60, 300, 900]),
)
def test_a_job_ending_within_the_hold_shows_the_same_times_however_long_it_ran(
    created: datetime, ran: float, tick: int, hold: int
) -> None:
    schedule = ReleaseSchedule(tick=tick, hold=hold)
    finished = created + timedelta(seconds=ran)
    visible = schedule.visible_at(created, finished)
    assert visible >= finished
    assert visible.timestamp() % tick == 0
    assert schedule.floor(created).timestamp() % tick == 0
    base = schedule.visible_at(created, schedule.floor(created))
    if finished <= base:  # within the hold: the run time does not show at all
        assert visible == base
    else:  # past it: only the number of whole ticks it overran
        assert visible - finished < timedelta(seconds=tick)
