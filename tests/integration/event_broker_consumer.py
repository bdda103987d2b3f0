"""A business-event consumer on RabbitMQ as its own process, for the at-least-once broker test.

    python -m tests.integration.event_broker_consumer DATABASE_URL KEY_FILE BROKER_URL QUEUE

Drains the queue forever (``EventBroker.drain``: one message at a time, acknowledged after the outcome is
stored). Prints ``ready`` once started. The test kills it with SIGKILL mid-delivery.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from dataspace.db import Database
from dataspace.events.broker import EventBroker
from dataspace.keys import load_key_file


def main() -> None:
    db_url, key_file, broker_url, queue = sys.argv[1:5]
    broker = EventBroker(Database(db_url), load_key_file(Path(key_file)), url=broker_url, queue=queue)
    print("ready", flush=True)
    while True:
        if broker.drain(idle_seconds=0.2) == 0:
            time.sleep(0.1)


if __name__ == "__main__":
    main()
