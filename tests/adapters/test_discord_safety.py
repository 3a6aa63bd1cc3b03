"""Mature personas and moderators' bans through the real discord.py against the fake
Discord (tests/fakes/discord_api.py), on a real app and SQLite file."""

from __future__ import annotations

from pathlib import Path

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

