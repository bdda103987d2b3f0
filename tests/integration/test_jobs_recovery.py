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
from dataspace.jobs import runner, service
from dataspace.jobs.models import Decision, Job
from dataspace.keys import save_key_file
from tests.integration import jobs_support as js

ROOT = Path(__file__).resolve().parents[2]


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
    # A fresh heartbeat means "alive": recovery leaves it alone until it goes stale.
    assert runner.recover_jobs(ctx, stale_after=timedelta(minutes=5)) == {"requeued": [], "failed": []}
    assert runner.recover_jobs(ctx, stale_after=timedelta(0)) == {"requeued": [job_id], "failed": []}
    with ctx.db.session() as s:
        job = s.get(Job, job_id)
        assert job is not None
        assert (job.status, job.attempt) == ("queued", 2)

    result = runner.run_job(ctx, job_id)
    assert result.status == "succeeded"
    with ctx.db.session() as s:
        assert s.scalar(select(func.count()).select_from(Decision)) == result.stats["decisions"] > 0


def test_jobs_that_keep_dying_are_failed(ctx: Context) -> None:
    js.build_world(ctx, 12)
    contract_id = js.approved_contract(ctx, k_min=2)
    model_id = js.upload_onnx(ctx, contract_id)
    with ctx.db.transaction() as s:
        job_id = service.submit(s, principal=js.partner_principal(ctx), model_id=model_id).id
        s.flush()
        job = s.get(Job, job_id)
        assert job is not None
        job.status, job.attempt, job.heartbeat_at = "running", runner.MAX_ATTEMPTS, utcnow() - timedelta(hours=1)
    assert runner.recover_jobs(ctx) == {"requeued": [], "failed": [job_id]}
    with ctx.db.session() as s:
        job = s.get(Job, job_id)
        assert job is not None
        assert job.status == "failed"
        assert job.error == "internal"  # the partner's reason; the steward's detail says what happened
        assert "stopped" in (job.error_detail or "")
    with pytest.raises(Exception, match="failed"):
        runner.run_job(ctx, job_id)
