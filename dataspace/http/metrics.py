"""The Prometheus scrape endpoint: prometheus-client's own small HTTP server on its own bind address, serving
this process's metrics (``dataspace.observability.metrics``) and the deployment-wide database gauges.

The endpoint is never part of the public API: ``serve_metrics`` starts it on ``DATASPACE_METRICS_BIND`` (an
address the operator firewalls, e.g. the pod's internal interface), and it is off when that is unset. With
``PROMETHEUS_MULTIPROC_DIR`` set, the values of every process writing to that directory are merged
(prometheus-client's multiprocess mode); otherwise each process is scraped on its own bind. The database
gauges read the domain's tables, so they live here at the edge, not beside the counters the domain records.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import REGISTRY, CollectorRegistry, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from dataspace.errors import ConfigurationError

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from dataspace.db import Database
    from dataspace.settings import Settings

log = logging.getLogger("dataspace.metrics")


# --- the database gauges ---------------------------------------------------------------------------------
class DatabaseGauges(Collector):
    """Deployment-wide gauges read from the database at scrape time (one short read-only transaction).

    A database that does not answer yields ``dataspace_db_up 0`` and nothing else, so a scrape never fails
    and never hangs longer than the database's own timeouts."""

    def __init__(self, db: Database, queued: Callable[[], int] | None = None) -> None:
        self.db = db
        self.queued = queued  # how many writes wait for this process's next group commit

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
        depth = GaugeMetricFamily("dataspace_group_commit_queue_depth", "Writes queued for this process's next batch.")
        depth.add_metric([], self.queued() if self.queued is not None else 0)
        yield depth

    def _read(self) -> list[GaugeMetricFamily]:
        from sqlalchemy import func, select

        from dataspace.agreements.models import PrivacyBudget
        from dataspace.db import utcnow
        from dataspace.events.models import OutboxEvent, WebhookDelivery
        from dataspace.jobs.models import Job
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
        with self.db.session() as session:
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
def registry_for(db: Database | None, queued: Callable[[], int] | None = None) -> CollectorRegistry:
    """The registry a scrape reads: this process's metrics (or, in multiprocess mode, every process's
    from ``PROMETHEUS_MULTIPROC_DIR``), plus the database gauges when ``db`` is given (``queued``: the
    group-commit queue depth of this process)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry = CollectorRegistry()
        registry.register(_Delegate(REGISTRY))
    if db is not None:
        registry.register(DatabaseGauges(db, queued))
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


def serve_metrics(
    db: Database | None, bind: str, settings: Settings | None = None, *, queued: Callable[[], int] | None = None
) -> WSGIServer:
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
    server, _thread = start_http_server(port, addr=host, registry=registry_for(db, queued), **tls)
    log.info("metrics endpoint listening", extra={"bind": f"{host}:{server.server_port}", "tls": bool(tls)})
    return server
