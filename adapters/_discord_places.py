"""Where a Discord event happens, as a `Scope`: the place, and the persona there.

Which persona speaks in a place, first match wins: a `/persona` switch of the
channel (`People.bound_persona`) → config `"GUILD/CHANNEL"` → config `"GUILD"` →
config `"dm"` (DMs) → the default persona. A thread is its parent channel's place,
so it inherits the parent's persona; which channel a thread is in is asked of
Discord once and remembered (at most 50,000 channels, then forgotten at once).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import aiohttp
import discord
import structlog

from bot.messages import Scope
from bot.people import place_key

if TYPE_CHECKING:
    from adapters.discord import DiscordAdapter

__all__ = ["DiscordPlaces"]

log = structlog.get_logger("adapters.discord")


class DiscordPlaces:
    """Scopes for one `DiscordAdapter`, with its thread → parent cache."""

    def __init__(self, adapter: DiscordAdapter) -> None:
        self.adapter = adapter
        self._threads: dict[int, int | None] = {}  # channel id -> parent id (None: not a thread)

    async def persona_for(self, guild: int | None, channel: int) -> str:
        """The persona that speaks in `channel` (a thread's parent), by the order above."""
        bound = await self.adapter.services.people.bound_persona(
            place_key(self.adapter.platform, None if guild is None else str(guild), str(channel))
        )
        if bound is not None:
            return bound
        configured = self.adapter.settings.personas
        if guild is None:
            return configured.get("dm", self.adapter.default_persona)
        return (
            configured.get(f"{guild}/{channel}")
            or configured.get(str(guild))
            or self.adapter.default_persona
        )

    async def locate(self, channel_id: int, guild: int | None) -> tuple[int, int | None]:
        """(channel, thread) for a channel id: a thread is located in its parent."""
        if guild is None:
            return channel_id, None
        if channel_id not in self._threads:
            client = self.adapter._require_client()
            found: Any = client.get_channel(channel_id)
            if found is None:
                # A raw event about a thread we never saw: ask once, then remember.
                try:
                    found = await client.fetch_channel(channel_id)
                except (discord.HTTPException, aiohttp.ClientError) as exc:
                    # Taken as a channel this once; not remembered, so it is asked again.
                    log.info("discord.channel_unknown", channel=channel_id, error=str(exc))
                    return channel_id, None
            parent = found.parent_id if isinstance(found, discord.Thread) else None
            if len(self._threads) > 50_000:
                self._threads.clear()
            self._threads[channel_id] = parent
        parent = self._threads[channel_id]
        return (parent, channel_id) if parent is not None else (channel_id, None)

    async def scope(self, guild: int | None, channel_id: int, user: int) -> Scope:
        """The scope of `user` in `channel_id` (a channel, a thread or a DM)."""
        channel, thread = await self.locate(channel_id, guild)
        return Scope(
            platform=self.adapter.platform,
            space=None if guild is None else str(guild),
            channel=str(channel),
            thread=None if thread is None else str(thread),
            user=str(user),
            persona=await self.persona_for(guild, channel),
        )

    def bound_channels(self) -> frozenset[int]:
        """Channels config names: always-on ones and "GUILD/CHANNEL" persona places."""
        places = [
            *self.adapter.settings.always_on,
            *(k.split("/")[-1] for k in self.adapter.settings.personas if "/" in k),
        ]
        return frozenset(int(p) for p in places if p.isdigit() and len(p) <= 20)

    def chat_for_channel(self, channel_id: int, guild: int | None) -> str:
        """`chat_key` of a message's scope from the channel cache alone (the intake
        must not wait on REST): a thread's lane is "parent/thread"."""
        if guild is None:
            return str(channel_id)
        parent = self._threads.get(channel_id)
        if channel_id not in self._threads:
            found: Any = self.adapter._require_client().get_channel(channel_id)
            if found is None:
                return str(channel_id)
            parent = found.parent_id if isinstance(found, discord.Thread) else None
        return f"{parent}/{channel_id}" if parent is not None else str(channel_id)
