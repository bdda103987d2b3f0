"""Real-time decisions end to end: p50/p99 through the HTTP API at a target rate, beside the cold path and the floor.

    .venv/bin/python bench/realtime.py --rate 200 --seconds 10

Set-up (in this process, through the package's services): a fresh database (PostgreSQL on 127.0.0.1 by
default, dropped afterwards; ``--database-url sqlite:///...`` for the embedded one), the demo catalog, ``--n``
customers of whom two in three grant every field of the insurer's contract, that contract with a decision
service (``policy.renewal_due``), approved, and the demo's ONNX renewal model uploaded. Then ``--replicas``
``dataspace serve`` processes (uvicorn; default 2, one per core, each with its own warm pool) are started, the
operator's CRM client gets a real access token from ``/oauth/token`` (client credentials), and decisions are
sent OPEN LOOP at ``--rate`` per second for ``--seconds``: each request
leaves at its scheduled time whatever the earlier ones are doing, and its latency counts from that time, so a
server that falls behind shows it. Customers are picked at random: a third are ``not_permitted`` (no consent;
the model does not run). Every decision is consent-checked, stored and (when decided) in the usage ledger: the
bench counts the rows afterwards.

Printed beside it, per decision: the cold path (one batch-style sandbox started per decision: ``run_job`` on one
row, the sandbox alone, no HTTP), the warm pool called in-process (the sandbox round trip alone) and the bare
onnxruntime call (the floor), with ratios. Then, unless ``--no-floor``, the request-path floor of the same
stack (``bench/floor.py``: uvicorn + FastAPI, the same bearer check, one INSERT + COMMIT) on the same database
with the same replicas, connections and duration, and the decision path against it: CPU per decision against
the floor's CPU per request, decisions answered per second against the floor's requests per second. The
machine is shared: say so when quoting the numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import httpx
import numpy as np
import pyarrow as pa
from sqlalchemy import func, select

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # before bench/ (the script's directory): bench/consent.py is not the package

import _report  # noqa: E402
from load import (  # noqa: E402
    Customer,
    Http,
    PostgresCpu,
    bench_database,
    free_port,
    own_cpu,
    start_servers,
    stop_servers,
)

from dataspace.agreements import contracts  # noqa: E402
from dataspace.agreements.contracts import ContractProposal  # noqa: E402
from dataspace.auth import service as auth  # noqa: E402
from dataspace.bootstrap import init  # noqa: E402
from dataspace.catalog import service as catalog  # noqa: E402
from dataspace.consents import changes  # noqa: E402
from dataspace.context import Context  # noqa: E402
from dataspace.db import utcnow  # noqa: E402
from dataspace.demo.build import CATALOG  # noqa: E402
from dataspace.demo.population import generate  # noqa: E402
from dataspace.demo.scenario import FEATURES, MODEL, PARTNER, PURPOSE  # noqa: E402
from dataspace.ingest.service import ingest_batches  # noqa: E402
from dataspace.jobs import uploads  # noqa: E402
from dataspace.realtime.models import RealtimeDecision  # noqa: E402
from dataspace.settings import Settings  # noqa: E402
from dataspace.subjects.models import Subject  # noqa: E402
from dataspace.tlog.models import TLogEntry  # noqa: E402
from sandbox import DecisionSchema, Limits, OnnxModel, WarmPool, run_job  # noqa: E402

EVENT = "policy.renewal_due"
LABELS = ["standard", "premium"]
SCHEMA = DecisionSchema.of_labels(*LABELS)


def setup(ctx: Context, n: int) -> tuple[int, list[int], str, str]:
    """The population, consents, contract and model; returns (contract id, subject ids, client id, secret)."""
    from dataspace.partners.models import Partner
    from dataspace.principal import Principal

    with ctx.db.transaction() as s:
        catalog.load_document(s, catalog.read_document(CATALOG))
    report = ingest_batches(ctx.db, ctx.keys, ctx.vault, generate(n).to_batches(max_chunksize=50_000), source="bench")
    assert report.accepted == n, report
    with ctx.db.session() as s:
        subjects = list(s.scalars(select(Subject.id).order_by(Subject.id)))
        partner = s.scalar(select(Partner).where(Partner.key == PARTNER))
        assert partner is not None
        partner_id = partner.id
    fields = list(dict.fromkeys(f["field"] for f in FEATURES))
    with ctx.db.transaction() as s:
        for i, sid in enumerate(subjects):
            if i % 3 == 0:
                continue  # a third never consent: their requests are not_permitted
            for field in fields:
                changes.grant(
                    s,
                    subject_id=sid,
                    request=changes.GrantRequest(purpose=PURPOSE, field=field, partner=PARTNER),
                    signer=ctx.keys.signing_key,
                )
    insurer = Principal(
        subject=f"client-{PARTNER}",
        role="partner",
        client_id=f"client-{PARTNER}",
        partner_id=partner_id,
        partner_key=PARTNER,
    )
    with ctx.db.transaction() as s:
        contract = contracts.propose(
            s,
            principal=insurer,
            proposal=ContractProposal(
                purpose=PURPOSE,
                features=FEATURES,
                decision_schema={"labels": LABELS},
                k_min=10,
                epsilon_per_release=1.0,
                valid_until=utcnow() + timedelta(days=30),
                title="Renewal offer at the moment of a renewal-due event",
                decision_service={"events": [EVENT]},
            ),
        )
        contract_id = contract.id
    steward = Principal(subject="bench-steward", role="steward", client_id="console")
    with ctx.db.transaction() as s:
        contracts.approve(s, principal=steward, contract_id=contract_id)
    with ctx.db.transaction() as s:
        uploads.upload(s, principal=insurer, contract_id=contract_id, kind="onnx", data=MODEL.read_bytes())
    with ctx.db.transaction() as s:
        crm = auth.create_client(session=s, role="steward", name="operator CRM (bench)")
        client_id, secret = crm.client.client_id, crm.secret
    assert secret is not None
    return contract_id, subjects, client_id, secret


def oauth_token(base: str, client_id: str, secret: str) -> str:
    r = httpx.post(
        f"{base}/oauth/token",
        data={"grant_type": "client_credentials", "scope": "admin"},
        auth=(client_id, secret),
        timeout=30,
    )
    r.raise_for_status()
    return str(r.json()["access_token"])


async def drive(
    bases: list[str], token: str, contract_id: int, subjects: list[int], rate: float, seconds: float, connections: int
) -> tuple[list[float], list[float], dict[str, int], float]:
    """Open loop: request i leaves at start + i / rate on a free connection (connections alternate between the
    server processes); latency from that time."""
    pool: asyncio.Queue[Http] = asyncio.Queue()
    for i in range(connections):
        pool.put_nowait(Http(bases[i % len(bases)]))
    headers = {"Authorization": f"Bearer {token}"}
    decided: list[float] = []
    refused: list[float] = []
    outcomes: dict[str, int] = {}
    rng = random.Random(2026)
    total = int(rate * seconds)
    loop = asyncio.get_running_loop()

    async def one(i: int, due: float) -> None:
        conn = await pool.get()
        try:
            body = json.dumps(
                {"event_id": f"bench-{i}", "event_type": EVENT, "subject_id": rng.choice(subjects)}
            ).encode()
            status, data = await conn.request("POST", f"/v1/decisions/{contract_id}", headers, body)
        except OSError:
            outcomes["connection error"] = outcomes.get("connection error", 0) + 1
            return
        finally:
            pool.put_nowait(conn)
        latency = loop.time() - due
        if status != 200:
            key = f"http {status}"
            outcomes[key] = outcomes.get(key, 0) + 1
            return
        outcome = json.loads(data)["outcome"]
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        (decided if outcome == "decided" else refused).append(latency)

    # Warm-up (not counted): the first request to each server builds its pool and sandboxes.
    for n, base in enumerate(bases):
        warm = Http(base)
        await warm.request(
            "POST",
            f"/v1/decisions/{contract_id}",
            headers,
            json.dumps({"event_id": f"bench-warmup-{n}", "event_type": EVENT, "subject_id": subjects[1]}).encode(),
        )
        warm.close()
    await asyncio.sleep(2.0)  # let the pool's other runners finish starting
    start = loop.time() + 0.05
    tasks = []
    for i in range(total):
        due = start + i / rate
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i, due)))
    await asyncio.gather(*tasks)
    elapsed = loop.time() - start
    while not pool.empty():
        pool.get_nowait().close()
    return decided, refused, outcomes, elapsed


def sandbox_cpu(servers: list) -> float:
    """CPU seconds of the servers' child processes still running (the warm sandboxes: bwrap and the runners);
    0 where /proc cannot tell."""
    return sum(_report.cpu_seconds(pid) for s in servers for pid in _report.descendants(s.proc.pid))


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def features_row() -> list[float]:
    return [2.0, 1.0, 3000.0]


def cold_path(runs: int) -> list[float]:
    """One batch-style sandbox per decision: start, load the model, score one row, exit."""
    model = OnnxModel(MODEL.read_bytes())
    row = pa.table({"pseudonym": ["p"], "age": [2.0], "app_sessions_30d": [1.0], "monthly_card_spend": [3000.0]})
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        run_job(model, row, SCHEMA, Limits(wall_seconds=60))
        out.append(time.perf_counter() - t0)
    return out


def warm_in_process(runs: int) -> list[float]:
    pool = WarmPool(OnnxModel(MODEL.read_bytes()), SCHEMA, ["age", "app_sessions_30d", "monthly_card_spend"], size=1)
    try:
        pool.decide("warm-up", features_row())
        out = []
        for i in range(runs):
            t0 = time.perf_counter()
            pool.decide(f"p{i}", features_row())
            out.append(time.perf_counter() - t0)
        return out
    finally:
        pool.close()


def bare_onnxruntime(runs: int) -> list[float]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(MODEL.read_bytes(), sess_options=options, providers=["CPUExecutionProvider"])
    x = np.asarray([features_row()], dtype=np.float32)
    name = session.get_inputs()[0].name
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        session.run(None, {name: x})
        out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=300, help="customers")
    parser.add_argument("--rate", type=float, default=200.0, help="decisions per second (open loop)")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=32, help="keep-alive connections (requests in flight)")
    parser.add_argument("--replicas", type=int, default=2, help="dataspace serve processes (one per core)")
    parser.add_argument("--cold-runs", type=int, default=15)
    parser.add_argument("--database-url", default=None, help="default: a fresh PostgreSQL database, dropped after")
    parser.add_argument("--no-floor", action="store_true", help="skip the request-path floor (bench/floor.py)")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="dataspace-realtime-"))
    port = free_port()
    issuer = f"http://127.0.0.1:{port}"
    servers = []
    server_peaks: list[float] = []
    with bench_database(args.database_url, "dataspace_realtime") as url:
        try:
            settings = Settings(data_dir=tmp, database_url=url, issuer=issuer)
            init(settings)
            ctx = Context.open(settings)
            t0 = time.perf_counter()
            try:
                contract_id, subjects, client_id, secret = setup(ctx, args.n)
            finally:
                ctx.close()
            print(f"setup: {args.n} customers, contract {contract_id} in {time.perf_counter() - t0:.1f}s", flush=True)
            servers = start_servers(tmp, url, args.replicas, issuer, port)
            token = oauth_token(servers[0].base, client_id, secret)
            bases = [s.base for s in servers]
            cpu = (sum(s.cpu_seconds() for s in servers), own_cpu(), sandbox_cpu(servers))
            pg = PostgresCpu(url)
            decided, refused, outcomes, elapsed = asyncio.run(
                drive(bases, token, contract_id, subjects, args.rate, args.seconds, args.connections)
            )
            pg_seconds = pg.seconds()[0]
            cpu = (
                sum(s.cpu_seconds() for s in servers) - cpu[0],
                own_cpu() - cpu[1],
                sandbox_cpu(servers) - cpu[2],
            )
            ctx = Context.open(settings)
            try:
                with ctx.db.session() as s:
                    stored = s.scalar(select(func.count()).select_from(RealtimeDecision)) or 0
                    ledger = (
                        s.scalar(
                            select(func.count())
                            .select_from(TLogEntry)
                            .where(TLogEntry.log == "usage", TLogEntry.entry.like('%"decision_id"%'))
                        )
                        or 0
                    )
            finally:
                ctx.close()
            server_peaks = [s.peak_rss_mb() * 1024 for s in servers]
            stop_servers(servers)
            request_floor = None
            if not args.no_floor:
                # The request-path floor of the same stack (bench/floor.py: bearer check + one INSERT + COMMIT),
                # same database, replicas, connections and duration, with the operator's token: as many
                # requests as it can answer. Imported here: floor.py imports load.py, as this script does.
                import floor as floor_bench

                request_floor = floor_bench.run_floor(
                    tmp,
                    url,
                    issuer,
                    [Customer(0, token)] * args.connections,  # one slot per connection
                    replicas=args.replicas,
                    seconds=args.seconds,
                    concurrency=args.connections,
                    max_requests=1_000_000,
                )
        finally:
            if not server_peaks:
                server_peaks = [s.peak_rss_mb() * 1024 for s in servers]
            stop_servers(servers)
            shutil.rmtree(tmp, ignore_errors=True)

    both = decided + refused
    backend = "sqlite" if url.startswith("sqlite") else "postgresql"
    print(
        f"\nwarm path through HTTP ({backend}, {args.replicas} uvicorn server process(es), open loop at "
        f"{args.rate:g}/s for {elapsed:.1f}s)"
    )
    print(f"  sent {int(args.rate * args.seconds)}, answered {len(both)} = {len(both) / elapsed:.0f}/s; {outcomes}")
    print(f"  stored {stored} decisions (incl. warm-ups), {ledger} usage-ledger entries of real-time decisions")
    n = max(len(both), 1)
    print(
        f"  CPU per decision: servers {cpu[0] / n * 1e3:.2f} ms, warm sandboxes {cpu[2] / n * 1e3:.2f} ms, "
        f"PostgreSQL (its backends for the bench database) {pg_seconds / n * 1e3:.2f} ms, "
        f"this client {cpu[1] / n * 1e3:.2f} ms"
    )
    for name, values in (("all", both), ("decided", decided), ("not_permitted", refused)):
        print(f"  {name:14s} p50 {pct(values, 0.5) * 1e3:7.2f} ms   p99 {pct(values, 0.99) * 1e3:7.2f} ms")
    cold = cold_path(args.cold_runs)
    warm = warm_in_process(2000)
    floor = bare_onnxruntime(2000)
    e2e = pct(decided, 0.5)
    print("\nper decision, in this process (no HTTP, no database):")
    print(
        f"  cold sandbox per decision (run_job, 1 row)  p50 {pct(cold, 0.5) * 1e3:7.2f} ms   "
        f"p99 {pct(cold, 0.99) * 1e3:7.2f} ms"
    )
    print(
        f"  warm pool round trip (WarmPool.decide)      p50 {pct(warm, 0.5) * 1e3:7.2f} ms   "
        f"p99 {pct(warm, 0.99) * 1e3:7.2f} ms"
    )
    print(
        f"  bare onnxruntime session.run (floor)        p50 {pct(floor, 0.5) * 1e3:7.3f} ms   "
        f"p99 {pct(floor, 0.99) * 1e3:7.3f} ms"
    )
    print("\nratios (p50):")
    print(f"  cold sandbox / warm end-to-end decision     {pct(cold, 0.5) / e2e:6.1f}x")
    print(f"  cold sandbox / warm pool round trip         {pct(cold, 0.5) / pct(warm, 0.5):6.0f}x")
    print(f"  warm pool round trip / bare onnxruntime     {pct(warm, 0.5) / pct(floor, 0.5):6.0f}x")
    print(f"  warm end-to-end decision / bare onnxruntime {e2e / pct(floor, 0.5):6.0f}x")
    print("\nagainst the floor (bare onnxruntime session.run on the same input, p50 per decision):")
    _report.difference(
        "warm path per decision (WarmPool.decide round trip)",
        pct(warm, 0.5) * 1e3,
        pct(floor, 0.5) * 1e3,
        unit="ms",
        target=2.0,
        floor_name="bare session.run",
    )
    _report.difference(
        "warm decision end to end (HTTP, consent, storage, ledger)",
        e2e * 1e3,
        pct(floor, 0.5) * 1e3,
        unit="ms",
        floor_name="bare session.run",
    )
    if request_floor is not None:
        print("\nagainst the request-path floor (floor.py, same stack, replicas and connections, as fast as it goes):")
        floor_bench.print_floor(request_floor)
        per_decision = (cpu[0] + cpu[1] + cpu[2] + pg_seconds) / n * 1e3
        _report.compare(
            "CPU per decision (servers, sandboxes, PostgreSQL, client)",
            per_decision,
            request_floor.cpu_per_request_ms,
            unit="ms",
            better="lower",
            floor_name="floor's CPU per request",
        )
        _report.compare(
            "decisions answered per second",
            len(both) / elapsed,
            request_floor.per_second,
            unit="/s",
            better="higher",
            floor_name="floor's requests/s",
        )
    _report.peak_rss(**{f"server {i}": kib for i, kib in enumerate(server_peaks)})


if __name__ == "__main__":
    main()
