"""Prometheus metrics of one process, and the scrape endpoint on its own bind address.

Two kinds of numbers:

- **process metrics** (counters and histograms, prefix ``dataspace_``): requests per route template and status,
  group-commit batches, job phases and outcomes, sandbox starts and failures, webhook deliveries, log
  sequencing. Each process counts its own; the recording helpers below are what the instrumented code calls
  (one line at each point, nothing else to import).
- **database gauges** (prefix ``dataspace_db_``): queue and outbox depths, log sizes and sequencing lag,
  privacy budget spent per partner. They describe the deployment, not the process, so they are read from
  the database at scrape time (a few indexed counts) and every replica reports the same values: aggregate
  them with ``max``, not ``sum``.

Labels come from small fixed sets only (route templates, never raw paths; reasons from the sandbox's fixed
vocabulary; partner keys), so a hostile caller cannot grow the series count. Nothing here holds a secret
or a customer value.

The endpoint is never part of the public API: ``serve_metrics`` starts it on ``DATASPACE_METRICS_BIND`` (an
address the operator firewalls, e.g. the pod's internal interface), and it is off when that is unset. With
``PROMETHEUS_MULTIPROC_DIR`` set, the values of every process writing to that directory are merged
(prometheus-client's multiprocess mode); otherwise each process is scraped on its own bind.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from dataspace.errors import ConfigurationError

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from dataspace.context import Context
    from dataspace.settings import Settings

log = logging.getLogger("dataspace.metrics")

_FAST = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_SLOW = (0.01, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0)

HTTP_REQUESTS = Counter(
    "dataspace_http_requests",
    "HTTP requests answered, by route template, method and status.",
    ["route", "method", "status"],
)
HTTP_LATENCY = Histogram(
    "dataspace_http_request_duration_seconds",
    "Time to answer a request, by route template.",
    ["route", "method"],
    buckets=_FAST,
)
GROUP_COMMIT_BATCH = Histogram(
    "dataspace_group_commit_batch_size",
    "Writes that shared one group-commit transaction.",
    ["committer"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000),
)
GROUP_COMMIT_WAIT = Histogram(
    "dataspace_group_commit_wait_seconds",
    "Time a write queued before its batch started.",
    ["committer"],
    buckets=_FAST,
)
GROUP_COMMIT_DURATION = Histogram(
    "dataspace_group_commit_batch_seconds",
    "Time one group-commit batch took, COMMIT included.",
    ["committer"],
    buckets=_FAST,
)
GROUP_COMMIT_RERUNS = Counter(
    "dataspace_group_commit_reruns",
    "Batches rolled back and run again (a write's own error or the database's).",
    ["committer"],
)
JOB_PHASE = Histogram(
    "dataspace_job_phase_seconds", "Time a job (or shard) spent in each phase.", ["phase"], buckets=_SLOW
)
JOB_OUTCOMES = Counter("dataspace_job_outcomes", "Jobs that reached an end state, by state.", ["status"])
SANDBOX_STARTS = Counter("dataspace_sandbox_starts", "Partner models started in the sandbox.")
SANDBOX_FAILURES = Counter(
    "dataspace_sandbox_failures",
    "Sandbox runs that ended in failure, by reason (kills, timeouts, bad output).",
    ["reason"],
)
WEBHOOK_DELIVERIES = Counter(
    "dataspace_webhook_deliveries", "Webhook delivery attempts by outcome (delivered, retry, dead).", ["outcome"]
)
WEBHOOK_LATENCY = Histogram(
    "dataspace_webhook_delivery_seconds", "Time a partner's endpoint took to answer a delivery.", buckets=_FAST
)
LOG_SEQUENCED = Counter("dataspace_log_sequenced_entries", "Log entries sequenced into the Merkle tree.", ["log"])
LOG_SEQUENCE_DURATION = Histogram(
    "dataspace_log_sequence_seconds",
    "Time one sequencing batch (tree update + signed checkpoint) took.",
    ["log"],
    buckets=_FAST,
)
# The sandbox's failure reasons are short texts from a fixed vocabulary, some with a detail appended
# ("killed by signal SIGSEGV", "output invalid: ..."): only the part before the detail becomes a label.
_REASON_PREFIXES = (
    "timeout",
    "output too large",
    "output invalid",
    "killed: cpu limit",
    "killed: cpu or memory limit",
    "killed by signal",
    "sandbox exited with status",
    "model rejected",
    "python module is not approved",
)


def _reason_label(reason: str) -> str:
    for prefix in _REASON_PREFIXES:
        if reason.startswith(prefix):
            return prefix
    return "other"


# --- what the instrumented code calls ------------------------------------------------------------------
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


# The labelled children per (route, method, status), looked up once: ``labels()`` costs more than the update.
_REQUEST_SERIES: dict[tuple[str, str, int], tuple[Any, Any]] = {}


def observe_request(route: str, method: str, status: int, seconds: float) -> None:
    if method not in _METHODS:
        method = "other"
    key = (route, method, status)
    series = _REQUEST_SERIES.get(key)
    if series is None:  # bounded: route templates x methods x statuses
        series = _REQUEST_SERIES[key] = (
            HTTP_REQUESTS.labels(route, method, str(status)),
            HTTP_LATENCY.labels(route, method),
        )
    series[0].inc()
    series[1].observe(seconds)


def observe_batch(committer: str, size: int, waits: Iterable[float], seconds: float) -> None:
    GROUP_COMMIT_BATCH.labels(committer).observe(size)
    wait = GROUP_COMMIT_WAIT.labels(committer)
    for w in waits:
        wait.observe(w)
    GROUP_COMMIT_DURATION.labels(committer).observe(seconds)


def batch_rerun(committer: str) -> None:
    GROUP_COMMIT_RERUNS.labels(committer).inc()


def observe_job_phases(timings: Mapping[str, float]) -> None:
    for phase, seconds in timings.items():
        JOB_PHASE.labels(phase).observe(seconds)


def job_finished(status: str) -> None:
    JOB_OUTCOMES.labels(status).inc()


def sandbox_started() -> None:
    SANDBOX_STARTS.inc()


def sandbox_failed(reason: str) -> None:
    SANDBOX_FAILURES.labels(_reason_label(reason)).inc()


def webhook_delivered(outcome: str, seconds: float | None) -> None:
    WEBHOOK_DELIVERIES.labels(outcome).inc()
    if seconds is not None:
        WEBHOOK_LATENCY.observe(seconds)


def log_sequenced(log_name: str, entries: int, seconds: float) -> None:
    if entries:
        LOG_SEQUENCED.labels(log_name).inc(entries)
        LOG_SEQUENCE_DURATION.labels(log_name).observe(seconds)


# --- the database gauges ---------------------------------------------------------------------------------
class DatabaseGauges(Collector):
    """Deployment-wide gauges read from the database at scrape time (one short read-only transaction).

    A database that does not answer yields ``dataspace_db_up 0`` and nothing else, so a scrape never fails
    and never hangs longer than the database's own timeouts."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def collect(self) -> Iterator[Any]:
        up = GaugeMetricFamily("dataspace_db_up", "Whether the database answered this scrape's reads.")
        try:
            families = self._read()
        except Exception:
            log.warning("metrics: database gauges unavailable", exc_info=True)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families
        writes = self.ctx._writes
        depth = GaugeMetricFamily("dataspace_group_commit_queue_depth", "Writes queued for this process's next batch.")
        depth.add_metric([], writes.queued() if writes is not None else 0)
        yield depth

    def _read(self) -> list[GaugeMetricFamily]:
        from sqlalchemy import func, select

        from dataspace.db import utcnow
        from dataspace.events.models import OutboxEvent, WebhookDelivery
        from dataspace.jobs.models import Job, PrivacyBudget
        from dataspace.partners.models import Partner
        from dataspace.tlog import LOGS
        from dataspace.tlog.models import TLogEntry, TLogHead

        size = GaugeMetricFamily("dataspace_db_log_size", "Sequenced entries in each Merkle log.", labels=["log"])
        queued = GaugeMetricFamily(
            "dataspace_db_log_queued_entries", "Entries appended but not yet sequenced.", labels=["log"]
        )
        lag = GaugeMetricFamily(
            "dataspace_db_log_sequencing_lag_seconds",
            "Age of the oldest entry not yet sequenced (0: none).",
            labels=["log"],
        )
        jobs = GaugeMetricFamily("dataspace_db_jobs", "Jobs by state.", labels=["status"])
        undispatched = GaugeMetricFamily(
            "dataspace_db_jobs_undispatched", "Queued jobs not yet sent to the broker (the job outbox)."
        )
        outbox = GaugeMetricFamily("dataspace_db_event_outbox", "Events not yet fanned out to subscriptions.")
        deliveries = GaugeMetricFamily(
            "dataspace_db_webhook_deliveries", "Webhook deliveries by state.", labels=["status"]
        )
        spent = GaugeMetricFamily(
            "dataspace_db_privacy_budget_spent_epsilon",
            "Epsilon spent of each partner's budget per purpose.",
            labels=["partner", "purpose"],
        )
        total = GaugeMetricFamily(
            "dataspace_db_privacy_budget_total_epsilon",
            "Each partner's privacy budget per purpose.",
            labels=["partner", "purpose"],
        )
        now = utcnow()
        with self.ctx.db.session() as session:
            sizes = dict(session.execute(select(TLogHead.log, TLogHead.size)).all())
            for name in LOGS:
                count, oldest = session.execute(
                    select(func.count(), func.min(TLogEntry.created_at)).where(
                        TLogEntry.log == name, TLogEntry.idx.is_(None)
                    )
                ).one()
                size.add_metric([name], sizes.get(name, 0))
                queued.add_metric([name], count)
                lag.add_metric([name], max(0.0, (now - oldest).total_seconds()) if oldest is not None else 0.0)
            by_status = dict(session.execute(select(Job.status, func.count()).group_by(Job.status)).all())
            for status in ("queued", "running", "succeeded", "failed", "cancelled"):
                jobs.add_metric([status], by_status.get(status, 0))
            undispatched.add_metric(
                [],
                session.scalar(select(func.count()).where(Job.status == "queued", Job.dispatched_at.is_(None))) or 0,
            )
            outbox.add_metric([], session.scalar(select(func.count()).where(OutboxEvent.fanned_out_at.is_(None))) or 0)
            for status in ("pending", "dead"):
                deliveries.add_metric(
                    [status], session.scalar(select(func.count()).where(WebhookDelivery.status == status)) or 0
                )
            rows = session.execute(
                select(
                    Partner.key,
                    PrivacyBudget.purpose_key,
                    PrivacyBudget.micro_epsilon_spent,
                    PrivacyBudget.micro_epsilon_total,
                ).join(Partner, Partner.id == PrivacyBudget.partner_id)
            ).all()
            for partner, purpose, micro_spent, micro_total in rows:
                spent.add_metric([partner, purpose], micro_spent / 1_000_000)
                total.add_metric([partner, purpose], micro_total / 1_000_000)
        return [size, queued, lag, jobs, undispatched, outbox, deliveries, spent, total]


# --- the endpoint --------------------------------------------------------------------------------------
def registry_for(ctx: Context | None) -> CollectorRegistry:
    """The registry a scrape reads: this process's metrics (or, in multiprocess mode, every process's
    from ``PROMETHEUS_MULTIPROC_DIR``), plus the database gauges when ``ctx`` is given."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry = CollectorRegistry()
        registry.register(_Delegate(REGISTRY))
    if ctx is not None:
        registry.register(DatabaseGauges(ctx))
    return registry


class _Delegate(Collector):
    """The default registry's collectors (process and platform metrics included) inside another registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterator[Any]:
        yield from self.registry.collect()


def parse_bind(bind: str) -> tuple[str, int]:
    host, _, port = bind.rpartition(":")
    return (host.strip("[]") or "127.0.0.1"), int(port)


def serve_metrics(ctx: Context | None, bind: str, settings: Settings | None = None) -> WSGIServer:
    """Start the scrape endpoint on ``bind`` (host:port; port 0 picks a free one) on a daemon thread, over
    TLS (and mutual TLS with a client CA) when ``settings`` name the files. Returns the server
    (``server_port``, ``shutdown()``)."""
    host, port = parse_bind(bind)
    tls: dict[str, Any] = {}
    if settings is not None and settings.metrics_tls_cert is not None:
        if settings.metrics_tls_key is None:
            raise ConfigurationError("DATASPACE_METRICS_TLS_CERT needs DATASPACE_METRICS_TLS_KEY")
        tls = {"certfile": str(settings.metrics_tls_cert), "keyfile": str(settings.metrics_tls_key)}
        if settings.metrics_client_ca is not None:
            tls.update(client_cafile=str(settings.metrics_client_ca), client_auth_required=True)
    elif settings is not None and settings.metrics_client_ca is not None:
        raise ConfigurationError("DATASPACE_METRICS_CLIENT_CA needs DATASPACE_METRICS_TLS_CERT and _KEY")
    server, _thread = start_http_server(port, addr=host, registry=registry_for(ctx), **tls)
    log.info("metrics endpoint listening", extra={"bind": f"{host}:{server.server_port}", "tls": bool(tls)})
    return server
