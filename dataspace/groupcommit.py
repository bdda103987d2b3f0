"""Group commit: short write transactions submitted by concurrent requests run together, one COMMIT each batch.

A consent change is a handful of small statements; on its own it also pays a BEGIN, a connection checkout and
a COMMIT that waits for the write-ahead log to reach the disk. Requests that arrive while one batch runs are
queued, and the next batch runs all of them in one transaction on one connection: one BEGIN, one COMMIT (one
WAL flush), one audit append. Nobody waits for a timer: an idle server runs a lone request at once.

Each request still gets its own answer:

- every function of a batch runs in the batch's transaction, in arrival order, so a later one sees what an
  earlier one wrote (as if they had committed one after the other);
- if any function raises, nothing of the batch is kept: the transaction rolls back. If the error is the
  function's own answer (one of ``own_errors``: bad input, not found, too few points), the function gets
  it, as it would had the functions before it committed first, and the others run again as a batch.
  Any other error (the database's: a deadlock, a lost connection) makes each function run again alone, in
  its own transaction, as it would have without batching. Functions must therefore be retryable before
  commit (they compute everything from the database inside the transaction; nothing leaves the process
  before the commit);
- a race the server can win by trying again (a serialization failure or deadlock in PostgreSQL, or a domain
  error marked ``retryable``, such as ``ConcurrentChange``) is never the caller's answer while attempts
  remain: the function runs again alone, up to ``attempts`` times in all, after a jittered, exponentially
  growing pause; only the last attempt's error reaches the caller;
- if the COMMIT itself fails, every request of the batch gets that error (as a lone request would): whether
  the commit happened is unknown, so nothing is run again;
- a caller learns its result only after the batch committed: an acknowledged write is durable.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import queue
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from dataspace.db import Database
from dataspace.observability import metrics, tracing

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass
class _Item(Generic[T]):
    fn: Callable[[Session], T]
    future: concurrent.futures.Future[T]
    queued_at: float = 0.0  # perf_counter() at submit: the wait before the batch is a metric
    trace: Any = None  # the submitting request's trace context (None: tracing off)


# SQLSTATEs of a transaction PostgreSQL rolled back only because of a concurrent one: run it again.
_RETRYABLE_SQLSTATES = frozenset({"40001", "40P01"})  # serialization_failure, deadlock_detected


def retryable(exc: BaseException) -> bool:
    """Whether ``exc`` only says a concurrent transaction won a race (running again may well succeed)."""
    if getattr(exc, "retryable", False) is True:
        return True
    return isinstance(exc, DBAPIError) and getattr(exc.orig, "sqlstate", None) in _RETRYABLE_SQLSTATES


@contextlib.contextmanager
def _nothing(_session: Session) -> Iterator[None]:
    yield


class _OwnError(Exception):
    def __init__(self, index: int, error: Exception) -> None:
        super().__init__(index)
        self.index = index
        self.error = error


class GroupCommit:
    """Runs submitted ``fn(session)`` calls on ``threads`` threads, batched into shared transactions (one
    batch per thread at a time, each on its own connection).

    ``around(session)`` wraps every batch (and every lone rerun) inside its transaction: for example the audit
    log's ``batched``, so a batch's audit entries are appended once. ``max_batch`` bounds a batch (and so the
    time its locks are held). ``own_errors`` are the exceptions that are a function's own answer (domain
    errors): the function gets it and the rest of its batch runs again together, instead of every function
    running again alone (so a stream of bad requests cannot multiply everyone's cost)."""

    def __init__(
        self,
        db: Database,
        *,
        around: Callable[[Session], AbstractContextManager[Any]] = _nothing,
        max_batch: int = 64,
        threads: int = 1,
        own_errors: tuple[type[Exception], ...] = (),
        name: str = "group-commit",
        attempts: int = 5,
        retry_pause: float = 0.005,
    ) -> None:
        if max_batch < 1 or threads < 1 or attempts < 1:
            raise ValueError("max_batch, threads and attempts must be at least 1")
        self._attempts = attempts
        self._retry_pause = retry_pause
        self._threads_wanted = threads
        self._own_errors = own_errors
        self._db = db
        self._around = around
        self._max_batch = max_batch
        self._name = name
        self._queue: queue.SimpleQueue[_Item[Any] | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._closed = False
        self.batches = 0  # counters, for tests and the bench
        self.items = 0
        self.reruns = 0
        self.retries = 0  # runs again after a retryable error

    # --- submitting ------------------------------------------------------------------------------------
    def submit(self, fn: Callable[[Session], T]) -> concurrent.futures.Future[T]:
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("group commit is closed")
            if not self._threads:
                self._threads = [
                    threading.Thread(target=self._loop, name=f"{self._name}-{i}", daemon=True)
                    for i in range(self._threads_wanted)
                ]
                for thread in self._threads:
                    thread.start()
            self._queue.put(_Item(fn, future, time.perf_counter(), tracing.current()))
        return future

    def queued(self) -> int:
        """Writes waiting for a batch (approximate; for the metrics)."""
        return self._queue.qsize()

    def call(self, fn: Callable[[Session], T]) -> T:
        """Run ``fn`` in the next batch and return its result once that batch committed (blocking)."""
        return self.submit(fn).result()

    async def run(self, fn: Callable[[Session], T]) -> T:
        """``call`` for the event loop: awaits the batch without holding a worker thread."""
        return await asyncio.wrap_future(self.submit(fn))

    def close(self, timeout: float = 30.0) -> None:
        """Finish what is queued, then stop the threads."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            threads = list(self._threads)
        for _ in threads:  # one stop mark per thread, queued behind every write already submitted
            self._queue.put(None)
        for thread in threads:
            thread.join(timeout)

    # --- the batch threads --------------------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            stop = False
            while len(batch) < self._max_batch:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                batch.append(nxt)
            live = [item for item in batch if item.future.set_running_or_notify_cancel()]
            if live:
                try:
                    self._run(live)
                except BaseException as exc:  # never lose a caller: whatever escaped is their answer
                    log.exception("group commit batch failed")
                    for item in live:
                        if not item.future.done():
                            item.future.set_exception(exc)
            if stop:
                return

    def _run(self, batch: list[_Item[Any]]) -> None:
        start = time.perf_counter()
        try:
            with tracing.batch_span(self._name, [item.trace for item in batch]):
                self._run_batch(batch)
        finally:
            metrics.observe_batch(
                self._name,
                len(batch),
                (start - item.queued_at for item in batch),
                time.perf_counter() - start,
            )

    def _run_batch(self, batch: list[_Item[Any]]) -> None:
        with self._lock:
            self.batches += 1
            self.items += len(batch)
        pending = batch
        while len(pending) > 1:
            failed = self._try(pending)
            if failed is None:
                return  # committed (or the COMMIT failed): every caller has its answer
            index, exc = failed
            with self._lock:
                self.reruns += 1
            metrics.batch_rerun(self._name)
            if index is None:
                # The database failed (a deadlock, a lost connection...) or the batch's wrapper did: not one
                # function's fault. Each runs again alone, so only one at fault gets an error.
                for item in pending:
                    self._alone(item)
                return
            # A function's own answer (a domain error: bad input, not found, too few points): it is final,
            # as it would be had the functions before it committed first. The others run again together.
            pending[index].future.set_exception(exc)
            pending = pending[:index] + pending[index + 1 :]
        if pending:
            self._alone(pending[0])

    def _try(self, batch: list[_Item[Any]]) -> tuple[int | None, BaseException] | None:
        """Run ``batch`` in one transaction. None: every caller has its answer (results after the commit, or
        the COMMIT's error). Else (rolled back, nobody answered): the index of the function whose own error
        it was (None if not one function's), and the error."""
        session = self._db.sessionmaker()
        try:
            session.begin()
            results: list[Any] = []
            try:
                with self._around(session):
                    for index, item in enumerate(batch):
                        try:
                            with tracing.write_span(item.trace):
                                results.append(item.fn(session))
                        except self._own_errors as exc:
                            if retryable(exc):
                                raise  # not its answer yet: every function runs again alone (below)
                            raise _OwnError(index, exc) from exc
                session.flush()
            except _OwnError as own:
                session.rollback()
                return own.index, own.error
            except Exception as exc:  # noqa: BLE001 - handed back to _run, which decides who gets what
                session.rollback()
                return None, exc
            try:
                session.commit()
            except Exception as exc:  # noqa: BLE001 - outcome unknown: every caller learns it, nothing runs again
                for item in batch:
                    item.future.set_exception(exc)
                return None
        finally:
            session.close()
        for item, result in zip(batch, results, strict=True):
            item.future.set_result(result)
        return None

    def _alone(self, item: _Item[Any]) -> None:
        for attempt in range(self._attempts):
            try:
                with self._db.transaction() as session, self._around(session), tracing.write_span(item.trace):
                    result = item.fn(session)
            except Exception as exc:  # noqa: BLE001 - the caller gets it, unless a new attempt may succeed
                if retryable(exc) and attempt + 1 < self._attempts:
                    with self._lock:
                        self.retries += 1
                    # Jittered, so two requests that collided do not collide again in step (bounded: with the
                    # defaults, at most 75 ms over all attempts).
                    time.sleep(random.uniform(0, self._retry_pause * 2**attempt))  # noqa: S311 - not a secret
                    continue
                item.future.set_exception(exc)
            else:
                item.future.set_result(result)
            return
