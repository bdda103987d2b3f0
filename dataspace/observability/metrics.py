"""Prometheus metrics of one process (the scrape endpoint and its database gauges: ``dataspace.http.metrics``).

Two kinds of numbers:

- **process metrics** (counters and histograms, prefix ``dataspace_``): requests per route template and status,
  group-commit batches, job phases and outcomes, sandbox starts and failures, webhook deliveries, log
  sequencing. Each process counts its own; the recording helpers below are what the instrumented code calls
  (one line at each point, nothing else to import).
- **database gauges** (prefix ``dataspace_db_``, in ``dataspace.http.metrics``): queue and outbox depths,
  log sizes and sequencing lag, privacy budget spent per partner. They describe the deployment, not the
  process, so they are read from the database at scrape time (a few indexed counts) and every replica
  reports the same values: aggregate them with ``max``, not ``sum``.

Labels come from small fixed sets only (route templates, never raw paths; reasons from the sandbox's fixed
vocabulary; partner keys), so a hostile caller cannot grow the series count. Nothing here holds a secret
or a customer value.

This module imports nothing of the domain: the services, the group committer and the log sequencer record
here, so it sits below them all.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client import Counter, Histogram

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
