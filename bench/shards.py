"""Sharded partner job on PostgreSQL: one logistic-regression ONNX job spread over broker-backed workers.

    .venv/bin/python bench/shards.py --n 200000 --shard-subjects 50000   # quick: 4 shards, about a minute
    .venv/bin/python bench/shards.py --n 10000000 --keep                  # full: 10M subjects, 38 shards

Needs PostgreSQL (trust auth for ``postgres`` on 127.0.0.1; ``DATASPACE_BENCH_POSTGRES_URL`` names the
database to connect to for CREATE / DROP DATABASE), RabbitMQ on 127.0.0.1:5672 and bubblewrap.

Set-up (timed and printed on its own, not part of the job): a fresh PostgreSQL database created for the run
(dropped at the end; with ``--keep`` it is named after N, kept, and reused with the keys cached under
``--dir`` by the next ``--keep`` run with the same N); the schema, catalog, partner, purpose and N sealed
profiles with their grants (95% of subjects) bulk-written by ``bench/jobs.py``'s generator (COPY); VACUUM
ANALYZE of the bulk-written tables (what autovacuum does to a live database); then, through the services
as ``bench/jobs.py`` does, a contract (proposed, approved), the ONNX model (uploaded, its signature checked
in the sandbox) and the job (queued).

Run: ``--workers`` real ``dataspace worker`` processes on a broker queue of this run's own, with the key file
and the settings in their environment. This process plays the API replica: its outbox sweep
(``JobQueue.dispatch``, every second, as the server's background task does) sends the "plan" message; a worker
plans the job (consent once, quantile cut points, shards of ``--shard-subjects``) and sends one "run_shard"
message per shard; the workers run the shards, each credits the usage points of the shard it stored, and
whichever stores the last one finishes the job. The run ends when the job is final (with ``--points``: and its
points are credited), or at ``--timeout``; then the workers are stopped (a credit still running is cut short,
as by a crash; in a ``--keep`` database the rest is abandoned) and the queue is deleted.

Prints the set-up time, the plan time, each shard's time (min / median / max; the storing transaction and the
shard's points apart) and worker (from the workers' JSON logs, kept under ``--dir``), the job end to end
(dispatch to ``succeeded``), subjects/s, decisions and ledger entries stored, the workers' peak RSS (VmHWM
polled from /proc for each worker and its children: the decrypt pool and the sandbox; a very short-lived child
may peak between two polls) and the database size. Exits 1 unless the job and every shard succeeded, the
shards partition the eligible subjects, every eligible subject was decided once except the rows k-anonymity
suppressed (``--k 1`` suppresses none: then decisions == eligible exactly), and there is one ledger entry per
decision."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO

import numpy as np
import pika
from sqlalchemy import create_engine, func, select, text, update

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import _report  # noqa: E402

from bench.jobs import GRANT_SHARE, PARTNER, generate, prepare_job  # noqa: E402
from dataspace.agreements.models import Contract  # noqa: E402
from dataspace.context import Context  # noqa: E402
from dataspace.db import Database, utcnow  # noqa: E402
from dataspace.jobs import service  # noqa: E402
from dataspace.jobs.models import Decision, Job, JobShard  # noqa: E402
from dataspace.jobs.queue import JobQueue  # noqa: E402
from dataspace.jobs.shards import unpack_subjects  # noqa: E402
from dataspace.keys import load_key_file  # noqa: E402
from dataspace.partners.models import Partner  # noqa: E402
from dataspace.principal import Principal  # noqa: E402
from dataspace.settings import Settings  # noqa: E402
from dataspace.subjects.models import Subject  # noqa: E402
from dataspace.tlog.models import TLogEntry  # noqa: E402

PG_ADMIN_URL = os.environ.get("DATASPACE_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
DATASPACE = Path(sys.executable).parent / "dataspace"
BULK_TABLES = ("subjects", "subject_keys", "subject_profiles", "consent_grants")
SWEEP_SECONDS = 1.0  # the API replica's dispatch interval (dataspace.background)
POLL_SECONDS = 0.5
SAMPLE_SECONDS = 0.1  # memory of the workers and their children


# --- database ------------------------------------------------------------------------------------------
def _admin(sql: str) -> None:
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(sql))
    finally:
        admin.dispose()


def _safe(url: str) -> str:
    return Database(url).engine.url.render_as_string(hide_password=True)


def _generated(directory: Path, url: str, n: int) -> bool:
    """Whether ``url`` holds a complete generation for N made with the keys in ``directory``."""
    marker = directory / "database.json"
    if not (marker.exists() and (directory / "keys.json").exists()):
        return False
    if json.loads(marker.read_text()) != {"url": _safe(url), "n": n}:
        return False
    db = Database(url)
    try:
        with db.session() as s:
            return s.scalar(select(func.max(Subject.id))) == n
    except Exception:  # noqa: BLE001 - no schema, no database: generate
        return False
    finally:
        db.dispose()


def vacuum_analyze(url: str) -> None:
    db = Database(url)
    try:
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql(f"VACUUM (ANALYZE) {', '.join(BULK_TABLES)}")
    finally:
        db.dispose()


def tidy_kept(url: str) -> None:
    """A reused database: cancel jobs an interrupted earlier run left queued or running, and abandon point
    credits left pending, so this run's workers do not spend its time on them."""
    db = Database(url)
    try:
        with db.transaction() as s:
            partner_id = s.scalar(select(Partner.id).where(Partner.key == PARTNER))
            partner = Principal(
                subject="bench", role="partner", client_id="bench", partner_id=partner_id, partner_key=PARTNER
            )
            live = s.scalars(select(Job.id).where(Job.status.in_(("queued", "running")))).all()
            for old in live:
                service.cancel(s, principal=partner, job_id=old)
            pending = s.execute(update(Job).where(Job.points_pending.is_(True)).values(points_pending=False)).rowcount
        if live or pending:
            print(f"reused database: cancelled earlier jobs {list(live)}, abandoned the points of {pending} job(s)")
    finally:
        db.dispose()


def set_k(url: str, job_id: int, k: int) -> None:
    """The job's contract with another k_min (read when the shards are claimed)."""
    db = Database(url)
    try:
        with db.transaction() as s:
            contract_id = s.scalar(select(Job.contract_id).where(Job.id == job_id))
            s.execute(update(Contract).where(Contract.id == contract_id).values(k_min=k))
    finally:
        db.dispose()


def database_sizes(db: Database) -> tuple[int, list[tuple[str, int]]]:
    with db.session() as s:
        total = int(s.scalar(text("SELECT pg_database_size(current_database())")) or 0)
        tables = s.execute(
            text(
                "SELECT c.relname, pg_total_relation_size(c.oid) FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE c.relkind = 'r' AND n.nspname = 'public' ORDER BY 2 DESC LIMIT 8"
            )
        ).all()
    return total, [(str(name), int(size)) for name, size in tables]


# --- workers -------------------------------------------------------------------------------------------
def _status_kib(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


@dataclass
class Peaks:
    main_kib: int = 0  # the worker process itself (VmHWM)
    child_kib: int = 0  # its largest child: decrypt pool process, bubblewrap sandbox (VmHWM)
    tree_kib: int = 0  # the worker and all its descendants together (sum of VmRSS at one poll)


@dataclass
class Workers:
    env: dict[str, str]
    log_dir: Path
    threads: int
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    peaks: list[Peaks] = field(default_factory=list)
    # (when, worker index) each time a worker had a child process (decrypt pool, sandbox): tells which
    # worker ran a shard whose "shard done" record is not logged yet.
    busy: list[tuple[datetime, int]] = field(default_factory=list)
    _logs: list[IO[bytes]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _sampler: threading.Thread | None = None

    def start(self, count: int) -> None:
        for i in range(count):
            log = (self.log_dir / f"worker{i}.log").open("wb")
            self._logs.append(log)
            argv = [str(DATASPACE), "worker", "--threads", str(self.threads)]
            self.procs.append(subprocess.Popen(argv, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT))
            self.peaks.append(Peaks())
        self._sampler = threading.Thread(target=self._sample_loop, name="rss-sampler", daemon=True)
        self._sampler.start()

    def log(self, i: int) -> str:
        return (self.log_dir / f"worker{i}.log").read_text(errors="replace")

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        for i, proc in enumerate(self.procs):
            while '"job worker started"' not in self.log(i):
                if proc.poll() is not None:
                    raise RuntimeError(f"worker {i} exited ({proc.returncode}):\n{self.log(i)[-3000:]}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"worker {i} did not start:\n{self.log(i)[-3000:]}")
                time.sleep(0.1)

    def alive(self) -> int:
        return sum(p.poll() is None for p in self.procs)

    def _sample_loop(self) -> None:
        while not self._stop.wait(SAMPLE_SECONDS):
            self.sample()

    def sample(self) -> None:
        """Peak memory of each worker and its descendants (VmHWM is each process's own high-water mark)."""
        for i, (proc, peak) in enumerate(zip(self.procs, self.peaks, strict=True)):
            if proc.poll() is not None:
                continue
            peak.main_kib = max(peak.main_kib, _status_kib(proc.pid, "VmHWM:"))
            tree = _status_kib(proc.pid, "VmRSS:")
            stack = _report.children(proc.pid)
            if stack:
                self.busy.append((utcnow(), i))
            while stack:
                pid = stack.pop()
                peak.child_kib = max(peak.child_kib, _status_kib(pid, "VmHWM:"))
                tree += _status_kib(pid, "VmRSS:")
                stack.extend(_report.children(pid))
            peak.tree_kib = max(peak.tree_kib, tree)

    def busy_during(self, start: datetime | None, end: datetime | None) -> list[int]:
        if start is None or end is None:
            return []
        return sorted({i for when, i in self.busy if start <= when <= end})

    def stop(self, grace: float) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds (a worker still crediting points finishes its
        batch first; the rest stays pending, as after any crash)."""
        self._stop.set()
        if self._sampler is not None:
            self._sampler.join()
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in self.procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        for log in self._logs:
            log.close()

    def events(self, job_id: int) -> list[tuple[int, dict[str, object]]]:
        """(worker index, JSON log record) of this job's plan and shard records."""
        out = []
        for i in range(len(self.procs)):
            for line in self.log(i).splitlines():
                if not line.startswith("{"):
                    continue
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                if rec.get("job_id") == job_id and rec.get("msg") in ("job planned", "shard done"):
                    out.append((i, rec))
        return out


def delete_queues(broker_url: str, queue_name: str) -> None:
    try:
        conn = pika.BlockingConnection(pika.URLParameters(broker_url))
        channel = conn.channel()
        for name in (queue_name, f"{queue_name}.DQ", f"{queue_name}.XQ"):
            channel.queue_delete(name)
        conn.close()
    except pika.exceptions.AMQPError:
        print(f"warning: could not delete the broker queue {queue_name}")


# --- run -----------------------------------------------------------------------------------------------
def _usage_entries(db: Database) -> int:
    with db.session() as s:
        return int(s.scalar(select(func.count()).select_from(TLogEntry).where(TLogEntry.log == "usage")) or 0)


def _seconds(a: datetime | None, b: datetime | None) -> float:
    return (b - a).total_seconds() if a is not None and b is not None else float("nan")


def _overlap(a: JobShard, b: JobShard, ends: dict[int, datetime | None]) -> bool:
    """Whether two shards' runs overlapped in time (then one worker thread cannot have run both)."""
    a0, a1, b0, b1 = a.started_at, ends[a.index], b.started_at, ends[b.index]
    if a.index == b.index or a0 is None or a1 is None or b0 is None or b1 is None:
        return False
    return a0 < b1 and b0 < a1


def _mib(kib: int) -> str:
    return f"{kib / 1024:,.0f} MiB"


def run(args: argparse.Namespace, url: str, directory: Path, job_id: int) -> tuple[bool, float]:
    """Workers, dispatch, wait, report. Returns whether every check passed, and the job's end-to-end seconds."""
    queue_name = f"dataspace-bench-{uuid.uuid4().hex[:12]}"
    log_dir = directory / "logs"
    log_dir.mkdir(exist_ok=True)
    data_dir = Path(tempfile.mkdtemp(prefix="dataspace-shards-"))
    key_file = directory / "keys.json"
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "DATASPACE_DATA_DIR": str(data_dir),
        "DATASPACE_DATABASE_URL": url,
        "DATASPACE_KEY_FILE": str(key_file),
        "DATASPACE_EPOCH_DIR": str(directory / "epochs"),  # the epoch keys generate() sealed under
        "DATASPACE_BROKER_URL": args.broker_url,
        "DATASPACE_BROKER_QUEUE": queue_name,
        "DATASPACE_JOB_SHARD_SUBJECTS": str(args.shard_subjects),
        "DATASPACE_LOG_LEVEL": "INFO",
    }
    settings = Settings(
        data_dir=data_dir,
        epoch_dir=directory / "epochs",
        database_url=url,
        broker_url=args.broker_url,
        broker_queue=queue_name,
    )
    db = Database(url)
    ctx = Context(settings=settings, db=db, keys=load_key_file(key_file))
    queue = JobQueue(ctx.jobs)
    workers = Workers(env=env, log_dir=log_dir, threads=args.threads)
    try:
        usage_before = _usage_entries(db)
        workers.start(args.workers)
        workers.wait_ready()
        print(f"workers: {args.workers} x `dataspace worker --threads {args.threads}` on queue {queue_name}")
        dispatched_at = utcnow()
        t0 = time.perf_counter()
        deadline = time.monotonic() + args.timeout
        next_sweep = 0.0
        job_done: float | None = None
        points_done: float | None = None
        while True:
            if time.monotonic() >= next_sweep:
                queue.dispatch()  # the API replica's outbox sweep: the plan message (and any unsent shard)
                next_sweep = time.monotonic() + SWEEP_SECONDS
            with db.session() as s:
                status, pending = s.execute(select(Job.status, Job.points_pending).where(Job.id == job_id)).one()
            if status in ("succeeded", "failed", "cancelled") and job_done is None:
                job_done = time.perf_counter() - t0
            if job_done is not None and not (args.points and status == "succeeded" and pending):
                points_done = None if pending else time.perf_counter() - t0
                break
            if workers.alive() == 0:
                print("error: every worker exited")
                break
            if time.monotonic() > deadline:
                print(f"error: job {job_id} still {status} (points pending: {pending}) after {args.timeout:.0f} s")
                break
            time.sleep(POLL_SECONDS)
    finally:
        workers.stop(grace=15.0)
        queue.close()
        delete_queues(args.broker_url, queue_name)
        shutil.rmtree(data_dir, ignore_errors=True)

    with db.session() as s:
        job = s.get(Job, job_id)
        assert job is not None
        shards = s.scalars(select(JobShard).where(JobShard.job_id == job_id).order_by(JobShard.index)).all()
        decided = np.fromiter(
            s.scalars(
                select(Decision.subject_id)
                .where(Decision.job_id == job_id)
                .order_by(Decision.subject_id)
                .execution_options(yield_per=100_000)
            ),
            dtype=np.int64,
        )
        planned_at = s.scalar(
            select(TLogEntry.created_at).where(
                TLogEntry.log == "audit",
                TLogEntry.action == "job.planned",
                TLogEntry.entry.contains(f'"job:{job_id}"'),
            )
        )
    ledger = _usage_entries(db) - usage_before
    events = workers.events(job_id)
    planner = next((f"worker {i}" for i, rec in events if rec["msg"] == "job planned"), "?")
    ran_by: dict[int, list[int]] = {}
    done_at: dict[int, datetime] = {}  # when the worker's run_shard returned: the store committed
    for i, rec in events:
        if rec["msg"] == "shard done" and rec.get("status") == "succeeded":
            ran_by.setdefault(int(str(rec["shard"])), []).append(i)
            done_at.setdefault(int(str(rec["shard"])), datetime.fromisoformat(str(rec["ts"])))
    # A shard's finished_at is stamped when its storing transaction begins; its worker logs "shard done" after
    # crediting the shard's points and finishing the job (which stamps the job).
    ends: dict[int, datetime | None] = {}
    for sh in shards:
        known = [t for t in (done_at.get(sh.index), job.finished_at if job.status == "succeeded" else None) if t]
        ends[sh.index] = min(known) if known else sh.finished_at

    stats = job.stats
    eligible = int(job.plan.get("eligible", -1))
    decisions = int(decided.size)
    end_to_end = _seconds(dispatched_at, job.finished_at)
    print(f"\njob {job_id}: {job.status}" + (f" ({job.error})" if job.error else ""))
    print(f"  dispatch -> claimed by a worker    {_seconds(dispatched_at, job.started_at):8.2f} s")
    print(
        f"  plan                               {_seconds(job.started_at, planned_at):8.2f} s  ({planner}: consent "
        f"of every subject, quantile cut points over {job.plan.get('sampled', 0):,}, split)"
    )
    print(f"  shards: {len(shards)} of ~{args.shard_subjects:,} eligible subjects ({eligible:,} eligible in all)")
    ok_shards = [sh for sh in shards if sh.status == "succeeded"]
    spans = [_seconds(sh.started_at, ends[sh.index]) for sh in ok_shards]
    stores = [_seconds(sh.finished_at, ends[sh.index]) for sh in ok_shards]
    waits = [_seconds(sh.dispatched_at, sh.started_at) for sh in shards if sh.dispatched_at and sh.started_at]
    if spans:
        print(
            f"  per shard (claim -> stored, points credited): min {min(spans):.2f} s, "
            f"median {statistics.median(spans):.2f} s, max {max(spans):.2f} s; "
            f"sum {sum(spans):.1f} s over {args.workers} workers"
        )
        print(
            f"    of which storing (re-check, decisions, ledger) + crediting the shard's points: median "
            f"{statistics.median(stores):.2f} s, max {max(stores):.2f} s"
        )
    if waits:
        print(f"  shard queue wait (sent -> claimed): median {statistics.median(waits):.2f} s, max {max(waits):.2f} s")
    for sh in shards:
        who = ", ".join(f"worker {i}" for i in ran_by.get(sh.index, []))
        if not who:  # the finishing worker logs its last shard only after crediting the points
            # One shard at a time per worker: not one that was running another shard meanwhile.
            free = set(range(args.workers))
            for other in shards:
                if other.index in ran_by and args.threads == 1 and _overlap(sh, other, ends):
                    free -= set(ran_by[other.index])
            seen = [i for i in workers.busy_during(sh.started_at, ends[sh.index]) if i in free]
            guess = sorted(free) if len(free) == 1 else seen
            who = f"worker {guess[0]} (inferred: not logged yet)" if len(guess) == 1 else "?"
        end = ends[sh.index]
        print(
            f"    shard {sh.index:>3}: {sh.status:<9} attempt {sh.attempt}  {sh.size:>9,} subjects  "
            f"{_seconds(sh.started_at, end):7.2f} s (store {_seconds(sh.finished_at, end):5.2f} s)  {who}"
        )
    observed = f"{job_done:.1f} s" if job_done is not None else "-"
    print(
        f"end to end (dispatch -> job {job.status}): {end_to_end:.2f} s (seen by polling at {observed}) for "
        f"{eligible:,} eligible subjects: {eligible / end_to_end:,.0f} subjects/s"
    )
    if job_done is not None and points_done is not None:
        print(f"usage points: all credited {points_done - job_done:.1f} s after the job (by the finishing worker)")
    elif job.points_pending:
        print("usage points: still being credited when the workers were stopped (pass --points to wait and time them)")
    print(f"job stats: {json.dumps(stats)}")
    print(f"decisions stored: {decisions:,}; usage-ledger entries added: {ledger:,} (queued for the sequencer)")
    for i, peak in enumerate(workers.peaks):
        print(
            f"peak RSS worker {i}: process {_mib(peak.main_kib)}, largest child {_mib(peak.child_kib)}, "
            f"process + children {_mib(peak.tree_kib)}"
        )

    # Every eligible subject is in exactly one shard, and decided there unless k-anonymity suppressed its
    # row (or its profile was unreadable, or consent was withdrawn since the plan: neither happens here).
    planned = np.concatenate([unpack_subjects(bytes(sh.subjects)) for sh in shards]) if shards else decided[:0]
    suppressed = int(stats.get("suppressed_rows", 0))
    unreadable = int(stats.get("unreadable", 0))
    withdrawn = int(stats.get("dropped_withdrawn", 0))
    problems = []
    if job.status != "succeeded":
        problems.append(f"job is {job.status}")
    if not shards or any(sh.status != "succeeded" for sh in shards):
        problems.append(f"shards not succeeded: {[sh.index for sh in shards if sh.status != 'succeeded']}")
    if planned.size != eligible or (planned.size > 1 and not bool(np.all(np.diff(planned) > 0))):
        problems.append("the shards do not partition the eligible subjects")
    if not bool(np.isin(decided, planned).all()):
        problems.append("a decision for a subject outside the plan")
    if decisions != int(stats.get("decisions", -1)):
        problems.append(f"decisions {decisions} != job stats {stats.get('decisions')}")
    if decisions != eligible - suppressed - unreadable - withdrawn or unreadable or withdrawn:
        problems.append(
            f"eligible {eligible} != decisions {decisions} + suppressed {suppressed} + unreadable {unreadable} "
            f"+ withdrawn {withdrawn}"
        )
    if ledger != decisions:
        problems.append(f"ledger entries {ledger} != decisions {decisions}")
    if args.points and job.points_pending:
        problems.append("usage points still pending")
    if job.points_pending and args.keep:
        # Otherwise the next run's workers would spend their time crediting this bench job's leftovers.
        with db.transaction() as s:
            s.execute(update(Job).where(Job.id == job_id).values(points_pending=False))
        print(f"kept database: the remaining point credits of job {job_id} are abandoned (points_pending cleared)")
    total, tables = database_sizes(db)
    print(f"database size: {total / 2**20:,.0f} MiB ({total / max(1, args.n):,.0f} bytes per subject)")
    print("  largest tables: " + ", ".join(f"{name} {size / 2**20:,.0f} MiB" for name, size in tables))
    db.dispose()
    if problems:
        print("FAILED: " + "; ".join(problems) + f" (worker logs in {log_dir})")
        return False, end_to_end
    exact = "decisions == eligible" if decisions == eligible else f"decisions == eligible - {suppressed} k-suppressed"
    print(
        f"OK: job and its {len(shards)} shards succeeded; shards partition the eligible; {exact}; 1 ledger entry each"
    )
    return True, end_to_end


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=200_000, help="subjects")
    parser.add_argument("--workers", type=int, default=2, help="`dataspace worker` processes")
    parser.add_argument("--threads", type=int, default=1, help="shards each worker runs at once")
    parser.add_argument("--shard-subjects", type=int, default=250_000, help="target eligible subjects per shard")
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "dataspace-bench-shards")
    parser.add_argument("--database-url", help="default: a PostgreSQL database on 127.0.0.1 created for the run")
    parser.add_argument("--keep", action="store_true", help="keep the database (and reuse it for the same N)")
    parser.add_argument("--broker-url", default="amqp://guest:guest@127.0.0.1:5672/")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds from dispatch to the job's end")
    parser.add_argument("--points", action="store_true", help="also wait for (and time) the usage-point credits")
    parser.add_argument("--k", type=int, help="the contract's k_min (default: bench/jobs.py's, 10)")
    parser.add_argument(
        "--no-speedup",
        action="store_true",
        help="skip the baseline: by default the same job first runs on 1 worker, for the speed-up of --workers",
    )
    args = parser.parse_args()
    print(
        f"{args.n:,} subjects ({GRANT_SHARE:.0%} consenting), {args.workers} workers, shards of "
        f"{args.shard_subjects:,}; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start"
    )

    # The keys (and worker logs) live with the database they belong to: a kept database's under --dir/N,
    # a given URL's under --dir/N-<hash of the URL>, a throw-away database's in a directory of its own.
    args.dir.mkdir(parents=True, exist_ok=True)
    created: str | None = None  # a database this run created and drops at the end
    url = args.database_url
    if url is not None:
        directory = args.dir / f"{args.n}-{hashlib.sha256(_safe(url).encode()).hexdigest()[:8]}"
    elif args.keep:
        url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/dataspace_bench_shards_{args.n}"
        directory = args.dir / str(args.n)
    else:
        created = f"dataspace_bench_shards_{uuid.uuid4().hex[:10]}"
        url = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + created
        directory = Path(tempfile.mkdtemp(prefix=f"{args.n}-", dir=args.dir))
    directory.mkdir(parents=True, exist_ok=True)
    ok = False
    try:
        t_setup = time.perf_counter()
        timings: dict[str, float] = {}
        if _generated(directory, url, args.n):
            print(f"database: reusing {_safe(url)} (generated earlier for N = {args.n:,}, keys in {directory})")
            tidy_kept(url)
        else:
            t = time.perf_counter()
            if args.database_url is None:
                _admin(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')
                _admin(f'CREATE DATABASE "{url.rsplit("/", 1)[1]}"')
            (directory / "database.json").unlink(missing_ok=True)
            generate(args.n, directory, url)  # schema, catalog, partner, purpose, profiles + grants (COPY)
            (directory / "database.json").write_text(json.dumps({"url": _safe(url), "n": args.n}))
            timings["database + schema + bulk write"] = time.perf_counter() - t
            t = time.perf_counter()
            vacuum_analyze(url)
            timings["vacuum analyze"] = time.perf_counter() - t

        def new_job() -> int:
            job_id = prepare_job(directory, url)
            if args.k is not None:
                set_k(url, job_id, args.k)
            return job_id

        t = time.perf_counter()
        job_id = new_job()
        timings["contract + model + job"] = time.perf_counter() - t
        setup = time.perf_counter() - t_setup
        print(f"setup: {setup:.1f} s (" + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()) + ")")
        baseline: float | None = None
        one_ok = True
        if args.workers > 1 and not args.no_speedup:
            # First (so the database it grows slows the measured run, not the baseline): the same job, 1 worker.
            print(f"\n--- baseline: a job of the same contract terms on 1 worker (then {args.workers} workers) ---")
            one_ok, baseline = run(argparse.Namespace(**{**vars(args), "workers": 1}), url, directory, job_id)
            job_id = new_job()
            print(f"\n--- the job on {args.workers} workers ---")
        ok, seconds = run(args, url, directory, job_id)
        ok = ok and one_ok
        if baseline is not None and ok:
            print()
            _report.compare(
                f"job end to end on {args.workers} workers (subjects/s)",
                args.n / seconds,
                args.n / baseline,
                unit="subjects/s",
                better="higher",
                target=1.6 if args.workers == 2 else None,
                floor_name="on 1 worker",
            )
            _report.value(f"speed-up of {args.workers} workers over 1", baseline / seconds, unit="x", target=">= 1.6x")
        _report.peak_rss("peak RSS (this process; workers' above)")
    finally:
        if created is not None:
            _admin(f'DROP DATABASE IF EXISTS "{created}" WITH (FORCE)')
            if ok:  # a failed run keeps its worker logs
                shutil.rmtree(directory, ignore_errors=True)
        elif args.database_url is None:
            print(f"database kept: {_safe(url)} (drop it with: DROP DATABASE {url.rsplit('/', 1)[1]})")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
