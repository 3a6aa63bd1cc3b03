"""What people do to messages on Discord: reactions, edits and deletions.

Each becomes a call of the adapter's `on_reaction`, `on_edit` or `on_delete` at
once (feedback on the persona's messages, the ledger kept true to the chat). A
failure is logged and dropped: these events are not in the inbox, and one that
cannot be handled must not stop the next. Nothing is taken once the adapter is
stopping.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
import structlog

from adapters._discord_parse import message_text
from bot.messages import Actor, Reaction

if TYPE_CHECKING:
    from adapters.discord import DiscordAdapter

__all__ = ["DiscordFeedback"]

log = structlog.get_logger("adapters.discord")


class DiscordFeedback:
    """The reaction, edit and deletion handlers of one `DiscordAdapter`."""

    def __init__(self, adapter: DiscordAdapter) -> None:
        self.adapter = adapter

    async def on_raw_reaction(self, payload: discord.RawReactionActionEvent) -> None:
        adapter = self.adapter
        async with adapter._in_hand() as taking:
            if not taking:
                return
            try:
                me = adapter._me()
                if payload.user_id == me:
                    return
                if payload.message_author_id is not None and payload.message_author_id != me:
                    return  # only reactions on the persona's messages are feedback
                member = payload.member
                if member is not None and member.bot and adapter.settings.ignore_bots:
                    return
                scope = await adapter._scope(payload.guild_id, payload.channel_id, payload.user_id)
                actor = (
                    adapter._actor(member)
                    if member is not None
                    else Actor(platform=adapter.platform, id=str(payload.user_id))
                )
                stored = await adapter.on_reaction(
                    Reaction(
                        scope=scope,
                        actor=actor,
                        platform_message_id=str(payload.message_id),
                        emoji=str(payload.emoji),
                        added=payload.event_type == "REACTION_ADD",
                    )
                )
                log.debug("discord.reaction", stored=stored, message_id=payload.message_id)
            except Exception:
                log.exception("discord.reaction_failed", message_id=payload.message_id)

    async def on_raw_edit(self, payload: discord.RawMessageUpdateEvent) -> None:
        adapter = self.adapter
        async with adapter._in_hand() as taking:
            if not taking:
                return
            try:
                message = payload.message
                me = adapter._me()
                # Link previews arrive as updates too; only a person's edit has a timestamp.
                if message.edited_at is None or "content" not in payload.data:
                    return
                if message.author.id == me or (message.author.bot and adapter.settings.ignore_bots):
                    return
                scope = await adapter._scope(
                    payload.guild_id, payload.channel_id, message.author.id
                )
                await adapter.on_edit(
                    scope,
                    str(payload.message_id),
                    message_text(message, me, adapter._bot_name()),
                )
            except Exception:
                log.exception("discord.edit_failed", message_id=payload.message_id)

    async def on_raw_delete(self, payload: discord.RawMessageDeleteEvent) -> None:
        await self.deleted(payload.guild_id, payload.channel_id, [payload.message_id])

    async def on_raw_bulk_delete(self, payload: discord.RawBulkMessageDeleteEvent) -> None:
        await self.deleted(payload.guild_id, payload.channel_id, sorted(payload.message_ids))

    async def deleted(self, guild: int | None, channel: int, ids: list[int]) -> None:
        adapter = self.adapter
        async with adapter._in_hand() as taking:
            if not taking:
                return
            try:
                # Who wrote it is unknown for uncached messages and not needed: the
                # lookup is by conversation and message id, persons' messages only.
                scope = await adapter._scope(guild, channel, 0)
                for message_id in ids:
                    await adapter.on_delete(scope, str(message_id))
            except Exception:
                log.exception("discord.delete_failed", channel=channel)
