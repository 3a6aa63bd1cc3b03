"""A parsed `discord.Message` as the model and the engine should see it.

Pure functions of the message (and who the bot is): the text with mentions as
names, the attachments as `Attachment`s, and whether the bot is addressed. Whatever
a malformed payload breaks here breaks inside `DiscordAdapter.handle_event`'s parse
step, so it is one failure row with its reason.
"""

from __future__ import annotations

import re

import discord

from bot.messages import Attachment, Scope

__all__ = ["is_addressed", "message_attachments", "message_text"]

_USER_MENTION = re.compile(r"<@!?(\d+)>")
_ROLE_MENTION = re.compile(r"<@&(\d+)>")
_CHANNEL_MENTION = re.compile(r"<#(\d+)>")


def is_addressed(
    message: discord.Message,
    me: int,
    scope: Scope,
    *,
    always_on: frozenset[str],
    keywords: re.Pattern[str] | None,
) -> bool:
    """DMs, mentions (not @everyone), replies to the bot, always-on channels, keywords."""
    if scope.is_direct:
        return True
    if any(user.id == me for user in message.mentions):
        return True
    reference = message.reference
    if reference is not None:
        replied = reference.resolved or reference.cached_message
        if isinstance(replied, discord.Message) and replied.author.id == me:
            return True
    if scope.channel in always_on or (scope.thread or "") in always_on:
        return True
    return bool(keywords and keywords.search(message.content.casefold()))


def message_text(message: discord.Message, me: int, bot_name: str | None) -> str:
    """The content with mentions as names: `<@id>` means nothing to the model."""
    text = message.content.strip()
    # A leading mention of the bot says who is addressed, not what is said (but a
    # bare mention is all that was said: keep it, it reads "@name" below).
    text = re.sub(rf"^<@!?{me}>[\s,:]*", "", text) or text
    users = {u.id: u.display_name for u in message.mentions}
    if bot_name is not None:
        users.setdefault(me, bot_name)
    roles = {r.id: r.name for r in message.role_mentions}
    guild = message.guild

    def user(match: re.Match[str]) -> str:
        return "@" + users.get(int(match[1]), "someone")

    def role(match: re.Match[str]) -> str:
        return "@" + roles.get(int(match[1]), "role")

    def channel(match: re.Match[str]) -> str:
        found = guild.get_channel_or_thread(int(match[1])) if guild is not None else None
        return "#" + (found.name if found is not None else "channel")

    text = _USER_MENTION.sub(user, text)
    text = _ROLE_MENTION.sub(role, text)
    return _CHANNEL_MENTION.sub(channel, text)


def message_attachments(message: discord.Message) -> tuple[Attachment, ...]:
    """Files, images, voice messages and stickers, described for the prompt."""
    found: list[Attachment] = []
    for item in message.attachments:
        kind = (item.content_type or "").split("/")[0]
        if item.is_voice_message():
            kind = "voice"
        elif kind not in ("image", "video", "audio"):
            kind = "file"
        found.append(
            Attachment(
                kind=kind,
                filename=item.filename[:256],
                description=item.description or "",
                size_bytes=item.size,
            )
        )
    for sticker in message.stickers:
        found.append(Attachment(kind="sticker", description=sticker.name))
    return tuple(found)
