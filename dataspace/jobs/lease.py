"""Leases on the rows job work is claimed through: the job while it is planned, each shard while it runs.

A lease is held by the process that claimed the row (``status = 'running'`` at ``attempt``) and kept alive
by a heartbeat that moves ``heartbeat_at`` every ``heartbeat_seconds``. A lease whose heartbeat is older
than ``stale_after`` belongs to a process that died: recovery re-queues its row, or fails it once
``max_attempts`` claims have died (``verdict``), and a shard is also taken over directly by the next claim
(``take``). Work done under a lease is stored only while the lease is held: a cancelled or failed job, or a
shard taken over, stores nothing (``Abandoned``). Every time comes from the settings (``LeaseTimes.of``).

Attempts: a job is submitted at attempt 1 and recovery re-queues it at the next attempt; a shard is
planned at attempt 0 and every claim takes the next attempt.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy import update
from sqlalchemy.orm import Session

from dataspace.db import Database, utcnow
from dataspace.errors import Conflict, Fault, NotFound
from dataspace.jobs.models import Job, JobShard
from dataspace.settings import Settings

log = logging.getLogger("dataspace.jobs")

MAX_ATTEMPTS = 3

Leased = Job | JobShard


class Abandoned(Exception):
    """The lease was lost (job cancelled or failed, shard taken over or stored already): store nothing."""


class ShardBusy(Fault):
    """Another worker holds a live lease on the shard (fresh heartbeat): try again later."""


@dataclass(frozen=True)
class LeaseTimes:
    heartbeat_seconds: float
    stale_after: timedelta
    max_attempts: int = MAX_ATTEMPTS

    @classmethod
    def of(
        cls, settings: Settings, *, heartbeat_seconds: float | None = None, stale_after: timedelta | None = None
    ) -> LeaseTimes:
        """``DATASPACE_JOB_HEARTBEAT_SECONDS`` and ``DATASPACE_JOB_STALE_SECONDS``, unless given."""
        return cls(
            heartbeat_seconds=heartbeat_seconds or settings.job_heartbeat_seconds,
            stale_after=stale_after if stale_after is not None else timedelta(seconds=settings.job_stale_seconds),
        )


def fresh(row: Leased, now: datetime, stale_after: timedelta) -> bool:
    """Whether the row's holder beat within ``stale_after`` (it is alive)."""
    beat = row.heartbeat_at or row.started_at
    return beat is not None and now - beat < stale_after


def verdict(row: Leased, now: datetime, times: LeaseTimes) -> Literal["live", "requeue", "fail"]:
    """What recovery does with a running row: leave a live one, re-queue a dead one, fail one whose
    claims died ``max_attempts`` times."""
    if fresh(row, now, times.stale_after):
        return "live"
    return "fail" if row.attempt >= times.max_attempts else "requeue"


def given_up(attempts: int) -> str:
    """The steward's detail of work failed because its process kept dying."""
    return f"the process running it stopped {attempts} times; giving up"


def claim_job(session: Session, job_id: int, now: datetime) -> Job:
    """Take the lease on a queued job (atomic: of two claimers, one wins, the other gets ``Conflict``).
    A job whose planner died is re-queued by recovery, not taken over."""
    claimed = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == "queued")
        .values(status="running", started_at=now, heartbeat_at=now, error=None)
        .execution_options(synchronize_session=False)
    )
    job = session.get(Job, job_id)
    if job is None:
        raise NotFound("no such job")
    if getattr(claimed, "rowcount", 0) != 1:
        raise Conflict(f"job {job_id} is {job.status}, not queued")
    return job


def take(shard: JobShard, now: datetime, times: LeaseTimes) -> bool:
    """Take the lease on a locked shard: a queued one, or a running one whose holder stopped beating (a
    takeover). Returns False when its claims died ``max_attempts`` times; raises ``ShardBusy`` while a live
    holder has it."""
    if shard.status == "running" and fresh(shard, now, times.stale_after):
        raise ShardBusy(f"job {shard.job_id} shard {shard.index} is running elsewhere")
    if shard.attempt >= times.max_attempts:
        return False
    shard.status = "running"
    shard.attempt += 1
    shard.started_at = now
    shard.heartbeat_at = now
    shard.error = None
    return True


class Heartbeat:
    """Moves the leased row's ``heartbeat_at`` while its work runs, so recovery can tell it from an orphan."""

    def __init__(self, db: Database, job_id: int, attempt: int, every: float, *, index: int | None = None) -> None:
        """The lease on the job (planning) or, with ``index``, on that shard of it, at ``attempt``."""
        self.db, self.every = db, every
        if index is None:
            self.name = f"job-{job_id}"
            stmt = update(Job).where(Job.id == job_id, Job.status == "running", Job.attempt == attempt)
        else:
            self.name = f"job-{job_id}-shard-{index}"
            stmt = update(JobShard).where(
                JobShard.job_id == job_id,
                JobShard.index == index,
                JobShard.status == "running",
                JobShard.attempt == attempt,
            )
        self._beat = stmt.execution_options(synchronize_session=False)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"{self.name}-heartbeat", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            try:
                with self.db.transaction() as session:
                    session.execute(self._beat.values(heartbeat_at=utcnow()))
            except Exception:  # noqa: BLE001 - a missed beat only makes recovery or a takeover more eager
                log.warning("lease heartbeat failed", extra={"lease": self.name})


__all__ = [
    "MAX_ATTEMPTS",
    "Abandoned",
    "Heartbeat",
    "LeaseTimes",
    "ShardBusy",
    "claim_job",
    "fresh",
    "given_up",
    "take",
    "verdict",
]
