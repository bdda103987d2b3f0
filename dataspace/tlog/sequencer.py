"""The background sequencer: a daemon thread that sequences every log every ``interval`` seconds."""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from dataspace.tlog.log import LOGS, sequence

if TYPE_CHECKING:
    from dataspace.context import Context

log = logging.getLogger("dataspace.tlog")


class Sequencer:
    def __init__(self, ctx: Context, interval: float = 0.25) -> None:
        self.ctx = ctx
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> None:
        for name in LOGS:
            sequence(self.ctx, name)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.run_once()
            except Exception:
                log.exception("sequencer run failed")

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="tlog-sequencer", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
