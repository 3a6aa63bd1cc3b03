"""Mature personas and moderators' bans through the real discord.py against the fake
Discord (tests/fakes/discord_api.py), on a real app and SQLite file."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.adapters.conftest import DiscordBotFactory
from tests.adapters.test_discord import MENTION, interact, settle, until, until_rows
from tests.fakes.discord_api import (
    ANN,
    BOB,
    BOT,
    GENERAL,
    GUILD,
    KEYWORDS,
    OTHER,
    FakeDiscord,
    FakeUser,
)

MANAGE_GUILD = 1 << 5
MATURE = """\
version: 1
id: noir
name: Noir
system_prompt: You are Noir, a detective story for grown-ups.
safety:
  content_rating: mature
"""
MOD = FakeUser(200_000_000_000_000_009, "mod", global_name="Mod")


def personas(tmp_path: Path) -> None:
    (tmp_path / "personas").mkdir(exist_ok=True)
    (tmp_path / "personas" / "noir.yaml").write_text(MATURE, encoding="utf-8")


async def test_a_mature_persona_speaks_only_in_age_restricted_channels(
    discord_bot: DiscordBotFactory, discord_fake: FakeDiscord, tmp_path: Path
) -> None:
    personas(tmp_path)
    discord_fake.nsfw_channels.add(KEYWORDS)
    bound = {f"{GUILD}/{GENERAL}": "noir", f"{GUILD}/{KEYWORDS}": "noir"}
    bot = await discord_bot(personas=bound)
    await discord_fake.dispatch(
        "MESSAGE_CREATE", discord_fake.message(GENERAL, ANN, f"{MENTION} hi", mentions=(BOT,))
    )
    await until_rows(bot, "select id from safety_events where verdict='age_restricted'")
    await settle(bot)
    assert discord_fake.sent_messages(GENERAL) == []  # silent, the reason recorded
    reason = await bot.rows("select reason from safety_events")
    assert reason == [("a mature persona in a channel that is not age-restricted",)]
    # The age-restricted channel: Discord has checked ages; Noir speaks, no question.
    await discord_fake.dispatch(
        "MESSAGE_CREATE",
        discord_fake.message(KEYWORDS, ANN, f"{MENTION} hello", mentions=(BOT,)),
    )
    [sent] = await until(lambda: discord_fake.sent_messages(KEYWORDS))
    assert "hello" in sent["content"]
    # A safe persona speaks in an ordinary channel.
    await discord_fake.dispatch(
        "MESSAGE_CREATE", discord_fake.message(OTHER, ANN, f"{MENTION} hey", mentions=(BOT,))
    )
    assert await until(lambda: discord_fake.sent_messages(OTHER))


async def test_ban_and_unban_from_a_slash_command(
    discord_bot: DiscordBotFactory, discord_fake: FakeDiscord
) -> None:
    bot = await discord_bot()
    asked = discord_fake.interaction("ban", ANN, GENERAL, {"user": BOB})
    refused = await interact(discord_fake, asked)
    assert "Only moderators" in refused["content"]
    payload = discord_fake.interaction(
        "ban",
        MOD,
        GENERAL,
        {"user": BOB, "everywhere": True, "reason": "spam"},
        permissions=MANAGE_GUILD,
    )
    done = await interact(discord_fake, payload)
    assert f"Done, ban: {BOB.id} for every persona" in done["content"]
    await discord_fake.dispatch(
        "MESSAGE_CREATE", discord_fake.message(GENERAL, BOB, f"{MENTION} hi", mentions=(BOT,))
    )
    await until_rows(bot, "select id from safety_events where verdict='banned'")
    await settle(bot)
    assert discord_fake.sent_messages(GENERAL) == []
    unban = discord_fake.interaction(
        "unban", MOD, GENERAL, {"user": BOB, "everywhere": True}, permissions=MANAGE_GUILD
    )
    assert "Done, unban" in (await interact(discord_fake, unban))["content"]
    await discord_fake.dispatch(
        "MESSAGE_CREATE", discord_fake.message(GENERAL, BOB, f"{MENTION} back", mentions=(BOT,))
    )
    assert await until(lambda: discord_fake.sent_messages(GENERAL))
    audit = await bot.rows(
        "select moderator_id, action, target_user_id, persona_id, reason "
        "from moderation_actions order by id"
    )
    assert audit == [
        (str(MOD.id), "ban", str(BOB.id), "*", "spam"),
        (str(MOD.id), "unban", str(BOB.id), "*", None),
    ]
    asked = discord_fake.interaction("audit", MOD, GENERAL, {"user": BOB}, permissions=MANAGE_GUILD)
    shown = (await interact(discord_fake, asked))["content"]
    assert f"{MOD.id}: ban {BOB.id} (every persona): spam" in shown



async def test_a_dm_burst_while_the_persona_writes_is_answered_by_one_more_turn(
    discord_bot: DiscordBotFactory, discord_fake: FakeDiscord,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BOT_ENGINE__COALESCE_BURSTS", "true")  # as by default
    import asyncio

    from bot.llm.base import ChatRequest

    started, go_on = asyncio.Event(), asyncio.Event()
    prompts: list[str] = []

    async def slow_first(request: ChatRequest) -> str:
        prompts.append("\n".join(m.content for m in request.messages))
        if len(prompts) == 1:
            started.set()
            await go_on.wait()
        return f"heard: {request.messages[-1].content[-40:]}"

    bot = await discord_bot(slow_first)
    dm = discord_fake.dm_channel(ANN)
    await discord_fake.send_message(discord_fake.message(dm, ANN, "first"))
    await asyncio.wait_for(started.wait(), 10)
    for i in range(6):  # while the first reply is being written
        await discord_fake.send_message(discord_fake.message(dm, ANN, f"more {i}"))
    # Every DM is stored with its author (read without parsing) before the first ends.
    await until_rows(
        bot,
        "select count(*) from inbox_events where author = ? having count(*) = 7",
        str(ANN.id),
        timeout=10,
    )
    go_on.set()
    await until(lambda: len(discord_fake.sent_messages(dm)) >= 2, 10)
    sent = discord_fake.sent_messages(dm)
    await settle(bot)
    assert [m["content"] for m in sent] == ["heard: first", "heard: more 5"]
    assert len(prompts) == 2 and all(f"more {i}" in prompts[1] for i in range(6))
    statuses = await bot.rows("select status from messages where direction='in' order by id")
    assert [s for (s,) in statuses] == ["answered"] + ["ignored"] * 5 + ["answered"]
