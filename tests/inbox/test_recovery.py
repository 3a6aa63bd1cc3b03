"""Recovery on a real SQLite file prepared in every state a crash can leave."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bot.llm.mock import MockBackend
from bot.memory.ledger import ReplyRecord
from bot.messages import Actor, Incoming, Scope
from bot.models import MessageStatus
from tests.inbox.conftest import AWAY, echo, settled
from tests.inbox.platform import JsonPlatform, event


def db(tmp_path: Path, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(tmp_path / "bot.db") as conn:
        return conn.execute(sql).fetchall()


def said(chat: str, text: str, pid: str, *, at: datetime | None = None) -> Incoming:
    scope = Scope(platform="json", channel=chat, user=chat, persona="tester")
    return Incoming(
        scope=scope,
        actor=Actor(platform="json", id=chat, display_name=chat),
        text=text,
        platform_message_id=pid,
        received_at=at or datetime.now(UTC),
    )


async def prepare(app: Any) -> None:
    """Leave the database as a kill -9 would: one chat per state."""
    ledger = app.ledger
    # An event committed to the inbox, never handled.
    await app.inbox.accept("json", [event("e1", "pending", "from the inbox")])
    # Stored, not yet answered; and stored, generation begun.
    await ledger.record_incoming(said("received", "not answered", "r1"), "not answered")
    await ledger.record_incoming(
        said("answering", "half answered", "a1"), "half answered", status=MessageStatus.ANSWERING
    )
    # Answered, reply generated but never sent; and one sent 1 part of 3.
    for chat in ("generated", "sending"):
        stored = await ledger.record_incoming(said(chat, "question", f"{chat}1"), "question")
        text = (
            "Part one is here."
            if chat == "generated"
            else ("Part one of the answer. Part two of the answer. Part three of it all.")
        )
        mid = await ledger.record_reply(
            ReplyRecord(
                conversation_id=stored.conversation_id,
                user_id=stored.user_id,
                reply_to_id=stored.message_id,
                text=text,
                persona_id="tester",
            )
        )
        if chat == "sending":
            await ledger.mark_sending(mid)
            await ledger.mark_part_sent(mid, 1, "p-before-crash")
    # Two messages from one person an hour ago, never answered: too old now.
    old = datetime.now(UTC) - timedelta(hours=1)
    for n in range(2):
        await ledger.record_incoming(said("old", f"old {n}", f"o{n}", at=old), f"old {n}")


async def test_after_recovery_each_is_answered_or_delivered_exactly_once(
    opened: Any, tmp_path: Path
) -> None:
    async with opened() as app:
        await prepare(app)
    backend = MockBackend(echo)
    async with opened(backend) as app:  # the restart
        platform = JsonPlatform(app.services)
        async with platform.processing():
            await settled(app, platform)
        sent = [(chat, text) for chat, text, _ in platform.sent]
    assert sorted(sent) == sorted(
        [
            ("pending", "re:from the inbox"),
            ("received", "re:not answered"),
            ("answering", "re:half answered"),
            ("generated", "Part one is here."),
            # Only the parts not confirmed before the crash (the reply splits at 40).
            ("sending", "Part two of the answer."),
            ("sending", "Part three of it all."),
            ("old", AWAY),  # one notice for two expired messages
        ]
    ), sent
    assert len(backend.requests) == 3  # nothing generated twice, nothing old generated
    assert db(
        tmp_path,
        "select status, count(*) from messages where direction = 'in' group by status",
    ) == [("answered", 5), ("expired", 2)]
    assert sorted(
        db(tmp_path, "select kind, status, parts_sent from messages where direction = 'out'")
    ) == [("away", "delivered", 1)] + [("message", "delivered", 1)] * 4 + [
        ("message", "delivered", 3)
    ]
    # The part sent before the crash keeps its platform id: reactions still find it.
    assert db(tmp_path, "select platform_message_id from messages where parts_sent = 3") == [
        ("p-before-crash",)
    ]
    reasons = db(tmp_path, "select stage, reason from failures")
    assert [stage for stage, _ in reasons] == ["expired", "expired"]

    # A second restart finds nothing left to do.
    async with opened(backend) as app:
        platform = JsonPlatform(app.services)
        async with platform.processing():
            await settled(app, platform)
        assert platform.sent == []
    assert len(backend.requests) == 3


async def test_a_backlog_older_than_the_limit_is_expired_not_answered(
    opened: Any, tmp_path: Path
) -> None:
    """Events committed an hour ago and never handled: each person hears one
    "sorry, I was away", nobody is answered late."""
    old = datetime.now(UTC) - timedelta(hours=1)
    async with opened() as app:
        events = []
        for person in ("ann", "bob"):
            for n in range(3):
                raw = event(f"{person}{n}", person, f"hello {n}")
                events.append(
                    type(raw)(key=raw.key, payload=raw.payload, chat=raw.chat, received_at=old)
                )
        await app.inbox.accept("json", events)
    backend = MockBackend(echo)
    async with opened(backend) as app:
        platform = JsonPlatform(app.services)
        async with platform.processing():
            await settled(app, platform)
        assert sorted(platform.sent[i][:2] for i in range(len(platform.sent))) == [
            ("ann", AWAY),
            ("bob", AWAY),
        ]
    assert backend.requests == []
    assert db(
        tmp_path, "select status, count(*) from messages where direction='in' group by status"
    ) == [("expired", 6)]


async def test_without_an_away_message_old_messages_expire_silently(
    opened: Any, tmp_path: Path
) -> None:
    old = datetime.now(UTC) - timedelta(hours=1)
    async with opened(away=False) as app:
        await app.ledger.record_incoming(said("old", "old", "o1", at=old), "old")
    async with opened(away=False) as app:
        platform = JsonPlatform(app.services)
        async with platform.processing():
            await settled(app, platform)
        assert platform.sent == []
    assert db(tmp_path, "select status from messages") == [("expired",)]
