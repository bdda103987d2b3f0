"""A server killed mid-job (SIGKILL, a real subprocess) leaves a recoverable job, never one stuck running."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from dataspace.context import Context
from dataspace.db import utcnow
from dataspace.jobs import lease, service
from dataspace.jobs.lease import ShardBusy
from dataspace.jobs.models import Decision, Job, JobShard
from dataspace.keys import save_key_file
from dataspace.settings import Settings
from tests.factories import jobs as js

ROOT = Path(__file__).resolve().parents[2]
NOTHING = {"requeued": [], "requeued_shards": [], "failed": [], "finished": []}


def test_killed_job_is_requeued_and_completes_once(ctx: Context, tmp_path: Path) -> None:
    js.build_world(ctx, 45)
    contract_id = js.approved_contract(ctx, k_min=3)
    model_id = js.upload_onnx(ctx, contract_id)
    with ctx.db.transaction() as s:
        job_id = service.submit(s, principal=js.partner_principal(ctx), model_id=model_id).id
    key_file = tmp_path / "keys.json"
    save_key_file(key_file, ctx.keys)
    marker = tmp_path / "marker"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.integration.jobs_crash_worker",
            ctx.db.url,
            str(key_file),
            str(job_id),
            str(marker),
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert proc.poll() is None, "worker exited early"
            assert time.monotonic() < deadline, "worker never reached the storing step"
            time.sleep(0.05)
        time.sleep(0.5)  # let a heartbeat or two land
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    with ctx.db.session() as s:
        job = s.get(Job, job_id)
        assert job is not None
        assert job.status == "running"
        assert job.heartbeat_at is not None
        assert s.scalar(select(func.count()).select_from(Decision)) == 0
    # A fresh heartbeat means "alive": recovery leaves it alone until it goes stale. The worker died in the
    # job's (only) shard: that shard goes back to the queue, and the in-process queue runs it again.
    assert ctx.jobs.recover(stale_after=timedelta(minutes=5)) == NOTHING
    assert ctx.jobs.recover(stale_after=timedelta(0)) == {**NOTHING, "requeued_shards": [(job_id, 0)]}
    with ctx.db.session() as s:
        shard = s.get(JobShard, (job_id, 0))
        assert shard is not None
        assert (shard.status, shard.attempt) == ("queued", 1)

    assert ctx.jobs.run_queued() == 1
    with ctx.db.session() as s:
        job = s.get(Job, job_id)
        assert job is not None
        assert job.status == "succeeded"
        assert s.get(JobShard, (job_id, 0)).attempt == 2  # type: ignore[union-attr]
        assert s.scalar(select(func.count()).select_from(Decision)) == job.stats["decisions"] > 0


def test_jobs_that_keep_dying_are_failed(ctx: Context) -> None:
    js.build_world(ctx, 12)
    contract_id = js.approved_contract(ctx, k_min=2)
    model_id = js.upload_onnx(ctx, contract_id)
    with ctx.db.transaction() as s:
        job_id = service.submit(s, principal=js.partner_principal(ctx), model_id=model_id).id
        s.flush()
        job = s.get(Job, job_id)
        assert job is not None
        job.status, job.attempt, job.heartbeat_at = "running", lease.MAX_ATTEMPTS, utcnow() - timedelta(hours=1)
    assert ctx.jobs.recover() == {**NOTHING, "failed": [job_id]}
    with ctx.db.session() as s:
        job = s.get(Job, job_id)
        assert job is not None
        assert job.status == "failed"
        assert job.error == "internal"  # the partner's reason; the steward's detail says what happened
        assert "stopped" in (job.error_detail or "")
    with pytest.raises(Exception, match="failed"):
        ctx.jobs.run_job(job_id)


def test_the_embedded_path_takes_its_lease_times_from_the_settings(
    ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DATASPACE_JOB_STALE_SECONDS decides when recovery and takeovers act on the in-process queue's jobs
    too (a heartbeat 30 s old is dead at 10 s, alive at 120 s)."""

    def engine_with(stale_seconds: str) -> Context:
        monkeypatch.setenv("DATASPACE_JOB_STALE_SECONDS", stale_seconds)
        settings = Settings(**ctx.settings.model_dump(exclude={"job_stale_seconds"}))
        return Context(settings=settings, db=ctx.db, keys=ctx.keys)

    patient, eager = engine_with("120"), engine_with("10")
    assert (patient.settings.job_stale_seconds, eager.settings.job_stale_seconds) == (120, 10)
    js.build_world(ctx, 12)
    model_id = js.upload_onnx(ctx, js.approved_contract(ctx, k_min=2))
    half_a_minute_ago = utcnow() - timedelta(seconds=30)
    with ctx.db.transaction() as s:  # its planner died half a minute ago
        job_id = service.submit(s, principal=js.partner_principal(ctx), model_id=model_id).id
        s.flush()
        job = s.get(Job, job_id)
        assert job is not None
        job.status, job.started_at, job.heartbeat_at = "running", half_a_minute_ago, half_a_minute_ago
    assert patient.jobs.recover() == NOTHING
    assert eager.jobs.recover() == {**NOTHING, "requeued": [job_id]}

    assert eager.jobs.plan_job(job_id).shards == 1
    with ctx.db.transaction() as s:  # its shard's worker died half a minute ago
        shard = s.get(JobShard, (job_id, 0))
        assert shard is not None
        shard.status, shard.attempt, shard.heartbeat_at = "running", 1, half_a_minute_ago
    with pytest.raises(ShardBusy):
        patient.jobs.run_shard(job_id, 0)
    assert patient.jobs.run_queued() == 0
    assert patient.jobs.recover() == NOTHING
    assert eager.jobs.recover() == {**NOTHING, "requeued_shards": [(job_id, 0)]}
    assert eager.jobs.run_queued() == 1
    with ctx.db.session() as s:
        job = s.get(Job, job_id)
        assert job is not None
        assert (job.status, job.attempt) == ("succeeded", 2)
        assert s.get(JobShard, (job_id, 0)).attempt == 2  # type: ignore[union-attr]
