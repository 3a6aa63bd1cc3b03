"""The inbox table, on a SQLite file and on PostgreSQL (the contract both keep):
batches, redeliveries, bounds, replay."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, event

from bot.db import Database
from bot.inbox import MAX_PAYLOAD_BYTES, Inbox, InboxStatus, RawEvent


@pytest.fixture
async def inbox(database_url: str) -> AsyncIterator[Inbox]:
    db = Database.open(database_url)
    try:
        yield Inbox(db)
    finally:
        await db.aclose()


def raw(key: str, chat: str | None = "c1", payload: str = '{"x": 1}') -> RawEvent:
    return RawEvent(key=key, payload=payload, chat=chat)


async def test_a_batch_is_committed_at_once_and_redeliveries_are_ignored(inbox: Inbox) -> None:
    assert await inbox.accept("telegram", [raw("1"), raw("2"), raw("2"), raw("3")]) == 3
    # The platform redelivers the same batch (we crashed before acknowledging it).
    assert await inbox.accept("telegram", [raw("1"), raw("2"), raw("3"), raw("4")]) == 1
    # The same key on another platform is another event.
    assert await inbox.accept("discord", [raw("1")]) == 1
    pending = await inbox.pending("telegram", limit=10)
    assert [e.key for e in pending] == ["1", "2", "3", "4"]
    assert all(e.status is InboxStatus.PENDING and e.payload == '{"x": 1}' for e in pending)


async def test_a_batch_that_cannot_be_stored_stores_nothing(inbox: Inbox) -> None:
    good = raw("1")
    bad = RawEvent(key="2", payload=None, chat="c")  # type: ignore[arg-type]
    with pytest.raises(Exception):  # noqa: B017 - any error: the point is what is left
        await inbox.accept("telegram", [good, bad])
    assert await inbox.pending("telegram", limit=10) == []


async def test_last_keys_are_the_newest_stored_per_chat(inbox: Inbox) -> None:
    await inbox.accept("discord", [raw("10", "a"), raw("12", "b"), raw("11", "a")])
    await inbox.accept("discord", [raw("9", None)])
    assert await inbox.last_keys("discord") == {"a": "11", "b": "12"}
    assert await inbox.last_keys("telegram") == {}


async def test_done_and_failed_are_settled_with_reason_and_attempts(inbox: Inbox) -> None:
    await inbox.accept("telegram", [raw("1"), raw("2")])
    first, second = await inbox.pending("telegram", limit=10)
    await inbox.done(first.id)
    await inbox.fail(second.id, "ValueError: not an update")
    assert await inbox.pending("telegram", limit=10) == []
    failed = await inbox.list(status=InboxStatus.FAILED)
    assert [(e.key, e.reason, e.attempts) for e in failed] == [
        ("2", "ValueError: not an update", 1)
    ]
    assert failed[0].payload == '{"x": 1}'  # kept for replay
    assert await inbox.replay(failed=True) == [second.id]
    again = await inbox.pending("telegram", limit=10)
    assert [e.id for e in again] == [second.id]


async def test_an_oversized_payload_is_stored_cut_and_failed_with_its_size(inbox: Inbox) -> None:
    big = '{"text": "' + "é" * MAX_PAYLOAD_BYTES + '"}'
    assert await inbox.accept("telegram", [raw("1", payload=big), raw("2")]) == 2
    assert [e.key for e in await inbox.pending("telegram", limit=10)] == ["2"]
    (failed,) = await inbox.list(status=InboxStatus.FAILED)
    assert failed.truncated and len(failed.payload.encode()) <= MAX_PAYLOAD_BYTES
    assert "over the 65536-byte limit" in (failed.reason or "")
    assert await inbox.replay([failed.id]) == []  # a cut payload cannot be replayed


async def test_old_payloads_of_handled_events_are_cleared_failed_ones_kept(inbox: Inbox) -> None:
    await inbox.accept("telegram", [raw("1"), raw("2")])
    first, second = await inbox.pending("telegram", limit=10)
    old = datetime.now(UTC) - timedelta(days=10)
    await inbox.done(first.id, now=old)
    await inbox.fail(second.id, "boom", now=old)
    assert await inbox.prune(datetime.now(UTC), keep=timedelta(days=3)) == 1
    assert (await inbox.get(first.id)).payload == ""  # type: ignore[union-attr]
    assert (await inbox.get(second.id)).payload == '{"x": 1}'  # type: ignore[union-attr]


# Hostile keys, chats and payloads: whatever a platform sends is stored (repaired
# where a database cannot hold it: lone surrogates, and NUL, which PostgreSQL's text
# refuses), each distinct key once, never half a batch.
hostile = st.text(alphabet=st.characters(codec=None), max_size=300)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(keys=st.lists(hostile, min_size=1, max_size=5), payload=hostile, chat=hostile)
def test_hostile_events_are_stored_once_each(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    backend: str,
    keys: list[str],
    payload: str,
    chat: str,
) -> None:
    import asyncio
    import itertools

    state = _HOSTILE.setdefault(backend, {})
    if "db" not in state:
        if backend == "sqlite":
            state["db"] = f"sqlite:///{tmp_path_factory.mktemp('h')}/inbox.db"
        else:  # one database for all examples (the session's server drops it at exit)
            state["db"] = request.getfixturevalue("postgres_server").new_database("h")
        state["n"] = itertools.count()
    platform = f"p{next(state['n'])}"  # type: ignore[call-overload]

    async def go() -> None:
        db = Database.open(str(state["db"]), migrate=False) if "ready" in state else None
        if db is None:
            db = Database.open(str(state["db"]))
            state["ready"] = True
        try:
            inbox = Inbox(db)
            events = [RawEvent(key=k, payload=payload, chat=chat) for k in keys]
            assert await inbox.accept(platform, events) == len(set(keys))
            assert await inbox.accept(platform, events) == 0
            stored = await inbox.pending(platform, limit=100)
            assert len({e.key for e in stored}) == len(set(keys))
            assert {e.payload for e in stored} <= {payload, _repaired(payload)}
        finally:
            await db.aclose()

    asyncio.run(go())


_HOSTILE: dict[str, dict[str, object]] = {}


def _repaired(text: str) -> str:
    return (
        text.replace("\x00", "\ufffd").encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    )


async def test_the_burst_question_is_a_seek_not_a_sort_of_the_chat(inbox: Inbox) -> None:
    # Asked on every turn of a DM: its cost must not grow with the chat's stored events.
    t0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    await inbox.accept(
        "telegram",
        [
            RawEvent(str(i), "{}", chat="c1", author=("ann", "bob")[i % 2], received_at=t0)
            for i in range(300)
        ],
    )
    events = await inbox.pending("telegram", limit=300)
    statements: list[tuple[str, Any]] = []

    def seen(conn: Any, cursor: Any, statement: str, params: Any, *args: Any) -> None:
        if "inbox_events" in statement:
            statements.append((statement, params))

    # Every engine: reads may go through the database's own reader engine.
    event.listen(Engine, "before_cursor_execute", seen)
    try:
        assert await inbox.newer_from(events[150])
    finally:
        event.remove(Engine, "before_cursor_execute", seen)
    engine = inbox.db.engine
    assert len(statements) == 2
    postgres = engine.dialect.name == "postgresql"
    with engine.connect() as conn:
        raw_conn: Any = conn.connection.driver_connection
        cursor = raw_conn.cursor()
        if postgres:  # a tiny table is scanned anyway: ask what the index can serve
            cursor.execute("SET enable_seqscan = off")
        for statement, params in statements:
            cursor.execute(("EXPLAIN " if postgres else "EXPLAIN QUERY PLAN ") + statement, params)
            plan = " ".join(str(row[-1]) for row in cursor.fetchall())
            # Neither reads the whole chat: no table scan, no sort of its rows ...
            assert "TEMP B-TREE" not in plan and "Sort" not in plan, plan
            assert "Seq Scan" not in plan and "SCAN inbox_events" not in plan, plan
            if "ORDER BY" in statement:  # ... and the author's last one is a seek
                assert "ix_inbox_events_platform_chat_author_id" in plan, plan
        cursor.close()


async def test_a_message_that_waited_with_a_later_one_behind_it_is_in_a_burst(
    inbox: Inbox,
) -> None:
    t0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    await inbox.accept(
        "telegram",
        [
            RawEvent("0", '{"a": 0}', chat="c1", author="ann", received_at=t0),
            RawEvent("1", '{"a": 1}', chat="c1", author="ann", received_at=t0),
            RawEvent("2", '{"a": 2}', chat="c1", author="bob", received_at=t0),  # another person
            RawEvent("3", '{"a": 3}', chat="c2", author="ann", received_at=t0),  # another chat
            RawEvent("4", '{"a": 4}', chat="c1", author=None, received_at=t0),  # a command
            RawEvent("5", '{"a": 5}', chat="c1", author="ann", received_at=t0),
        ],
    )
    head, first, bob, other_chat, command, last = await inbox.pending("telegram", limit=10)
    assert first.author == "ann" and command.author is None
    # The first of a burst is answered by itself (nothing was before it) ...
    assert not await inbox.newer_from(head)
    # ... one that waited behind it, with a later one behind, is answered by that one ...
    assert await inbox.newer_from(first)
    # ... and the newest answers them all.
    assert not await inbox.newer_from(last)
    assert not await inbox.newer_from(bob) and not await inbox.newer_from(other_chat)
    assert not await inbox.newer_from(command)
    # Handled after `first` arrived: `first` still waited behind it.
    await inbox.done(head.id, now=t0 + timedelta(seconds=2))
    assert await inbox.newer_from(first)
    # Once the later one is settled, nothing waits behind `first`.
    await inbox.done(last.id, now=t0 + timedelta(seconds=3))
    assert not await inbox.newer_from(first)
    # Another platform's events never count.
    await inbox.accept("discord", [RawEvent("9", "{}", chat="c1", author="ann")])
    assert not await inbox.newer_from(first)


async def test_a_message_that_arrived_after_the_one_before_was_handled_did_not_wait(
    inbox: Inbox,
) -> None:
    t0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    await inbox.accept("telegram", [RawEvent("0", "{}", chat="c1", author="ann", received_at=t0)])
    (head,) = await inbox.pending("telegram", limit=1)
    await inbox.done(head.id, now=t0 + timedelta(seconds=1))
    later = t0 + timedelta(seconds=5)
    await inbox.accept(
        "telegram",
        [
            RawEvent("1", "{}", chat="c1", author="ann", received_at=later),
            RawEvent("2", "{}", chat="c1", author="ann", received_at=later),
        ],
    )
    first, _ = await inbox.pending("telegram", limit=2)
    assert not await inbox.newer_from(first)  # a new burst's first: answered by itself


@pytest.mark.parametrize(
    "author",
    ["a" * 257, "bad\x00nul", "lone\udc80surrogate"],
)
async def test_an_author_that_cannot_be_stored_whole_is_no_author(
    inbox: Inbox, author: str
) -> None:
    # A cut or repaired author could equal someone else's and coalesce across people.
    await inbox.accept("telegram", [RawEvent("1", "{}", chat="c1", author=author)])
    (event,) = await inbox.pending("telegram", limit=1)
    assert event.author is None
