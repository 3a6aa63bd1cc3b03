"""The conversations and people logic (bot/web/dashboard/data_service.py) on SQLite and
PostgreSQL, over turns the real engine stored; flags and corrections through `bot export`
(a subprocess), and a forget through `Memory.forget`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from bot.errors import BackendError
from bot.llm.mock import MockBackend
from bot.messages import Actor, Incoming, Scope
from bot.web.dashboard import Role
from bot.web.dashboard.data_service import (
    SEARCH_WINDOW,
    ConversationFilter,
    NotFound,
    conversation_view,
    correct_reply,
    flag_reply,
    list_conversations,
    list_people,
    memory_persona,
    parse_cursor,
    person_view,
    unflag_reply,
)
from bot.web.dashboard.ops_service import forget_memory, list_exports, snapshot
from tests.dashboard.conftest import DashUnderTest, open_dash

REPO = Path(__file__).resolve().parents[2]
KEY = "a-test-pseudonym-key-0123456789"


def dm(text: str, user: str = "u1", name: str = "Ann", channel: str | None = None) -> Incoming:
    scope = Scope(platform="test", channel=channel or f"dm-{user}", user=user, persona="tester")
    return Incoming(
        scope=scope, actor=Actor(platform="test", id=user, display_name=name), text=text
    )


async def reply_ids(dash: DashUnderTest) -> list[int]:
    return await dash.bot.db.read(
        lambda conn: [
            int(i)
            for i in conn.execute(
                text("SELECT id FROM messages WHERE direction = 'out' ORDER BY id")
            ).scalars()
        ]
    )


async def test_browse_filter_page_and_why(dash: DashUnderTest) -> None:
    engine = dash.bot.engine
    for n in range(5):
        await engine.handle(dm(f"hello number {n}", user=f"u{n}", name=f"Person{n}"))
    await engine.handle(dm("find the walrus please", user="u9", name="Zed"))
    db = dash.bot.db

    everything = await db.read(lambda c: list_conversations(c, ConversationFilter(), limit=4))
    assert len(everything.rows) == 4 and everything.next_cursor is not None
    rest = await db.read(
        lambda c: list_conversations(c, ConversationFilter(), cursor=everything.next_cursor)
    )
    ids = [r.id for r in everything.rows + rest.rows]
    assert len(ids) == 6 == len(set(ids)) and rest.next_cursor is None

    by_text = await db.read(lambda c: list_conversations(c, ConversationFilter(text="WALRUS")))
    assert [r.channel for r in by_text.rows] == ["dm-u9"]
    by_person = await db.read(lambda c: list_conversations(c, ConversationFilter(person="Zed")))
    assert [r.channel for r in by_person.rows] == ["dm-u9"]
    by_uid = await db.read(lambda c: list_conversations(c, ConversationFilter(person="u3")))
    assert [r.channel for r in by_uid.rows] == ["dm-u3"]
    # LIKE's wildcards are literal: "%" finds nothing, not everything.
    wild = await db.read(lambda c: list_conversations(c, ConversationFilter(text="%")))
    assert wild.rows == []
    none = await db.read(
        lambda c: list_conversations(c, ConversationFilter(persona="other", platform="test"))
    )
    assert none.rows == []
    assert SEARCH_WINDOW >= 10_000

    view = await db.read(lambda c: conversation_view(c, by_text.rows[0].id))
    asked, answer = view.messages
    assert asked.direction == "in" and asked.person == "Zed"
    assert ("why.answered_by", {"ids": f"#{answer.id}"}) in asked.why
    assert answer.backend == "mock" and answer.persona_hash and answer.latency_ms is not None
    assert answer.why == [("why.reply_to", {"id": asked.id})]
    with pytest.raises(NotFound):
        await db.read(lambda c: conversation_view(c, 10**9))
    with pytest.raises(ValueError):
        parse_cursor("1.2.3; drop table")

    people, older = await db.read(lambda c: list_people(c, query="Person", limit=3))
    assert len(people) == 3 and older is not None
    person = await db.read(lambda c: person_view(c, people[0].id))
    assert person.conversations and person.memories == []


async def test_flag_and_correct_leave_sft_and_make_a_dpo_pair(
    tmp_path: Path, database_url: str
) -> None:
    async with open_dash(tmp_path, database_url) as dash:
        engine = dash.bot.engine
        await engine.handle(dm("what is two plus two?", user="a", name="Alma"))
        await engine.handle(dm("tell me a secret", user="b", name="Bert"))
        await engine.handle(dm("good morning", user="c", name="Cleo"))
        first, second, third = await reply_ids(dash)
        who = await dash.add("mod", Role.MODERATOR, personas=["tester"])
        now = datetime.now(UTC)
        db = dash.bot.db
        await db.run(lambda c: flag_reply(c, who, second, "  off\n persona  ", now=now))
        await db.run(lambda c: correct_reply(c, who, first, "Four, of course!", now=now))
        with pytest.raises(ValueError):
            await db.run(lambda c: correct_reply(c, who, first, "   ", now=now))
        await db.run(lambda c: flag_reply(c, who, third, "", now=now))
        await db.run(lambda c: unflag_reply(c, who, third, now=now))

        entries = await dash.audit()
        actions = [(e.action, e.target) for e in reversed(entries)]
        assert actions == [
            ("reply.flag", f"message:{second}"),
            ("reply.correct", f"message:{first}"),
            ("reply.flag", f"message:{third}"),
            ("reply.unflag", f"message:{third}"),
        ]
        correct = next(e for e in entries if e.action == "reply.correct")
        assert correct.before["correction"] is None and correct.after["flagged"] is True
        assert correct.after["correction"]["chars"] == len("Four, of course!")
        assert "Four" not in json.dumps([e.before for e in entries] + [e.after for e in entries])
        flag = next(e for e in entries if e.target == f"message:{second}")
        assert flag.after["reason"] == "off persona"

        out = tmp_path / "export"
        env = {k: v for k, v in os.environ.items() if not k.startswith("BOT_")}
        env.update(PYTHONPATH=str(REPO), BOT_EXPORT__HMAC_KEY=KEY, BOT_DATABASE__URL=database_url)
        done = subprocess.run(
            [sys.executable, "-m", "bot.cli", "export", "--out", str(out)],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert "flagged 4" in done.stdout  # two replies and the messages they answered
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["personas"]["tester"]["dpo_pairs"] == {"correction": 1}
        chat = "".join(p.read_text() for p in out.glob("tester/chat.*.jsonl"))
        assert "good morning" in chat  # unflagged: back in
        assert "two plus two" not in chat and "tell me a secret" not in chat
        (dpo_file,) = out.glob("tester/dpo.*.jsonl")
        (pair,) = [json.loads(line) for line in dpo_file.read_text().splitlines()]
        assert pair["source"] == "correction"
        assert pair["chosen"] == [{"role": "assistant", "content": "Four, of course!"}]
        assert pair["rejected"][0]["content"] == "heard: what is two plus two?"
        assert pair["prompt"][0]["role"] == "system"
        assert pair["prompt"][-1] == {"role": "user", "content": "what is two plus two?"}


async def test_forget_goes_through_memory_forget_and_is_audited(
    tmp_path: Path, database_url: str
) -> None:
    async with open_dash(
        tmp_path, database_url, memory=True, overrides={"memory": {"embedding_model": "none"}}
    ) as dash:
        await dash.bot.engine.handle(dm("my cat is called Quasimodo", user="q", name="Quin"))
        first, *_ = await reply_ids(dash)
        db = dash.bot.db
        admin = await dash.add("boss", Role.ADMIN)
        now = datetime.now(UTC)
        await db.run(lambda c: correct_reply(c, admin, first, "Quasimodo is lovely", now=now))
        assert dash.bot.memory is not None
        uid = await dash.bot.memory.find_user("test", "q")
        assert uid is not None
        asked = await db.read(
            lambda c: int(
                c.execute(text("SELECT id FROM messages WHERE direction = 'in'")).scalar_one()
            )
        )
        assert await db.read(lambda c: memory_persona(c, uid, f"m{asked}")) == "tester"
        assert await db.read(lambda c: memory_persona(c, uid + 1, f"m{asked}")) is None
        assert await db.read(lambda c: memory_persona(c, uid, "x1")) is None
        counts = await forget_memory(
            dash.bot, admin, uid, f"m{asked}", persona_id="tester", now=datetime.now(UTC)
        )
        assert counts["messages"] == 2  # the message and the reply (with its correction)
        left = await db.read(
            lambda c: c.execute(
                text("SELECT count(*) FROM messages WHERE text LIKE '%Quasimodo%' "
                     "OR corrected_text LIKE '%Quasimodo%'")
            ).scalar_one()
        )  # fmt: skip
        assert left == 0
        (entry,) = await dash.audit(target=f"person:{uid}")
        assert entry.action == "memory.forget" and entry.before["memory"] == f"m{asked}"
        assert entry.after["deleted"]["messages"] == 2
        assert "Quasimodo" not in json.dumps([(e.before, e.after) for e in await dash.audit()])


async def test_operations_numbers_and_exports(dash: DashUnderTest, tmp_path: Path) -> None:
    await dash.bot.engine.handle(dm("count me"))
    snap = await snapshot(dash.bot, datetime.now(UTC))
    assert snap["series"]["personabot_turns_total"] >= 1
    assert snap["outbox_depth"] >= 0 and isinstance(snap["inbox"], list)
    root = tmp_path / "exports"
    (root / "20261201T000000Z").mkdir(parents=True)
    (root / "20261201T000000Z" / "manifest.json").write_text(
        json.dumps({"created_at": "2026-12-01T00:00:00+00:00", "files": {"a/chat.train.jsonl":
                    {"records": 3}}, "filters": {"flagged": 2, "empty": 0}, "personas": {}})
    )  # fmt: skip
    (root / "20261202T000000Z").mkdir()
    (root / "20261202T000000Z" / "manifest.json").write_text("{not json")
    (root / "half").mkdir()  # no manifest: not an export
    found = list_exports(root)
    assert [e.name for e in found] == ["20261202T000000Z", "20261201T000000Z"]
    assert found[0].problem and found[1].records == {"a/chat.train.jsonl": 3}
    assert found[1].filters == {"flagged": 2}
    assert list_exports(tmp_path / "missing") == []


async def test_why_an_ignored_message_and_a_failed_turn(tmp_path: Path) -> None:
    def voice(request: Any) -> str:
        if "boom" in request.messages[-1].content:
            raise BackendError("the model fell over")
        return "fine"

    async with open_dash(
        tmp_path, f"sqlite:///{tmp_path}/why.db", backend=MockBackend(voice)
    ) as dash:
        scope = Scope(platform="test", space="g", channel="general", user="x", persona="tester")
        actor = Actor(platform="test", id="x", display_name="Xi")
        await dash.bot.engine.handle(
            Incoming(scope=scope, actor=actor, text="chatter", addressed_to_bot=False)
        )
        await dash.bot.engine.handle(dm("boom please", user="y", name="Yo"))
        db = dash.bot.db
        page = await db.read(lambda c: list_conversations(c, ConversationFilter()))
        views = {
            r.channel: await db.read(lambda c, r=r: conversation_view(c, r.id)) for r in page.rows
        }
        (chatter,) = views["general"].messages
        assert [key for key, _ in chatter.why] == ["why.ignored"]
        asked, apology = views["dm-y"].messages
        keys = [key for key, _ in asked.why]
        assert "why.failure" in keys, asked.why
        failure = dict(asked.why)["why.failure"]
        assert "fell over" in failure["reason"] or failure["type"]
        assert apology.kind == "apology" and ("why.apology", {}) in apology.why
