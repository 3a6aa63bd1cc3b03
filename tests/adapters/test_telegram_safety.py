"""Limits, mute and ban through the real python-telegram-bot against the fake Bot API
(tests/fakes/telegram_api.py), on a real app and SQLite file."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from tests.adapters.conftest import TELEGRAM_MODERATOR, TelegramBotFactory
from tests.fakes.telegram_api import FakeTelegramAPI

pytestmark = pytest.mark.filterwarnings("ignore::telegram.warnings.PTBDeprecationWarning")

_SETTLED = "('answered', 'ignored', 'failed', 'expired')"


async def _until(condition: Callable[[], Awaitable[bool]], timeout: float = 20.0) -> None:
    """Poll an async condition (a database query) until it holds."""
    deadline = time.monotonic() + timeout
    while not await condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def _ask(api: FakeTelegramAPI, user: int, text: str) -> str:
    before = len(api.sent_to(user))
    api.private_message(user, text)
    await api.wait_for(lambda: len(api.sent_to(user)) > before)
    return "\n".join(m.text for m in api.sent_to(user)[before:])


async def test_ban_mute_and_undo_from_telegram_commands_with_an_audit(
    telegram_bot: TelegramBotFactory, telegram_api: FakeTelegramAPI
) -> None:
    bot = await telegram_bot()
    mod = TELEGRAM_MODERATOR
    assert await _ask(telegram_api, 300, "/ban 100") == "Only moderators can /ban."
    assert "Done, ban: 100 for tester" in await _ask(telegram_api, mod, "/ban 100 spam links")
    telegram_api.private_message(100, "hello?")

    async def settled(text: str) -> bool:
        found = await bot.rows(
            f"select status from messages where text = ? and status in {_SETTLED}", text
        )
        return bool(found)

    await _until(lambda: settled("hello?"))
    assert await bot.rows("select status from messages where text='hello?'") == [("ignored",)]
    assert telegram_api.sent_to(100) == []  # silence: not one message to them
    assert "Done, unban" in await _ask(telegram_api, mod, "/unban 100")
    assert await _ask(telegram_api, 100, "hello again") == "You said: hello again"
    assert "Done, mute: 100 for every persona until" in await _ask(
        telegram_api, mod, "/mute 100 all 2h being rude"
    )
    telegram_api.private_message(100, "muted?")
    await _until(lambda: settled("muted?"))
    assert len(telegram_api.sent_to(100)) == 1  # still only the one reply
    audit = await bot.rows(
        "select moderator_id, action, target_user_id, persona_id, reason "
        "from moderation_actions order by id"
    )
    assert audit == [
        (str(mod), "ban", "100", "tester", "spam links"),
        (str(mod), "unban", "100", "tester", None),
        (str(mod), "mute", "100", "*", "being rude"),
    ]
    events = await bot.rows("select verdict from safety_events order by id")
    assert events == [("banned",), ("muted",)]


async def test_a_flood_from_one_person_meets_the_limit_once_and_loses_nothing(
    telegram_bot: TelegramBotFactory,
    telegram_api: FakeTelegramAPI,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BOT_SAFETY__LIMITS__MESSAGES_PER_MINUTE", "3")
    monkeypatch.setenv("BOT_SAFETY__LIMITS__MESSAGE", "Slow down a little, please!")
    bot = await telegram_bot()

    async def settled(n: int) -> bool:
        rows = await bot.rows(
            f"select count(*) from messages where direction='in' and status in {_SETTLED}"
        )
        return rows[0][0] == n

    # One after another (each stored and settled before the next arrives): no burst
    # to coalesce, so the limit is what answers the fourth and stays silent after.
    for i in range(10):
        telegram_api.private_message(100, f"flood {i}")
        await _until(lambda n=i + 1: settled(n))  # type: ignore[misc]

    async def all_settled() -> bool:
        rows = await bot.rows(
            f"select count(*) from messages where direction='in' and status in {_SETTLED}"
        )
        return rows[0][0] == 10

    await _until(all_settled)
    texts = [m.text for m in telegram_api.sent_to(100)]
    assert texts == [f"You said: flood {i}" for i in range(3)] + ["Slow down a little, please!"]
    assert len(bot.backend.requests) == 3
    limited = await bot.rows("select count(*) from safety_events where verdict='limited'")
    assert limited == [(7,)]  # every refused message recorded, one of them told
    # Every message of the flood is stored, in order (nothing accepted is lost).
    stored = await bot.rows("select text from messages where direction='in' order by id")
    assert [t for (t,) in stored] == [f"flood {i}" for i in range(10)]


async def test_a_burst_from_one_person_is_one_turn_that_sees_it_all_but_a_crisis_is_not(
    telegram_bot: TelegramBotFactory, telegram_api: FakeTelegramAPI,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BOT_ENGINE__COALESCE_BURSTS", "true")  # as by default
    bot = await telegram_bot()
    # Ten messages at once (one getUpdates batch), and another person's two between.
    for i in range(10):
        telegram_api.private_message(100, f"burst {i}")
        if i in (3, 6):
            telegram_api.private_message(200, f"other {i}")

    async def settled(n: int) -> bool:
        rows = await bot.rows(
            f"select count(*) from messages where direction='in' and status in {_SETTLED}"
        )
        return rows[0][0] == n

    await _until(lambda: settled(12))
    await telegram_api.wait_for(lambda: len(telegram_api.sent_to(100)) >= 2)
    # The first is answered by itself (nothing was before it), the newest with the
    # rest in view, as the engine's line does for turns that queue behind each other.
    assert [m.text for m in telegram_api.sent_to(100)] == ["You said: burst 0", "You said: burst 9"]
    assert [m.text for m in telegram_api.sent_to(200)] == ["You said: other 3", "You said: other 6"]
    prompts = ["\n".join(m.content for m in r.messages) for r in bot.backend.requests]
    assert len(prompts) == 4  # two generations each, not twelve
    mine = next(p for p in prompts if "burst 9" in p)
    assert all(f"burst {i}" in mine for i in range(10)) and "other" not in mine
    statuses = await bot.rows(
        "select m.text, m.status from messages m where direction='in' order by m.id"
    )
    assert [s for t, s in statuses if t.startswith("burst")] == (
        ["answered"] + ["ignored"] * 8 + ["answered"]
    )
    # Nothing lost: every event settled, none failed.
    async def events_done() -> bool:
        return await bot.rows("select status, count(*) from inbox_events group by status") == [
            ("done", 12)
        ]

    await _until(events_done)

    # A message that may be a crisis is never answered by a later one, even in the
    # middle of a burst.
    telegram_api.private_message(100, "hi again")
    telegram_api.private_message(100, "I want to kill myself")
    telegram_api.private_message(100, "anyway, what's up")
    await _until(lambda: settled(15))
    await telegram_api.wait_for(lambda: len(telegram_api.sent_to(100)) >= 5)
    sent = [m.text for m in telegram_api.sent_to(100)]
    assert len(sent) == 5, sent
    assert sent[2] == "You said: hi again" and sent[4] == "You said: anyway, what's up"
    assert "You said" not in sent[3]  # the crisis reply, by itself
    crisis = await bot.rows("select verdict from safety_events where verdict='crisis'")
    assert crisis == [("crisis",)]


MATURE = """\
version: 1
id: noir
name: Noir
system_prompt: You are Noir, a detective story for grown-ups.
safety:
  content_rating: mature
  age_gate_message: "Noir is for adults. Are you 18 or older?"
"""


async def test_a_mature_persona_asks_for_the_age_first_and_records_it(
    telegram_bot: TelegramBotFactory, telegram_api: FakeTelegramAPI, tmp_path: Path
) -> None:
    (tmp_path / "personas").mkdir(exist_ok=True)
    (tmp_path / "personas" / "noir.yaml").write_text(MATURE, encoding="utf-8")
    bot = await telegram_bot(persona="noir")
    assert await _ask(telegram_api, 100, "hello") == "Noir is for adults. Are you 18 or older?"
    assert bot.backend.requests == []
    assert await _ask(telegram_api, 100, "Yes.") == "You said: Yes."
    assert await _ask(telegram_api, 100, "a case?") == "You said: a case?"
    assert "adults only" in await _ask(telegram_api, 200, "nope")
    telegram_api.private_message(200, "please?")

    async def settled() -> bool:
        sql = f"select 1 from messages where text='please?' and status in {_SETTLED}"
        return bool(await bot.rows(sql))

    await _until(settled)
    assert len(telegram_api.sent_to(200)) == 1  # told once, then silence
    answers = await bot.rows(
        "select platform_user_id, age_answer, age_answered_at is not null from users order by 1"
    )
    assert answers == [("100", "adult", 1), ("200", "minor", 1)]
