"""Readiness: can this process serve requests now? Each dependency is probed and named in the answer.

Liveness (``/livez``) asks nothing of any dependency: a process that answers is alive, and restarting it
would not fix a database outage. Readiness (``/readyz``) probes what a request needs (the database, the key
store, the broker when one is configured, bubblewrap for partner models), so a load balancer stops sending
traffic to a replica that cannot serve it and resumes once it can. A failed check says which dependency
failed and nothing else (no URLs, hosts, paths or error texts: those go to the server log).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dataspace.db import Database
    from dataspace.keys import KeyRing
    from dataspace.settings import Settings

log = logging.getLogger("dataspace.health")

_PROBE = b"dataspace readiness probe"


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    ms: float


def _database(db: Database) -> None:
    from sqlalchemy import text

    with db.session() as session:
        session.execute(text("select 1"))


def _keys(keys: KeyRing) -> None:
    # A signature made and checked through the key ring: whichever backend holds the key has to answer.
    key = keys.signing_key
    signature = key.sign(_PROBE)
    keys.verify_keys()[key.kid].verify(_PROBE, signature)


def _broker(broker_url: str) -> None:
    import pika  # dramatiq's RabbitMQ client

    params = pika.URLParameters(broker_url)
    params.socket_timeout = 2
    params.blocked_connection_timeout = 2
    params.connection_attempts = 1
    connection = pika.BlockingConnection(params)
    connection.close()


def _bubblewrap() -> None:
    from sandbox import Bubblewrap

    Bubblewrap().check()  # starts a trivial sandbox once, then remembers the success


def checks_for(settings: Settings, db: Database, keys: KeyRing) -> list[tuple[str, Callable[[], None]]]:
    probes: list[tuple[str, Callable[[], None]]] = [
        ("database", functools.partial(_database, db)),
        ("keys", functools.partial(_keys, keys)),
    ]
    if settings.broker_url:
        probes.append(("broker", functools.partial(_broker, settings.broker_url)))
    probes.append(("bubblewrap", _bubblewrap))
    return probes


def readiness(settings: Settings, db: Database, keys: KeyRing) -> list[Check]:
    """Run every check (none stops the others); the details of a failure go to the log only."""
    results = []
    for name, probe in checks_for(settings, db, keys):
        t0 = time.perf_counter()
        try:
            probe()
            ok = True
        except Exception:
            log.warning("readiness check failed", extra={"check": name}, exc_info=True)
            ok = False
        results.append(Check(name, ok, round((time.perf_counter() - t0) * 1000, 2)))
    return results
