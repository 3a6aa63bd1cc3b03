"""Group commit on PostgreSQL's pool (bot/db_group.py): works queued together share
a transaction, yet each still gets its own result, fails alone, and never sees the
transaction-scoped settings of another."""

from __future__ import annotations

import asyncio
import threading

import pytest
from sqlalchemy import Connection, text

from bot.db import Database, PoolOptions, create_db_engine
from bot.errors import StorageError
from bot.memory.ledger import Ledger
from bot.messages import Actor, Incoming, Scope


async def _table(db: Database) -> None:
    await db.run(lambda c: c.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, n INTEGER)")))


async def _ids(db: Database) -> list[int]:
    rows = await db.read(lambda c: c.execute(text("SELECT id FROM t ORDER BY id")).all())
    return [int(r.id) for r in rows]


def _insert(i: int) -> object:
    def work(conn: Connection) -> int:
        conn.execute(text("INSERT INTO t VALUES (:i, 0)"), {"i": i})
        return i * 10

    return work


async def _queued_behind_a_held_writer(db: Database, works: list[object]) -> list[object]:
    """Run `works` while the only writer is busy, so they queue and form a batch."""
    entered, release = threading.Event(), threading.Event()

    def hold(conn: Connection) -> None:
        conn.execute(text("SELECT 1"))
        entered.set()
        release.wait(10)

    holding = asyncio.ensure_future(db.run(hold))
    await asyncio.to_thread(entered.wait, 10)
    calls = [asyncio.ensure_future(db.run(w)) for w in works]  # type: ignore[arg-type]
    await asyncio.sleep(0.05)  # all queued behind `hold`
    release.set()
    await holding
    return list(await asyncio.gather(*calls, return_exceptions=True))


async def test_queued_works_share_a_transaction_and_get_their_own_results(
    postgres_url: str,
) -> None:
    db = Database(create_db_engine(postgres_url), writers=1)  # what queues behind it: grouped
    await _table(db)
    stats = db.group_stats
    assert stats is not None
    before = (stats.transactions, stats.grouped)
    results = await _queued_behind_a_held_writer(db, [_insert(i) for i in range(1, 21)])
    assert results == [i * 10 for i in range(1, 21)]
    assert await _ids(db) == list(range(1, 21))
    # 20 works in far fewer transactions than 20 (the held one and a batch or two).
    assert stats.grouped - before[1] >= 10
    assert stats.transactions - before[0] < 10
    await db.aclose()


async def test_a_failing_work_fails_alone_and_the_others_commit(postgres_url: str) -> None:
    db = Database(create_db_engine(postgres_url), writers=1)
    await _table(db)

    def duplicate(conn: Connection) -> None:  # id 3 is inserted by another work too
        conn.execute(text("INSERT INTO t VALUES (3, 1)"))
        conn.execute(text("INSERT INTO t VALUES (3, 2)"))

    def broken(conn: Connection) -> None:
        conn.execute(text("INSERT INTO t VALUES (99, 0)"))
        raise ValueError("a bug in this work")

    works: list[object] = [_insert(1), duplicate, _insert(2), broken, _insert(4)]
    results = await _queued_behind_a_held_writer(db, works)
    assert results[0] == 10 and results[2] == 20 and results[4] == 40
    assert isinstance(results[1], StorageError) and "\n" not in str(results[1])
    assert isinstance(results[3], ValueError) and str(results[3]) == "a bug in this work"
    # Neither failing work left a row (99, nor the first 3); the others are all there.
    assert await _ids(db) == [1, 2, 4]
    stats = db.group_stats
    assert stats is not None and stats.reruns >= 1
    await db.aclose()


async def test_transaction_settings_do_not_leak_into_other_works(postgres_url: str) -> None:
    db = Database(create_db_engine(postgres_url), writers=1)
    setting = text("SELECT current_setting('synchronous_commit')")

    def relaxed(conn: Connection) -> str:
        conn.execute(text("SET LOCAL synchronous_commit = off"))
        return str(conn.execute(setting).scalar_one())

    def plain(conn: Connection) -> str:
        return str(conn.execute(setting).scalar_one())

    works: list[object] = [plain, relaxed, plain, plain, relaxed, plain]
    first = await _queued_behind_a_held_writer(db, works)
    assert first == ["on", "off", "on", "on", "off", "on"]
    # From then on the work that sets it runs alone, without a rerun of its batch.
    stats = db.group_stats
    assert stats is not None
    reruns = stats.reruns
    again = await _queued_behind_a_held_writer(db, works)
    assert again == first and stats.reruns == reruns
    await db.aclose()


async def test_alone_work_is_never_grouped(postgres_url: str) -> None:
    db = Database(create_db_engine(postgres_url), writers=1)
    pid = text("SELECT txid_current()")

    def txid(conn: Connection) -> int:
        return int(conn.execute(pid).scalar_one())

    entered, release = threading.Event(), threading.Event()

    def hold(conn: Connection) -> None:
        entered.set()
        release.wait(10)

    holding = asyncio.ensure_future(db.run(hold))
    await asyncio.to_thread(entered.wait, 10)
    grouped = [asyncio.ensure_future(db.run(txid)) for _ in range(3)]
    alone = asyncio.ensure_future(db.run(txid, alone=True))
    await asyncio.sleep(0.05)
    release.set()
    await holding
    together = await asyncio.gather(*grouped)
    assert len(set(together)) == 1  # one transaction for the three
    assert await alone not in together
    await db.aclose()


async def test_an_idle_pool_runs_a_call_at_once_and_bounds_connections(
    postgres_url: str,
) -> None:
    # Many calls at once on a small pool: all answered, grouped, never more
    # connections than the pool allows (the writers plus the readers' threads).
    db = Database(create_db_engine(postgres_url, pool=PoolOptions(size=2, max_overflow=1)))
    await _table(db)
    await asyncio.gather(*(db.run(_insert(i)) for i in range(1, 201)))  # type: ignore[arg-type]
    assert await _ids(db) == list(range(1, 201))
    assert db.engine.pool.checkedout() == 0
    await db.aclose()


async def test_a_burst_of_first_messages_through_the_ledger(postgres_url: str) -> None:
    # The ledger's own works, grouped under load: every message stored once, in its
    # conversation's arrival order.
    db = Database.open(postgres_url)
    ledger = Ledger(db)
    messages = 40

    async def one(i: int) -> int:
        scope = Scope(platform="t", channel=f"c{i % 4}", user=f"u{i % 4}", persona="p")
        actor = Actor(platform="t", id=f"u{i % 4}", display_name=f"U{i % 4}")
        incoming = Incoming(scope=scope, actor=actor, text=f"m{i}", platform_message_id=str(i))
        return (await ledger.record_incoming(incoming, f"m{i}")).message_id

    ids = await asyncio.gather(*(one(i) for i in range(messages)))
    assert len(set(ids)) == messages
    for chat in range(4):
        mine = [ids[i] for i in range(messages) if i % 4 == chat]
        assert mine == sorted(mine)
    await db.aclose()


async def test_queued_reads_share_a_snapshot_and_a_writing_read_fails_alone(
    postgres_url: str,
) -> None:
    db = Database(create_db_engine(postgres_url, pool=PoolOptions(size=2, max_overflow=0)))
    await _table(db)
    await db.run(_insert(1))  # type: ignore[arg-type]

    def count(conn: Connection) -> int:
        return int(conn.execute(text("SELECT count(*) FROM t")).scalar_one())

    def writes(conn: Connection) -> None:
        conn.execute(text("INSERT INTO t VALUES (2, 0)"))

    stats = db.read_group_stats
    assert stats is not None
    assert await asyncio.gather(*(db.read(count) for _ in range(20))) == [1] * 20
    assert stats.transactions < stats.works  # some shared a transaction
    works = [count, count, writes, count] * 5
    results = await asyncio.gather(*(db.read(w) for w in works), return_exceptions=True)
    for work, result in zip(works, results, strict=True):
        if work is writes:
            assert isinstance(result, StorageError) and "read-only" in str(result)
        else:
            assert result == 1
    assert await _ids(db) == [1]  # no read wrote
    await db.aclose()


def test_writers_default_to_half_the_threads_and_no_more_than_half_the_cpus(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import os

    import bot.db as db_module

    for cpus, threads, expected in [(2, 10, 1), (1, 10, 1), (4, 10, 2), (16, 10, 5), (16, 1, 1)]:
        monkeypatch.setattr(os, "sched_getaffinity", lambda _pid, n=cpus: set(range(n)))
        assert db_module.default_writers(threads) == expected, (cpus, threads)


async def test_the_default_pool_runs_its_writes_on_as_many_writers_as_the_cpus_allow(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0, 1})
    db = Database(create_db_engine(postgres_url, pool=PoolOptions(size=5, max_overflow=5)))
    try:
        assert db.group_stats is not None
        assert db._group is not None and db._group.writers == 1
        assert db._group_reads is not None and db._group_reads.writers == 9
        await _table(db)
        # 40 writes queued at once still commit, each with its own result, grouped.
        results = await asyncio.gather(*(db.run(_insert(i)) for i in range(40)))  # type: ignore[arg-type,var-annotated]
        assert results == [i * 10 for i in range(40)]
        assert await _ids(db) == list(range(40))
        assert db.group_stats.transactions < 40
    finally:
        await db.aclose()
