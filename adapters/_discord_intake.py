"""Discord messages into the inbox: live ones in gateway order, missed ones from history.

Discord never redelivers a gateway event, so a MESSAGE_CREATE is taken out of
discord.py before it is parsed (the connection state's parser for the event is
replaced by one that only queues the raw JSON) and committed to the inbox in
batches, in the order the gateway sent them; the inbox worker then hands each one
to `DiscordAdapter.handle_event`. Nothing here parses a message beyond its id and
channel, so a payload discord.py would choke on is stored raw and failed there.

What a crash (or an outage) lost is read back from the channels' history: on every
fresh gateway session (READY, not RESUMED: a RESUME replays what was missed) each
stored chat's messages after the newest one stored for it are read, bounded in count
and age (`discord.catch_up_messages`, `discord.catch_up_max_age_s`), and committed.
Redeliveries are ignored by the inbox's key (the message id), so reading a message
both ways is harmless.

Live messages are not held back meanwhile (a crash would lose what was held, and a
chat seen for the first time has no history to read it back from). So that a crash
in the middle of a catch-up cannot move a chat's starting point past what was not
read yet, the starting points are taken before any live message of the session is
committed and recorded in the inbox as a `discord-catch-up` row, settled when the
catch-up ends; the next start begins from the older of its own and an unsettled
row's. A chat's messages caught up after a restart can thus be answered after a
live one that arrived in the first seconds of the session.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import aiohttp
import discord
import structlog

from adapters._discord_history import (
    from_ms,
    guild_of,
    on_this_shard,
    read_after,
    snowflake_id,
    written_at,
)
from bot.aio import wait_for
from bot.errors import AdapterError
from bot.inbox import Inbox, InboxStatus, RawEvent

__all__ = ["CATCH_UP_PLATFORM", "CatchUpReport", "DiscordIntake"]

log = structlog.get_logger("adapters.discord")

#: Events committed in one transaction at most.
_BATCH = 256
#: Chats read back after a fresh session at most, the most recently active first
#: (their starting points are recorded in one inbox row, under its 64 KiB bound).
MAX_CATCH_UP_CHATS = 500
#: The inbox "platform" of the rows that record a catch-up's starting points.
CATCH_UP_PLATFORM = "discord-catch-up"
#: How long a catch-up waits for the session's guilds before reading anyway.
_READY_WAIT_S = 30.0
#: A commit that failed (the database busy or gone) is retried after this long.
_RETRY_S = 0.5


@dataclass(frozen=True, slots=True)
class _Frame:
    kind: Literal["message", "ready"]
    data: Any
    received_at: datetime


@dataclass
class CatchUpReport:
    """What one catch-up read and committed."""

    chats: int = 0
    read: int = 0
    new: int = 0
    #: Messages past the count bound, left unread (their chats are named in the log).
    over_count: int = 0
    failed_chats: list[str] = field(default_factory=list)


def _dm_author(data: Any) -> str | None:
    """The author of a message in a DM (no guild), read without parsing: how the turn
    of an earlier one sees a burst behind it (commands are slash commands, never
    messages). None for a guild message, a bot, or anything unreadable."""
    if not isinstance(data, dict) or data.get("guild_id") is not None:
        return None
    author = data.get("author")
    if not isinstance(author, dict) or author.get("bot") is True:
        return None
    user = snowflake_id(author.get("id"))
    return None if user is None else str(user)


def event_key(data: Any, payload: str) -> str:
    """The inbox key of a message: its id; a payload without one is keyed by its hash
    (stored, and failed when handled, rather than dropped)."""
    snowflake = snowflake_id(data.get("id")) if isinstance(data, dict) else None
    if snowflake is not None:
        return str(snowflake)
    return "noid:" + hashlib.sha256(payload.encode("utf-8", "surrogatepass")).hexdigest()[:40]


class DiscordIntake:
    """Queues raw MESSAGE_CREATEs and READYs from discord.py's parser table and
    commits them to the inbox in order; catches up after each fresh session."""

    def __init__(
        self,
        client: discord.Client,
        inbox: Inbox,
        *,
        platform: str,
        accept: Callable[[list[RawEvent]], Awaitable[int]],
        chat_for: Callable[[int, int | None], str],
        session_ready: asyncio.Event,
        max_messages: int,
        max_age_s: float,
        bound_channels: frozenset[int] = frozenset(),
    ) -> None:
        """`accept` commits live events (and wakes the worker); `chat_for(channel_id,
        guild_id)` is the worker lane (`Adapter.chat_key`) of a channel;
        `session_ready` is set once a session's guilds are known; `bound_channels`
        (configured always-on and persona channels) are caught up even before a
        message of theirs was stored, within the age bound."""
        self.client = client
        self.inbox = inbox
        self.platform = platform
        self._accept = accept
        self._chat_for = chat_for
        self._session_ready = session_ready
        self.max_messages = max_messages
        self.max_age_s = max_age_s
        self.bound_channels = bound_channels
        self._queue: asyncio.Queue[_Frame] = asyncio.Queue()
        self._in_hand = 0
        self._catching_up: set[asyncio.Task[None]] = set()
        self._one_at_a_time = asyncio.Lock()
        #: One report per catch-up, oldest first.
        self.catch_ups: list[CatchUpReport] = []
        #: Messages committed live (not from history).
        self.accepted_live = 0

    # -- discord.py's side ----------------------------------------------------------------

    def install(self) -> None:
        """Take MESSAGE_CREATE and READY from the client's parser table (the gateway
        calls these synchronously, in the order of its frames)."""
        state: Any = self.client._connection
        parsers: Any = getattr(state, "parsers", None)
        if not isinstance(parsers, dict) or not {"MESSAGE_CREATE", "READY"} <= parsers.keys():
            raise AdapterError(
                f"discord.py {discord.__version__} has no parser table this adapter can take "
                "MESSAGE_CREATE from; install a discord.py 2.x release this project supports"
            )
        parse_ready = parsers["READY"]

        def message_create(data: Any) -> None:
            self._queue.put_nowait(_Frame("message", data, datetime.now(UTC)))

        def ready(data: Any) -> None:
            self._session_ready.clear()
            self._queue.put_nowait(_Frame("ready", data, datetime.now(UTC)))
            parse_ready(data)

        parsers["MESSAGE_CREATE"] = message_create
        parsers["READY"] = ready

    @property
    def queued(self) -> int:
        """Frames received and not yet committed, plus catch-ups running."""
        return self._queue.qsize() + self._in_hand + len(self._catching_up)

    # -- committing -----------------------------------------------------------------------

    async def run(self) -> None:
        """Commit queued frames until cancelled. At a READY the catch-up's starting
        points are taken (before any later frame is committed), then it reads the
        history beside the live stream."""
        try:
            while True:
                first = await self._queue.get()
                frames = [first]
                while len(frames) < _BATCH and not self._queue.empty():
                    frames.append(self._queue.get_nowait())
                self._in_hand = len(frames)
                try:
                    live: list[RawEvent] = []
                    for frame in frames:
                        if frame.kind == "ready":
                            await self._commit(live)
                            live = []
                            await self._start_catch_up(frame.data)
                        else:
                            live.append(self._raw(frame.data, frame.received_at))
                    await self._commit(live)
                finally:
                    self._in_hand = 0
        finally:
            for task in list(self._catching_up):
                task.cancel()

    async def flush(self) -> int:
        """Commit whatever is queued now (on stop; catch-ups are left to the next
        start); returns how many messages were committed."""
        events = []
        while not self._queue.empty():
            frame = self._queue.get_nowait()
            if frame.kind == "message":
                events.append(self._raw(frame.data, frame.received_at))
        for start in range(0, len(events), _BATCH):
            await self._accept(events[start : start + _BATCH])
        return len(events)

    async def _commit(self, events: list[RawEvent]) -> None:
        # Never dropped: Discord will not send them again. A database that is busy or
        # briefly gone is waited for; what a crash meanwhile loses, catch-up reads back.
        delay = _RETRY_S
        while events:
            try:
                await self._accept(events)
                self.accepted_live += len(events)
                return
            except Exception as exc:
                log.error("discord.inbox_commit_failed", events=len(events), error=str(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    def _raw(self, data: Any, received_at: datetime, chat: str | None = None) -> RawEvent:
        """The event to store for one message as received; never raises (a frame the
        intake choked on would stop every message behind it)."""
        try:
            payload = json.dumps(data, ensure_ascii=False, separators=(",", ":"), default=str)
        except (ValueError, TypeError, RecursionError) as exc:  # stored anyway, and failed
            payload = json.dumps({"unserializable": repr(data)[:4096], "error": str(exc)})
        if chat is None and isinstance(data, dict):
            chat = self._lane(data)
        return RawEvent(
            key=event_key(data, payload),
            payload=payload,
            chat=chat,
            received_at=received_at,
            author=_dm_author(data),
        )

    def _lane(self, data: dict[str, Any]) -> str | None:
        channel = snowflake_id(data.get("channel_id"))
        if channel is None:
            return None
        try:
            return self._chat_for(channel, snowflake_id(data.get("guild_id")))
        except Exception:  # the lane is only order; the event is still stored
            return str(channel)

    # -- catch-up ---------------------------------------------------------------------------

    async def _start_catch_up(self, ready: Any) -> None:
        if self.max_messages <= 0:
            return
        try:
            anchors, records = await self._starting_points()
        except Exception as exc:  # live messages go on; the next fresh session retries
            log.exception("discord.catch_up_failed", error=str(exc))
            return
        task = asyncio.create_task(
            self._catch_up_safely(ready if isinstance(ready, dict) else {}, anchors, records),
            name="discord-catch-up",
        )
        self._catching_up.add(task)
        task.add_done_callback(self._catching_up.discard)

    async def _starting_points(self) -> tuple[dict[str, int], list[int]]:
        """Per chat the newest stored message id, or an unsettled catch-up's older one;
        recorded (one inbox row) before it is returned, with the rows to settle."""
        anchors: dict[str, int] = {}
        for chat, key in (await self.inbox.last_keys(self.platform)).items():
            if (snowflake := snowflake_id(key)) is not None:
                anchors[chat] = snowflake
        unsettled = await self.inbox.list(
            status=InboxStatus.PENDING, platform=CATCH_UP_PLATFORM, limit=20
        )
        for row in unsettled:
            try:
                earlier = json.loads(row.payload)
            except ValueError:
                continue
            if isinstance(earlier, dict):
                for chat, key in earlier.items():
                    if (snowflake := snowflake_id(key)) is not None:
                        anchors[chat] = min(anchors.get(chat, snowflake), snowflake)
        if anchors:  # not the very first start: the bot was away from these too
            for channel in self.bound_channels:
                if not any(chat.rsplit("/", 1)[-1] == str(channel) for chat in anchors):
                    anchors[str(channel)] = 0  # from the age bound on
        newest = dict(sorted(anchors.items(), key=lambda item: -item[1])[:MAX_CATCH_UP_CHATS])
        key = f"{time.time_ns()}"
        await self.inbox.accept(
            CATCH_UP_PLATFORM,
            [RawEvent(key=key, payload=json.dumps({c: str(k) for c, k in newest.items()}))],
        )
        rows = await self.inbox.list(
            status=InboxStatus.PENDING, platform=CATCH_UP_PLATFORM, limit=21
        )
        merged = {r.id for r in unsettled}
        return newest, [r.id for r in rows if r.key == key or r.id in merged]

    async def _catch_up_safely(
        self, ready: dict[str, Any], anchors: dict[str, int], records: list[int]
    ) -> None:
        try:
            async with self._one_at_a_time:
                await self.catch_up(ready, anchors)
            for record in records:  # read to the end: the next start need not go back
                await self.inbox.done(record)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # left unsettled: the next fresh session reads again
            log.exception("discord.catch_up_failed", error=str(exc))

    async def catch_up(
        self, ready: dict[str, Any], anchors: dict[str, int], *, now: float | None = None
    ) -> CatchUpReport:
        """Read back, into the inbox, what each chat got after its starting point
        (and within the age bound)."""
        report = CatchUpReport()
        self.catch_ups.append(report)
        try:
            await wait_for(self._session_ready.wait(), _READY_WAIT_S)
        except TimeoutError:
            log.warning("discord.catch_up_without_guilds")
        shard = ready.get("shard")
        floor_ms = int(((time.time() if now is None else now) - self.max_age_s) * 1000)
        floor = max(discord.utils.time_snowflake(from_ms(floor_ms)), 0)
        for chat, anchor in sorted(anchors.items(), key=lambda item: -item[1]):
            channel_id = snowflake_id(chat.rsplit("/", 1)[-1])
            if channel_id is None:
                continue
            cached: Any = self.client.get_channel(channel_id)
            last = snowflake_id(getattr(cached, "last_message_id", None))
            if cached is not None and last is not None and last <= anchor:
                continue  # the guild said what is newest there: nothing new
            try:
                # A cached channel knows its guild; an uncached one (a DM, after a
                # restart) is asked only when it has something to store.
                guild = (
                    await guild_of(self.client, channel_id, cached) if cached is not None else None
                )
                if cached is not None and not on_this_shard(guild, shard):
                    continue
                report.chats += 1
                found, over = await read_after(
                    self.client, channel_id, max(anchor, floor), self.max_messages
                )
                if found and cached is None:
                    guild = await guild_of(self.client, channel_id, None)
                    if not on_this_shard(guild, shard):
                        continue
            except (discord.HTTPException, aiohttp.ClientError, OSError, TimeoutError) as exc:
                # Deleted, or no longer visible to the bot: nothing to answer there.
                log.info("discord.catch_up_unreadable", chat=chat, error=str(exc))
                report.failed_chats.append(chat)
                continue
            if over:
                report.over_count += over
                log.warning(
                    "discord.catch_up_over_count",
                    chat=chat,
                    left_unread=over,
                    read=len(found),
                    limit=self.max_messages,
                )
            events = []
            for data in sorted(found, key=lambda m: int(m["id"])):
                if guild is not None:
                    data.setdefault("guild_id", str(guild))  # REST messages leave it out
                events.append(self._raw(data, written_at(int(data["id"])), chat))
            report.read += len(events)
            for start in range(0, len(events), _BATCH):
                report.new += await self._accept(events[start : start + _BATCH])
        log.info(
            "discord.caught_up",
            chats=report.chats,
            read=report.read,
            new=report.new,
            over_count=report.over_count,
            unreadable=len(report.failed_chats),
        )
        return report
