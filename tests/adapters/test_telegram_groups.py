"""Personas in a busy Telegram group (bot/groups), end to end: the real
python-telegram-bot against the fake Bot API, a real app (MockBackend, tmp SQLite),
the groups configured through the environment (BOT_GROUPS)."""

from __future__ import annotations

import asyncio
import json
import random
import time
from typing import Any

import pytest

from bot.llm.base import ChatRequest
from bot.people import place_key
from tests.adapters.conftest import TelegramBot, TelegramBotFactory
from tests.fakes.telegram_api import FakeTelegramAPI

GROUP = -1001
ELSEWHERE = -1002  # only Otto there
BOB, ANN, CAROL, DAVE = 201, 202, 203, 204
OTHER_BOT = 9001


def voiced(request: ChatRequest) -> str:
    name = "Tess" if "You are Tess" in request.messages[0].content else "Otto"
    return f"{name} heard: {request.messages[-1].content[-80:]}"


def groups(monkeypatch: pytest.MonkeyPatch, **channels: dict[str, Any]) -> None:
    monkeypatch.setenv("BOT_GROUPS", json.dumps({"channels": channels}))


async def settle(bot: TelegramBot, timeout: float = 10.0) -> None:
    """Until every update the fake holds was taken and handled (replies sent): the
    fake's queue empty, no inbox event pending, the worker's lanes empty, twice."""
    deadline = time.monotonic() + timeout
    calm = 0
    while calm < 2:
        pending = await bot.rows("select count(*) from inbox_events where status = 'pending'")
        worker = bot.adapter.worker
        quiet = not bot.api.updates and pending == [(0,)]
        calm = calm + 1 if quiet and (worker is None or worker.backlog == 0) else 0
        if time.monotonic() > deadline:
            raise AssertionError("the bot did not settle")
        await asyncio.sleep(0.05)


def texts(api: FakeTelegramAPI, chat: int) -> list[str]:
    return [m.text for m in api.sent_to(chat)]


def from_bot(api: FakeTelegramAPI, chat: int, text: str, **kw: Any) -> dict[str, Any]:
    """Another bot's message in a group (Telegram shows bots' messages to bots only
    when they are admins or through a business connection; our code must not care)."""
    sender = {"id": OTHER_BOT, "is_bot": True, "first_name": "Beeper", "username": "beeper_bot"}
    handle = f"@{api.bot_user['username']}"
    msg = api.message(chat, OTHER_BOT, f"{handle} {text}", extra={"from": sender}, entities=[
        {"type": "mention", "offset": 0, "length": len(handle)}], **kw)  # fmt: skip
    return api.push("message", msg)


async def test_a_busy_group_with_several_people_and_two_personas(
    telegram_bot: TelegramBotFactory, telegram_api: FakeTelegramAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    api = telegram_api
    groups(monkeypatch, **{f"telegram:{GROUP}": {"personas": ["other"]}})
    bot = await telegram_bot(voiced)
    await bot.app.people.bind_persona(
        place_key("telegram", str(ELSEWHERE), str(ELSEWHERE)), "other",
        platform="telegram", by_user=None,
    )  # fmt: skip
    api.group_message(ELSEWHERE, DAVE, "the secret word is pineapple", name="Dave")
    chatter = api.group_message(GROUP, BOB, "just chatting about cats", name="Bob")
    api.group_message(GROUP, CAROL, "dogs are better", name="Carol")
    await settle(bot)
    assert texts(api, GROUP) == []
    api.group_message(GROUP, ANN, "Otto, what do you think?", name="Ann")
    await api.wait_for(lambda: len(api.sent_to(GROUP)) == 1)
    api.group_message(GROUP, ANN, "and you?", name="Ann", mention=True)
    await api.wait_for(lambda: len(api.sent_to(GROUP)) == 2)
    api.group_message(GROUP, BOB, "Tess and Otto: cats or dogs?", name="Bob")
    await api.wait_for(lambda: len(api.sent_to(GROUP)) == 4)
    await settle(bot)
    said = texts(api, GROUP)
    assert said[0] == "Otto heard: Ann: Otto, what do you think?"
    assert said[1] == "Tess heard: Ann: and you?"  # our @handle is not part of the text
    assert sorted(t.split(" heard")[0] for t in said[2:]) == ["Otto", "Tess"]
    otto = next(m for m in api.sent_to(GROUP) if m.text.startswith("Otto"))
    api.group_message(GROUP, CAROL, "really?", name="Carol", reply_to=api.bot_message(otto))
    await api.wait_for(lambda: len(api.sent_to(GROUP)) == 5)
    await settle(bot)
    assert texts(api, GROUP)[4] == "Otto heard: Carol: really?"
    assert api.sent_to(GROUP)[4].reply_to is not None

    tess = [r for r in bot.backend.requests if "You are Tess" in r.messages[0].content]
    seen = "\n".join(m.content for m in tess[-1].messages)
    for line in ("Bob: just chatting about cats", "Carol: dogs are better",
                 "Ann: Otto, what do you think?", "Otto: Otto heard: Ann: Otto, what"):  # fmt: skip
        assert line in seen
    assert "pineapple" not in seen
    copies = await bot.rows(
        "select c.persona_id, m.status from messages m join conversations c"
        " on m.conversation_id = c.id where m.platform_message_id = ? and m.direction = 'in'"
        " order by c.persona_id",
        str(chatter["message"]["message_id"]),
    )
    assert copies == [("other", "ignored"), ("tester", "ignored")]
    counts = bot.adapter.groups.counters
    assert counts.get("spoke", "name") == 3 and counts.get("spoke", "mention") == 1
    assert counts.get("spoke", "reply") == 1


async def test_a_bot_loop_stops_at_the_chain_limit(
    telegram_bot: TelegramBotFactory, telegram_api: FakeTelegramAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    api = telegram_api

    def ping_pong(request: ChatRequest) -> str:
        return "Otto, your turn." if "You are Tess" in request.messages[0].content else "Tess?"

    allow = {"answer_bots": True}
    groups(
        monkeypatch,
        **{
            f"telegram:{GROUP}": {
                "personas": ["other"],
                "speak": {"tester": allow, "other": allow},
            },
            f"telegram:{ELSEWHERE}": {"speak": {"tester": allow}, "max_bot_chain": 4},
        },
    )
    bot = await telegram_bot(ping_pong)
    api.group_message(GROUP, ANN, "Tess, start", name="Ann")
    await api.wait_for(lambda: len(api.sent_to(GROUP)) == 3)
    await settle(bot)
    assert texts(api, GROUP) == ["Otto, your turn.", "Tess?", "Otto, your turn."]
    assert bot.adapter.groups.counters.get("silent", "bot_chain_limit") == 1

    # An outside bot answering every one of our replies: a run of 4, then silence.
    api.group_message(ELSEWHERE, ANN, "hi", name="Ann", mention=True)
    await api.wait_for(lambda: len(api.sent_to(ELSEWHERE)) == 1)
    for _ in range(3):
        from_bot(api, ELSEWHERE, "beep")
        await settle(bot)
    assert len(api.sent_to(ELSEWHERE)) == 2
    assert bot.adapter.groups.counters.get("silent", "bot_chain_limit") == 3
    stored = await bot.rows(
        "select u.is_bot, m.status from messages m join users u on u.id = m.user_id"
        " join conversations c on c.id = m.conversation_id"
        " where c.channel = ? and m.direction = 'in' order by m.id",
        str(ELSEWHERE),
    )
    assert stored == [(0, "answered"), (1, "answered"), (1, "ignored"), (1, "ignored")]


async def test_other_bots_are_never_answered_unless_allowed(
    telegram_bot: TelegramBotFactory, telegram_api: FakeTelegramAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    api = telegram_api
    groups(monkeypatch, **{f"telegram:{GROUP}": {"personas": ["other"]}})
    bot = await telegram_bot(voiced)
    from_bot(api, GROUP, "Tess, Otto: /start")
    await settle(bot)
    assert texts(api, GROUP) == []
    assert bot.adapter.groups.counters.get("silent", "from_bot") == 2


async def test_talkativeness_with_a_seeded_generator(
    telegram_bot: TelegramBotFactory, telegram_api: FakeTelegramAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    api = telegram_api
    chatty = {"mode": "talkative", "talkativeness": 0.3, "cooldown_s": 0}
    groups(
        monkeypatch,
        **{
            f"telegram:{GROUP}": {
                "personas": ["other"],
                "speak": {"other": chatty},
                "replies_per_minute": 0,
            }
        },
    )
    bot = await telegram_bot(voiced)
    bot.adapter.groups.rng = random.Random(99)
    expected = random.Random(99)
    people = [(BOB, "Bob"), (ANN, "Ann"), (CAROL, "Carol"), (DAVE, "Dave")]
    spoke_to: list[int] = []
    for i in range(24):
        user, name = people[i % 4]
        update = api.group_message(GROUP, user, f"idle chatter {i}", name=name)
        if expected.random() < 0.3:
            spoke_to.append(update["message"]["message_id"])
        await settle(bot)
    assert [m.reply_to for m in api.sent_to(GROUP)] == spoke_to and 0 < len(spoke_to) < 24
    assert all(t.startswith("Otto heard") for t in texts(api, GROUP))
    assert bot.adapter.groups.counters.get("spoke", "talkative") == len(spoke_to)
