"""Discord messages into the inbox: live ones in gateway order, missed ones from history.

Discord never redelivers a gateway event, so a MESSAGE_CREATE is taken out of
discord.py before it is parsed (the connection state's parser for the event is
replaced by one that only queues the raw JSON) and committed to the inbox in
batches, in the order the gateway sent them; the inbox worker then hands each one
to `DiscordAdapter.handle_event`. Nothing here parses a message beyond its id and
channel, so a payload discord.py would choke on is stored raw and failed there.

What a crash (or an outage) lost is read back from the channels' history: on every
fresh gateway session (READY, not RESUMED: a RESUME replays what was missed) the
intake holds live messages back, reads each chat's messages after the newest one
stored for it, bounded in count and age (`discord.catch_up_messages`,
`discord.catch_up_max_age_s`), and commits them, oldest first, before the live ones.
Redeliveries are ignored by the inbox's key (the message id), so reading a message
both ways is harmless.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import aiohttp
import discord
import structlog

from bot.errors import AdapterError
from bot.inbox import RawEvent

__all__ = ["CatchUpReport", "DiscordIntake"]

log = structlog.get_logger("adapters.discord")

#: Events committed in one transaction at most.
_BATCH = 256
#: History pages are Discord's largest.
_PAGE = 100
#: Chats read back after a fresh session at most, the most recently active first.
MAX_CATCH_UP_CHATS = 1000
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


def _snowflake(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    if isinstance(value, str) and value.isdigit() and len(value) <= 20:
        return int(value)
    return None


def event_key(data: Any, payload: str) -> str:
    """The inbox key of a message: its id; a payload without one is keyed by its hash
    (stored, and failed when handled, rather than dropped)."""
    snowflake = _snowflake(data.get("id")) if isinstance(data, dict) else None
    if snowflake is not None:
        return str(snowflake)
    return "noid:" + hashlib.sha256(payload.encode("utf-8", "surrogatepass")).hexdigest()[:40]


class DiscordIntake:
    """Queues raw MESSAGE_CREATEs and READYs from discord.py's parser table and
    commits them to the inbox in order; catches up after each fresh session."""

    def __init__(
        self,
        client: discord.Client,
        *,
        accept: Callable[[list[RawEvent]], Awaitable[int]],
        last_keys: Callable[[], Awaitable[Mapping[str, str]]],
        chat_for: Callable[[int, int | None], str],
        session_ready: asyncio.Event,
        max_messages: int,
        max_age_s: float,
    ) -> None:
        """`chat_for(channel_id, guild_id)` is the worker lane (`Adapter.chat_key`)
        of a channel; `session_ready` is set once a session's guilds are known."""
        self.client = client
        self._accept = accept
        self._last_keys = last_keys
        self._chat_for = chat_for
        self._session_ready = session_ready
        self.max_messages = max_messages
        self.max_age_s = max_age_s
        self._queue: asyncio.Queue[_Frame] = asyncio.Queue()
        self.catch_ups: list[CatchUpReport] = []
        #: Messages committed live (not from history).
        self.accepted_live = 0
        self._in_hand = 0

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
        """Frames received and not yet committed (catch-ups included)."""
        return self._queue.qsize() + self._in_hand

    # -- committing -----------------------------------------------------------------------

    async def run(self) -> None:
        """Commit queued frames until cancelled; a READY's catch-up runs in its place
        in the stream, so live messages after it are committed after what it read."""
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
                        await self._catch_up_safely(frame.data)
                    else:
                        live.append(self._raw(frame.data, frame.received_at))
                await self._commit(live)
                self.accepted_live += len(live)
            finally:
                self._in_hand = 0

    async def flush(self) -> int:
        """Commit whatever is queued now (on stop; catch-ups are skipped); returns
        how many messages were committed."""
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
                return
            except Exception as exc:
                log.error("discord.inbox_commit_failed", events=len(events), error=str(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    def _raw(self, data: Any, received_at: datetime, chat: str | None = None) -> RawEvent:
        payload = json.dumps(data, ensure_ascii=False, separators=(",", ":"), default=str)
        if chat is None and isinstance(data, dict):
            chat = self._lane(data)
        return RawEvent(
            key=event_key(data, payload), payload=payload, chat=chat, received_at=received_at
        )

    def _lane(self, data: dict[str, Any]) -> str | None:
        channel = _snowflake(data.get("channel_id"))
        if channel is None:
            return None
        try:
            return self._chat_for(channel, _snowflake(data.get("guild_id")))
        except Exception:  # the lane is only order; the event is still stored
            return str(channel)

    # -- catch-up ---------------------------------------------------------------------------

    async def _catch_up_safely(self, ready: Any) -> None:
        try:
            await self.catch_up(ready if isinstance(ready, dict) else {})
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # live messages must go on even if history cannot be read
            log.exception("discord.catch_up_failed", error=str(exc))

    async def catch_up(self, ready: dict[str, Any], *, now: float | None = None) -> CatchUpReport:
        """Read back, into the inbox, what each stored chat got while we were away."""
        report = CatchUpReport()
        self.catch_ups.append(report)
        if self.max_messages <= 0:
            return report
        try:
            await asyncio.wait_for(self._session_ready.wait(), _READY_WAIT_S)
        except TimeoutError:
            log.warning("discord.catch_up_without_guilds")
        shard = ready.get("shard")
        anchors = await self._last_keys()
        floor_ms = int(((time.time() if now is None else now) - self.max_age_s) * 1000)
        floor = max(discord.utils.time_snowflake(_from_ms(floor_ms)), 0)
        chats = sorted(
            ((int(key), chat) for chat, key in anchors.items() if _snowflake(key) is not None),
            reverse=True,
        )[:MAX_CATCH_UP_CHATS]
        for anchor, chat in chats:
            channel_id = _snowflake(chat.rsplit("/", 1)[-1])
            if channel_id is None:
                continue
            guild = self._guild_of(channel_id)
            if not self._on_this_shard(guild, shard):
                continue
            cached = self.client.get_channel(channel_id)
            last = _snowflake(getattr(cached, "last_message_id", None))
            if cached is not None and last is not None and last <= anchor:
                continue  # the guild said what is newest there: nothing new
            report.chats += 1
            try:
                found, over = await self._read_after(channel_id, max(anchor, floor))
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
                written = discord.utils.snowflake_time(int(data["id"]))
                events.append(self._raw(data, written, chat))
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

    def _guild_of(self, channel_id: int) -> int | None:
        channel: Any = self.client.get_channel(channel_id)
        guild = getattr(channel, "guild", None)
        return getattr(guild, "id", None) if guild is not None else None

    def _on_this_shard(self, guild: int | None, shard: Any) -> bool:
        if not isinstance(shard, list) or len(shard) != 2:
            return True
        shard_id, count = shard
        if not isinstance(count, int) or count <= 1:
            return True
        # DMs arrive on shard 0; a guild's on (guild >> 22) % count.
        return bool((0 if guild is None else (guild >> 22) % count) == shard_id)

    async def _read_after(self, channel_id: int, after: int) -> tuple[list[dict[str, Any]], int]:
        """The newest `max_messages` messages after `after`, and how many more there
        were (at least) past that bound. Pages backwards from the newest, so the
        bound keeps the messages people are waiting on, not the oldest."""
        found: list[dict[str, Any]] = []
        before: int | None = None
        while True:
            page: Any = await self.client.http.logs_from(channel_id, _PAGE, before=before)
            if not isinstance(page, list) or not page:
                return found, 0
            ids = [
                (sid, m)
                for m in page
                if isinstance(m, dict) and (sid := _snowflake(m.get("id"))) is not None
            ]
            ids.sort(key=lambda item: item[0], reverse=True)
            for sid, message in ids:
                if sid <= after:
                    return found, 0
                if len(found) >= self.max_messages:
                    return found, 1 + sum(1 for s, _ in ids if after < s < sid)
                found.append(message)
            if len(page) < _PAGE or not ids:
                return found, 0
            before = ids[-1][0]


def _from_ms(ms: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=max(ms, 0))
