"""Jobs through a real RabbitMQ to real worker processes: shards spread over workers, a worker killed with
SIGKILL mid-shard, a broker restart mid-job. Afterwards: every consenting subject decided once, one ledger
entry per decided subject, the job succeeded, nothing stuck.

PostgreSQL only: workers on other machines share one database, which SQLite cannot be.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pika
import pytest
from sqlalchemy import select, update

from dataspace.agreements.models import Contract
from dataspace.context import Context
from dataspace.jobs import service
from dataspace.jobs.models import Decision, Job, JobShard
from dataspace.jobs.queue import JobQueue
from dataspace.keys import save_key_file
from dataspace.settings import Settings
from dataspace.tlog.models import TLogEntry
from tests.factories import jobs as js

ROOT = Path(__file__).resolve().parents[2]
BROKER_URL = os.environ.get("DATASPACE_TEST_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672/")
DATASPACE = Path(sys.executable).parent / "dataspace"
SUBJECTS = 400  # 266 consenting -> 4 shards of ~67
SHARD_SUBJECTS = 70
TIMEOUT = 75.0

# One worker runs them in turn: the broker-restart test stops the shared RabbitMQ for a moment.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("rabbitmq")]


def _broker_up(wait: float = 30.0) -> bool:
    """Whether RabbitMQ accepts connections, waiting a while (a loaded machine, or a broker still starting
    after the restart test)."""
    deadline = time.monotonic() + wait
    while True:
        try:
            with socket.create_connection(("127.0.0.1", 5672), timeout=2):
                return True
        except OSError:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.5)


@pytest.fixture
def cluster(ctx: Context, backend: str, tmp_path: Path) -> Iterator[Cluster]:
    if backend == "sqlite":
        pytest.skip("workers on several machines share one PostgreSQL database; SQLite is single-host")
    if not _broker_up():
        if os.environ.get("CI"):  # .ci/run starts RabbitMQ: a missing broker there is a failure, not a skip
            pytest.fail("RabbitMQ is not running on 127.0.0.1:5672")
        pytest.skip("RabbitMQ is not running on 127.0.0.1:5672")
    c = Cluster(ctx, tmp_path)
    try:
        yield c
    finally:
        c.close()


class Cluster:
    """Worker processes and the API replica's side (the outbox sweep) on a queue of this test's own."""

    def __init__(self, ctx: Context, tmp: Path) -> None:
        self.tmp = tmp
        self.queue_name = f"dataspace-test-{uuid.uuid4().hex[:12]}"
        key_file = tmp / "keys.json"
        save_key_file(key_file, ctx.keys)
        self.env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "DATASPACE_DATA_DIR": str(tmp),
            "DATASPACE_DATABASE_URL": ctx.db.url,
            "DATASPACE_KEY_FILE": str(key_file),
            "DATASPACE_BROKER_URL": BROKER_URL,
            "DATASPACE_BROKER_QUEUE": self.queue_name,
            "DATASPACE_JOB_SHARD_SUBJECTS": str(SHARD_SUBJECTS),
            "DATASPACE_JOB_STALE_SECONDS": "3",
            "DATASPACE_JOB_HEARTBEAT_SECONDS": "0.5",
        }
        settings = Settings(
            data_dir=tmp,
            database_url=ctx.db.url,
            broker_url=BROKER_URL,
            broker_queue=self.queue_name,
            job_stale_seconds=3,
        )
        self.ctx = Context(settings=settings, db=ctx.db, keys=ctx.keys)
        self.queue = JobQueue(self.ctx.jobs)
        self.markers = tmp / "markers"
        self.markers.mkdir()
        self.procs: list[subprocess.Popen[bytes]] = []

    def worker(self) -> subprocess.Popen[bytes]:
        """A real ``dataspace worker``."""
        return self._start([str(DATASPACE), "worker", "--threads", "1"])

    def slow_worker(self, hang: float) -> subprocess.Popen[bytes]:
        """A worker that sleeps ``hang`` seconds before storing each shard."""
        return self._start([sys.executable, "-m", "tests.integration.jobs_shard_worker", str(self.markers), str(hang)])

    def _start(self, argv: list[str]) -> subprocess.Popen[bytes]:
        log = (self.tmp / f"worker{len(self.procs)}.log").open("wb")
        proc = subprocess.Popen(argv, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    def wait_for(self, job_id: int) -> Job:
        """Sweep like an API replica (dispatch) until the job is final and its points credited; fail the
        test past TIMEOUT."""
        deadline = time.monotonic() + TIMEOUT
        while True:
            self.queue.dispatch()
            with self.ctx.db.session() as s:
                job = s.get(Job, job_id)
                assert job is not None
                if job.status in ("failed", "cancelled") or (job.status == "succeeded" and not job.points_pending):
                    return job
            if time.monotonic() > deadline:
                logs = "\n".join(p.read_text(errors="replace")[-2000:] for p in self.tmp.glob("worker*.log"))
                pytest.fail(f"job {job_id} still {job.status} after {TIMEOUT} s; worker logs:\n{logs}")
            time.sleep(0.2)

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        self.queue.close()
        try:  # the test's queues go with it
            conn = pika.BlockingConnection(pika.URLParameters(BROKER_URL))
            channel = conn.channel()
            for name in (self.queue_name, f"{self.queue_name}.DQ", f"{self.queue_name}.XQ"):
                channel.queue_delete(name)
            conn.close()
        except pika.exceptions.AMQPError:
            pass


def submit_job(ctx: Context) -> tuple[js.World, int]:
    world = js.build_world(ctx, SUBJECTS)
    contract_id = js.approved_contract(ctx)
    with ctx.db.transaction() as s:  # k = 1: nothing suppressed, so every consenting subject is decided
        s.execute(update(Contract).where(Contract.id == contract_id).values(k_min=1))
    model_id = js.upload_onnx(ctx, contract_id)
    with ctx.db.transaction() as s:
        job_id = service.submit(s, principal=js.partner_principal(ctx), model_id=model_id).id
    return world, job_id


def assert_exactly_once(ctx: Context, world: js.World, job: Job) -> list[JobShard]:
    assert job.status == "succeeded", job.error
    with ctx.db.session() as s:
        decided = s.scalars(select(Decision.subject_id).where(Decision.job_id == job.id)).all()
        bodies = s.scalars(select(TLogEntry.entry).where(TLogEntry.log == "usage")).all()
        rows = s.scalars(select(JobShard).where(JobShard.job_id == job.id).order_by(JobShard.index)).all()
    assert sorted(decided) == sorted(world.consenting)  # the primary key makes each one unique
    entries = [e for e in map(json.loads, bodies) if e["job_id"] == job.id]
    assert sorted(e["subject_id"] for e in entries) == sorted(world.consenting)  # one entry per subject
    assert all(e["fields"] == sorted(js.FIELDS) for e in entries)
    assert len(rows) == job.shard_count == 4
    assert all(r.status == "succeeded" for r in rows)
    assert job.stats["decisions"] == len(world.consenting)
    assert job.stats["points_credited"] == len(world.consenting)
    return list(rows)


def test_job_shards_spread_over_two_workers(ctx: Context, cluster: Cluster) -> None:
    world, job_id = submit_job(ctx)
    cluster.worker()
    cluster.worker()
    rows = assert_exactly_once(ctx, world, cluster.wait_for(job_id))
    assert [r.attempt for r in rows] == [1, 1, 1, 1]


def test_worker_killed_mid_shard_is_taken_over(ctx: Context, cluster: Cluster) -> None:
    world, job_id = submit_job(ctx)
    victim = cluster.slow_worker(hang=120)
    cluster.queue.dispatch()
    deadline = time.monotonic() + 45
    while not any(cluster.markers.iterdir()):
        assert victim.poll() is None, "the victim worker exited"
        assert time.monotonic() < deadline, "the victim never reached a storing step"
        time.sleep(0.1)
    killed = int(next(cluster.markers.iterdir()).name.split("-")[1])
    cluster.worker()  # the survivor takes the other shards, then the victim's
    time.sleep(0.5)
    victim.send_signal(signal.SIGKILL)
    victim.wait(10)
    rows = assert_exactly_once(ctx, world, cluster.wait_for(job_id))
    assert rows[killed].attempt == 2  # redelivered and taken over once the dead claim went stale


def test_broker_restart_mid_job(ctx: Context, cluster: Cluster) -> None:
    world, job_id = submit_job(ctx)
    cluster.slow_worker(hang=1.5)
    cluster.slow_worker(hang=1.5)
    cluster.queue.dispatch()
    deadline = time.monotonic() + 45
    while not any(cluster.markers.iterdir()):
        assert time.monotonic() < deadline, "no shard started"
        time.sleep(0.1)
    subprocess.run(["rabbitmqctl", "stop_app"], check=True, capture_output=True, timeout=60)
    try:
        time.sleep(2)  # shards finish and store while the broker is away; their acks are lost
    finally:
        subprocess.run(["rabbitmqctl", "start_app"], check=True, capture_output=True, timeout=60)
    assert_exactly_once(ctx, world, cluster.wait_for(job_id))
