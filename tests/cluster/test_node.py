"""The cluster's locks on a real PostgreSQL server, in one process: two nodes as two
workers. A node's connection is closed by force to play a worker killed with -9
(the server frees its locks exactly as when the process dies)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import text

from bot.cluster import ClusterNode, Leadership, SingleProcessLock
from bot.cluster import claims as cluster_claims
from bot.db import Database
from bot.errors import StorageError
from bot.inbox import Inbox, RawEvent


async def _nodes(url: str, n: int) -> list[ClusterNode]:
    nodes = [ClusterNode(url, name=f"w{i}", heartbeat_s=0.1) for i in range(n)]
    for node in nodes:
        await node.join()
    return nodes


def _kill(node: ClusterNode) -> None:
    """What kill -9 does to the node's connection: the server sees it close."""
    assert node._task is not None
    node._task.cancel()  # a dead process beats no more
    assert node._conn is not None
    node._conn.connection.dbapi_connection.close()  # type: ignore[union-attr]


@pytest.fixture
async def db(postgres_url: str) -> Database:
    database = await asyncio.to_thread(Database.open, postgres_url)
    yield database  # type: ignore[misc]
    await database.aclose()


async def test_one_leader_and_the_next_takes_over_when_it_dies(
    postgres_url: str, db: Database
) -> None:
    a, b = await _nodes(postgres_url, 2)
    assert await a.try_leader()
    assert not await b.try_leader()
    lead_b = Leadership(b, poll_s=0.05)
    stop = asyncio.Event()
    campaign = asyncio.create_task(lead_b.run(stop))
    await asyncio.sleep(0.2)
    assert not lead_b.is_leader
    _kill(a)
    await asyncio.wait_for(lead_b.elected.wait(), timeout=5)
    await campaign
    await b.leave()


async def test_a_chat_is_held_by_one_worker_and_freed_by_its_death(
    postgres_url: str, db: Database
) -> None:
    a, b = await _nodes(postgres_url, 2)
    assert await a.try_chat("telegram", "42")
    assert not await b.try_chat("telegram", "42")
    assert await b.try_chat("telegram", "43")
    await a.release_chat("telegram", "42")
    assert await b.try_chat("telegram", "42")
    await b.release_chat("telegram", "42")
    assert await a.try_chat("telegram", "42")
    _kill(a)
    deadline = asyncio.get_running_loop().time() + 5
    while not await b.try_chat("telegram", "42"):
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.02)
    await b.leave()


async def test_a_dead_worker_is_adopted_once_and_a_clean_stop_never(
    postgres_url: str, db: Database
) -> None:
    a, b, c = await _nodes(postgres_url, 3)
    adopted: list[tuple[str, int]] = []

    def recorder(name: str):  # type: ignore[no-untyped-def]
        async def on_adopt(dead: int) -> None:
            adopted.append((name, dead))

        return on_adopt

    b.on_adopt.append(recorder("b"))
    c.on_adopt.append(recorder("c"))
    dead = a.id
    _kill(a)
    for _ in range(100):
        if adopted:
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)  # time for a second (wrong) adoption to show up
    assert [d for _, d in adopted] == [dead]
    await c.leave()  # a clean stop: nobody adopts it
    await asyncio.sleep(0.3)
    assert [d for _, d in adopted] == [dead]
    assert sorted(await b.live_workers()) == [b.id]
    await b.leave()


async def test_chats_held_elsewhere_are_not_discovered_and_pull_goes_oldest_first(
    postgres_url: str, db: Database
) -> None:
    inbox = Inbox(db)
    now = datetime.now(UTC)
    await inbox.accept(
        "telegram",
        [
            RawEvent(key=str(i), payload="{}", chat=str(100 + i % 3), received_at=now)
            for i in range(9)
        ]
        + [RawEvent(key="loose", payload="{}", chat=None, received_at=now)],
    )
    a, b = await _nodes(postgres_url, 2)
    assert await a.try_chat("telegram", "100")
    found = await cluster_claims.discover(db, "telegram", me_pid=b.backend_pid, limit=10)
    assert found == ["101", "102"]
    mine = await cluster_claims.discover(db, "telegram", me_pid=a.backend_pid, limit=10)
    assert mine == ["100", "101", "102"]
    keys, more = [], []
    while (pulled := await cluster_claims.pull(db, "telegram", "100", me=a.id)) is not None:
        assert pulled.previous is None
        keys.append(pulled.event.key)
        more.append(pulled.more)
        await inbox.done(pulled.event.id)
    assert keys == ["0", "3", "6"]
    assert more == [True, True, False]  # the last one says nothing is behind it
    # An event claimed but not settled (its worker died) names its old claimer.
    first = await cluster_claims.pull(db, "telegram", "101", me=a.id)
    assert first is not None
    again = await cluster_claims.pull(db, "telegram", "101", me=b.id)
    assert again is not None and again.event.id == first.event.id and again.previous == a.id
    loose_a = await cluster_claims.claim_unordered(db, "telegram", me=a.id, limit=5)
    loose_b = await cluster_claims.claim_unordered(db, "telegram", me=b.id, limit=5)
    assert [e.key for e in loose_a] == ["loose"] and loose_b == []
    await a.leave()
    await b.leave()


async def test_a_lost_connection_fails_the_node(postgres_url: str, db: Database) -> None:
    (a,) = await _nodes(postgres_url, 1)
    assert a._conn is not None
    await asyncio.to_thread(
        lambda: a._conn.connection.dbapi_connection.close()  # type: ignore[union-attr]
    )
    with pytest.raises(StorageError, match="cluster connection lost"):
        await a.try_chat("telegram", "1")
    assert a.failed.is_set()
    await a.leave()


async def test_workers_rows_say_who_ran(postgres_url: str, db: Database) -> None:
    a, b = await _nodes(postgres_url, 2)
    await b.leave()

    def rows() -> list[tuple[str, bool]]:
        with db.engine.connect() as conn:
            return [
                (r.name, r.stopped_at is not None)
                for r in conn.execute(
                    text("select name, stopped_at from cluster_workers order by id")
                )
            ]

    assert await asyncio.to_thread(rows) == [("w0", False), ("w1", True)]
    await a.leave()


def test_a_second_process_on_a_sqlite_file_is_refused(tmp_path: Path) -> None:
    first = SingleProcessLock(tmp_path / "bot.db")
    first.acquire()
    second = SingleProcessLock(tmp_path / "bot.db")
    with pytest.raises(StorageError, match=r"another `bot run` \(pid \d+\) is serving"):
        second.acquire()
    first.release()
    second.acquire()  # free again once the first is gone
    second.release()


async def test_adoption_frees_a_dead_workers_loose_events_and_locks_cost_no_transaction(
    postgres_url: str, db: Database
) -> None:
    # The lock connection runs in autocommit (each call one round trip, no BEGIN and
    # COMMIT around it); adoption is the one call that writes two tables, so it is
    # one statement: whoever wins the dead worker frees its claims, nobody else does.
    inbox = Inbox(db)
    now = datetime.now(UTC)
    await inbox.accept(
        "telegram",
        [RawEvent(key=f"l{i}", payload="{}", chat=None, received_at=now) for i in range(3)],
    )
    a, b, c = await _nodes(postgres_url, 3)
    for node in (a, b, c):
        assert node._conn is not None
        assert node._conn.connection.dbapi_connection.autocommit  # type: ignore[union-attr]
    assert len(await cluster_claims.claim_unordered(db, "telegram", me=a.id, limit=5)) == 3
    for node in (b, c):  # no adoption by the heartbeat: this test adopts by hand
        assert node._task is not None
        node._task.cancel()
    _kill(a)
    deadline = asyncio.get_running_loop().time() + 5
    while a.id not in await b.dead_workers():
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.02)
    won = await asyncio.gather(b.adopt(a.id), c.adopt(a.id))
    assert sorted(won) == [False, True]
    assert not await b.adopt(a.id)  # once only
    freed = await cluster_claims.claim_unordered(db, "telegram", me=c.id, limit=5)
    assert sorted(e.key for e in freed) == ["l0", "l1", "l2"]
    for node in (a, b, c):
        await node.leave()
