"""The shared delivery policy, through a scripted platform (the real platforms are
tested end to end against fake servers in test_telegram.py and test_discord.py)."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from adapters.base import (
    Adapter,
    AdapterServices,
    DeliveryError,
    PacingPolicy,
    RateLimited,
    Unreachable,
    split_message,
)
from bot.app import App, open_app
from bot.config import load_settings
from bot.llm.mock import MockBackend
from bot.messages import Actor, Incoming, Outgoing, Scope
from tests.test_engine import PERSONA


class ScriptedPlatform(Adapter):
    platform = "test"
    max_message_length = 50
    typing_interval_s = 0.05
    pacing = PacingPolicy(
        per_chat_interval_s=0.05, group_per_minute=1000, global_per_second=1000, per_chat_burst=1
    )

    def __init__(self, services: AdapterServices, script: list[Exception | None]) -> None:
        super().__init__(services)
        self.script = script
        self.sent: list[tuple[float, str, str]] = []
        self.typing_calls = 0

    async def run(self, stop: asyncio.Event) -> None:
        await stop.wait()

    async def _deliver(self, outgoing: Outgoing, text: str) -> str | None:
        step = self.script.pop(0) if self.script else None
        if step is not None:
            raise step
        self.sent.append((time.monotonic(), outgoing.scope.channel, text))
        return f"m{len(self.sent)}"

    async def _send_typing(self, scope: Scope) -> None:
        self.typing_calls += 1


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[App]:
    personas = tmp_path / "personas"
    personas.mkdir()
    (personas / "tester.yaml").write_text(PERSONA, encoding="utf-8")
    settings = load_settings(
        None,
        {"database": {"url": f"sqlite:///{tmp_path}/a.db"}, "personas": {"dirs": [str(personas)]}},
    )

    async def slow(req: Any) -> str:
        await asyncio.sleep(0.2)
        return "First sentence here. " * 6

    async with open_app(settings, backend=MockBackend(slow), watch=False) as opened:
        yield opened


def incoming(user: str = "u1", channel: str = "c1") -> Incoming:
    scope = Scope(platform="test", channel=channel, user=user, persona="tester")
    return Incoming(
        scope=scope, actor=Actor(platform="test", id=user, display_name="Ann"), text="hi"
    )


def db(tmp_path: Path, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(tmp_path / "a.db") as conn:
        return conn.execute(sql).fetchall()


async def test_reply_is_split_paced_delivered_and_typing_shown(app: App, tmp_path: Path) -> None:
    platform = ScriptedPlatform(app.services, [])
    [reply] = await platform.answer(incoming())
    parts = [text for _, _, text in platform.sent]
    assert len(parts) > 1 and all(len(p) <= 50 for p in parts)
    assert " ".join(parts) == reply.text
    gaps = [b[0] - a[0] for a, b in zip(platform.sent, platform.sent[1:], strict=False)]
    assert min(gaps) >= 0.045  # per-chat pacing
    assert platform.typing_calls >= 2  # renewed while the 0.2 s generation ran
    assert db(
        tmp_path, "select status, platform_message_id from messages where direction='out'"
    ) == [("delivered", "m1")]


async def test_rate_limit_is_retried_after_retry_after(app: App) -> None:
    platform = ScriptedPlatform(app.services, [RateLimited(0.1)])
    started = time.monotonic()
    await platform.send(Outgoing(scope=incoming().scope, text="hello"))
    assert [t for _, _, t in platform.sent] == ["hello"]
    assert platform.sent[0][0] - started >= 0.1


async def test_persistent_rate_limit_gives_up_and_records(app: App, tmp_path: Path) -> None:
    platform = ScriptedPlatform(app.services, [RateLimited(0.01)] * 10)
    with pytest.raises(DeliveryError, match="still rate limited after 3 retries"):
        await platform.send(Outgoing(scope=incoming().scope, text="hello"))
    assert len(platform.script) == 6  # 1 try + 3 retries, then it stopped
    assert db(tmp_path, "select stage from failures") == [("deliver",)]


async def test_unreachable_person_is_marked_and_not_retried(app: App, tmp_path: Path) -> None:
    platform = ScriptedPlatform(app.services, [Unreachable("bot was blocked by the user")])
    replies = await platform.answer(incoming(user="blocker"))
    assert len(replies) == 1 and platform.sent == [] and platform.script == []
    assert db(
        tmp_path, "select unreachable_reason from users where platform_user_id='blocker'"
    ) == [("bot was blocked by the user",)]
    assert db(tmp_path, "select stage, reason from failures") == [
        ("deliver", "bot was blocked by the user")
    ]
    assert db(tmp_path, "select status from messages where direction='out'") == [("undeliverable",)]
    assert not await app.people.is_reachable("test", "blocker")
    await app.people.mark_reachable("test", "blocker")
    assert await app.people.is_reachable("test", "blocker")


async def test_different_chats_are_not_held_up_by_each_others_pacing(app: App) -> None:
    platform = ScriptedPlatform(app.services, [])
    platform.pacer.policy = PacingPolicy(per_chat_interval_s=0.5, global_per_second=1000)
    started = time.monotonic()
    await asyncio.gather(
        *(
            platform.send(Outgoing(scope=incoming(channel=f"c{i}").scope, text="x"))
            for i in range(5)
        )
    )
    assert time.monotonic() - started < 0.4


def test_split_never_cuts_inside_a_code_block_when_it_can_avoid_it() -> None:
    code = "```python\n" + "\n".join(f"print({i})" for i in range(5)) + "\n```"
    text = "Here is how.\n\n" + code + "\n\nThat is all, and that is that."
    parts = split_message(text, 80)
    assert len(parts) == 2 and code in parts[0]  # the block stays whole
    assert all(p.count("```") % 2 == 0 for p in parts)
    parts = split_message("Intro words here.\n\n" + code, 60)
    assert code in parts  # cut before the block rather than inside it


def test_split_code_block_longer_than_the_limit_is_refenced() -> None:
    code = "```\n" + "\n".join(f"line number {i}" for i in range(40)) + "\n```"
    parts = split_message(code, 100)
    assert len(parts) > 1 and all(len(p) <= 100 for p in parts)
    assert all(p.startswith("```") and p.endswith("```") for p in parts)
    joined = "\n".join(line for p in parts for line in p.splitlines() if line != "```")
    assert joined == "\n".join(f"line number {i}" for i in range(40))
