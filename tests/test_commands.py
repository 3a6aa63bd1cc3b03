"""Platform-neutral commands and the people store, over a real app, on a SQLite file
and on PostgreSQL (the people store's contract)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.app import App, open_app
from bot.commands import CommandContext
from bot.config import load_settings
from bot.llm.mock import MockBackend
from bot.messages import Actor, Incoming, Reaction, Scope
from tests.sql import rows
from tests.test_engine import PERSONA


@pytest.fixture
async def app(tmp_path: Path, database_url: str) -> AsyncIterator[App]:
    personas = tmp_path / "personas"
    personas.mkdir()
    (personas / "tester.yaml").write_text(PERSONA, encoding="utf-8")
    (personas / "other.yaml").write_text(
        PERSONA.replace("id: tester", "id: other").replace("Tess", "Otto"), encoding="utf-8"
    )
    settings = load_settings(
        None,
        {
            "database": {"url": database_url},
            "personas": {"dirs": [str(personas)]},
            # These tests cover the commands without long-term memory; see the last one.
            "memory": {"enabled": False},
        },
    )
    async with open_app(settings, backend=MockBackend(lambda r: "reply"), watch=False) as opened:
        yield opened


SCOPE = Scope(platform="test", channel="dm-ann", user="ann", persona="tester")
ANN = Actor(platform="test", id="ann", display_name="Ann")


def ctx(**kw: Any) -> CommandContext:
    return CommandContext(scope=SCOPE, actor=ANN, **kw)


def db(app: App, sql: str) -> list[tuple[Any, ...]]:
    return rows(app.settings.database.url, sql)


async def test_start_greets_discloses_ai_and_explains_optout(app: App) -> None:
    text = await app.commands.run("start", "", ctx())
    assert text.startswith("Hi Ann!") and "I am an AI." in text and "/optout" in text


async def test_help_and_unknown(app: App) -> None:
    assert "/forget" in await app.commands.run("help", "", ctx())
    assert "Unknown command /dance" in await app.commands.run("dance", "", ctx())


async def test_persona_show_and_switch_where_allowed(app: App) -> None:
    shown = await app.commands.run("persona", "", ctx())
    assert "Tess (tester)" in shown and "other" in shown
    assert "not allowed" in await app.commands.run("persona", "other", ctx())
    assert "No persona 'ghost'" in await app.commands.run(
        "persona", "ghost", ctx(allow_switch=True)
    )
    assert await app.commands.run("persona", "other", ctx(allow_switch=True)) == "Otto is here now."
    assert await app.people.bound_persona("test/-/dm-ann") == "other"


async def test_optout_and_optin_keep_a_history(app: App, tmp_path: Path) -> None:
    assert "Opted out" in await app.commands.run("optout", "", ctx())
    assert await app.people.is_opted_out("test", "ann")
    await app.commands.run("optin", "", ctx())
    assert not await app.people.is_opted_out("test", "ann")
    assert [r[0] for r in db(app, "select opted_in from consent_events order by id")] == [0, 1]


async def test_timezone(app: App, tmp_path: Path) -> None:
    assert "not a time zone" in await app.commands.run("timezone", "Mars/Base", ctx())
    assert "Europe/Berlin" in await app.commands.run("timezone", "Europe/Berlin", ctx())
    assert db(app, "select timezone from users where platform_user_id='ann'") == [
        ("Europe/Berlin",)
    ]


async def test_forget_all_without_memory_deletes_the_persons_messages(
    app: App, tmp_path: Path
) -> None:
    [out] = await app.engine.handle(Incoming(scope=SCOPE, actor=ANN, text="my secret"))
    await app.engine.ledger.mark_delivered(out.message_id or 0, "p-1")
    await app.people.record_reaction(
        Reaction(scope=SCOPE, actor=ANN, platform_message_id="p-1", emoji="👍")
    )
    other = SCOPE.model_copy(update={"user": "bo", "channel": "dm-bo"})
    await app.engine.handle(
        Incoming(scope=other, actor=Actor(platform="test", id="bo"), text="mine")
    )
    assert "memories are not enabled" in await app.commands.run("memory", "", ctx())
    assert "Done: deleted 2" in await app.commands.run("forget", "all", ctx())
    assert db(app, "select text from messages order by id") == [("mine",), ("reply",)]
    assert db(app, "select count(*) from feedback") == [(0,)]


async def test_moderator_commands_are_refused_to_others(app: App) -> None:
    assert "Only moderators" in await app.commands.run("reload", "", ctx())
    assert "Only moderators" in await app.commands.run(
        "persona", "upload", ctx(attachment_text="x")
    )
    assert await app.commands.run("reload", "", ctx(is_moderator=True)) == "Reloaded 2 persona(s)."


async def test_persona_upload_reports_problems_with_lines_or_applies(
    app: App, tmp_path: Path
) -> None:
    mod = {"is_moderator": True, "attachment_name": "tester.yaml"}
    bad = await app.commands.run(
        "persona", "upload", ctx(attachment_text="id: tester\nname: [\n", **mod)
    )
    assert bad.startswith("The persona has problems:") and "tester.yaml:" in bad
    before = app.personas.get("tester").content_hash
    good = PERSONA.replace("name: Tess", "name: Tessa")
    answer = await app.commands.run("persona", "upload", ctx(attachment_text=good, **mod))
    assert answer.startswith("Tessa (tester) is now version")
    assert app.personas.get("tester").content_hash != before
    assert (tmp_path / "personas" / "tester.yaml").read_text(encoding="utf-8") == good
    assert len(db(app, "select * from persona_versions where persona_id='tester'")) == 2
    assert not list((tmp_path / "personas").glob(".*.tmp"))


async def test_reactions_edits_and_deletes(app: App, tmp_path: Path) -> None:
    incoming = Incoming(scope=SCOPE, actor=ANN, text="original", platform_message_id="in-1")
    [out] = await app.engine.handle(incoming)
    await app.engine.ledger.mark_delivered(out.message_id or 0, "out-1")
    assert await app.people.record_reaction(
        Reaction(scope=SCOPE, actor=ANN, platform_message_id="out-1", emoji="👎")
    )
    assert not await app.people.record_reaction(
        Reaction(scope=SCOPE, actor=ANN, platform_message_id="in-1", emoji="👍")
    )  # reactions on a person's own message are not feedback on a reply
    assert db(app, "select emoji, added from feedback") == [("👎", 1)]
    assert await app.people.record_edit(SCOPE, "in-1", "edited\x00 text")
    assert db(app, "select text from messages where platform_message_id='in-1'") == [
        ("edited text",)
    ]
    assert not await app.people.record_edit(SCOPE, "nope", "x")
    assert await app.people.record_delete(SCOPE, "in-1")
    conversation = await app.engine.ledger.conversation_id(SCOPE)
    history = await app.engine.ledger.history(conversation)
    assert [t.text for t in history] == ["reply"]


async def test_memory_commands_go_to_the_long_term_store(tmp_path: Path) -> None:
    personas = tmp_path / "personas"
    personas.mkdir()
    (personas / "tester.yaml").write_text(PERSONA, encoding="utf-8")
    settings = load_settings(
        None,
        {
            "database": {"url": f"sqlite:///{tmp_path}/m.db"},
            "personas": {"dirs": [str(personas)]},
            "memory": {"embedding_model": "none"},
        },
    )
    async with open_app(settings, backend=MockBackend(lambda r: "ok"), watch=False) as app:
        assert app.memory is not None and "memory" in app.upkeep
        await app.engine.handle(Incoming(scope=SCOPE, actor=ANN, text="my dog is Rex"))
        with sqlite3.connect(tmp_path / "m.db") as conn:
            conn.execute(
                "insert into facts (user_id, persona_id, conversation_id, is_direct, text,"
                " source_ids, confidence, importance, created_at, updated_at) values"
                " (1, 'tester', 1, 1, 'Ann has a dog called Rex', '[1]', 0.9, 0.5,"
                " '2026-11-01 10:00:00',"
                " '2026-11-01 10:00:00')"
            )
        listed = await app.commands.run("memory", "", ctx())
        assert "Ann has a dog called Rex" in listed and "[f1]" in listed
        bo = CommandContext(
            scope=SCOPE.model_copy(update={"user": "bo"}), actor=Actor(platform="test", id="bo")
        )
        await app.engine.handle(Incoming(scope=bo.scope, actor=bo.actor, text="hello"))
        assert "no memory 'f1'" in await app.commands.run("forget", "f1", bo)  # not theirs
        assert "Forgot" in await app.commands.run("forget", "f1", ctx())
        assert "Done: I forgot everything" in await app.commands.run("forget", "all", ctx())
        with sqlite3.connect(tmp_path / "m.db") as conn:
            assert conn.execute("select count(*) from messages where user_id = 1").fetchone() == (
                0,
            )
            assert conn.execute("select count(*) from facts").fetchone() == (0,)


async def test_switching_one_place_at_once_from_several_workers_keeps_one_binding(
    app: App,
) -> None:
    # Several People on one database (as several workers have): each switch succeeds,
    # the place ends with one binding, to one of the personas asked for.
    from bot.people import People

    stores = [People(app.db) for _ in range(6)]
    await asyncio.gather(
        *(
            people.bind_persona("test:room", ("tester", "other")[i % 2], platform="test",
                                by_user=f"mod{i}")
            for i, people in enumerate(stores)
        )
    )  # fmt: skip
    assert await app.people.bound_persona("test:room") in ("tester", "other")
    assert db(app, "select count(*) from persona_bindings where place = 'test:room'") == [(1,)]
