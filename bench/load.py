"""Load test of the real API: consent toggles, usage reads and idempotent redemptions by many customers.

    .venv/bin/python bench/load.py --n 400 --seconds 20 --concurrency 24 --replicas 2

Starts ``--replicas`` ``dataspace serve`` processes (each with its background tasks) on 127.0.0.1 against one
database, and sends every request to the next replica in turn, so a grant made through one replica is
withdrawn through another (the app holds no per-process state that matters). Setup, done in this process
through the package's own services: a fresh database (by default a new PostgreSQL database on 127.0.0.1,
dropped afterwards; ``--database-url sqlite:///...`` for the embedded one), the demo catalog, ``--n``
ingested customers with a customer account and a real stored access token each, points for every customer
and one reward.

The client (a minimal asyncio HTTP/1.1 keep-alive client, ``--concurrency`` requests in flight) gives each
in-flight slot its own customers, so toggles never race each other. ``--mix`` weighs toggles (a grant, then
its withdrawal: two consent changes), usage reads and redemptions (default 60,25,15). Prints throughput,
p50/p95/p99 per operation, errors (any non-2xx except 409 insufficient funds), and the CPU time the servers,
PostgreSQL (the backends serving the bench database; every postgres process is printed too, which on a shared
machine includes other people's queries) and the client spent during the load, per request.
Bounded by ``--seconds`` and ``--max-requests``.

Then, unless ``--no-floor``, the floor (``bench/floor.py``: uvicorn + FastAPI, the same bearer check, one
INSERT + COMMIT through the same pool) is loaded the same way (same database, tokens, replicas, client,
concurrency, duration) and the consent path is printed beside it: consent changes/s against the floor's
requests/s (target >= 0.5x), p99 (target < 100 ms) and CPU per request against the floor's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
from sqlalchemy import create_engine, select, text

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import _report  # noqa: E402

if TYPE_CHECKING:
    import floor as floor_bench

from dataspace.auth import service as auth  # noqa: E402
from dataspace.auth import tokens  # noqa: E402
from dataspace.auth.models import User  # noqa: E402
from dataspace.auth.passwords import hash_password  # noqa: E402
from dataspace.auth.scopes import ROLE_SCOPES  # noqa: E402
from dataspace.bootstrap import init  # noqa: E402
from dataspace.catalog import service as catalog  # noqa: E402
from dataspace.catalog.models import Field, Purpose  # noqa: E402
from dataspace.compliance.controller import DEMO_ENV  # noqa: E402
from dataspace.context import Context  # noqa: E402
from dataspace.db import utcnow  # noqa: E402
from dataspace.demo.build import CATALOG  # noqa: E402
from dataspace.demo.population import generate  # noqa: E402
from dataspace.ingest.service import ingest_batches  # noqa: E402
from dataspace.partners.models import Partner  # noqa: E402
from dataspace.points import corrections, rewards  # noqa: E402
from dataspace.points.schemas import RewardCreate  # noqa: E402
from dataspace.settings import Settings  # noqa: E402
from dataspace.subjects.models import Subject  # noqa: E402

PG_ADMIN_URL = os.environ.get("DATASPACE_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REWARD = "bench-coffee"


@contextmanager
def bench_database(url: str | None, prefix: str) -> Iterator[str]:
    """``url`` if given, else a fresh PostgreSQL database on the server of ``PG_ADMIN_URL``, dropped when the
    block ends."""
    if url is not None:
        yield url
        return
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    _admin(f'CREATE DATABASE "{name}"')
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _admin(sql: str) -> None:
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(sql))
    admin.dispose()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- setup -------------------------------------------------------------------------------------------
@dataclass
class Customer:
    subject_id: int
    token: str


def setup(ctx: Context, n: int) -> tuple[list[Customer], list[tuple[str, str, str]]]:
    t0 = time.perf_counter()
    with ctx.db.transaction() as session:
        catalog.load_document(session, catalog.read_document(CATALOG))
    report = ingest_batches(ctx.db, ctx.keys, ctx.vault, generate(n).to_batches(max_chunksize=50_000), source="bench")
    assert report.accepted == n, report
    with ctx.db.session() as session:
        subject_ids = list(session.scalars(select(Subject.id).order_by(Subject.id)))
        scopes = [
            (f, p, partner)
            for f in session.scalars(select(Field.key).where(Field.status == "active", Field.sensitivity == "normal"))
            for p in session.scalars(select(Purpose.key))
            for partner in session.scalars(select(Partner.key).where(Partner.status == "active"))
        ]
    # One argon2 hash shared by every bench user (nobody logs in with a password here).
    pw_hash = hash_password(secrets.token_urlsafe(16))
    scope = " ".join(sorted(ROLE_SCOPES["customer"]))
    customers: list[Customer] = []
    with ctx.db.transaction() as session:
        client = auth.create_client(
            session=session,
            role="customer",
            public=True,
            client_id="bench-portal",
            redirect_uris=["http://127.0.0.1/callback"],
        ).client
        reward = RewardCreate(key=REWARD, name="Bench coffee", cost=1, stock=100_000_000)
        rewards.create_reward(session, data=reward)
    for start in range(0, len(subject_ids), 500):
        with ctx.db.transaction() as session:
            client = session.merge(client)
            for sid in subject_ids[start : start + 500]:
                user = User(username=f"bench-{sid}", password_hash=pw_hash, role="customer", subject_id=sid)
                session.add(user)
                session.flush()
                token = tokens.issue(
                    ctx.settings,
                    ctx.keys,
                    session,
                    client=client,
                    user=user,
                    scope=scope,
                    grant_type="authorization_code",
                    ttl=3600,
                    auth_time=utcnow(),  # as if signed in now: redemptions need a recent sign-in
                )
                corrections.post_correction(
                    session,
                    subject_id=sid,
                    amount=1_000_000,
                    reason="load test float",
                    idempotency_key=f"bench-float-{sid}",
                    now=utcnow(),
                )
                customers.append(Customer(sid, str(token["access_token"])))
    print(f"setup: {n} customers, {len(scopes)} consent scopes in {time.perf_counter() - t0:.1f}s", flush=True)
    return customers, scopes


# --- servers -----------------------------------------------------------------------------------------
@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    base: str

    def cpu_seconds(self) -> float:
        """utime + stime of the server process (0 where /proc cannot tell)."""
        return _report.cpu_seconds(self.proc.pid)

    def peak_rss_mb(self) -> float:
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            pass
        return 0.0


def start_servers(
    data_dir: Path, url: str, replicas: int, issuer: str, port0: int, *, command: list[str] | None = None
) -> list[Server]:
    """``replicas`` server processes (``dataspace serve``, or ``command``) configured through the environment."""
    servers = []
    for i in range(replicas):
        port = port0 if i == 0 else free_port()
        env = {
            **DEMO_ENV,  # a benchmark names the demo's (visibly fictitious) controller unless one is configured
            **os.environ,
            "DATASPACE_DATA_DIR": str(data_dir),
            "DATASPACE_DATABASE_URL": url,
            "DATASPACE_BIND": f"127.0.0.1:{port}",
            "DATASPACE_ISSUER": issuer,
            "DATASPACE_LOG_LEVEL": "WARNING",
            # Redemptions need a sign-in at most this old (the bench customers "signed in" at set-up).
            "DATASPACE_REAUTH_SECONDS": "3600",
            "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
        }
        proc = subprocess.Popen(
            command or [sys.executable, "-c", "from dataspace.cli import main; main()", "serve"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        servers.append(Server(proc, f"http://127.0.0.1:{port}"))
    deadline = time.monotonic() + 60
    for server in servers:
        while True:
            if server.proc.poll() is not None:
                err = server.proc.stderr.read().decode() if server.proc.stderr else ""
                raise RuntimeError(f"server exited: {err[-2000:]}")
            try:
                if httpx.get(server.base + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("server did not start")
            time.sleep(0.1)
    return servers


def stop_servers(servers: list[Server]) -> None:
    for s in servers:
        if s.proc.poll() is None:
            s.proc.send_signal(signal.SIGTERM)
    for s in servers:
        try:
            s.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            s.proc.kill()
            s.proc.wait()


# --- load --------------------------------------------------------------------------------------------
@dataclass
class Stats:
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: Counter[tuple[str, str]] = field(default_factory=Counter)
    expected_409: Counter[str] = field(default_factory=Counter)
    by_replica: Counter[int] = field(default_factory=Counter)
    requests: int = 0


class Http:
    """A minimal HTTP/1.1 keep-alive client on asyncio streams, one connection per (slot, replica).

    The client shares the 2-core machine with the servers and PostgreSQL: httpx spent about a millisecond
    of CPU per request, which the servers then did not get. This one parses only what the bench needs
    (status line, Content-Length body)."""

    def __init__(self, base: str) -> None:
        u = urllib.parse.urlsplit(base)
        self.host, self.port = u.hostname or "127.0.0.1", u.port or 80
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, headers: dict[str, str], body: bytes | None) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        head = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        head += [f"{k}: {v}" for k, v in headers.items()]
        if body is not None:
            head += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
        elif method in ("POST", "PUT", "PATCH", "DELETE"):
            head.append("Content-Length: 0")
        try:
            self.writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + (body or b""))
            status_line = await self.reader.readuntil(b"\r\n")
            raw = await self.reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in raw.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            data = await self.reader.readexactly(length) if length else b""
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            self.close()
            raise
        return int(status_line.split(b" ", 2)[1]), data

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


class Load:
    def __init__(
        self, bases: list[str], stats: Stats, deadline: float, max_requests: int, mix: tuple[float, float, float]
    ) -> None:
        total = sum(mix)
        self.toggle_below = mix[0] / total
        self.read_below = (mix[0] + mix[1]) / total
        self.bases = bases
        self.stats = stats
        self.deadline = deadline
        self.max_requests = max_requests

    def more(self) -> bool:
        return time.monotonic() < self.deadline and self.stats.requests < self.max_requests

    async def call(
        self,
        conns: list[Http],
        op: str,
        method: str,
        path: str,
        token: str,
        body: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, bytes] | None:
        i = self.stats.requests % len(conns)  # the next replica in turn
        self.stats.requests += 1
        self.stats.by_replica[i] += 1
        t = time.perf_counter()
        try:
            status, data = await conns[i].request(
                method,
                path,
                {"Authorization": f"Bearer {token}", **(headers or {})},
                json.dumps(body).encode() if body is not None else None,
            )
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            self.stats.errors[(op, type(exc).__name__)] += 1
            return None
        self.stats.latencies[op].append(time.perf_counter() - t)
        if status == 409 and op == "redeem" and b"insufficient" in data.lower():
            self.stats.expected_409[op] += 1
        elif not 200 <= status < 300:
            self.stats.errors[(op, str(status))] += 1
        return status, data

    async def slot(self, mine: list[Customer], scopes: list[tuple[str, str, str]]) -> None:
        conns = [Http(base) for base in self.bases]
        rng = random.Random()
        try:
            while self.more():
                c = rng.choice(mine)
                roll = rng.random()
                if roll < self.toggle_below:  # a consent toggle: switch on, then off again (two consent changes)
                    f, p, partner = rng.choice(scopes)
                    body: dict[str, object] = {"field": f, "purpose": p, "partner": partner}
                    r = await self.call(conns, "consent.grant", "POST", "/v1/me/consents", c.token, body)
                    if r is not None and r[0] in (200, 201):
                        gid = json.loads(r[1])["grant"]["id"]
                        await self.call(conns, "consent.withdraw", "DELETE", f"/v1/me/consents/{gid}", c.token)
                elif roll < self.read_below:
                    await self.call(conns, "usage.read", "GET", "/v1/me/usage", c.token)
                else:
                    await self.call(
                        conns,
                        "redeem",
                        "POST",
                        "/v1/me/redemptions",
                        c.token,
                        {"reward_key": REWARD, "quantity": 1},
                        {"Idempotency-Key": uuid.uuid4().hex},
                    )
        finally:
            for conn in conns:
                conn.close()


async def drive(
    bases: list[str],
    customers: list[Customer],
    scopes: list[tuple[str, str, str]],
    *,
    seconds: float,
    concurrency: int,
    max_requests: int,
    mix: tuple[float, float, float],
) -> tuple[Stats, float]:
    stats = Stats()
    # Warm up each replica's caches (policy, keys, connection pool) outside the measurement.
    for base in bases:
        warm = Http(base)
        await warm.request("GET", "/v1/me/usage", {"Authorization": f"Bearer {customers[0].token}"}, None)
        warm.close()
    load = Load(bases, stats, time.monotonic() + seconds, max_requests, mix)
    slots = [customers[i::concurrency] for i in range(concurrency)]
    t0 = time.perf_counter()
    await asyncio.gather(*(load.slot(mine, scopes) for mine in slots if mine))
    elapsed = time.perf_counter() - t0
    return stats, elapsed


def pct(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))] * 1000


def own_cpu() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    return own.ru_utime + own.ru_stime


def _postgres_cpu_by_pid() -> dict[int, float]:
    out: dict[int, float] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            head, rest = stat.read_text().rsplit(")", 1)
        except OSError:
            continue
        if head.split("(", 1)[-1].startswith("postgres"):
            fields = rest.split()
            out[int(stat.parent.name)] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return out


def postgres_cpu() -> float:
    """CPU seconds of every process named postgres on this machine (0 where /proc cannot tell)."""
    return sum(_postgres_cpu_by_pid().values())


class PostgresCpu:
    """PostgreSQL CPU during a measurement: of the backends connected to the bench database (the work the
    bench caused; other users of a shared server excluded) and of every postgres process (which includes the
    WAL writer and checkpointer, and anyone else's queries). Call ``seconds`` while the servers still run:
    their pooled backends are found by database in ``pg_stat_activity``."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.before = _postgres_cpu_by_pid()

    def seconds(self) -> tuple[float, float]:
        after = _postgres_cpu_by_pid()
        everything = sum(after.values()) - sum(v for p, v in self.before.items() if p in after)
        if self.url.startswith("sqlite"):
            return 0.0, max(everything, 0.0)
        engine = create_engine(self.url)
        try:
            with engine.connect() as conn:
                pids = set(
                    conn.execute(text("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")).scalars()
                )
        finally:
            engine.dispose()
        mine = sum(after[p] - self.before.get(p, 0.0) for p in pids if p in after)
        return mine, max(everything, 0.0)


def report(
    stats: Stats,
    elapsed: float,
    servers: list[Server],
    cpu_before: list[float],
    backend: str,
    client_cpu: float,
    pg_cpu: float,
) -> dict[str, float]:
    """Print the load's figures; return the ones compared with the floor."""
    print(f"\nbackend {backend}, replicas {len(servers)}, {elapsed:.1f}s, {stats.requests} requests")
    print(f"{'operation':<18}{'count':>8}{'req/s':>9}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'max ms':>9}")
    for op in ("consent.grant", "consent.withdraw", "usage.read", "redeem"):
        lat = sorted(stats.latencies.get(op, []))
        print(
            f"{op:<18}{len(lat):>8}{len(lat) / elapsed:>9.1f}{pct(lat, 0.50):>9.1f}{pct(lat, 0.95):>9.1f}"
            f"{pct(lat, 0.99):>9.1f}{(lat[-1] * 1000 if lat else float('nan')):>9.1f}"
        )
    changes = sorted(stats.latencies.get("consent.grant", []) + stats.latencies.get("consent.withdraw", []))
    total = sum(len(v) for v in stats.latencies.values())
    print(
        f"{'consent changes':<18}{len(changes):>8}{len(changes) / elapsed:>9.1f}{pct(changes, 0.50):>9.1f}"
        f"{pct(changes, 0.95):>9.1f}{pct(changes, 0.99):>9.1f}"
    )
    print(f"{'all':<18}{total:>8}{total / elapsed:>9.1f}")
    print(f"errors (non-2xx except 409 insufficient funds): {dict(stats.errors) or 'none'}")
    print(f"expected 409 insufficient funds: {dict(stats.expected_409) or 'none'}")
    print(f"requests per replica: {dict(stats.by_replica)}")
    cpu = [s.cpu_seconds() - b for s, b in zip(servers, cpu_before, strict=True)]
    print(
        f"server: {os.cpu_count()} CPUs; CPU time {sum(cpu):.1f}s over {elapsed:.1f}s "
        f"({sum(cpu) / elapsed * 100:.0f}% of one core); peak RSS per replica "
        f"{', '.join(f'{s.peak_rss_mb():.0f} MB' for s in servers)}"
    )
    own = resource.getrusage(resource.RUSAGE_SELF)
    print(
        f"client (same machine): CPU {client_cpu:.1f}s during the load, peak RSS {own.ru_maxrss / 1024:.0f} MB; "
        f"PostgreSQL (backends of the bench database): CPU {pg_cpu:.1f}s during the load"
    )
    if total:
        per = (sum(cpu) + client_cpu + pg_cpu) / total * 1000
        print(f"CPU per request (servers + PostgreSQL + client): {per:.2f} ms")
    return {
        "changes_per_s": len(changes) / elapsed,
        "changes_p99_ms": pct(changes, 0.99),
        "all_per_s": total / elapsed,
        "cpu_per_request_ms": (sum(cpu) + client_cpu + pg_cpu) / total * 1000 if total else float("nan"),
    }


def compare_with_floor(load: dict[str, float], floor: floor_bench.FloorResult) -> None:
    """The issue-18 comparison: the consent path beside the thinnest authenticated write of the same stack."""
    print("\nagainst the floor (same stack, database, tokens, replicas, client, concurrency and duration):")
    _report.compare(
        "consent changes/s", load["changes_per_s"], floor.per_second, unit="req/s", better="higher", target=0.5
    )
    _report.compare("all requests/s (the mix)", load["all_per_s"], floor.per_second, unit="req/s", better="higher")
    _report.compare("consent change p99", load["changes_p99_ms"], floor.p99_ms, unit="ms", better="lower")
    met = "met" if load["changes_p99_ms"] < 100 else "NOT met"
    print(f"consent change p99 absolute: {load['changes_p99_ms']:.1f} ms (target < 100 ms: {met})")
    _report.compare(
        "CPU per request (servers + PostgreSQL + client)",
        load["cpu_per_request_ms"],
        floor.cpu_per_request_ms,
        unit="ms",
        better="lower",
    )


# --- main --------------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=400, help="customers")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--max-requests", type=int, default=1_000_000)
    parser.add_argument("--concurrency", type=int, default=24, help="requests in flight")
    parser.add_argument("--replicas", type=int, default=2, help="dataspace serve processes on one database")
    parser.add_argument("--database-url", default=None, help="default: a fresh PostgreSQL database, dropped after")
    parser.add_argument("--no-floor", action="store_true", help="skip the floor run (bench/floor.py)")
    parser.add_argument(
        "--mix",
        default="60,25,15",
        help="relative weights of consent toggles (a grant then its withdrawal), usage reads, redemptions",
    )
    args = parser.parse_args()
    weights = [float(w) for w in args.mix.split(",")]
    if len(weights) != 3 or any(w < 0 for w in weights) or sum(weights) <= 0:
        parser.error("--mix takes three non-negative weights, e.g. 60,25,15")
    mix = (weights[0], weights[1], weights[2])

    tmp = Path(tempfile.mkdtemp(prefix="dataspace-load-"))
    port0 = free_port()
    issuer = f"http://127.0.0.1:{port0}"
    servers: list[Server] = []
    with bench_database(args.database_url, "dataspace_load") as url:
        try:
            settings = Settings(data_dir=tmp, database_url=url, issuer=issuer)
            init(settings)
            ctx = Context.open(settings)
            try:
                customers, scopes = setup(ctx, args.n)
            finally:
                ctx.close()
            servers = start_servers(tmp, url, args.replicas, issuer, port0)
            cpu_before = [s.cpu_seconds() for s in servers]
            client_before, pg = own_cpu(), PostgresCpu(url)
            stats, elapsed = asyncio.run(
                drive(
                    [s.base for s in servers],
                    customers,
                    scopes,
                    seconds=args.seconds,
                    concurrency=min(args.concurrency, len(customers)),
                    max_requests=args.max_requests,
                    mix=mix,
                )
            )
            client_cpu = own_cpu() - client_before
            pg_cpu, pg_all = pg.seconds()
            print(f"PostgreSQL CPU: bench database's backends {pg_cpu:.1f}s, every postgres process {pg_all:.1f}s")
            backend = "sqlite" if url.startswith("sqlite") else "postgresql"
            figures = report(stats, elapsed, servers, cpu_before, backend, client_cpu, pg_cpu)
            stop_servers(servers)
            if not args.no_floor:
                import floor as floor_bench  # imports this module: not at the top (realtime.py imports it too)

                print("\nfloor: same database, customers and tokens; same replicas, client, concurrency, duration")
                floor = floor_bench.run_floor(
                    tmp,
                    url,
                    issuer,
                    customers,
                    replicas=args.replicas,
                    seconds=args.seconds,
                    concurrency=args.concurrency,
                    max_requests=args.max_requests,
                )
                floor_bench.print_floor(floor)
                compare_with_floor(figures, floor)
        finally:
            stop_servers(servers)
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
