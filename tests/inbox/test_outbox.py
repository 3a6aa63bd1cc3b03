"""Command replies through the outbox (bot/inbox/outbox.py), on SQLite and PostgreSQL:
the reply and the event's done mark commit together or not at all; recovery
delivers a stored reply (after the greeting stored with it, in the chat's order)
without running the command; a settled reply does not outlive its delivery."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from adapters.base import Unreachable
from bot.app import App, open_app
from bot.commands import CommandContext, CommandReply
from bot.inbox import InboxStatus
from bot.inbox.outbox import COMMAND_KIND, store_replies
from bot.llm.mock import MockBackend
from bot.memory.ledger import ReplyRecord
from bot.messages import Actor, Incoming, Outgoing, Scope, TurnKind
from tests.inbox.conftest import echo, settings_for, settled
from tests.inbox.platform import JsonPlatform, event

SCOPE = Scope(platform="json", channel="c1", user="u1", persona="tester")
ACTOR = Actor(platform="json", id="u1", display_name="Una")


@pytest.fixture
async def app(database_url: str, tmp_path: Path) -> AsyncIterator[App]:
    settings = settings_for(tmp_path)
    settings = settings.model_copy(
        update={"database": settings.database.model_copy(update={"url": database_url})}
    )
    async with open_app(settings, backend=MockBackend(echo), watch=False) as opened:
        yield opened


async def rows(app: App, sql: str) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in await app.db.read(lambda c: c.execute(text(sql)).all())]


def _pairs() -> list[tuple[Outgoing, str]]:
    greeting = Outgoing(scope=SCOPE, text="Hi Una!", kind=TurnKind.GREETING)
    return [(greeting, "greeting"), (Outgoing(scope=SCOPE, text="What I keep: ..."), "command")]


async def _event(app: App, key: str, body: str) -> int:
    assert app.inbox is not None
    await app.inbox.accept("json", [event(key, "c1", body, user="u1")])
    (found,) = [e for e in await app.inbox.list() if e.key == key]
    return found.id


async def test_the_reply_and_the_done_mark_commit_together(app: App) -> None:
    assert app.inbox is not None
    event_id = await _event(app, "e1", "/start")
    stored = await store_replies(app.engine, ACTOR, _pairs(), event_id=event_id)
    assert [o.message_id is not None for o in stored] == [True, True]
    assert await rows(
        app, "select kind, status, user_id is not null from messages order by id"
    ) == [("greeting", "generated", True), ("command", "generated", True)]
    # Settling the event again (the worker does, after the handler) changes nothing:
    # a later failure must not make `replay` run the command a second time.
    await app.inbox.done(event_id)
    await app.inbox.fail(event_id, "a send failed after the commit")
    got = await app.inbox.get(event_id)
    assert got is not None and (got.status, got.attempts) == (InboxStatus.DONE, 1)


async def test_a_commit_that_fails_leaves_neither_the_reply_nor_the_done_mark(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert app.inbox is not None
    event_id = await _event(app, "e1", "/start")
    real = app.db.run

    async def failing(work: Any) -> Any:
        def then_fail(conn: Any) -> Any:
            work(conn)  # every statement ran, in the transaction
            raise RuntimeError("the commit never happens")

        return await real(then_fail)

    monkeypatch.setattr(app.db, "run", failing)
    with pytest.raises(RuntimeError):
        await store_replies(app.engine, ACTOR, _pairs(), event_id=event_id)
    monkeypatch.undo()
    assert await rows(app, "select count(*) from messages where direction = 'out'") == [(0,)]
    got = await app.inbox.get(event_id)
    assert got is not None and got.status == InboxStatus.PENDING  # the command runs again


async def test_recovery_delivers_stored_replies_in_order_and_runs_no_command(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a kill -9 right after the command's commit leaves: the event done, its
    greeting and reply `generated`; behind them a turn's reply, also unsent."""
    event_id = await _event(app, "e1", "/start")
    await store_replies(app.engine, ACTOR, _pairs(), event_id=event_id)
    incoming = Incoming(scope=SCOPE, actor=ACTOR, text="hello", platform_message_id="m2")
    turn = await app.ledger.record_incoming(incoming, "hello")
    await app.ledger.record_reply(
        ReplyRecord(
            conversation_id=turn.conversation_id,
            user_id=turn.user_id,
            reply_to_id=turn.message_id,
            text="re:hello",
            persona_id="tester",
        )
    )

    async def never(*args: Any) -> CommandReply:
        raise AssertionError("recovery ran a command")

    monkeypatch.setattr(app.services.commands, "execute", never)
    platform = JsonPlatform(app.services)
    async with platform.processing():
        await settled(app, platform)
    assert [t for _, t, _ in platform.sent] == ["Hi Una!", "What I keep: ...", "re:hello"]
    assert await rows(app, "select kind, status from messages where direction = 'out'") == [
        ("greeting", "delivered"),
        ("message", "delivered"),
    ]  # the command's reply, delivered, is not kept


async def test_an_undeliverable_command_reply_keeps_its_row_but_not_its_text(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    platform = JsonPlatform(app.services)

    async def blocked(outgoing: Outgoing, text: str) -> str | None:
        raise Unreachable("Forbidden: bot was blocked by the user")

    monkeypatch.setattr(platform, "_deliver", blocked)
    async with platform.processing():
        await platform.accept([event("e1", "c1", "/memory", user="u1")])
        await settled(app, platform)
    assert await rows(app, f"select status, text from messages where kind = '{COMMAND_KIND}'") == [
        ("undeliverable", "")
    ]
    assert await rows(app, "select stage from failures") == [("deliver",)]
    assert await rows(app, "select status from inbox_events") == [("done",)]


async def test_a_reply_delivered_in_place_is_stored_delivered(app: App) -> None:
    """`Commands.run` (a Discord interaction, the console): no outbox; the greeting
    is recorded delivered with the text it is part of, never left for recovery."""
    answer = await app.services.commands.run("start", "", CommandContext(scope=SCOPE, actor=ACTOR))
    assert answer.startswith("Hi Una!\n\n")
    assert await rows(app, "select kind, status from messages where direction = 'out'") == [
        ("greeting", "delivered")
    ]
    assert await app.ledger.unfinished("json") == []
