"""The `interaction_answers` store on a SQLite file and on PostgreSQL (the contract
both keep): the reply and the event's done mark in one transaction, stored once."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from adapters._discord_answers import InteractionAnswers
from bot.db import Database, storable
from bot.inbox import Inbox, InboxStatus, RawEvent

NOW = datetime(2026, 12, 1, 18, 0, tzinfo=UTC)


@pytest.fixture
async def stores(database_url: str) -> AsyncIterator[tuple[Inbox, InteractionAnswers]]:
    db = Database.open(database_url)
    try:
        yield Inbox(db), InteractionAnswers(db, "discord")
    finally:
        await db.aclose()


async def _event(inbox: Inbox, key: str) -> int:
    await inbox.accept("discord", [RawEvent(key=key, payload="{}")])
    (event,) = [e for e in await inbox.pending("discord", limit=10) if e.key == key]
    return event.id


async def test_a_deferred_reply_is_stored_once_with_the_done_mark(
    stores: tuple[Inbox, InteractionAnswers],
) -> None:
    inbox, answers = stores
    event_id = await _event(inbox, "interaction:1")
    created = NOW - timedelta(seconds=2)
    await answers.deferring(event_id, created_at=created, ephemeral=True, now=NOW)
    deferred = await answers.get(event_id)
    assert deferred is not None and deferred.deferred and not deferred.stored
    assert await answers.waiting() == []  # nothing to send yet: the event is the worker's

    assert await answers.store_reply(
        event_id, "bad \ud800 text\x00", created_at=created, ephemeral=True, now=NOW
    )
    event = await inbox.get(event_id)
    assert event is not None and event.status is InboxStatus.DONE
    stored = await answers.get(event_id)
    assert stored is not None and stored.stored and stored.deferred
    assert stored.text == storable("bad \ud800 text\x00") and stored.created_at == created
    assert "\ud800" not in stored.text and "\x00" not in stored.text
    # A second run's reply (a replay, another worker) changes nothing.
    assert not await answers.store_reply(
        event_id, "again", created_at=created, ephemeral=True, now=NOW
    )
    assert [a.event_id for a in await answers.waiting()] == [event_id]

    await answers.sending(event_id, parts_sent=1, now=NOW)
    await answers.settle(event_id, "delivered", now=NOW)
    done = await answers.get(event_id)
    assert done is not None and (done.status, done.text, done.parts_sent) == ("delivered", "", 1)
    assert await answers.waiting() == []


async def test_a_reply_without_a_defer_and_an_expired_one(
    stores: tuple[Inbox, InteractionAnswers],
) -> None:
    inbox, answers = stores
    quick = await _event(inbox, "interaction:2")
    late = await _event(inbox, "interaction:3")
    assert await answers.store_reply(quick, "hi", created_at=NOW, ephemeral=False, now=NOW)
    row = await answers.get(quick)
    assert row is not None and not row.deferred and not row.ephemeral and row.status == "generated"
    assert await answers.store_reply(
        late, "x", created_at=NOW, ephemeral=True, now=NOW, status="undeliverable", reason="r"
    )
    assert [a.event_id for a in await answers.waiting()] == [quick]
    never = await answers.get(late)
    assert never is not None and (never.status, never.text, never.reason) == (
        "undeliverable",
        "",
        "r",
    )
    await answers.settle(quick, "expired", now=NOW, reason="not sent: " + "y" * 5000)
    expired = await answers.get(quick)
    assert expired is not None and expired.status == "expired" and expired.text == ""
    assert expired.reason is not None and len(expired.reason) == 2000
    assert await answers.get(await _event(inbox, "interaction:4")) is None
