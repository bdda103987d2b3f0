"""Background work of one server process: periodic tasks on daemon threads.

- sequence the tamper-evident logs (every 0.25 s): appends are queued in the request's transaction and
  placed into the Merkle tree in batches, with a signed checkpoint (a replica steps aside while another
  one sequences);
- confirm remembered "token not revoked" answers against the tokens revoked since the last sweep;
- deliver webhooks (every 1 s) and business events under their contracts (every 0.5 s, each event is also
  sent at once after it is published; see ``dataspace.events.delivery``; with a broker configured the sweep
  publishes them to RabbitMQ and this process consumes them too, see ``dataspace.events.broker``);
- materialize consent expiry (every 60 s; evaluation never waits for it, it checks validity times);
- expire points lots (every 5 min);
- submit each log's latest checkpoint to the configured witnesses and keep their cosignatures (every 1 s;
  a witness that is down is reported, never waited for);
- pick up rotated keys from the key file (every 5 s; ``dataspace keys rotate`` needs no restart);
- retire the epoch keys of erased subjects' buckets (every ``DATASPACE_EPOCH_RETIRE_SECONDS``, 60 s: after
  it no earlier database backup can open them; see ``dataspace.vault``);
- run queued partner jobs (the embedded worker) or, with a broker configured, send them to the broker's
  workers (an outbox sweep, see ``dataspace.jobs.queue``); recover jobs and shards whose process died
  (stale heartbeat).

Every task is idempotent and safe to run in several processes at once (they serialize on the database), so
any number of API replicas may run it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from dataspace.context import Context

log = logging.getLogger("dataspace.background")


@dataclass
class Periodic:
    name: str
    interval: float
    run: Callable[[], object]
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.run()
            except Exception:
                log.exception("background task failed", extra={"task": self.name})

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)


def tasks(ctx: Context) -> list[Periodic]:
    from dataspace.auth.tokens import RevocationWatch
    from dataspace.compliance.controller import receipt_policy
    from dataspace.consents import changes
    from dataspace.db import utcnow
    from dataspace.events import delivery as business_events
    from dataspace.events.service import deliver_due
    from dataspace.points import ledger
    from dataspace.tlog import LOGS
    from dataspace.tlog.log import sequence_unless_busy

    revocations = RevocationWatch(ctx.settings, ctx.db)

    def sequence_logs() -> None:
        for name in LOGS:
            sequence_unless_busy(ctx.settings, ctx.db, ctx.keys, name)

    def expire_consents() -> None:
        with ctx.db.transaction() as session:
            changes.expire_due(session, signer=ctx.keys.signing_key, policy=receipt_policy(ctx.settings))
        from dataspace.linkage.keys import PartnerKeys
        from dataspace.linkage.service import destroy_shredded, reconcile, shred_ended

        partner_keys = PartnerKeys.of(ctx.vault)
        with ctx.db.transaction() as session:  # partner columns go when their contract ends
            shred_ended(session, keys=partner_keys)
        with ctx.db.transaction() as session:  # the keys of runs shredded without them (a revocation) go too
            destroy_shredded(session, partner_keys)
            reconcile(session, partner_keys)

    def prune_login_attempts() -> None:
        from dataspace.auth import login

        with ctx.db.transaction() as session:
            login.prune(session)

    def expire_points() -> None:
        with ctx.db.transaction() as session:
            ledger.expire_points(session, now=utcnow())

    def retire_epochs() -> None:
        from dataspace.subjects.epochs import retire

        retire(ctx.db, ctx.vault)

    def recover_jobs() -> None:
        jobs = ctx.jobs
        jobs.recover()
        jobs.credit_pending()

    if ctx.settings.broker_url:
        from dataspace.jobs.queue import JobQueue

        queue = JobQueue(ctx.jobs)
        job_work = Periodic("job-dispatch", 1.0, queue.dispatch)
    else:
        job_work = Periodic("job-worker", 1.0, lambda: ctx.jobs.run_queued())  # noqa: PLW0108 -- a fresh engine per run sees reloaded keys

    ctx.jobs.recover()  # at start-up: jobs a previous process left running are resumed or failed
    extra: list[Periodic] = []

    def deliver_business_events() -> object:
        return business_events.deliver_due(ctx.db, ctx.keys)

    business_event_work: Callable[[], object] = deliver_business_events
    if ctx.settings.broker_url:  # business events through RabbitMQ too (dataspace.events.broker)
        from dataspace.events.broker import EventBroker, queue_name

        event_broker = EventBroker(
            ctx.db, ctx.keys, url=ctx.settings.broker_url, queue=queue_name(ctx.settings.broker_queue)
        )
        business_event_work = event_broker.dispatch
        extra.append(Periodic("business-event-consumer", 0.2, event_broker.drain))
    if ctx.settings.witness_urls:
        from dataspace.tlog.cosigning import witnesses_for

        def cosign_logs() -> None:
            for name in LOGS:
                witnesses_for(ctx.settings).cosign_latest(ctx.db, name)

        extra.append(Periodic("witness-cosigning", 1.0, cosign_logs))
    return [
        *extra,
        Periodic("tlog-sequencer", 0.25, sequence_logs),
        job_work,
        Periodic("job-recovery", 30.0, recover_jobs),
        Periodic("webhooks", 1.0, lambda: deliver_due(ctx.db, ctx.keys)),
        Periodic("business-events", 0.5, business_event_work),
        Periodic("consent-expiry", 60.0, expire_consents),
        Periodic("points-expiry", 300.0, expire_points),
        Periodic("login-attempts", 300.0, prune_login_attempts),
        Periodic("key-reload", 5.0, ctx.reload_keys),
        Periodic("epoch-retirement", ctx.settings.epoch_retire_seconds, retire_epochs),
        # Confirms the remembered "not revoked" answers (see auth.tokens.ActiveTokens) several times per bound.
        Periodic("token-revocations", max(0.25, ctx.settings.token_active_cache_seconds / 4), revocations.sweep),
    ]


class Background:
    def __init__(self, ctx: Context) -> None:
        self.tasks = tasks(ctx)

    def start(self) -> None:
        for task in self.tasks:
            task.start()

    def stop(self) -> None:
        for task in self.tasks:
            task.stop()
