"""Partner jobs through a broker: Dramatiq actors on RabbitMQ, for API replicas and ``dataspace worker``.

Two messages: ``plan_job(job_id)`` (sent by the API replicas' outbox sweep for each queued job) and
``run_shard(job_id, index)`` (sent by the planner for each shard, and by the sweep for shards it could not
send). RabbitMQ keeps both on durable queues as persistent messages, publishes are confirmed, and a
message is acknowledged only after its actor returned: a worker killed mid-shard (its connection drops)
gets its message redelivered to another worker at once, and a broker restart loses nothing. Duplicates
are expected and harmless: ``dataspace.jobs.engine`` claims atomically and stores each shard once.

A redelivered shard whose dead worker's heartbeat is still fresh is retried (``dramatiq.Retry``) after
half the stale period; by then the claim is stale and the retry takes the shard over.
"""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any

import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.middleware import Retries

from dataspace.errors import Conflict, InvalidInput, NotFound
from dataspace.jobs.engine import BeforeStore, JobEngine
from dataspace.jobs.lease import ShardBusy
from sandbox import Limits

log = logging.getLogger("dataspace.jobs.queue")

MAX_RETRIES = 100  # busy / transient-error retries of one message (backoff 0.5 s .. 30 s)


class JobQueue:
    """The broker, the two actors bound to this server's job engine, and the sweep that feeds them."""

    def __init__(
        self,
        engine: JobEngine,
        *,
        before_store: BeforeStore | None = None,
        limits: Limits | None = None,
    ) -> None:
        settings = engine.settings
        if not settings.broker_url:
            raise InvalidInput("no broker configured (DATASPACE_BROKER_URL)")
        self.engine = engine
        self.before_store = before_store
        self.limits = limits
        # Only the Retries middleware: TimeLimit and Shutdown would raise inside a running storing
        # transaction; a shard's claim heartbeat is the liveness signal instead.
        self.broker = RabbitmqBroker(
            url=settings.broker_url,
            confirm_delivery=True,
            middleware=[Retries(max_retries=MAX_RETRIES, min_backoff=500, max_backoff=30_000)],
        )
        queue = settings.broker_queue
        self._plan: dramatiq.Actor[[int], None] = dramatiq.Actor(
            self._run_plan, broker=self.broker, actor_name="plan_job", queue_name=queue, priority=0, options={}
        )
        self._shard: dramatiq.Actor[[int, int], None] = dramatiq.Actor(
            self._run_shard, broker=self.broker, actor_name="run_shard", queue_name=queue, priority=0, options={}
        )

    # --- senders (API replicas and planners) ---
    def send_plan(self, job_id: int) -> None:
        self._plan.send(job_id)

    def send_shard(self, job_id: int, index: int) -> None:
        self._shard.send(job_id, index)

    def dispatch(self, **kw: Any) -> dict[str, list[Any]]:
        """One outbox sweep (the API replicas' background task)."""
        return self.engine.dispatch_pending(send_plan=self.send_plan, send_shard=self.send_shard, **kw)

    # --- actors (workers) ---
    def _run_plan(self, job_id: int) -> None:
        try:
            plan = self.engine.plan_job(job_id)
        except (Conflict, NotFound):
            return  # planned or claimed already (a duplicate message), or gone
        log.info("job planned", extra={"job_id": job_id, "status": plan.status, "shards": plan.shards})
        if plan.status == "running":
            self.engine.send_planned(job_id, self.send_shard)

    def _run_shard(self, job_id: int, index: int) -> None:
        try:
            result = self.engine.run_shard(job_id, index, before_store=self.before_store, limits=self.limits)
        except ShardBusy as exc:
            delay = max(500, int(self.engine.settings.job_stale_seconds * 500))
            raise dramatiq.Retry(str(exc), delay=delay) from None
        except NotFound:
            return
        log.info(
            "shard done",
            extra={"job_id": job_id, "shard": index, "status": result.status, "job_status": result.job_status},
        )

    def worker(self, threads: int = 2) -> dramatiq.Worker:
        worker = dramatiq.Worker(self.broker, worker_threads=threads)
        # One message in flight per thread: shards are long, so none should wait behind another on a busy
        # worker while an idle worker could take it.
        worker.queue_prefetch = threads
        return worker

    def close(self) -> None:
        self.broker.close()


def serve(
    engine: JobEngine,
    *,
    threads: int = 2,
    before_store: BeforeStore | None = None,
    stop: threading.Event | None = None,
) -> None:
    """Run job actors until SIGTERM / SIGINT (or ``stop``). Also sweeps like an API replica (recovery and
    dispatch), so a deployment of workers alone still finishes every job."""
    settings = engine.settings
    queue = JobQueue(engine, before_store=before_store)
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    worker = queue.worker(threads)
    worker.start()
    log.info("job worker started", extra={"queue": settings.broker_queue, "threads": threads})
    sweep_every = max(1.0, min(30.0, settings.job_stale_seconds / 2))
    try:
        while not stop.wait(sweep_every):
            try:
                engine.recover()
                queue.dispatch()
                engine.credit_pending()
            except Exception:  # the database may be briefly away; the next sweep retries
                log.warning("worker sweep failed", exc_info=True)
    finally:
        worker.stop()
        queue.close()
