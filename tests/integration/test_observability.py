"""Operations: Prometheus metrics on their own bind, one trace per consent change across the group commit,
and liveness vs readiness (with the dependency that failed named, and nothing else)."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from prometheus_client import REGISTRY

from dataspace.app import create_app
from dataspace.context import Context
from dataspace.db import Database
from dataspace.http.metrics import serve_metrics
from dataspace.jobs import release, service
from dataspace.observability import tracing
from tests.factories import jobs as js
from tests.factories.identities import bearer, issue_token, make_subject

AGE = {"field": "age", "purpose": "insurance_offer", "partner": "harbor_insurance"}


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
def client(ctx: Context) -> Iterator[TestClient]:
    with TestClient(create_app(ctx)) as c:
        yield c


def test_metrics_count_routes_batches_jobs_and_budgets_on_their_own_bind(ctx: Context) -> None:
    js.build_world(ctx, 60)
    app = create_app(ctx)
    client = TestClient(app)
    sid = make_subject(ctx)
    me = bearer(issue_token(ctx, "customer", subject_id=sid))
    route = {"route": "/v1/me/consents/{grant_id}", "method": "DELETE", "status": "200"}
    before = {
        "delete": sample("dataspace_http_requests_total", **route),
        "batches": sample("dataspace_group_commit_batch_size_count", committer="writes"),
        "unmatched": sample("dataspace_http_requests_total", route="unmatched", method="GET", status="404"),
        "jobs": sample("dataspace_job_outcomes_total", status="succeeded"),
        "sandbox": sample("dataspace_sandbox_starts_total"),
        "sequenced": sample("dataspace_log_sequenced_entries_total", log="audit"),
    }
    grant = client.post("/v1/me/consents", json=AGE, headers=me).json()
    assert client.delete(f"/v1/me/consents/{grant['grant']['id']}", headers=me).status_code == 200
    # A caller inventing paths and methods adds no series: unknown routes share one label, odd methods another.
    for i in range(5):
        assert client.get(f"/no/such/path/{i}").status_code == 404
    client.request("BREW", "/livez")

    # One job end to end, its release charged to the partner's budget.
    contract_id = js.approved_contract(ctx)
    with ctx.db.transaction() as s:
        job_id = service.submit(s, principal=js.partner_principal(ctx), model_id=js.upload_onnx(ctx, contract_id)).id
    assert ctx.jobs.run_job(job_id).status == "succeeded"
    with ctx.db.transaction() as s:
        release.release_results(s, principal=js.partner_principal(ctx), job_id=job_id)
    from dataspace.tlog.log import sequence

    sequence(ctx.settings, ctx.db, ctx.keys, "audit")

    assert sample("dataspace_http_requests_total", **route) == before["delete"] + 1  # the template, not the id
    assert sample("dataspace_group_commit_batch_size_count", committer="writes") >= before["batches"] + 2
    assert sample("dataspace_http_requests_total", route="unmatched", method="GET", status="404") == (
        before["unmatched"] + 5
    )
    assert sample("dataspace_job_outcomes_total", status="succeeded") == before["jobs"] + 1
    assert sample("dataspace_sandbox_starts_total") == before["sandbox"] + 1
    assert sample("dataspace_job_phase_seconds_count", phase="sandbox") >= 1
    assert sample("dataspace_log_sequenced_entries_total", log="audit") > before["sequenced"]

    server = serve_metrics(ctx.db, "127.0.0.1:0")
    try:
        text = httpx.get(f"http://127.0.0.1:{server.server_port}/metrics", timeout=10).text
    finally:
        server.shutdown()
        server.server_close()
    assert "dataspace_db_up 1.0" in text
    spent = re.search(
        r'dataspace_db_privacy_budget_spent_epsilon\{partner="harbor_insurance",purpose="insurance_offer"\} (\S+)', text
    )
    assert spent is not None
    assert float(spent.group(1)) == pytest.approx(1.0)  # the contract's epsilon per release
    assert re.search(r'dataspace_db_log_size\{log="audit"\} [1-9]', text)
    assert 'dataspace_db_log_queued_entries{log="usage"}' in text
    assert 'dataspace_db_jobs{status="succeeded"} 1.0' in text
    assert "dataspace_group_commit_wait_seconds_bucket" in text
    assert "/no/such/path" not in text
    assert "BREW" not in text
    # Not on the API: the public app has no metrics route.
    assert client.get("/metrics").status_code == 404


def test_a_consent_change_is_one_trace_across_the_request_and_its_group_commit(ctx: Context) -> None:
    js.load_demo_catalog(ctx)
    sid = make_subject(ctx)
    me = bearer(issue_token(ctx, "customer", subject_id=sid))
    app = create_app(ctx)
    assert app.state.tracing is None  # off by default
    exporter = InMemorySpanExporter()
    traced = tracing.configure(ctx.settings, app=app, db=ctx.db, exporter=exporter)
    assert traced is not None
    try:
        with TestClient(app) as client:
            exporter.clear()
            r = client.post("/v1/me/consents", json=AGE, headers=me)
            assert r.status_code == 201, r.text
        ctx.stop_writes()  # the batch span ends just after the batch answered its requests: let it finish
        spans = exporter.get_finished_spans()
    finally:
        traced.close()
    server = [s for s in spans if s.kind == SpanKind.SERVER]
    assert len(server) == 1
    trace_id = server[0].context.trace_id
    assert {s.context.trace_id for s in spans} == {trace_id}  # everything this request caused: one trace
    by_id = {s.context.span_id: s for s in spans}
    write = next(s for s in spans if s.name == "group-commit write")
    batch = next(s for s in spans if s.name == "group-commit batch")
    assert batch.parent is not None
    assert write.parent is not None
    assert [link.context.span_id for link in batch.links] == [write.parent.span_id]  # the request it carried

    def ancestors(span):  # type: ignore[no-untyped-def]
        while span.parent is not None and span.parent.span_id in by_id:
            span = by_id[span.parent.span_id]
            yield span

    assert server[0] in list(ancestors(write))
    assert server[0] in list(ancestors(batch))
    # The grant's INSERT ran on the group-commit thread, inside the write's span.
    statements = [s for s in spans if s.attributes and "db.statement" in s.attributes]
    grant_insert = [s for s in statements if str(s.attributes["db.statement"]).startswith("INSERT INTO consent")]
    assert grant_insert
    assert all(write in list(ancestors(s)) for s in grant_insert)
    for s in statements:  # statement text only: no customer value or token travels in a span
        assert me["Authorization"].split()[1] not in str(s.attributes)
    # Tracing off again: nothing more is recorded.
    exporter.clear()
    with TestClient(create_app(ctx)) as client:
        client.delete(f"/v1/me/consents/{r.json()['grant']['id']}", headers=me)
    assert exporter.get_finished_spans() == ()


def test_livez_and_readyz(client: TestClient, ctx: Context) -> None:
    assert client.get("/livez").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json() == {"status": "ok", "checks": {"database": "ok", "keys": "ok", "bubblewrap": "ok"}}
    assert client.get("/healthz").status_code == 200

    # A configured broker that does not answer: not ready, the broker named, its URL (and password) not.
    ctx.settings.broker_url = "amqp://ops:s3cret-pw@127.0.0.1:1/"
    r = client.get("/readyz")
    assert r.status_code == 503
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert body["checks"] == {"database": "ok", "keys": "ok", "broker": "failed", "bubblewrap": "ok"}
    assert body["code"] == "not_ready"
    assert "s3cret" not in r.text
    assert "127.0.0.1" not in r.text
    assert client.get("/livez").status_code == 200  # alive all the same: a restart would not help


def test_readyz_names_a_database_that_does_not_answer(ctx: Context) -> None:
    dead = Context(
        settings=ctx.settings,
        db=Database("postgresql+psycopg://ops:s3cret-pw@127.0.0.1:1/nowhere", connect_args={"connect_timeout": 2}),
        keys=ctx.keys,
    )
    try:
        with TestClient(create_app(dead)) as client:
            assert client.get("/livez").status_code == 200
            r = client.get("/readyz")
    finally:
        dead.close()
    assert r.status_code == 503
    assert r.json()["checks"]["database"] == "failed"
    assert r.json()["checks"]["keys"] == "ok"
    assert "s3cret" not in r.text
    assert "nowhere" not in r.text


def test_readyz_with_a_live_broker(ctx: Context, client: TestClient) -> None:
    ctx.settings.broker_url = os.environ.get("DATASPACE_TEST_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672/")
    r = client.get("/readyz")
    assert r.status_code == 200, r.text
    assert r.json()["checks"]["broker"] == "ok"


def test_traces_are_exported_over_otlp_when_an_endpoint_is_configured(ctx: Context) -> None:
    """A stand-in collector (a plain HTTP server) receives the spans as OTLP/HTTP protobuf."""
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    received: list[tuple[str, str, bytes]] = []

    class Collector(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"]))
            received.append((self.path, self.headers["content-type"], body))
            self.send_response(200)
            self.send_header("content-type", "application/x-protobuf")
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    collector = HTTPServer(("127.0.0.1", 0), Collector)
    threading.Thread(target=collector.serve_forever, daemon=True).start()
    try:
        settings = ctx.settings.model_copy(
            update={"otlp_endpoint": f"http://127.0.0.1:{collector.server_port}/v1/traces"}
        )
        traced_ctx = Context(settings=settings, db=ctx.db, keys=ctx.keys)
        app = create_app(traced_ctx)
        assert app.state.tracing is not None
        with TestClient(app) as client:  # leaving the lifespan flushes the exporter
            assert client.get("/healthz").status_code == 200  # excluded: probes are not traced
            assert client.get("/v1/catalog/fields").status_code == 401
    finally:
        collector.shutdown()
        collector.server_close()
    assert received
    path, content_type, body = received[0]
    assert path == "/v1/traces"
    assert content_type == "application/x-protobuf"
    assert b"/v1/catalog/fields" in body
    assert b"/healthz" not in b"".join(r[2] for r in received)


def _pki(tmp_path: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate (the scraper's), as PEM files."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def issue(
        cn: str,
        key: ec.EllipticCurvePrivateKey,
        issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
        *,
        ca: bool = False,
        san: x509.GeneralName | None = None,
    ) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(name(cn))
            .issuer_name(issuer[0] if issuer else name(cn))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if san is not None:
            builder = builder.add_extension(x509.SubjectAlternativeName([san]), critical=False)
        return builder.sign(issuer[1] if issuer else key, hashes.SHA256())

    files: dict[str, Path] = {}

    def write(label: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
        files[label] = tmp_path / f"{label}.pem"
        files[label].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        files[f"{label}-key"] = tmp_path / f"{label}-key.pem"
        files[f"{label}-key"].write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = issue("metrics test CA", ca_key, None, ca=True)
    write("ca", ca, ca_key)
    server_key = ec.generate_private_key(ec.SECP256R1())
    write(
        "server",
        issue("127.0.0.1", server_key, (ca.subject, ca_key), san=x509.IPAddress(ipaddress.ip_address("127.0.0.1"))),
        server_key,
    )
    client_key = ec.generate_private_key(ec.SECP256R1())
    write("client", issue("prometheus", client_key, (ca.subject, ca_key)), client_key)
    return files


def test_the_metrics_endpoint_answers_only_scrapers_with_a_client_certificate(ctx: Context, tmp_path: Path) -> None:
    import ssl

    pki = _pki(tmp_path)
    settings = ctx.settings.model_copy(
        update={"metrics_tls_cert": pki["server"], "metrics_tls_key": pki["server-key"], "metrics_client_ca": pki["ca"]}
    )
    server = serve_metrics(ctx.db, "127.0.0.1:0", settings)
    url = f"https://127.0.0.1:{server.server_port}/metrics"
    try:
        scraper = ssl.create_default_context(cafile=str(pki["ca"]))
        scraper.load_cert_chain(str(pki["client"]), str(pki["client-key"]))
        assert "dataspace_db_up 1.0" in httpx.get(url, verify=scraper, timeout=10).text
        anonymous = ssl.create_default_context(cafile=str(pki["ca"]))
        with pytest.raises((httpx.HTTPError, ssl.SSLError)):
            httpx.get(url, verify=anonymous, timeout=10)
        with pytest.raises(httpx.HTTPError):
            httpx.get(url.replace("https", "http"), timeout=10)
    finally:
        server.shutdown()
        server.server_close()
