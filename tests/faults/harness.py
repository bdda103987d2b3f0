"""Real processes for the fault tests: a ``dataspace serve`` subprocess, a load driver that records every
acknowledged (2xx) write, and the checks that nothing acknowledged was lost or duplicated."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from sqlalchemy import func, select

from dataspace.context import Context
from dataspace.db import utcnow
from dataspace.grants.models import ConsentEvent, ConsentGrant, ConsentReceipt
from dataspace.keys import save_key_file
from dataspace.points import corrections, invariants, rewards
from dataspace.points.models import PointsAccount, PointsPosting, Redemption
from dataspace.points.schemas import RewardCreate
from dataspace.tlog import latest_checkpoint, sequence, verifier_keys
from dataspace.tlog.export import write_export
from dataspace.tlog.log import queued_count
from tests.conftest import controller_env
from tests.factories.catalog import load_demo_catalog
from tests.factories.identities import bearer, issue_token, make_subject
from transparency.export import verify_export

REPO = Path(__file__).resolve().parents[2]
REWARD = "fault-coffee"
COST = 3
# (field, purpose, partner) switches of the demo catalog the customers toggle.
SCOPES = [
    ("age", "insurance_offer", "harbor_insurance"),
    ("city", "charging_booking", "voltgrid"),
    ("app_sessions_30d", "marketing", "harbor_insurance"),
    ("ev_owner", "charging_booking", "voltgrid"),
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    """``dataspace serve`` (with its background tasks) on 127.0.0.1 against the test's database."""

    def __init__(self, ctx: Context, tmp: Path) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        key_file = tmp / "keys.json"
        save_key_file(key_file, ctx.keys)
        self.log_path = tmp / "server.log"
        self.env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "DATASPACE_DATA_DIR": str(tmp),
            "DATASPACE_DATABASE_URL": ctx.db.url,
            "DATASPACE_KEY_FILE": str(key_file),
            "DATASPACE_BIND": f"127.0.0.1:{self.port}",
            # Tokens minted by the test carry the test context's issuer; the log origin uses it too.
            "DATASPACE_ISSUER": ctx.settings.resolved_issuer,
            "DATASPACE_LOG_LEVEL": "WARNING",
            **controller_env(),
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", "from dataspace.cli import main; main()", "serve"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited {self.proc.returncode}: {self.log_tail()}")
            try:
                if httpx.get(self.base + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"server did not start: {self.log_tail()}")
            time.sleep(0.05)

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def log_tail(self, n: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""


@contextmanager
def running_server(ctx: Context, tmp: Path) -> Iterator[ServerProcess]:
    server = ServerProcess(ctx, tmp)
    server.start()
    try:
        yield server
    finally:
        server.stop()


# --- the world the load runs in ------------------------------------------------------------------
@dataclass
class Customer:
    subject_id: int
    token: str


def prepare(ctx: Context, customers: int) -> list[Customer]:
    """Demo catalog, a reward, and customers with points and a real stored access token."""
    load_demo_catalog(ctx)
    with ctx.db.transaction() as session:
        rewards.create_reward(session, data=RewardCreate(key=REWARD, name="Fault coffee", cost=COST, stock=1_000_000))
    out = []
    for _ in range(customers):
        sid = make_subject(ctx)
        with ctx.db.transaction() as session:
            corrections.post_correction(
                session,
                subject_id=sid,
                amount=100_000,
                reason="fault test float",
                idempotency_key=f"float-{sid}",
                now=utcnow(),
            )
        out.append(Customer(sid, issue_token(ctx, "customer", subject_id=sid)))
    return out


# --- the load driver -----------------------------------------------------------------------------
@dataclass
class Acks:
    """Everything the server acknowledged (2xx), and what was in flight when a request failed."""

    grants: list[tuple[int, int, str]] = field(default_factory=list)  # (subject, grant id, receipt id)
    withdrawals: list[tuple[int, int, str]] = field(default_factory=list)
    redemptions: dict[tuple[int, str], int] = field(default_factory=dict)  # (subject, key) -> redemption id
    unacked_redemptions: set[tuple[int, str]] = field(default_factory=set)
    statuses: list[tuple[float, int, str]] = field(default_factory=list)  # (time, status, content type)
    transport_errors: list[tuple[float, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def writes(self) -> int:
        return len(self.grants) + len(self.withdrawals) + len(self.redemptions)


class Driver:
    """Threads toggling consents and redeeming, one customer per thread, until ``stop()``."""

    def __init__(self, base: str, customers: list[Customer], *, timeout: float = 15.0) -> None:
        self.base = base
        self.customers = customers
        self.timeout = timeout
        self.acks = Acks()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(c,), daemon=True) for c in customers]

    def start(self) -> Driver:
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=self.timeout + 5)
        assert not any(t.is_alive() for t in self._threads), "a client request hung"

    def _request(self, client: httpx.Client, method: str, path: str, **kw: object) -> httpx.Response | None:
        try:
            r = client.request(method, self.base + path, **kw)  # type: ignore[arg-type]
        except httpx.TimeoutException as exc:
            with self.acks.lock:
                self.acks.transport_errors.append((time.monotonic(), f"timeout: {exc!r}"))
            return None
        except httpx.TransportError as exc:
            with self.acks.lock:
                self.acks.transport_errors.append((time.monotonic(), type(exc).__name__))
            time.sleep(0.05)  # the server is down: do not spin
            return None
        with self.acks.lock:
            self.acks.statuses.append((time.monotonic(), r.status_code, r.headers.get("content-type", "")))
        if r.status_code >= 500:
            time.sleep(0.05)
        return r

    def _run(self, customer: Customer) -> None:
        acks = self.acks
        i = 0
        with httpx.Client(headers=bearer(customer.token), timeout=self.timeout) as client:
            while not self._stop.is_set():
                f, p, partner = SCOPES[i % len(SCOPES)]
                i += 1
                r = self._request(
                    client, "POST", "/v1/me/consents", json={"field": f, "purpose": p, "partner": partner}
                )
                if r is not None and r.status_code in (200, 201):
                    body = r.json()
                    gid = body["grant"]["id"]
                    with acks.lock:
                        acks.grants.append((customer.subject_id, gid, body["receipt_id"]))
                    r = self._request(client, "DELETE", f"/v1/me/consents/{gid}")
                    if r is not None and r.status_code == 200:
                        with acks.lock:
                            acks.withdrawals.append((customer.subject_id, gid, r.json()["receipt_id"]))
                key = uuid.uuid4().hex
                with acks.lock:
                    acks.unacked_redemptions.add((customer.subject_id, key))
                r = self._request(
                    client,
                    "POST",
                    "/v1/me/redemptions",
                    json={"reward_key": REWARD, "quantity": 1},
                    headers={"Idempotency-Key": key},
                )
                if r is not None and r.status_code == 201:
                    with acks.lock:
                        acks.unacked_redemptions.discard((customer.subject_id, key))
                        acks.redemptions[(customer.subject_id, key)] = r.json()["id"]


def wait_for_acks(driver: Driver, n: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while driver.acks.writes() < n and time.monotonic() < deadline:
        time.sleep(0.02)


# --- the checks ----------------------------------------------------------------------------------
def assert_consents_durable(ctx: Context, acks: Acks) -> None:
    with ctx.db.session() as session:
        for subject, gid, rid in acks.grants:
            ev = session.scalar(select(ConsentEvent).where(ConsentEvent.receipt_id == rid))
            assert ev is not None, f"acknowledged change {rid} lost"
            assert (ev.grant_id, ev.subject_id, ev.kind) == (gid, subject, "granted"), rid
            assert session.get(ConsentReceipt, rid) is not None, f"acknowledged grant receipt {rid} lost"
        for subject, gid, rid in acks.withdrawals:
            ev = session.scalar(select(ConsentEvent).where(ConsentEvent.receipt_id == rid))
            assert ev is not None, f"acknowledged change {rid} lost"
            assert (ev.grant_id, ev.subject_id, ev.kind) == (gid, subject, "withdrawn"), rid
            assert session.get(ConsentReceipt, rid) is not None, f"acknowledged withdrawal receipt {rid} lost"
            assert session.get(ConsentGrant, gid).state == "withdrawn"  # type: ignore[union-attr]


def assert_redemptions_exactly_once(ctx: Context, base: str, customers: list[Customer], acks: Acks) -> None:
    tokens = {c.subject_id: c.token for c in customers}
    with ctx.db.session() as session:
        for (subject, key), rid in acks.redemptions.items():
            rows = session.scalars(
                select(Redemption).where(Redemption.subject_id == subject, Redemption.idempotency_key == key)
            ).all()
            assert [r.id for r in rows] == [rid], f"acknowledged redemption {key} lost or duplicated"
            legs = session.execute(
                select(PointsAccount.kind, PointsPosting.amount)
                .join(PointsAccount, PointsAccount.id == PointsPosting.account_id)
                .where(PointsPosting.transaction_id == rows[0].transaction_id)
                .order_by(PointsPosting.amount)
            ).all()
            assert [(k, a) for k, a in legs] == [("customer", -COST), ("redemption_sink", COST)], legs
    with httpx.Client(timeout=15) as client:
        # Retrying an acknowledged key replays it; retrying one whose answer was lost ends with exactly one.
        for (subject, key), rid in acks.redemptions.items():
            r = client.post(
                base + "/v1/me/redemptions",
                json={"reward_key": REWARD, "quantity": 1},
                headers={**bearer(tokens[subject]), "Idempotency-Key": key},
            )
            assert r.status_code == 201, r.text
            assert r.json()["id"] == rid
            assert r.headers.get("idempotent-replayed") == "true"
        for subject, key in acks.unacked_redemptions:
            r = client.post(
                base + "/v1/me/redemptions",
                json={"reward_key": REWARD, "quantity": 1},
                headers={**bearer(tokens[subject]), "Idempotency-Key": key},
            )
            assert r.status_code == 201, r.text
    with ctx.db.session() as session:
        for subject, key in [*acks.redemptions, *acks.unacked_redemptions]:
            count = session.scalar(
                select(func.count())
                .select_from(Redemption)
                .where(Redemption.subject_id == subject, Redemption.idempotency_key == key)
            )
            assert count == 1, key
        invariants.check_invariants(session)


def assert_audit_log_verifies(ctx: Context, tmp: Path, acks: Acks) -> int:
    """Sequence everything queued, export up to the signed checkpoint and verify it offline; every
    acknowledged consent change has its audit entry in the verified log. Returns the log size."""
    sequence(ctx.settings, ctx.db, ctx.keys, "audit")
    path = tmp / "audit-export.jsonl"
    with ctx.db.session() as session:
        assert queued_count(session, log="audit") == 0
        cp = latest_checkpoint(session, log="audit")
        assert cp is not None
        write_export(session, path, cp=cp, fmt="jsonl")
    report = verify_export(path, verifier_keys(ctx.settings, ctx.keys))
    assert report.ok, report
    text = path.read_text()
    for _, _, rid in [*acks.grants, *acks.withdrawals]:
        assert rid in text, f"no audit entry for receipt {rid}"
    return cp.size
