"""This process as one worker of several on one PostgreSQL database.

A `ClusterNode` owns one connection of its own (not from the pool, autocommit once
joined, on a thread of its own so that calls on it are serialised), and everything
that says who does what lives on that connection as a *session-level advisory lock*:

- the worker lock `(NS_WORKER, id)`, taken in the same transaction that inserts the
  worker's `cluster_workers` row, so no other worker ever sees the row unlocked
  while the worker lives;
- the leader lock `(NS_LEADER, 0)`: whoever holds it polls Telegram and runs the
  scheduler (`bot.cluster.leader`);
- one chat lock `(NS_CHAT, hash(platform/chat))` per chat whose events this worker
  is handling (`bot.inbox.worker`), so a chat's events run in one process at a
  time, in order.

A session lock dies with its connection. When a worker is killed (kill -9, the
machine gone) the server closes its connection and every lock it held is free at
once: the leader lock for the next worker that asks (within `leader_poll_s`), its
chats for whoever finds their pending events, and its worker lock tells the
others it is dead, so one of them adopts it (`adopt`) and finishes its unfinished
work (`on_adopt`). A worker whose own connection fails cannot know which locks it
still holds, so it stops (`failed` is set; `bot run` exits and is restarted by
whatever supervises it) rather than carry on beside a worker that took over.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from datetime import UTC, datetime
from typing import Any, TypeVar

import structlog
from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from bot.errors import StorageError
from bot.logs import redact_text

__all__ = ["NS_CHAT", "NS_LEADER", "NS_WORKER", "ClusterNode", "worker_name"]

log = structlog.get_logger("bot.cluster")

T = TypeVar("T")

#: Advisory lock namespaces (the first of the two int4 keys): "PB" and a kind.
NS_WORKER = 0x5042_0001
NS_LEADER = 0x5042_0002
NS_CHAT = 0x5042_0003

#: The SQL expression of a chat's lock key; the same in every query that names one.
CHAT_KEY_SQL = "(hashtext({platform} || '/' || {chat}) & 2147483647)"
#: Locks of this database only: a server may hold several bots' databases.
THIS_DATABASE_SQL = "(select oid from pg_database where datname = current_database())"

OnAdopt = Callable[[int], Awaitable[None]]


def worker_name() -> str:
    """This process's name: `$BOT_WORKER_ID`, else host:pid (as the metrics name it)."""
    return os.environ.get("BOT_WORKER_ID") or f"{socket.gethostname()}:{os.getpid()}"


class ClusterNode:
    """Membership of this process in the workers sharing one PostgreSQL database."""

    def __init__(
        self,
        url: str,
        *,
        name: str | None = None,
        heartbeat_s: float = 1.0,
        connect_timeout_s: float = 10.0,
    ) -> None:
        self.url = url
        self.name = (name or worker_name())[:200]
        self.heartbeat_s = heartbeat_s
        self.connect_timeout_s = connect_timeout_s
        #: This worker's `cluster_workers.id` once joined.
        self.id: int = 0
        #: The server process id of our connection (its locks show under it in pg_locks).
        self.backend_pid: int = 0
        #: Set when our connection failed: every lock may be gone; the process must stop.
        self.failed = asyncio.Event()
        self.failure: str | None = None
        #: Called with a dead worker's id after this worker adopted it.
        self.on_adopt: list[OnAdopt] = []
        #: Workers this one adopted since it started.
        self.adopted: list[int] = []
        #: How many workers are alive (this one included), as of the last heartbeat.
        self.live_count = 1
        self._engine: Engine | None = None
        self._conn: Connection | None = None
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bot-cluster")
        self._task: asyncio.Task[None] | None = None
        self._chats: set[tuple[str, str]] = set()

    # -- the connection -------------------------------------------------------------------

    async def _call(self, work: Callable[[Connection], T]) -> T:
        if self.failed.is_set():
            raise StorageError(f"cluster connection lost: {self.failure}")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._thread, self._run, work)
        except SQLAlchemyError as exc:
            self._fail(exc)
            raise StorageError(f"cluster connection lost: {self.failure}") from exc

    def _run(self, work: Callable[[Connection], T]) -> T:
        # Autocommit once joined: each call is one statement (what must be atomic is
        # one statement, as `adopt` is), so a lock costs one round trip, not a BEGIN,
        # the statement and a COMMIT. The commit here is then a no-op.
        conn = self._conn
        assert conn is not None, "join() first"
        try:
            result = work(conn)
            conn.commit()
        except BaseException:
            with suppress(Exception):
                conn.rollback()
            raise
        return result

    def _fail(self, exc: BaseException) -> None:
        if not self.failed.is_set():
            self.failure = redact_text(str(getattr(exc, "orig", None) or exc).split("\n")[0])
            log.error("cluster.connection_lost", worker=self.id, error=self.failure)
            self.failed.set()

    # -- lifecycle --------------------------------------------------------------------

    async def join(self) -> int:
        """Connect, register this worker and take its lock; start the heartbeat
        (which also finds dead workers and adopts them). Returns the worker id."""

        def connect(_: Any) -> tuple[int, int]:
            engine = create_engine(
                self.url,
                poolclass=NullPool,
                connect_args={"connect_timeout": max(1, int(self.connect_timeout_s))},
            )
            self._engine = engine
            conn = engine.connect()
            self._conn = conn
            now = datetime.now(UTC)
            worker_id = conn.execute(
                text(
                    "insert into cluster_workers (name, host, pid, started_at, seen_at) "
                    "values (:name, :host, :pid, :now, :now) returning id"
                ),
                {
                    "name": self.name,
                    "host": socket.gethostname()[:200],
                    "pid": os.getpid(),
                    "now": now,
                },
            ).scalar_one()
            # In the inserting transaction: nobody sees the row without its lock.
            conn.execute(
                text("select pg_advisory_lock(:ns, :id)"), {"ns": NS_WORKER, "id": worker_id}
            )
            pid = conn.execute(text("select pg_backend_pid()")).scalar_one()
            conn.commit()
            conn.execution_options(isolation_level="AUTOCOMMIT")
            return int(worker_id), int(pid)

        loop = asyncio.get_running_loop()
        try:
            self.id, self.backend_pid = await loop.run_in_executor(self._thread, connect, None)
        except SQLAlchemyError as exc:
            where = redact_text(self.url)
            raise StorageError(
                f"cannot join the workers on {where}: {str(getattr(exc, 'orig', exc))[:300]}"
            ) from None
        log.info("cluster.joined", worker=self.id, name=self.name)
        self._task = asyncio.create_task(self._heartbeat(), name="cluster-heartbeat")
        return self.id

    async def leave(self) -> None:
        """A clean stop: say so in our row (nobody adopts us) and close the connection,
        which frees every lock we hold."""
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
        if self._conn is not None and not self.failed.is_set():
            with suppress(Exception):
                await self._call(
                    lambda c: c.execute(
                        text("update cluster_workers set stopped_at = :now where id = :id"),
                        {"now": datetime.now(UTC), "id": self.id},
                    )
                )

        def close(_: Any) -> None:
            if self._conn is not None:
                with suppress(Exception):
                    self._conn.close()
            if self._engine is not None:
                self._engine.dispose()

        await asyncio.get_running_loop().run_in_executor(self._thread, close, None)
        self._thread.shutdown(wait=False)
        log.info("cluster.left", worker=self.id)

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_s)
            try:
                await self._call(self._beat)
                self.live_count = max(1, len(await self.live_workers()))
                for dead in await self.dead_workers():
                    if await self.adopt(dead):
                        await self._adopted(dead)
            except StorageError:
                return  # `failed` is set: `bot run` stops
            except Exception as exc:  # an adoption callback failed: try again next beat
                log.error("cluster.heartbeat_failed", error=str(exc)[:300])

    def _beat(self, conn: Connection) -> None:
        conn.execute(
            text("update cluster_workers set seen_at = :now where id = :id"),
            {"now": datetime.now(UTC), "id": self.id},
        )

    async def _adopted(self, dead: int) -> None:
        self.adopted.append(dead)
        log.warning("cluster.adopted", worker=self.id, dead_worker=dead)
        for callback in list(self.on_adopt):
            await callback(dead)

    # -- workers ------------------------------------------------------------------------

    async def dead_workers(self) -> list[int]:
        """Workers registered, not stopped, whose lock nobody holds: they died."""
        sql = text(
            "select w.id from cluster_workers w where w.stopped_at is null and w.id <> :me "
            "and not exists (select 1 from pg_locks l where l.locktype = 'advisory' "
            f"and l.database = {THIS_DATABASE_SQL} and l.classid = :ns "
            "and l.objid = w.id and l.objsubid = 2 and l.granted) order by w.id"
        )
        return await self._call(
            lambda c: [int(i) for i in c.execute(sql, {"me": self.id, "ns": NS_WORKER}).scalars()]
        )

    async def adopt(self, dead: int) -> bool:
        """Take over a dead worker: True for exactly one of those who ask. Its
        unordered events' claims are released for anyone to take."""

        # One statement, so atomic on the autocommit connection: the claims of a dead
        # worker are released by whoever wins it, in the same transaction.
        sql = text(
            "with won as (update cluster_workers set stopped_at = :now, adopted_by = :me "
            "where id = :dead and stopped_at is null returning id), "
            "released as (update inbox_events set claimed_by = null where claimed_by = :dead "
            "and status = 'pending' and chat is null and exists (select 1 from won)) "
            "select count(*) from won"
        )

        def work(conn: Connection) -> bool:
            won = conn.execute(sql, {"now": datetime.now(UTC), "me": self.id, "dead": dead})
            return int(won.scalar_one()) == 1

        return await self._call(work)

    async def live_workers(self) -> list[int]:
        """Ids of the workers alive now (this one included)."""
        sql = text(
            "select w.id from cluster_workers w where w.stopped_at is null and exists ("
            "select 1 from pg_locks l where l.locktype = 'advisory' "
            f"and l.database = {THIS_DATABASE_SQL} and l.classid = :ns and l.objid = w.id "
            "and l.objsubid = 2 and l.granted) order by w.id"
        )
        return await self._call(
            lambda c: [int(i) for i in c.execute(sql, {"ns": NS_WORKER}).scalars()]
        )

    # -- locks --------------------------------------------------------------------------

    async def try_leader(self) -> bool:
        """Take the leader lock if nobody holds it; True while we hold it."""
        return await self._try(NS_LEADER, "0")

    async def try_chat(self, platform: str, chat: str) -> bool:
        """Take `chat`'s lock if no other worker holds it (True if we already do)."""
        if (platform, chat) in self._chats:
            return True
        sql = text(
            "select pg_try_advisory_lock(:ns, "
            + CHAT_KEY_SQL.format(platform=":platform", chat=":chat")
            + ")"
        )
        got = await self._call(
            lambda c: bool(
                c.execute(sql, {"ns": NS_CHAT, "platform": platform, "chat": chat}).scalar_one()
            )
        )
        if got:
            self._chats.add((platform, chat))
        return got

    async def release_chat(self, platform: str, chat: str) -> None:
        """Let `chat` go (its events may now be taken by any worker)."""
        await self.release_chats(platform, [chat])

    async def release_chats(self, platform: str, chats: list[str]) -> None:
        """Let several chats go in one round trip. Two chats may share a key (a
        hash): each lock taken is released once, as each held chat is one unlock."""
        held = [chat for chat in dict.fromkeys(chats) if (platform, chat) in self._chats]
        if not held:
            return
        for chat in held:
            self._chats.discard((platform, chat))
        sql = text(
            "select count(*) filter (where pg_advisory_unlock(:ns, "
            + CHAT_KEY_SQL.format(platform=":platform", chat="c")
            + ")) from unnest(cast(:chats as text[])) as c"
        )
        await self._call(
            lambda c: c.execute(sql, {"ns": NS_CHAT, "platform": platform, "chats": held})
        )

    @property
    def chats_held(self) -> int:
        """How many chat locks this worker holds."""
        return len(self._chats)

    async def _try(self, ns: int, key: str) -> bool:
        sql = text("select pg_try_advisory_lock(:ns, :key)")
        return await self._call(
            lambda c: bool(c.execute(sql, {"ns": ns, "key": int(key)}).scalar_one())
        )
