"""The ledger's hot path on both databases: what a turn's writes cost in statements
(one each on PostgreSQL, `bot/memory/ledger_pg.py`), and that the short forms keep
what the long ones promised: the history read with the insert, redelivery after a
restart, the answered mark, and people created by two processes at once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, event

from bot.db import Database
from bot.memory.ledger import Ledger, ReplyRecord
from bot.messages import Actor, Incoming, Scope
from tests.sql import execute, rows

SCOPE = Scope(platform="test", channel="dm-ann", user="ann", persona="tess")
ANN = Actor(platform="test", id="ann", display_name="Ann")
T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


@pytest.fixture
async def ledger(database_url: str) -> AsyncIterator[Ledger]:
    db = Database.open(database_url)
    try:
        yield Ledger(db)
    finally:
        await db.aclose()


def said(text: str, pid: str | None = None, *, at: datetime = T0, actor: Actor = ANN) -> Incoming:
    return Incoming(scope=SCOPE, actor=actor, text=text, platform_message_id=pid, received_at=at)


def url_of(ledger: Ledger) -> str:
    return ledger.db.engine.url.render_as_string(hide_password=False)


@contextmanager
def statements() -> Iterator[list[str]]:
    """The SQL statements SQLAlchemy sends while the block runs (any engine), but
    the transaction's own BEGIN (SQLite's writer sends one; psycopg's is not seen)."""
    sent: list[str] = []

    def on_statement(*args: Any) -> None:
        if not str(args[2]).startswith("BEGIN"):
            sent.append(str(args[2]))

    event.listen(Engine, "before_cursor_execute", on_statement)
    try:
        yield sent
    finally:
        event.remove(Engine, "before_cursor_execute", on_statement)


async def test_a_turns_writes_take_one_statement_each_on_postgresql(ledger: Ledger) -> None:
    postgres = ledger.db.engine.dialect.name == "postgresql"
    with statements() as first:
        stored = await ledger.record_incoming(said("hi", "m1"), "hi", with_history=40)
    # A new person and chat: the person's upsert, the chat's insert, the message.
    assert len(first) == (3 if postgres else 6), first
    with statements() as known:
        later = await ledger.record_incoming(
            said("again", "m2", at=T0 + timedelta(seconds=1)), "again", with_history=40
        )
    assert len(known) == (1 if postgres else 4), known
    assert later.history is not None and [t.text for t in later.history] == ["hi"]
    with statements() as reply:
        await ledger.record_reply(
            ReplyRecord(stored.conversation_id, stored.user_id, later.message_id, "yo", "tess")
        )
    assert len(reply) == (1 if postgres else 2), reply
    assert rows(url_of(ledger), "SELECT status FROM messages ORDER BY id") == [
        ("received",),
        ("answered",),
        ("generated",),
    ]
    assert rows(url_of(ledger), "SELECT last_message_at FROM conversations")[0][0] is not None


async def test_the_history_read_with_the_insert_is_the_history_read_after_it(
    ledger: Ledger,
) -> None:
    # Every kind of row the history rule looks at: spoken replies (one with a larger
    # id than a later message), an apology, a deleted message, another chat's message.
    a = await ledger.record_incoming(said("one", "m1"), "one")
    b = await ledger.record_incoming(said("two", "m2", at=T0 + timedelta(seconds=1)), "two")
    await ledger.record_reply(
        ReplyRecord(a.conversation_id, a.user_id, a.message_id, "reply one", "tess")
    )
    await ledger.record_reply(
        ReplyRecord(a.conversation_id, a.user_id, b.message_id, "sorry", "tess", kind="apology")
    )
    gone = await ledger.record_incoming(said("gone", "m3"), "gone")
    execute(
        url_of(ledger), f"UPDATE messages SET deleted_at = created_at WHERE id = {gone.message_id}"
    )
    other = Scope(platform="test", channel="dm-bo", user="bo", persona="tess")
    await ledger.record_incoming(
        Incoming(scope=other, actor=ANN, text="elsewhere", received_at=T0), "elsewhere"
    )
    for limit in (1, 2, 40):
        c = await ledger.record_incoming(
            said(f"now {limit}", f"n{limit}"), "now", with_history=limit
        )
        assert c.history is not None
        after = await ledger.history(c.conversation_id, before_id=c.message_id, limit=limit)
        assert list(c.history) == after, limit
    assert (await ledger.record_incoming(said("none", "z1"), "none")).history is None
    assert (await ledger.record_incoming(said("zero", "z2"), "zero", with_history=0)).history == ()
    texts = [t.text for t in await ledger.history(a.conversation_id, limit=3)]
    assert "sorry" not in texts and "gone" not in texts


async def test_a_redelivery_after_a_restart_is_found_without_the_cache(
    database_url: str,
) -> None:
    db = Database.open(database_url)
    try:
        first = await Ledger(db).record_incoming(said("hi", "m1"), "hi", with_history=5)
    finally:
        await db.aclose()
    before = rows(database_url, "SELECT last_message_at FROM conversations")
    db = Database.open(database_url)  # a new process: nothing cached
    try:
        renamed = Actor(platform="test", id="ann", display_name="Ann B.")
        again = await Ledger(db).record_incoming(
            said("hi", "m1", at=T0 + timedelta(hours=1), actor=renamed), "hi", with_history=5
        )
    finally:
        await db.aclose()
    assert again.duplicate and again.message_id == first.message_id
    assert (again.conversation_id, again.user_id) == (first.conversation_id, first.user_id)
    assert again.history is None
    assert rows(database_url, "SELECT count(*) FROM messages") == [(1,)]
    assert rows(database_url, "SELECT last_message_at FROM conversations") == before
    # The person's row is brought up to date even when the message is a repeat.
    assert rows(database_url, "SELECT id, display_name FROM users") == [(first.user_id, "Ann B.")]


async def test_two_processes_meeting_a_new_person_at_once_share_one_row(
    database_url: str,
) -> None:
    dbs = [Database.open(database_url) for _ in range(2)]
    try:
        ledgers = [Ledger(db) for db in dbs]
        stored = await asyncio.gather(
            *(ledgers[i % 2].record_incoming(said(f"m{i}", f"p{i}"), f"m{i}") for i in range(8))
        )
    finally:
        for db in dbs:
            await db.aclose()
    assert len({s.user_id for s in stored}) == 1
    assert len({s.conversation_id for s in stored}) == 1
    assert rows(database_url, "SELECT count(*) FROM users") == [(1,)]
    assert rows(database_url, "SELECT count(*) FROM conversations") == [(1,)]
    assert rows(database_url, "SELECT count(*) FROM messages") == [(8,)]


hostile_ids = ["\x00nul", "🐕" * 60, "x" * 256, "", " "]


@pytest.mark.parametrize("pid", hostile_ids, ids=["nul", "emoji", "longest", "empty", "space"])
async def test_odd_platform_ids_are_matched_on_redelivery(ledger: Ledger, pid: str) -> None:
    first = await ledger.record_incoming(said("hi", pid), "hi", with_history=3)
    again = await ledger.record_incoming(said("hi", pid), "hi", with_history=3)
    assert again.duplicate and again.message_id == first.message_id
    assert rows(url_of(ledger), "SELECT count(*) FROM messages") == [(1,)]
