"""After a crisis the persona does not speak first for the configured time (the
scheduler's delivery policy, with its reason logged), and `bot chat --format jsonl`
shows a crisis reply as "safety": "crisis"."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from structlog.testing import capture_logs

from bot.config import SchedulerSettings
from bot.llm.mock import MockBackend
from bot.messages import Actor, Incoming, Outgoing, Scope
from bot.personas.schedule import Schedule
from bot.scheduler import PersonState, Scheduler, decide
from tests.fakes.openai_server import FakeOpenAIServer, Reply
from tests.safety.conftest import rows
from tests.test_cli import bot, workdir  # noqa: F401  (the fixture)

NOW = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)
SCHEDULE = """\
schedule:
  habits:
    - {name: walk, cron: "0 9 * * *", prompt: "It is walk time."}
  daily_cap: 5
  max_unanswered: 5
"""


class Sender:
    def __init__(self) -> None:
        self.sent: list[Outgoing] = []

    async def send(self, outgoing: Outgoing) -> list[str | None]:
        self.sent.append(outgoing)
        return ["x"]


def state(**changes: Any) -> PersonState:
    base: dict[str, Any] = {
        "started": True,
        "opted_out": False,
        "unreachable": False,
        "timezone": "UTC",
        "sent_today": 0,
        "unanswered_in_row": 0,
    }
    return PersonState(**{**base, **changes})


def test_the_policy_says_no_until_the_pause_is_over() -> None:
    until = NOW + timedelta(hours=72)
    held = decide(state(paused_until=until), Schedule(), NOW)
    assert not held.allowed and held.reason == "paused after a crisis until 2026-06-04 09:00 UTC"
    assert decide(state(paused_until=until), Schedule(), until + timedelta(seconds=1)).allowed
    assert decide(state(paused_until=None), Schedule(), NOW).allowed


async def test_proactive_messages_pause_after_a_crisis(
    make_app: Callable[..., Any], tmp_path: Path
) -> None:
    app = await make_app(
        MockBackend(lambda r: "Walk time!"),
        disclose_first_contact=False,
        proactive_pause_hours=24,
    )
    persona_file = tmp_path / "personas" / "tester.yaml"
    persona_file.write_text(persona_file.read_text(encoding="utf-8") + SCHEDULE, "utf-8")
    await app.personas.load_all()
    scope = Scope(platform="test", channel="dm-ann", user="ann", persona="tester")
    actor = Actor(platform="test", id="ann", display_name="Ann")
    write = Incoming(scope=scope, actor=actor, text="hi", received_at=NOW - timedelta(hours=2))
    await app.engine.handle(write)
    sender = Sender()
    scheduler = Scheduler(
        db=app.db,
        engine=app.engine,
        personas=app.personas,
        settings=SchedulerSettings(),
        default_zone="UTC",
        senders={"test": sender},
        name=f"pause-{id(app)}",
    )
    cid = await app.engine.ledger.conversation_id(scope)
    assert await scheduler.fire_habit("tester", "walk", cid, NOW)  # allowed before
    crisis = Incoming(
        scope=scope, actor=actor, text="I want to die", received_at=NOW + timedelta(minutes=5)
    )
    [out] = await app.engine.handle(crisis)
    assert out.safety == "crisis"
    with capture_logs() as logs:
        assert not await scheduler.fire_habit("tester", "walk", cid, NOW + timedelta(hours=1))
    [skipped] = [e for e in logs if e["event"] == "proactive.skipped"]
    assert skipped["reason"].startswith("paused after a crisis until 2026-06-02 09:05")
    assert not await scheduler.fire_habit("tester", "walk", cid, NOW + timedelta(hours=23))
    assert await scheduler.fire_habit("tester", "walk", cid, NOW + timedelta(hours=25))
    assert [o.text for o in sender.sent] == ["Walk time!", "Walk time!"]
    assert rows(tmp_path, "select pause_until is not null from safety_events") == [(1,)]


def test_bot_chat_jsonl_marks_the_crisis_reply(
    workdir: Path,  # noqa: F811
    fake_openai: FakeOpenAIServer,
) -> None:
    fake_openai.script(Reply(text="Hello from Tess."))
    result = bot(
        "chat",
        "--backend",
        "openai",
        "--base-url",
        fake_openai.base_url,
        "--format",
        "jsonl",
        stdin="hi\nI want to kill myself\nare you a real person?\n",
        cwd=workdir,
    )
    assert result.returncode == 0, result.stderr
    first, crisis, question = (json.loads(line) for line in result.stdout.splitlines())
    assert first["reply"] == "Hello from Tess." and first["safety"] is None
    assert crisis["safety"] == "crisis" and "988" in crisis["reply"] and crisis["error"] is False
    assert question["safety"] == "disclosure" and question["reply"] == "I am an AI."
    assert len(fake_openai.requests) == 1  # only the first line reached the model
