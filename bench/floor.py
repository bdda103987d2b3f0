"""Request-path floor: the thinnest authenticated write the server's own stack can serve, under load.py's load.

    .venv/bin/python bench/floor.py --n 400 --seconds 20 --concurrency 24 --replicas 2

Each replica is uvicorn (run as ``dataspace serve`` runs it: same defaults, same GC settings) serving one
FastAPI route, ``POST /floor``, that does what every consent change must do at the least: the same bearer
check as the real server (``dataspace.http.security.authenticate``: the JWT's signature and claims through
``dataspace.auth.tokens``, then the revocation memo or the database), then one INSERT of one row and its
COMMIT through the application's own engine and pool (``Context.open``: same pool size, same connection
settings), on the same database. No policy, no consent logic, no group commit, no receipt, no audit entry.

``bench/load.py`` runs this after its own load, against the same database with the same customers' tokens,
replicas, client, concurrency and duration, and prints consent changes/s, p99 and CPU per request beside the
floor's (target: consent changes >= 0.5x the floor's requests/s, p99 < 100 ms). Run alone (this script), it
sets up the database as load.py does and measures the floor only.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import random
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI, Request  # module level: the route's annotations are resolved from here
from sqlalchemy import Column, DateTime, Integer, MetaData, Table, create_engine

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import _report  # noqa: E402
from load import (  # noqa: E402
    Customer,
    Http,
    Load,
    PostgresCpu,
    Stats,
    bench_database,
    free_port,
    own_cpu,
    pct,
    setup,
    start_servers,
    stop_servers,
)

from dataspace.bootstrap import init  # noqa: E402
from dataspace.context import Context  # noqa: E402
from dataspace.settings import Settings  # noqa: E402

TABLE = Table(
    "bench_floor",
    MetaData(),
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("subject_id", Integer),
    Column("at", DateTime(timezone=True)),
)
SERVE = [sys.executable, str(Path(__file__).resolve()), "--serve"]


# --- the floor server -------------------------------------------------------------------------------
def serve() -> None:
    """One floor replica, configured from the environment exactly as ``dataspace serve`` is."""
    import uvicorn

    from dataspace.db import utcnow
    from dataspace.http.security import authenticate
    from dataspace.logging import configure

    settings = Settings()
    configure(settings.log_level)
    host, _, port = settings.bind.rpartition(":")
    ctx = Context.open(settings)
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    insert = TABLE.insert()

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/floor", status_code=201)
    def floor(request: Request) -> dict[str, int]:
        principal = authenticate(request, ctx)
        with ctx.db.engine.begin() as conn:
            row = conn.execute(insert, {"subject_id": principal.subject_id, "at": utcnow()}).inserted_primary_key
        return {"id": int(row[0]) if row else 0}

    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
    uvicorn.run(app, host=host or "127.0.0.1", port=int(port), log_level="warning")


# --- measuring it -----------------------------------------------------------------------------------
@dataclass
class FloorResult:
    requests: int
    elapsed: float
    p50_ms: float
    p99_ms: float
    cpu_per_request_ms: float
    errors: dict[tuple[str, str], int]
    peak_rss_kib: list[float]

    @property
    def per_second(self) -> float:
        return self.requests / self.elapsed if self.elapsed else 0.0


async def _drive(
    bases: list[str], customers: list[Customer], *, seconds: float, concurrency: int, max_requests: int
) -> tuple[Stats, float]:
    stats = Stats()
    for base in bases:  # warm each replica (keys, pool, token memo) outside the measurement
        warm = Http(base)
        await warm.request("POST", "/floor", {"Authorization": f"Bearer {customers[0].token}"}, None)
        warm.close()
    load = Load(bases, stats, time.monotonic() + seconds, max_requests, (1.0, 0.0, 0.0))

    async def slot(mine: list[Customer]) -> None:
        conns = [Http(base) for base in bases]
        rng = random.Random()
        try:
            while load.more():
                await load.call(conns, "floor", "POST", "/floor", rng.choice(mine).token)
        finally:
            for conn in conns:
                conn.close()

    slots = [customers[i::concurrency] for i in range(concurrency)]
    t0 = time.perf_counter()
    await asyncio.gather(*(slot(mine) for mine in slots if mine))
    return stats, time.perf_counter() - t0


def run_floor(
    data_dir: Path,
    url: str,
    issuer: str,
    customers: list[Customer],
    *,
    replicas: int,
    seconds: float,
    concurrency: int,
    max_requests: int,
) -> FloorResult:
    """Start ``replicas`` floor servers on ``url`` (whose tokens ``issuer`` issued), load them as load.py
    loads the real ones, stop them; the measurement."""
    engine = create_engine(url)
    TABLE.drop(engine, checkfirst=True)
    TABLE.create(engine)
    engine.dispose()
    servers = start_servers(data_dir, url, replicas, issuer, free_port(), command=SERVE)
    try:
        cpu_before = [s.cpu_seconds() for s in servers]
        client_before, pg = own_cpu(), PostgresCpu(url)
        stats, elapsed = asyncio.run(
            _drive(
                [s.base for s in servers],
                customers,
                seconds=seconds,
                concurrency=min(concurrency, len(customers)),
                max_requests=max_requests,
            )
        )
        client_cpu = own_cpu() - client_before
        pg_cpu, _ = pg.seconds()
        server_cpu = sum(s.cpu_seconds() - b for s, b in zip(servers, cpu_before, strict=True))
        peaks = [s.peak_rss_mb() * 1024 for s in servers]
    finally:
        stop_servers(servers)
    lat = sorted(stats.latencies.get("floor", []))
    return FloorResult(
        requests=len(lat),
        elapsed=elapsed,
        p50_ms=pct(lat, 0.50),
        p99_ms=pct(lat, 0.99),
        cpu_per_request_ms=(server_cpu + client_cpu + pg_cpu) / len(lat) * 1000 if lat else float("nan"),
        errors=dict(stats.errors),
        peak_rss_kib=peaks,
    )


def print_floor(result: FloorResult) -> None:
    print(
        f"floor (POST /floor: bearer check + one INSERT + COMMIT), {len(result.peak_rss_kib)} replica(s), "
        f"{result.elapsed:.1f}s: {result.requests} requests, {result.per_second:.1f}/s, p50 {result.p50_ms:.1f} ms, "
        f"p99 {result.p99_ms:.1f} ms, CPU per request (servers + PostgreSQL + client) "
        f"{result.cpu_per_request_ms:.2f} ms; errors {result.errors or 'none'}; peak RSS per replica "
        + ", ".join(_report.mib(k) for k in result.peak_rss_kib),
        flush=True,
    )
    if result.errors:
        print("WARNING: the floor answered errors; its figures are not a floor", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, default=400, help="customers")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--max-requests", type=int, default=1_000_000)
    parser.add_argument("--concurrency", type=int, default=24, help="requests in flight")
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--database-url", default=None, help="default: a fresh PostgreSQL database, dropped after")
    args = parser.parse_args()
    if args.serve:
        serve()
        return
    tmp = Path(tempfile.mkdtemp(prefix="dataspace-floor-"))
    issuer = f"http://127.0.0.1:{free_port()}"
    with bench_database(args.database_url, "dataspace_floor") as url:
        try:
            settings = Settings(data_dir=tmp, database_url=url, issuer=issuer)
            init(settings)
            ctx = Context.open(settings)
            try:
                customers, _ = setup(ctx, args.n)
            finally:
                ctx.close()
            result = run_floor(
                tmp,
                url,
                issuer,
                customers,
                replicas=args.replicas,
                seconds=args.seconds,
                concurrency=args.concurrency,
                max_requests=args.max_requests,
            )
            print_floor(result)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    _report.peak_rss()


if __name__ == "__main__":
    main()
