"""`ClusterClaims` on a real PostgreSQL server: a chat its lane released stays locked
for `linger_s` (taken again with no round trip), then is let go, several chats in
one statement, and is free for the other workers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import event

from bot.cluster import ClusterNode
from bot.cluster.lanes import ClusterClaims
from bot.db import Database


class Clock:
    """Time as the test says it is."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def _nothing_stale(_: str) -> None:
    return None


@pytest.fixture
async def two(postgres_url: str) -> AsyncIterator[tuple[ClusterNode, ClusterNode, Database]]:
    db = await asyncio.to_thread(Database.open, postgres_url)
    nodes = [ClusterNode(postgres_url, name=f"w{i}", heartbeat_s=30) for i in range(2)]
    for node in nodes:
        await node.join()
    try:
        yield nodes[0], nodes[1], db
    finally:
        for node in nodes:
            await node.leave()
        await db.aclose()


@contextmanager
def statements(node: ClusterNode) -> Iterator[list[str]]:
    """The statements sent on `node`'s own lock connection while the block runs."""
    assert node._engine is not None
    sent: list[str] = []

    def on_statement(_c: Any, _cur: Any, statement: str, *_: Any) -> None:
        sent.append(statement)

    event.listen(node._engine, "before_cursor_execute", on_statement)
    try:
        yield sent
    finally:
        event.remove(node._engine, "before_cursor_execute", on_statement)


async def test_a_released_chat_lingers_then_is_let_go_for_the_others(
    two: tuple[ClusterNode, ClusterNode, Database],
) -> None:
    a, b, db = two
    clock = Clock()
    mine = ClusterClaims(a, db, "telegram", stale=_nothing_stale, linger_s=1.0, clock=clock)
    theirs = ClusterClaims(b, db, "telegram", stale=_nothing_stale, linger_s=0)
    assert await mine.acquire("c1")
    await mine.release("c1")
    assert mine.lingering == 1
    assert not await theirs.acquire("c1")  # still held: its lane may come back to it
    with statements(a) as sent:
        assert await mine.acquire("c1")  # a burst's next message: no round trip
        await mine.release("c1")
    assert sent == []
    clock.now += 1.5
    await mine.discover(limit=10, skip=[])  # any call that passes by lets it go
    assert mine.lingering == 0 and a.chats_held == 0
    assert await theirs.acquire("c1")
    await theirs.release("c1")  # linger_s=0: at once
    assert b.chats_held == 0
    assert await mine.acquire("c1")
    await mine.release("c1")


async def test_chats_whose_time_is_up_are_let_go_in_one_statement(
    two: tuple[ClusterNode, ClusterNode, Database],
) -> None:
    a, b, db = two
    clock = Clock()
    mine = ClusterClaims(a, db, "telegram", stale=_nothing_stale, linger_s=1.0, clock=clock)
    chats = [f"c{i}" for i in range(5)] + ["odd ' chat \u202e", "🐕"]
    for chat in chats:
        assert await mine.acquire(chat)
        await mine.release(chat)
    assert mine.lingering == len(chats) and a.chats_held == len(chats)
    clock.now += 2
    with statements(a) as sent:
        assert await mine.acquire("late")
        await mine.release("late")  # lets the others go; "late" lingers on
    assert len([s for s in sent if "unlock" in s]) == 1, sent
    assert a.chats_held == 1 and mine.lingering == 1
    for chat in chats:
        assert await b.try_chat("telegram", chat), chat
    assert not await b.try_chat("telegram", "late")
