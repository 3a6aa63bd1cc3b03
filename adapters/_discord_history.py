"""Reading a Discord channel's history back (the catch-up of `_discord_intake.py`),
and the ids and times it works with. Pure functions of the client: no state.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import discord

__all__ = [
    "PAGE",
    "from_ms",
    "guild_of",
    "on_this_shard",
    "read_after",
    "snowflake_id",
    "written_at",
]

#: History pages are Discord's largest.
PAGE = 100


def snowflake_id(value: Any) -> int | None:
    """A Discord id from JSON (a positive int, or a string of at most 20 digits)."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    if isinstance(value, str) and value.isdigit() and len(value) <= 20:
        return int(value)
    return None


async def guild_of(client: discord.Client, channel_id: int, cached: Any) -> int | None:
    """The channel's guild (None: a DM), from the cache or else asked once: a
    server message taken for a DM would be answered as if addressed."""
    if cached is not None:
        guild = getattr(cached, "guild", None)
        return getattr(guild, "id", None) if guild is not None else None
    data: Any = await client.http.get_channel(channel_id)
    return snowflake_id(data.get("guild_id")) if isinstance(data, dict) else None


def on_this_shard(guild: int | None, shard: Any) -> bool:
    """Whether a guild's (None: a DM's) events come to the session of `shard`
    (READY's `[id, count]`; anything else: this session has them all)."""
    if not isinstance(shard, list) or len(shard) != 2:
        return True
    shard_id, count = shard
    if not isinstance(count, int) or count <= 1:
        return True
    # DMs arrive on shard 0; a guild's on (guild >> 22) % count.
    return bool((0 if guild is None else (guild >> 22) % count) == shard_id)


async def read_after(
    client: discord.Client, channel_id: int, after: int, max_messages: int
) -> tuple[list[dict[str, Any]], int]:
    """The newest `max_messages` messages after `after`, and how many more there
    were (at least) past that bound. Pages backwards from the newest, so the
    bound keeps the messages people are waiting on, not the oldest."""
    found: list[dict[str, Any]] = []
    before: int | None = None
    while True:
        page: Any = await client.http.logs_from(channel_id, PAGE, before=before)
        if not isinstance(page, list) or not page:
            return found, 0
        ids = [
            (sid, m)
            for m in page
            if isinstance(m, dict) and (sid := snowflake_id(m.get("id"))) is not None
        ]
        ids.sort(key=lambda item: item[0], reverse=True)
        for sid, message in ids:
            if sid <= after:
                return found, 0
            if len(found) >= max_messages:
                return found, 1 + sum(1 for s, _ in ids if after < s < sid)
            found.append(message)
        if len(page) < PAGE or not ids:
            return found, 0
        before = ids[-1][0]


def written_at(snowflake: int) -> datetime:
    """When a message was written, from its id (now, for an id past datetime's range)."""
    try:
        return discord.utils.snowflake_time(snowflake)
    except (OverflowError, ValueError, OSError):
        return datetime.now(UTC)


def from_ms(ms: int) -> datetime:
    """A time from milliseconds since the epoch (the epoch for a negative one)."""
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=max(ms, 0))
