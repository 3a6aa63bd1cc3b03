"""The database as the rest of the code sees it: `Database`, an engine plus the
threads its blocking work runs on, so callers can `await` it.

Engines (SQLite's pragmas, PostgreSQL's bounded pool, the checks before use) are
made in `bot.db_engine`, migrations applied by `bot.db_migrate`; both are exported
from here too. SQLite's file checks and pragmas live in `bot.db_sqlite`, error
wording and retry rules in `bot.db_errors`, the grouped commits in `bot.db_group`.
"""

from __future__ import annotations

import asyncio
import os
import queue
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from bot.db_engine import PoolOptions, check_database, create_db_engine, ping
from bot.db_errors import storable
from bot.db_errors import storage_error as _storage_error
from bot.db_group import GroupCommit, GroupStats, Job, hand_back
from bot.db_migrate import MIGRATIONS_DIR, current_revision, head_revision, upgrade
from bot.db_sqlite import SQLITE_HEADER, sqlite_path
from bot.errors import StorageError

__all__ = [
    "MIGRATIONS_DIR",
    "SQLITE_HEADER",
    "Database",
    "GroupStats",
    "PoolOptions",
    "check_database",
    "create_db_engine",
    "current_revision",
    "head_revision",
    "sqlite_path",
    "storable",
    "upgrade",
]

T = TypeVar("T")


class Database:
    """An engine plus the thread its blocking work runs on, so callers can `await` it.

    Every `run(work)` executes `work(connection)` in a transaction and resolves only
    after that transaction has committed. SQLAlchemy errors come out as
    `StorageError` with a reason a person can act on.

    SQLite takes one writer at a time, so its work runs on one dedicated writer thread
    that applies *group commit*: work that queued up while the previous transaction
    ran is executed together, each piece in its own savepoint (one failing piece rolls
    back alone), under a single commit. Under load this turns hundreds of small
    transactions into a few, and one thread hop per batch instead of per call. Other
    databases (PostgreSQL) get one thread per pooled connection (`size +
    max_overflow`, so a thread never waits for a connection another thread of ours
    holds); `run` groups there too (`bot.db_group`: up to `writers` of those threads,
    by default half of them and at most half the CPUs (`default_writers`), at once
    commit what queued meanwhile together, without savepoints), and on PostgreSQL
    the other threads do the same for `read`, each batch one READ ONLY transaction.
    """

    #: Most pieces of work committed together (SQLite).
    max_batch = 128

    def __init__(
        self,
        engine: Engine,
        *,
        workers: int | None = None,
        readers: int = 2,
        writers: int | None = None,
    ) -> None:
        self.engine = engine
        self._queue: queue.SimpleQueue[Job | None] | None = None
        self._writer: threading.Thread | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._readers: ThreadPoolExecutor | None = None
        self._read_engine: Engine | None = None
        self._group: GroupCommit | None = None
        self._group_reads: GroupCommit | None = None
        if engine.dialect.name == "sqlite" and workers in (None, 1):
            self._queue = queue.SimpleQueue()
            self._writer = threading.Thread(target=self._write_loop, name="bot-db", daemon=True)
            self._writer.start()
            # A file (WAL mode, see create_db_engine) lets readers run beside the writer
            # on their own connections; an in-memory database exists once per
            # connection, so it has no readers.
            url = engine.url.render_as_string(hide_password=False)
            if readers > 0 and sqlite_path(url) is not None:
                self._read_engine = create_db_engine(url, read_only=True)
                self._readers = ThreadPoolExecutor(
                    max_workers=readers, thread_name_prefix="bot-db-read"
                )
        else:
            threads = workers or _pool_capacity(engine)
            self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="bot-db")
            # Fewer writers than threads: reads keep threads (and connections) of their
            # own under a burst of writes, and what queues meanwhile is grouped.
            write_threads = min(threads, writers or default_writers(threads))
            self._group = GroupCommit(engine, self._executor, writers=write_threads)
            if engine.dialect.name == "postgresql":
                self._read_engine = engine.execution_options(postgresql_readonly=True)
                # Reads queued together share one READ ONLY transaction as well.
                self._group_reads = GroupCommit(
                    self._read_engine, self._executor, writers=max(1, threads - write_threads)
                )

    @classmethod
    def open(
        cls,
        url: str,
        *,
        busy_timeout_ms: int = 5000,
        migrate: bool = True,
        must_exist: bool = False,
        pool: PoolOptions | None = None,
    ) -> Database:
        """Create the engine and apply migrations (blocking: call before the loop is busy).

        `must_exist`: refuse a SQLite file that is not there instead of creating it.
        A server database is reached once first: one that does not answer is a
        `StorageError` now, not at the first message.
        """
        engine = create_db_engine(
            url, busy_timeout_ms=busy_timeout_ms, must_exist=must_exist, pool=pool
        )
        try:
            if engine.dialect.name != "sqlite":
                ping(engine)
            if migrate:
                upgrade(engine)
        except BaseException:
            engine.dispose()
            raise
        return cls(engine)

    @property
    def ordered(self) -> bool:
        """Whether `run` calls commit in the order they were made (SQLite's one writer
        thread). On a pool they run side by side, so ids from two calls in flight at
        once may come out in either order."""
        return self._queue is not None

    @property
    def group_stats(self) -> GroupStats | None:
        """What group commit of `run` on a pool did so far (None on SQLite's writer)."""
        return self._group.stats if self._group is not None else None

    @property
    def read_group_stats(self) -> GroupStats | None:
        """The same for `read` on PostgreSQL (None elsewhere)."""
        return self._group_reads.stats if self._group_reads is not None else None

    async def run(self, work: Callable[[Connection], T], *, alone: bool = False) -> T:
        """Run `work(connection)` in a transaction on a database thread; return its
        result once the transaction is committed.

        It may share that transaction with other calls queued at the same time (group
        commit: each in a savepoint on SQLite, none on PostgreSQL, see
        `bot.db_group`); a work that raises still fails alone. On PostgreSQL `work`
        may run more than once: again alone when another work of its batch failed,
        and again when the server rolled its transaction back as a deadlock victim
        (or for a serialization failure); so what it does outside the connection must
        bear a repeat (collect, and apply after it returns). `alone`: never grouped on
        PostgreSQL (a work that sets transaction-scoped state; one that forgets is
        found out and kept alone by itself)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        if self._group is not None:
            self._group.submit(Job(work, future, loop, alone=alone))
            return await future
        assert self._queue is not None
        self._queue.put(Job(work, future, loop))
        return await future

    async def read(self, work: Callable[[Connection], T], *, alone: bool = False) -> T:
        """Run read-only `work(connection)` on a committed snapshot, beside the writer.

        With a SQLite file this runs on a reader thread with its own connection, so a
        search neither waits behind queued writes nor holds them up; it sees everything
        committed before it began (so every awaited `run` before it). On PostgreSQL it
        is a READ ONLY transaction on the pool, shared by the reads queued at the same
        time as `run` shares its transactions (`bot.db_group`; `alone`: never shared,
        e.g. a long search that should run beside the others, not after them).
        Otherwise it is `run`. `work` must not write: SQLite's reader and PostgreSQL
        refuse it.
        """
        loop = asyncio.get_running_loop()
        if self._group_reads is not None:
            future: asyncio.Future[T] = loop.create_future()
            self._group_reads.submit(Job(work, future, loop, alone=alone))
            return await future
        if self._readers is not None:
            return await loop.run_in_executor(self._readers, self._read_transaction, work)
        return await self.run(work)

    def _read_transaction(self, work: Callable[[Connection], T]) -> T:
        assert self._read_engine is not None
        try:
            with self._read_engine.begin() as conn:
                return work(conn)
        except SQLAlchemyError as exc:
            raise _storage_error(exc) from exc

    def _write_loop(self) -> None:
        assert self._queue is not None
        while True:
            job = self._queue.get()
            if job is None:
                return
            batch = [job]
            stop = False
            while len(batch) < self.max_batch:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                batch.append(more)
            group: list[Job] = []
            for item in batch:
                if not item.bare:
                    group.append(item)
                    continue
                if group:
                    self._run_batch(group)
                    group = []
                self._run_bare(item)
            if group:
                self._run_batch(group)
            if stop:
                return

    def _run_bare(self, job: Job) -> None:
        error: BaseException | None = None
        result: Any = None
        try:
            raw = self.engine.raw_connection()
            try:
                result = job.work(raw.dbapi_connection)
            finally:
                raw.close()
        except SQLAlchemyError as exc:
            error = _storage_error(exc)
        except sqlite3.Error as exc:
            error = StorageError(f"database error: {exc}")
        except Exception as exc:
            error = exc
        hand_back([(job, result, error)])

    def _run_batch(self, batch: list[Job]) -> None:
        outcomes: list[tuple[Job, Any, BaseException | None]] = []
        try:
            with self.engine.begin() as conn:
                if len(batch) == 1:
                    outcomes.append((batch[0], batch[0].work(conn), None))
                else:
                    for job in batch:
                        try:
                            with conn.begin_nested():
                                outcomes.append((job, job.work(conn), None))
                        except Exception as exc:  # this piece alone rolls back
                            error = _storage_error(exc) if isinstance(exc, SQLAlchemyError) else exc
                            outcomes.append((job, None, error))
        except Exception as exc:  # the commit (or a single piece) failed: nothing is stored
            error = _storage_error(exc) if isinstance(exc, SQLAlchemyError) else exc
            outcomes = [(job, None, error) for job in batch]
        hand_back(outcomes)

    async def checkpoint(self, *, attempts: int = 3) -> None:
        """Copy every WAL frame into the database file and truncate the WAL to zero bytes.

        Old page images in the WAL (the text of rows deleted since) are gone once this
        returns. It runs on the writer thread between transactions; readers in the
        middle of a transaction are waited for (busy timeout, `attempts` times), then
        `StorageError` says the WAL could not be truncated. Not a SQLite file: no-op.
        """
        if self._queue is None or sqlite_path(self.engine.url.render_as_string()) is None:
            return

        def work(conn: sqlite3.Connection) -> tuple[int, int, int]:
            row = (1, -1, -1)
            for _ in range(attempts):
                row = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
                if row[0] == 0:
                    break
            return (int(row[0]), int(row[1]), int(row[2]))

        loop = asyncio.get_running_loop()
        future: asyncio.Future[tuple[int, int, int]] = loop.create_future()
        self._queue.put(Job(work, future, loop, bare=True))
        busy, _log, _done = await future
        if busy:
            raise StorageError(
                "could not truncate the write-ahead log: a reader kept it busy "
                "(the WAL still holds old pages until the next checkpoint)"
            )

    async def aclose(self) -> None:
        """Finish queued work, then close every connection."""
        if self._queue is not None and self._writer is not None:
            self._queue.put(None)
            await asyncio.to_thread(self._writer.join)
        if self._executor is not None:
            await asyncio.to_thread(self._executor.shutdown, True)
        if self._readers is not None:
            await asyncio.to_thread(self._readers.shutdown, True)
        if self._read_engine is not None and self._read_engine.pool is not self.engine.pool:
            self._read_engine.dispose()
        self.engine.dispose()


def default_writers(threads: int) -> int:
    """How many of a server database's `threads` commit groups at once by default:
    half of them, and no more than half this process's CPUs.

    Each writer is a thread that builds and sends its own transaction; more of them
    than the cores can run split what queued into more, smaller transactions, and
    the threads contend for the GIL with the event loop. Measured on the 2-core
    machine (bench/platform_load.py --workers 1, 200 chats x 3 messages at once, the
    server's CPU included): 5 writers 22-26 ms of CPU per message, 2 writers 17-18,
    1 writer 14.5-14.9 (SQLite's single writer 10.8-13.7), with 1.5 transactions per
    message falling to 0.7 and turns/s rising from 46-54 to 73-76.
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cpus = os.cpu_count() or 1
    return max(1, min(threads // 2, cpus // 2))


def _pool_capacity(engine: Engine) -> int:
    # QueuePool: its size plus overflow; a pool without those (NullPool, StaticPool)
    # opens connections as asked, so a small fixed number of threads will do.
    size = getattr(engine.pool, "size", None)
    overflow = getattr(engine.pool, "_max_overflow", 0)
    if callable(size):
        return max(1, int(size()) + max(0, int(overflow)))
    return 8
