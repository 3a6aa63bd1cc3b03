"""The ledger's contract, on a SQLite file and on PostgreSQL: what is stored, what
comes back, claims and settling, and hostile text."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from bot.db import Database
from bot.memory.ledger import Ledger, ReplyRecord
from bot.messages import Actor, Incoming, Scope
from bot.models import MessageStatus
from tests.sql import rows

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


def said(text: str, pid: str | None = None, at: datetime = T0, scope: Scope = SCOPE) -> Incoming:
    return Incoming(scope=scope, actor=ANN, text=text, platform_message_id=pid, received_at=at)


async def test_a_redelivered_message_is_stored_once(ledger: Ledger) -> None:
    first = await ledger.record_incoming(said("hi", "m1"), "hi")
    again = await ledger.record_incoming(said("hi", "m1"), "hi")
    assert again.duplicate and again.message_id == first.message_id
    other = await ledger.record_incoming(said("hi", "m2"), "hi")
    assert not other.duplicate and other.message_id > first.message_id


async def test_history_is_oldest_first_and_stops_before_the_message_answered(
    ledger: Ledger,
) -> None:
    a = await ledger.record_incoming(said("one", at=T0), "one")
    await ledger.record_reply(
        ReplyRecord(a.conversation_id, a.user_id, a.message_id, "reply one", "tess")
    )
    b = await ledger.record_incoming(said("two", at=T0 + timedelta(minutes=1)), "two")
    history = await ledger.history(a.conversation_id, before_id=b.message_id)
    assert [(t.role, t.text) for t in history] == [("user", "one"), ("assistant", "reply one")]
    c = await ledger.record_incoming(said("three"), "three", with_history=10)
    assert c.history is not None
    assert [t.text for t in c.history] == ["one", "reply one", "two"]
    assert all(t.created_at.tzinfo is not None for t in c.history)


async def test_a_claim_holds_until_a_reply_settles_it(ledger: Ledger) -> None:
    stored = await ledger.record_incoming(said("hi"), "hi")
    assert await ledger.claim(stored.message_id)
    assert await ledger.claim(stored.message_id)  # still unanswered: a restart may retry
    reply = await ledger.record_reply(
        ReplyRecord(stored.conversation_id, stored.user_id, stored.message_id, "yo", "tess")
    )
    assert not await ledger.claim(stored.message_id)  # it has a reply: never twice
    [waiting] = await ledger.unfinished("test")
    assert waiting.message_id == reply and waiting.status == MessageStatus.GENERATED.value
    await ledger.mark_sending(reply)
    await ledger.mark_part_sent(reply, 1, "p-1")
    await ledger.mark_delivered(reply, "p-2", parts_sent=2)
    assert await ledger.unfinished("test") == []
    url = ledger.db.engine.url.render_as_string(hide_password=False)
    assert rows(url, f"SELECT status, platform_message_id, parts_sent FROM messages "
                f"WHERE id = {reply}") == [("delivered", "p-1", 2)]  # fmt: skip
    assert rows(url, f"SELECT status FROM messages WHERE id = {stored.message_id}") == [
        ("answered",)
    ]


async def test_expiry_and_failures_are_recorded(ledger: Ledger) -> None:
    old = await ledger.record_incoming(said("old"), "old")
    assert await ledger.expire(old.message_id, "too old", now=T0)
    assert not await ledger.expire(old.message_id, "again", now=T0)  # already settled
    broken = await ledger.record_incoming(said("broken"), "broken")
    await ledger.record_failure(
        stage="generate", error=RuntimeError("boom"), message_id=broken.message_id
    )
    url = ledger.db.engine.url.render_as_string(hide_password=False)
    assert rows(url, "SELECT stage, reason FROM failures ORDER BY id") == [
        ("expired", "too old"),
        ("generate", "boom"),
    ]
    assert await ledger.unfinished("test") == []


async def test_away_notice_and_persona_versions(ledger: Ledger) -> None:
    stored = await ledger.record_incoming(said("hi"), "hi")
    assert not await ledger.away_sent(stored.conversation_id, stored.user_id)
    await ledger.record_reply(
        ReplyRecord(stored.conversation_id, stored.user_id, stored.message_id, "away", "tess",
                    kind="away")
    )  # fmt: skip
    assert await ledger.away_sent(stored.conversation_id, stored.user_id)
    for _ in range(2):
        await ledger.record_persona_version("tess", "h1", "/p/tess.yaml", "id: tess")
    url = ledger.db.engine.url.render_as_string(hide_password=False)
    assert rows(url, "SELECT count(*) FROM persona_versions") == [(1,)]


async def test_a_burst_of_one_conversation_keeps_arrival_order_in_its_ids(
    ledger: Ledger,
) -> None:
    # Started together: the ids follow the order the messages were handed in (the
    # engine reads them as arrival order), on a pool as on SQLite's one writer.
    stored = await asyncio.gather(
        *(ledger.record_incoming(said(f"m{i}", f"p{i}"), f"m{i}") for i in range(20))
    )
    ids = [s.message_id for s in stored]
    assert ids == sorted(ids)


hostile = [
    "nul \x00 inside",
    "lone surrogate \ud800 here",
    "emoji 🐕 and 中文 and RTL \u202e",
    "x" * 20_000,
]


@pytest.mark.parametrize("text", hostile, ids=["nul", "surrogate", "unicode", "long"])
async def test_hostile_text_is_stored_and_read_back_alike(ledger: Ledger, text: str) -> None:
    # Display names: NUL as well (a platform may send one; pydantic refuses surrogates).
    actor = Actor(platform="test", id="ann", display_name="Ann \x00" if "\x00" in text else "Ann ")
    stored = await ledger.record_incoming(
        Incoming(scope=SCOPE, actor=actor, text=text, platform_message_id=f"id{text[:8]}"), text
    )
    await ledger.record_reply(
        ReplyRecord(stored.conversation_id, stored.user_id, stored.message_id, text, "tess")
    )
    history = await ledger.history(stored.conversation_id)
    expected = (
        text.replace("\x00", "\ufffd").encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    )
    assert [t.text for t in history] == [expected, expected]
    assert history[0].display_name.startswith("Ann ")
