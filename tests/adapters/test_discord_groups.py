"""Personas in a busy Discord channel (bot/groups), end to end: the real discord.py
over sockets against the fake Discord, a real app (MockBackend, tmp SQLite), the
groups configured through the environment as an operator would (BOT_GROUPS)."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from structlog.testing import capture_logs

from bot.llm.base import ChatRequest
from tests.adapters.conftest import DiscordBot, DiscordBotFactory
from tests.adapters.test_discord import CONFIG, MENTION, settle, until, voiced
from tests.fakes.discord_api import (
    ANN,
    BOB,
    BOT,
    GENERAL,
    KEYWORDS,
    OTHER,
    OTHER_BOT,
    FakeDiscord,
    FakeUser,
)

CAROL = FakeUser(200_000_000_000_000_011, "carol", global_name="Carol")
DAVE = FakeUser(200_000_000_000_000_012, "dave", global_name="Dave")


def groups(monkeypatch: pytest.MonkeyPatch, **channels: dict[str, Any]) -> None:
    """Configure `groups.channels` ("discord:ID" keys) as BOT_GROUPS does."""
    monkeypatch.setenv("BOT_GROUPS", json.dumps({"channels": channels}))


def sent_by(fake: FakeDiscord, channel: int) -> list[str]:
    return [m["content"] for m in fake.sent_messages(channel)]


async def say(fake: FakeDiscord, channel: int, who: FakeUser, text: str, **kw: Any) -> str:
    message = await fake.send_message(fake.message(channel, who, text, **kw))
    return str(message["id"])


async def copies(bot: DiscordBot, platform_id: str) -> list[tuple[str, str]]:
    """(persona, status) of each stored copy of one platform message."""
    rows = await bot.rows(
        "select c.persona_id, m.status from messages m join conversations c"
        " on m.conversation_id = c.id where m.platform_message_id = ? and m.direction = 'in'"
        " order by c.persona_id",
        platform_id,
    )
    return [(str(p), str(s)) for p, s in rows]


async def test_a_busy_channel_with_several_people_and_two_personas(
    discord_bot: DiscordBotFactory, discord_fake: FakeDiscord, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = discord_fake
    groups(monkeypatch, **{f"discord:{GENERAL}": {"personas": ["other"]}})
    bot = await discord_bot(voiced, **CONFIG)
    # In OTHER only Otto is present: Tess must never know what is said there.
    await say(fake, OTHER, DAVE, "the secret word is pineapple")
    chatter = await say(fake, GENERAL, BOB, "just chatting about cats")
    await say(fake, GENERAL, CAROL, "dogs are better")
    await settle(bot)
    assert sent_by(fake, GENERAL) == []  # nobody was addressed
    assert await copies(bot, chatter) == [("other", "ignored"), ("tester", "ignored")]

    await say(fake, GENERAL, ANN, "Otto, what do you think?")
    await until(lambda: len(sent_by(fake, GENERAL)) == 1)
    await say(fake, GENERAL, ANN, f"{MENTION} and you?", mentions=(BOT,))
    await until(lambda: len(sent_by(fake, GENERAL)) == 2)
    both = await say(fake, GENERAL, BOB, "Tess and Otto: cats or dogs?")
    await until(lambda: len(sent_by(fake, GENERAL)) == 4)
    await settle(bot)
    replies = sent_by(fake, GENERAL)
    assert replies[0] == "Otto heard: Ann: Otto, what do you think?"
    assert replies[1].startswith("Tess heard: ") and replies[1].endswith("and you?")
    assert sorted(r.split(" heard")[0] for r in replies[2:]) == ["Otto", "Tess"]
    assert await copies(bot, both) == [("other", "answered"), ("tester", "answered")]

    # A reply to Otto's message is for Otto, though it replies to the bot's account.
    otto_said = next(
        m for m in fake.created
        if m["content"].startswith("Otto") and m["channel_id"] == str(GENERAL)
    )  # fmt: skip
    await say(fake, GENERAL, CAROL, "really?", reply_to={**otto_said, "author": BOT.payload()})
    await until(lambda: len(sent_by(fake, GENERAL)) == 5)
    await settle(bot)
    assert sent_by(fake, GENERAL)[4] == "Otto heard: Carol: really?"

    # What Tess was shown: the people's messages with their names, Otto's replies
    # under his name, and nothing from the channel where she was absent.
    tess_prompts = [
        r for r in bot.backend.requests if "You are Tess" in r.messages[0].content
    ]
    seen = "\n".join(m.content for m in tess_prompts[-1].messages)
    for line in ("Bob: just chatting about cats", "Carol: dogs are better",
                 "Ann: Otto, what do you think?", "Otto: Otto heard: Ann: Otto, what"):  # fmt: skip
        assert line in seen
    assert "pineapple" not in seen
    # Every message was decided once; every verdict is counted.
    counts = bot.adapter.groups.counters.snapshot()
    assert counts["spoke.name"] == 3 and counts["spoke.mention"] == 1
    assert counts["spoke.reply"] == 1
    assert counts["silent.not_addressed"] >= 4 and counts["silent.other_addressed"] >= 2
    # Each person's message stored once per persona present, never twice.
    dupes = await bot.rows(
        "select conversation_id, platform_message_id, count(*) from messages"
        " where direction = 'in' group by 1, 2 having count(*) > 1"
    )
    assert dupes == []


async def test_a_bot_loop_stops_at_the_chain_limit(
    discord_bot: DiscordBotFactory, discord_fake: FakeDiscord, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two of our personas who answer bots and name each other, and an outside bot
    that answers everything: each loop stops after groups.max_bot_chain."""
    fake = discord_fake

    def ping_pong(request: ChatRequest) -> str:
        return "Otto, your turn." if "You are Tess" in request.messages[0].content else "Tess?"

    allow = {"answer_bots": True}
    groups(
        monkeypatch,
        **{
            f"discord:{GENERAL}": {
                "personas": ["other"],
                "speak": {"tester": allow, "other": allow},
            },
            f"discord:{KEYWORDS}": {"speak": {"tester": allow}, "max_bot_chain": 4},
        },
    )
    bot = await discord_bot(ping_pong, ignore_bots=False)
    with capture_logs() as logs:
        await say(fake, GENERAL, ANN, "Tess, start")
        # Tess (chain 1), Otto (2), Tess (3): then no persona answers a bot.
        await until(lambda: len(sent_by(fake, GENERAL)) == 3)
        await settle(bot)
    assert sent_by(fake, GENERAL) == ["Otto, your turn.", "Tess?", "Otto, your turn."]
    stops = [e for e in logs if e.get("event") == "group.decision"
             and "bot_chain_limit" in e.get("reasons", {}).values()]  # fmt: skip
    assert len(stops) == 1
    assert stops[0]["reasons"] == {"tester": "own_message", "other": "bot_chain_limit"}

    # A person speaking resets the chain.
    await say(fake, GENERAL, BOB, "Otto?")
    await until(lambda: len(sent_by(fake, GENERAL)) == 6)
    await settle(bot)
    assert len(sent_by(fake, GENERAL)) == 6

    # An outside bot that answers every message of ours: in KEYWORDS a run of 4.
    await say(fake, KEYWORDS, ANN, f"{MENTION} hi", mentions=(BOT,))
    await until(lambda: len(sent_by(fake, KEYWORDS)) == 1)
    for _ in range(3):
        await say(fake, KEYWORDS, OTHER_BOT, f"{MENTION} beep", mentions=(BOT,))
        await settle(bot)
    # ours, bot, ours, bot: the second beep ends a run of 4 and is not answered.
    assert len(sent_by(fake, KEYWORDS)) == 2
    assert bot.adapter.groups.counters.get("silent", "bot_chain_limit") == 4


async def test_other_bots_are_context_never_answered_unless_allowed(
    discord_bot: DiscordBotFactory, discord_fake: FakeDiscord, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = discord_fake
    groups(monkeypatch, **{f"discord:{GENERAL}": {"personas": ["other"]}})
    bot = await discord_bot(voiced, ignore_bots=False)
    beep = await say(fake, GENERAL, OTHER_BOT, f"{MENTION} Tess Otto beep", mentions=(BOT,))
    await settle(bot)
    assert sent_by(fake, GENERAL) == []
    assert await copies(bot, beep) == [("other", "ignored"), ("tester", "ignored")]
    assert bot.adapter.groups.counters.get("silent", "from_bot") == 2


async def test_bots_dropped_by_ignore_bots_are_counted_as_decisions(
    discord_bot: DiscordBotFactory, discord_fake: FakeDiscord
) -> None:
    bot = await discord_bot(voiced)  # discord.ignore_bots: the default
    await say(discord_fake, GENERAL, OTHER_BOT, f"{MENTION} Tess beep", mentions=(BOT,))
    await settle(bot)
    assert sent_by(discord_fake, GENERAL) == []
    assert await bot.rows("select count(*) from messages") == [(0,)]  # not even stored
    assert bot.adapter.groups.counters.snapshot() == {"silent.from_bot": 1}


async def test_talkativeness_with_a_seeded_generator(
    discord_bot: DiscordBotFactory, discord_fake: FakeDiscord, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = discord_fake
    chatty = {"mode": "talkative", "talkativeness": 0.4, "cooldown_s": 0}
    groups(
        monkeypatch,
        **{
            f"discord:{GENERAL}": {
                "personas": ["other"],
                "speak": {"other": chatty},
                "replies_per_minute": 0,
            }
        },
    )
    bot = await discord_bot(voiced)
    bot.adapter.groups.rng = random.Random(1234)
    expected = random.Random(1234)
    people = [ANN, BOB, CAROL, DAVE]
    spoke_to: list[str] = []
    for i in range(24):
        mid = await say(fake, GENERAL, people[i % 4], f"idle chatter {i}")
        if expected.random() < 0.4:  # the one draw the decision makes per message
            spoke_to.append(mid)
        await settle(bot)
    answered = [str(m["message_reference"]["message_id"]) for m in fake.sent_messages(GENERAL)]
    assert answered == spoke_to and 0 < len(spoke_to) < 24
    assert all(c.startswith("Otto heard") for c in sent_by(fake, GENERAL))  # Tess: addressed only
    counts = bot.adapter.groups.counters
    assert counts.get("spoke", "talkative") == len(spoke_to)
    assert counts.get("silent", "roll") == 24 - len(spoke_to)


async def test_the_channel_budget_limits_replies_per_minute(
    discord_bot: DiscordBotFactory, discord_fake: FakeDiscord, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = discord_fake
    groups(monkeypatch, **{f"discord:{GENERAL}": {"replies_per_minute": 3}})
    bot = await discord_bot(voiced)
    now = [1000.0]
    bot.adapter.groups.clock = lambda: now[0]
    for i in range(5):
        await say(fake, GENERAL, ANN, f"{MENTION} q{i}", mentions=(BOT,))
        await settle(bot)
    assert len(sent_by(fake, GENERAL)) == 3
    assert bot.adapter.groups.counters.get("silent", "budget") == 2
    now[0] += 61  # a minute later the budget is back
    await say(fake, GENERAL, ANN, f"{MENTION} again", mentions=(BOT,))
    await until(lambda: len(sent_by(fake, GENERAL)) == 4)
    # DMs are not counted against any channel's budget.
    dm = fake.dm_channel(BOB)
    for i in range(5):
        await say(fake, dm, BOB, f"dm {i}")
    await until(lambda: len(sent_by(fake, dm)) == 5)
