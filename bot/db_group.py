"""Group commit on a connection pool (PostgreSQL's side of `Database.run`).

Every transaction on a server costs the same few round trips whatever it does
(BEGIN, COMMIT, each a wakeup of the server and of our thread), a hop from the
event loop to a thread and back, and a commit record; a turn makes about ten small
ones. So, as SQLite's writer does, `run` calls that queue up while earlier ones
run are executed together in one transaction by up to `writers` pool threads at
once; a call made while a writer is free runs alone at once, so an idle bot waits
for nothing.

What a caller is promised is what one transaction per call promised:

- its future resolves once its work's transaction has committed;
- a work that raises fails alone: the batch is rolled back and each of its works
  runs again in a transaction of its own (the others commit, the failing one fails
  with its own error). No savepoint per work, which would cost two more round trips
  each; so a work must bear being run more than once, as the deadlock retry on
  PostgreSQL already asks (collect what it does outside the connection and apply
  it after `run` returns);
- a deadlock victim or serialization failure (SQLSTATE 40P01, 40001) is run
  again, alone, up to `TRANSIENT_ATTEMPTS` times in all;
- a commit that fails (the connection lost at COMMIT) fails every work of the
  batch: whether it committed is unknown, as for one call alone;
- transaction-scoped settings do not leak from one work into the next: a statement
  that would set them (`SET LOCAL`, `SET TRANSACTION`, `set_config`, a
  transaction-level advisory lock) is stopped before it runs when its work is in
  a batch, the batch runs again work by work, and that work (its code) runs alone
  from then on. `run(work, alone=True)` says so up front.
"""

from __future__ import annotations

import asyncio
import functools
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy import Connection, Engine, event
from sqlalchemy.exc import SQLAlchemyError

from bot.db_errors import TRANSIENT_ATTEMPTS, storage_error, transient

__all__ = ["GroupCommit", "GroupStats", "Job", "Outcome", "resolve"]

log = structlog.get_logger("bot.db")


@dataclass(frozen=True, slots=True)
class Job:
    """One `run` (or SQLite checkpoint) waiting for its thread."""

    work: Callable[[Any], Any]
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop
    #: SQLite: runs alone on a raw DB-API connection, outside any transaction.
    bare: bool = False
    #: PostgreSQL: never grouped with other works (see the module doc).
    alone: bool = False


#: A job, its result and its error (None when it succeeded).
Outcome = tuple[Job, Any, BaseException | None]


def resolve(items: list[Outcome]) -> None:
    """Settle the callers' futures (on their loop): result or error, each."""
    for job, result, error in items:
        if job.future.done():  # the caller was cancelled
            continue
        if error is not None:
            job.future.set_exception(error)
        else:
            job.future.set_result(result)


def hand_back(outcomes: list[Outcome]) -> None:
    """Resolve `outcomes` with one wakeup per event loop (from any thread)."""
    by_loop: dict[asyncio.AbstractEventLoop, list[Outcome]] = {}
    for outcome in outcomes:
        by_loop.setdefault(outcome[0].loop, []).append(outcome)
    for loop, items in by_loop.items():
        with suppress(RuntimeError):  # that loop is closed: nobody is waiting
            loop.call_soon_threadsafe(resolve, items)


@dataclass
class GroupStats:
    """What the group commit did since it started (read by tests and benchmarks)."""

    #: Works run.
    works: int = 0
    #: Transactions committed or attempted, batches and works alone together.
    transactions: int = 0
    #: Works that ran inside a batch of two or more.
    grouped: int = 0
    #: Batches rolled back and run again work by work.
    reruns: int = 0


_TRANSACTION_STATE = re.compile(
    r"^\s*set\s+(local|transaction|session\s+characteristics)\b"
    r"|\bset_config\s*\(|\bpg_(try_)?advisory_xact_lock",
    re.IGNORECASE,
)


@functools.lru_cache(maxsize=4096)
def _sets_transaction_state(statement: str) -> bool:
    return _TRANSACTION_STATE.search(statement) is not None


def _code(work: Callable[..., Any]) -> object:
    """What identifies a work across calls: its function's code (a closure made anew
    each call shares it), seen through a `functools.wraps` wrapper."""
    return getattr(getattr(work, "__wrapped__", work), "__code__", None)


class _TransactionState(Exception):
    """A work in a batch was about to set transaction-scoped state (stopped)."""


class GroupCommit:
    """Runs queued works on `executor`'s threads, grouped (see the module doc)."""

    def __init__(
        self, engine: Engine, executor: ThreadPoolExecutor, *, writers: int, max_batch: int = 32
    ) -> None:
        self.engine = engine
        self.writers = max(1, writers)
        self.max_batch = max(1, max_batch)
        self.stats = GroupStats()
        self._executor = executor
        self._lock = threading.Lock()
        self._queue: deque[Job] = deque()
        self._active = 0
        self._in_batch = threading.local()
        #: Code of works seen setting transaction state: they run alone from then on.
        self._alone: set[object] = set()
        event.listen(engine, "before_cursor_execute", self._guard)

    def submit(self, job: Job) -> None:
        """Queue `job`; a free writer (or a new one, up to `writers`) takes it."""
        with self._lock:
            self._queue.append(job)
            if self._active >= self.writers:
                return
            self._active += 1
        try:
            self._executor.submit(self._drain)
        except RuntimeError:  # shut down: nothing will take it
            with self._lock:
                self._active -= 1
                with suppress(ValueError):
                    self._queue.remove(job)
            raise

    def _drain(self) -> None:
        while True:
            with self._lock:
                if not self._queue:
                    self._active -= 1
                    return
                batch = self._take()
                # Left over (works that run alone, a batch's overflow): another writer.
                more = bool(self._queue) and self._active < self.writers
                if more:
                    self._active += 1
            if more:
                with suppress(RuntimeError):  # shutting down: this writer goes on
                    self._executor.submit(self._drain)
            if len(batch) == 1:
                hand_back([self._alone_outcome(batch[0])])
            else:
                hand_back(self._run_batch(batch))

    def _take(self) -> list[Job]:
        """The next batch (called under the lock): a work that runs alone by itself,
        else up to `max_batch` works that may share a transaction; works that run
        alone are left queued for the next writer, not run one after another here."""
        first = self._queue.popleft()
        if self._runs_alone(first):
            return [first]
        batch: list[Job] = [first]
        skipped: list[Job] = []
        while self._queue and len(batch) < self.max_batch:
            job = self._queue.popleft()
            (skipped if self._runs_alone(job) else batch).append(job)
        self._queue.extendleft(reversed(skipped))
        return batch

    def _runs_alone(self, job: Job) -> bool:
        return job.alone or _code(job.work) in self._alone

    def _run_batch(self, batch: list[Job]) -> list[Outcome]:
        results: list[Any] = []
        current: Job | None = None
        self.stats.transactions += 1
        try:
            self._in_batch.on = True
            try:
                with self.engine.begin() as conn:
                    for current in batch:
                        results.append(current.work(conn))
                    current = None  # every work returned: what fails now is the commit
            finally:
                self._in_batch.on = False
        except _TransactionState:
            assert current is not None
            code = _code(current.work)
            if code is not None:
                self._alone.add(code)
            log.info("db.work_runs_alone", work=getattr(current.work, "__qualname__", "?"))
        except Exception as exc:
            if current is None:  # the commit itself failed: committed or not, unknown
                error = storage_error(exc) if isinstance(exc, SQLAlchemyError) else exc
                self.stats.works += len(batch)
                return [(job, None, error) for job in batch]
        else:
            self.stats.works += len(batch)
            self.stats.grouped += len(batch)
            return [(job, result, None) for job, result in zip(batch, results, strict=True)]
        # A work raised (or set transaction state): nothing of the batch is stored;
        # each runs again by itself, so only the failing one fails.
        self.stats.reruns += 1
        return [self._alone_outcome(job) for job in batch]

    def _alone_outcome(self, job: Job) -> Outcome:
        try:
            return (job, self.run_alone(job.work), None)
        except Exception as exc:
            return (job, None, exc)

    def run_alone(self, work: Callable[[Connection], Any]) -> Any:
        """`work` in a transaction of its own, run again if it was a deadlock victim;
        SQLAlchemy errors come out as `StorageError`."""
        self.stats.works += 1
        for attempt in range(1, TRANSIENT_ATTEMPTS + 1):
            self.stats.transactions += 1
            try:
                with self.engine.begin() as conn:
                    return work(conn)
            except SQLAlchemyError as exc:
                # A deadlock or serialization failure between workers rolled the
                # whole transaction back: nothing of it is stored, so it runs again.
                if attempt < TRANSIENT_ATTEMPTS and transient(exc):
                    time.sleep(0.005 * attempt)
                    continue
                raise storage_error(exc) from exc
        raise AssertionError("unreachable")  # the loop returns or raises

    def _guard(
        self,
        conn: Connection,
        cursor: Any,
        statement: str,
        parameters: Any,
        context: Any,
        executemany: bool,
    ) -> None:
        if getattr(self._in_batch, "on", False) and _sets_transaction_state(statement):
            raise _TransactionState(statement[:80])
