"""Business events through a real RabbitMQ (both databases): a consumer process killed with SIGKILL mid-delivery,
then the broker itself killed and restarted. Every event reaches the consumer's endpoint at least once, with
a valid signature, and every delivery ends ``delivered``; nothing is lost, whatever was in flight.

The broker is this test's own ``rabbitmq-server`` (own node name, ports and data directory), so killing it
disturbs nobody else on the machine; the test is skipped where RabbitMQ is not installed.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pika
import pika.exceptions
import pytest
from sqlalchemy import select

from dataspace.context import Context
from dataspace.db import utcnow
from dataspace.events.broker import EventBroker
from dataspace.events.contract_models import BusinessEvent, EventDelivery
from dataspace.events.publish import publish
from dataspace.events.service import verify_signature
from dataspace.keys import save_key_file
from tests.factories.jobs import steward
from tests.integration.test_event_contracts import INSURER, PUBLISHED, TYPE, World, _start_receiver, proposal

ROOT = Path(__file__).resolve().parents[2]
RABBITMQ = Path(os.environ.get("DATASPACE_TEST_RABBITMQ_SERVER", "/usr/lib/rabbitmq/bin/rabbitmq-server"))
TIMEOUT = 120.0
CONSUMER = "tests.integration.event_broker_consumer"

pytestmark = [pytest.mark.slow]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Rabbit:
    """A private RabbitMQ node: ``kill`` is a crash (SIGKILL), ``start`` boots it on the same data."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = _free_port()
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}/%2F"
        (root / "rabbitmq.conf").write_text(f"listeners.tcp.default = {self.port}\nloopback_users = none\n")
        (root / "enabled_plugins").write_text("[].\n")
        self.env = {
            **os.environ,
            "HOME": str(root),  # its own Erlang cookie
            "RABBITMQ_NODENAME": f"dstest{uuid.uuid4().hex[:8]}@localhost",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(_free_port()),
            "RABBITMQ_MNESIA_BASE": str(root / "data"),
            "RABBITMQ_LOG_BASE": str(root / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(root / "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": str(root / "rabbitmq"),
            "RABBITMQ_PID_FILE": str(root / "pid"),
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        out = (self.root / "server.log").open("ab")
        self.proc = subprocess.Popen([str(RABBITMQ)], env=self.env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + TIMEOUT
        while True:
            try:
                pika.BlockingConnection(pika.URLParameters(self.url)).close()
                return
            except pika.exceptions.AMQPError:
                assert self.proc.poll() is None, (self.root / "server.log").read_text()[-3000:]
                assert time.monotonic() < deadline, "RabbitMQ did not start"
                time.sleep(0.5)

    def kill(self) -> None:
        pid = int((self.root / "pid").read_text().strip())  # the Erlang VM itself, not the start script
        os.kill(pid, signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(30)
        deadline = time.monotonic() + 30
        while True:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            assert time.monotonic() < deadline
            time.sleep(0.1)


@pytest.fixture(scope="module")
def rabbit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rabbit]:
    if not RABBITMQ.exists():
        pytest.skip(f"no RabbitMQ server at {RABBITMQ}")
    r = Rabbit(tmp_path_factory.mktemp("rabbitmq"))
    r.start()
    try:
        yield r
    finally:
        pid_file = r.root / "pid"
        if pid_file.exists():
            with contextlib.suppress(ProcessLookupError, ValueError):
                r.kill()
        shutil.rmtree(r.root / "data", ignore_errors=True)


def _publish(world: World, event_id: str) -> int:
    with world.ctx.db.transaction() as s:
        body = {**json.loads(json.dumps(PUBLISHED)), "id": event_id}
        publish(s, world.ctx.keys, principal=steward(), body=body)
    with world.ctx.db.session() as s:
        return int(
            s.scalars(
                select(EventDelivery.id)
                .join(BusinessEvent, BusinessEvent.id == EventDelivery.event_id)
                .where(BusinessEvent.event_id == event_id, EventDelivery.partner_id == world.insurer.id)
            ).one()
        )


def _received(log: Path) -> list[str]:
    if not log.exists():
        return []
    return [json.loads(json.loads(x)["body"])["id"] for x in log.read_text().splitlines()]


def _wait(what: str, done: object) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not done():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_at_least_once_through_rabbitmq_with_a_killed_consumer_and_a_broker_restart(
    ctx: Context, rabbit: Rabbit, tmp_path: Path
) -> None:
    ctx.settings = ctx.settings.model_copy(update={"webhook_allow_private": True})
    world = World(ctx)
    r = world.client.post("/v1/event-contracts", json=proposal(consumers=[INSURER]), headers=world.steward)
    assert r.status_code == 201, r.text
    r = world.client.post(f"/v1/partner/event-contracts/{r.json()['id']}/approve", headers=world.insurer_h)
    assert r.json()["status"] == "approved", r.text
    log = tmp_path / "received.jsonl"
    receiver, port = _start_receiver(0, log, "hang")
    key_file = tmp_path / "keys.json"
    save_key_file(key_file, ctx.keys)
    queue = f"events-test-{uuid.uuid4().hex[:8]}"
    # The sweep runs here; its lease is long, so everything below reaches the consumer through the broker's
    # own persistence and redelivery, not through a sweep sending again.
    sweep = EventBroker(ctx.db, ctx.keys, url=rabbit.url, queue=queue, lease=timedelta(hours=1))
    procs: list[subprocess.Popen[str]] = [receiver]

    def consumer() -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.integration.event_broker_consumer",
                ctx.db.url,
                str(key_file),
                rabbit.url,
                queue,
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=(tmp_path / f"consumer{len(procs)}.log").open("w"),
            text=True,
        )
        procs.append(proc)
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        return proc

    def status(delivery_id: int) -> tuple[str, int]:
        with ctx.db.session() as s:
            d = s.get(EventDelivery, delivery_id)
            assert d is not None
            return d.status, d.attempts

    try:
        url = f"http://127.0.0.1:{port}/events"
        r = world.client.post(
            "/v1/partner/event-subscriptions", json={"url": url, "events": [TYPE]}, headers=world.insurer_h
        )
        assert r.status_code == 201, r.text
        first = _publish(world, "evt-a")
        assert sweep.dispatch() == 1

        # 1. The consumer takes the message and is killed while the endpoint holds the request.
        victim = consumer()
        _wait("the first request", lambda: _received(log) == ["evt-a"])
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
        receiver.kill()
        receiver.wait(10)
        assert status(first) == ("pending", 0)  # nothing recorded: the message was never acknowledged
        receiver, _ = _start_receiver(port, log, "ok")  # the endpoint comes back on its address
        procs.append(receiver)

        # 2. More events are queued; the broker crashes with them (and the unacknowledged one) on disk.
        more = [_publish(world, f"evt-{c}") for c in "bcd"]
        assert sweep.dispatch() == 3
        rabbit.kill()
        # Published while the broker is down: the sweep cannot send it and releases it for the next sweep.
        late = _publish(world, "evt-e")
        assert sweep.dispatch() == 0
        with ctx.db.session() as s:
            released = s.get(EventDelivery, late)
            assert released is not None
            assert released.next_attempt_at <= utcnow()  # due again at once, not leased for an hour
        rabbit.start()
        assert sweep.dispatch() == 1  # evt-e; the others are leased: they come from the broker's disk

        # 3. A new consumer: every event arrives, evt-a a second time (at least once).
        consumer()
        ids = [first, *more, late]
        _wait("every delivery", lambda: all(status(i)[0] == "delivered" for i in ids))
        got = _received(log)
        assert sorted(set(got)) == ["evt-a", "evt-b", "evt-c", "evt-d", "evt-e"]
        assert got.count("evt-a") == 2
        keys = {k.kid: k.public_bytes for k in ctx.keys.signing_keys}
        for line in log.read_text().splitlines():
            x = json.loads(line)
            verify_signature(x["sig"], x["body"].encode(), keys)
        assert all(status(i) == ("delivered", 1) for i in ids)
        # A stale message (a duplicate of one already handled) is dropped, never sent again.
        assert sweep.handle(first, 0) == "skipped"
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        sweep.close()


def test_the_server_background_sends_business_events_through_the_broker(
    ctx: Context, rabbit: Rabbit, tmp_path: Path
) -> None:
    """With ``DATASPACE_BROKER_URL`` set, the server's background sweep publishes due deliveries to the
    business-events queue and its consumer sends them."""
    from dataspace.background import Background
    from dataspace.events.broker import queue_name

    ctx.settings = ctx.settings.model_copy(
        update={
            "webhook_allow_private": True,
            "broker_url": rabbit.url,
            "broker_queue": f"jobs-test-{uuid.uuid4().hex[:8]}",
        }
    )
    world = World(ctx)
    r = world.client.post("/v1/event-contracts", json=proposal(consumers=[INSURER]), headers=world.steward)
    world.client.post(f"/v1/partner/event-contracts/{r.json()['id']}/approve", headers=world.insurer_h)
    log = tmp_path / "received.jsonl"
    receiver, port = _start_receiver(0, log, "ok")
    background = Background(ctx)
    try:
        r = world.client.post(
            "/v1/partner/event-subscriptions",
            json={"url": f"http://127.0.0.1:{port}/events", "events": [TYPE]},
            headers=world.insurer_h,
        )
        assert r.status_code == 201, r.text
        delivery_id = _publish(world, "evt-bg")  # through the service: no immediate send, only the sweep's
        background.start()
        _wait("the delivery", lambda: _received(log) == ["evt-bg"])

        def delivered() -> bool:  # marked once the consumer's answer is back, just after the receiver logs it
            with ctx.db.session() as s:
                return s.get(EventDelivery, delivery_id).status == "delivered"  # type: ignore[union-attr]

        _wait("the delivery marked delivered", delivered)
        assert _received(log) == ["evt-bg"]  # and sent once
        conn = pika.BlockingConnection(pika.URLParameters(rabbit.url))
        try:  # it went through the broker's queue (declared by the sweep), now empty
            queue = conn.channel().queue_declare(queue_name(ctx.settings.broker_queue), durable=True, passive=True)
            assert queue.method.message_count == 0
        finally:
            conn.close()
    finally:
        background.stop()
        receiver.kill()
        receiver.wait(10)
