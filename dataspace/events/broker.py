"""Business-event deliveries through RabbitMQ, when a broker is configured (``DATASPACE_BROKER_URL``).

The outbox stays the source of truth (``dataspace.events.delivery``); the broker spreads the sending over
consumers. Invariants, under each failure:

- ``dispatch`` (the API replicas' sweep) takes due pending deliveries, leases them (``next_attempt_at`` moves
  past the lease, so no other sweep sends them again meanwhile) and publishes one persistent message
  ``{delivery_id, attempts}`` each to a durable queue, with publisher confirms: a confirmed message is on
  the broker's disk. Deliveries whose message could not be published (broker down) are released at once, so
  the next sweep sends them; a sweep that dies between leasing and publishing loses nothing either: the
  lease expires and a later sweep sends again.
- A consumer (``drain``) takes one message at a time and acknowledges it only after the outcome is stored.
  A consumer killed mid-send leaves its message unacknowledged: the broker gives it to another consumer
  (at once, or after the broker's restart), which sends again. Consumers dedupe by the event ``id``.
- A message is acted on only while its delivery is still pending with the attempt count it was published
  with: a duplicate (a re-published lease, a redelivery after the outcome was stored) is acknowledged and
  dropped. The outcome (delivered, retry after the contract's backoff, dead-lettered) is recorded as by
  ``delivery.deliver_due``; a retry is published again by the sweep when it falls due.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Sequence
from datetime import datetime, timedelta

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel
from sqlalchemy import select, update

from dataspace.db import Database, utcnow
from dataspace.events.contract_models import EventDelivery
from dataspace.events.delivery import _attempt, _record, _send
from dataspace.events.service import Sender, http_sender
from dataspace.keys import KeyRing

log = logging.getLogger("dataspace.events.broker")

LEASE = timedelta(seconds=60)


def queue_name(broker_queue: str) -> str:
    """The business events' queue beside the jobs' queue of the same deployment."""
    return f"{broker_queue}.business-events"


class EventBroker:
    """The sweep (publisher) and the consumer of one process; each keeps its own connection."""

    def __init__(
        self,
        db: Database,
        keys: KeyRing,
        *,
        url: str,
        queue: str,
        send: Sender | None = None,
        lease: timedelta = LEASE,
    ) -> None:
        self.db, self.keys, self.queue, self.lease = db, keys, queue, lease
        self.params = pika.URLParameters(url)
        self.params.heartbeat = 30
        self.params.connection_attempts = 1
        self.send = send or http_sender()
        self._publisher: tuple[pika.BlockingConnection, BlockingChannel] | None = None
        self._consumer: tuple[pika.BlockingConnection, BlockingChannel] | None = None
        self._down: set[str] = set()  # "publisher"/"consumer" while the broker is unreachable (logged once)

    # --- connections ---
    def _channel(self, *, consumer: bool) -> BlockingChannel:
        held = self._consumer if consumer else self._publisher
        if held is not None and held[0].is_open and held[1].is_open:
            return held[1]
        self._drop(consumer=consumer)
        conn = pika.BlockingConnection(self.params)
        channel = conn.channel()
        channel.queue_declare(self.queue, durable=True)
        if consumer:
            channel.basic_qos(prefetch_count=1)
            self._consumer = (conn, channel)
        else:
            channel.confirm_delivery()
            self._publisher = (conn, channel)
        return channel

    def _drop(self, *, consumer: bool) -> None:
        held = self._consumer if consumer else self._publisher
        if consumer:
            self._consumer = None
        else:
            self._publisher = None
        if held is not None:
            with contextlib.suppress(pika.exceptions.AMQPError, OSError):  # already broken: nothing to close
                held[0].close()

    def close(self) -> None:
        self._drop(consumer=True)
        self._drop(consumer=False)

    def _outage(self, side: str, exc: Exception) -> None:
        if side not in self._down:  # once per outage: the periodic tasks retry several times a second
            log.warning("RabbitMQ unreachable for business events (%s): %s", side, exc)
            self._down.add(side)

    def _recovered(self, side: str) -> None:
        if side in self._down:
            log.info("RabbitMQ reachable again for business events (%s)", side)
            self._down.discard(side)

    # --- the sweep ---
    def dispatch(
        self, *, now: datetime | None = None, limit: int = 500, delivery_ids: Sequence[int] | None = None
    ) -> int:
        """Lease due pending deliveries and publish one message each; returns how many were published."""
        now = now or utcnow()
        with self.db.transaction() as session:
            stmt = (
                select(EventDelivery)
                .where(EventDelivery.status == "pending", EventDelivery.next_attempt_at <= now)
                .order_by(EventDelivery.next_attempt_at, EventDelivery.id)
                .limit(limit)
            )
            if delivery_ids is not None:
                stmt = stmt.where(EventDelivery.id.in_(list(delivery_ids)))
            if not self.db.is_sqlite:
                stmt = stmt.with_for_update(skip_locked=True)
            leased = []
            for d in session.scalars(stmt):
                d.next_attempt_at = now + self.lease
                leased.append((d.id, d.attempts))
        if not leased:
            return 0
        published = 0
        try:
            channel = self._channel(consumer=False)
            for delivery_id, attempts in leased:
                channel.basic_publish(
                    exchange="",
                    routing_key=self.queue,
                    body=json.dumps({"delivery_id": delivery_id, "attempts": attempts}).encode(),
                    properties=pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent),
                    mandatory=True,
                )
                published += 1
            self._recovered("publisher")
        except pika.exceptions.AMQPError as exc:
            self._drop(consumer=False)
            unsent = [delivery_id for delivery_id, _ in leased[published:]]
            self._outage("publisher", exc)
            with self.db.transaction() as session:  # released: the next sweep publishes them again
                session.execute(
                    update(EventDelivery)
                    .where(EventDelivery.id.in_(unsent), EventDelivery.status == "pending")
                    .values(next_attempt_at=now)
                    .execution_options(synchronize_session=False)
                )
        return published

    # --- the consumer ---
    def handle(self, delivery_id: int, attempts: int) -> str:
        """Send one delivery named by a message; the outcome, or ``skipped`` for a stale message."""
        with self.db.session() as session:
            d = session.get(EventDelivery, delivery_id)
            if d is None or d.status != "pending" or d.attempts != attempts:
                return "skipped"
            attempt = _attempt(session, d)
        status, error = _send(self.keys, attempt, self.send, int(time.time()))
        with self.db.transaction() as session:
            d = session.get(EventDelivery, delivery_id, with_for_update=True)
            if d is None or d.status != "pending" or d.attempts != attempts:
                return "skipped"  # a duplicate message was handled meanwhile: its outcome stands
            d.attempts += 1
            return _record(session, delivery_id, status, error, utcnow())

    def drain(self, *, idle_seconds: float = 0.2, max_messages: int = 100) -> int:
        """Handle messages until the queue stays idle for ``idle_seconds`` (or ``max_messages``); each is
        acknowledged after its outcome is stored. Returns how many were handled; 0 if the broker is down."""
        handled = 0
        try:
            channel = self._channel(consumer=True)
            for method, _props, body in channel.consume(self.queue, inactivity_timeout=idle_seconds):
                if method is None:
                    break
                try:
                    msg = json.loads(body)
                    delivery_id, attempts = int(msg["delivery_id"]), int(msg["attempts"])
                except (ValueError, KeyError, TypeError):
                    log.warning("malformed business-event message dropped")
                else:
                    self.handle(delivery_id, attempts)
                channel.basic_ack(method.delivery_tag)
                handled += 1
                if handled >= max_messages:
                    break
            channel.cancel()
            self._recovered("consumer")
        except pika.exceptions.AMQPError as exc:
            self._outage("consumer", exc)
            self._drop(consumer=True)
        except Exception:
            self._drop(consumer=True)  # the unacknowledged message goes back to the queue for another try
            raise
        return handled
