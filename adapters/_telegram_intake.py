"""Telegram updates into the inbox: committed before Telegram is told they arrived.

Long polling: `UpdatePoller` asks getUpdates for a batch, commits the whole batch
with one `accept` call (one transaction), and only then asks with the next offset,
which is what confirms the batch to Telegram. A process that dies anywhere in
between gets the same updates again on its next start (the inbox ignores the
repeats). Updates stay raw JSON here: python-telegram-bot parses them only when the
stored event is handled, so an update the library cannot parse is stored, failed
with its reason, and never stops the loop. Errors back off (0.5 s doubling to 30 s,
with jitter); an empty answer that came back early waits, so no server, however
odd, can make the loop spin.

Webhook: `webhook_events` turns one posted body into events; the adapter commits
them before it answers 200 (else 5xx, and Telegram posts it again).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import re
import time
import warnings
from collections.abc import Awaitable, Callable, Sequence
from contextlib import suppress
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import structlog
from telegram import Bot
from telegram.error import Conflict, InvalidToken, RetryAfter, TelegramError
from telegram.warnings import PTBDeprecationWarning

from bot.aio import wait_for
from bot.errors import AdapterError
from bot.inbox import RawEvent

__all__ = [
    "Accept",
    "Backoff",
    "RawUpdatesBot",
    "UpdatePoller",
    "encode_payload",
    "next_offset",
    "raw_events",
    "repair_text",
    "repaired",
    "retry_after_s",
    "webhook_events",
]

log = structlog.get_logger("adapters.telegram")

_LONE_SURROGATE = re.compile(r"[\ud800-\udfff]")
#: Update kinds whose object carries the `chat` the update belongs to.
_CHAT_KINDS = (
    "message",
    "edited_message",
    "channel_post",
    "edited_channel_post",
    "business_message",
    "edited_business_message",
    "message_reaction",
    "message_reaction_count",
    "chat_member",
    "my_chat_member",
    "chat_join_request",
    "chat_boost",
    "removed_chat_boost",
)


def retry_after_s(exc: RetryAfter) -> float:
    """`retry_after` as seconds: PTB gives an int, or a timedelta with PTB_TIMEDELTA=1."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PTBDeprecationWarning)
        value = exc.retry_after
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


class RawUpdatesBot(Bot):
    """PTB's `Bot`, plus getUpdates answered as raw JSON (`Bot.get_updates` parses the
    whole batch, and one update it cannot parse would fail them all)."""

    async def get_raw_updates(
        self,
        offset: int | None,
        *,
        timeout_s: int,
        limit: int = 100,
        allowed_updates: Sequence[str] | None = None,
    ) -> list[object]:
        """One getUpdates call; the result list as Telegram sent it."""
        data: dict[str, Any] = {"timeout": timeout_s, "limit": limit, "offset": offset}
        if allowed_updates is not None:
            data["allowed_updates"] = list(allowed_updates)
        read_timeout = (self._request[0].read_timeout or 0) + timeout_s
        result = await self._post("getUpdates", data, read_timeout=read_timeout)
        if not isinstance(result, list):
            raise TelegramError(f"getUpdates answered {type(result).__name__}, not a list")
        return cast(list[object], result)


def repair_text(text: str) -> str:
    """`text` with every lone surrogate (invalid in UTF-8) replaced by U+FFFD."""
    return _LONE_SURROGATE.sub("\ufffd", text)


def repaired(value: Any) -> Any:
    """A JSON value with every string (keys too) made valid Unicode: Telegram is
    lenient with names and texts, so the bot must be too."""
    if isinstance(value, str):
        return repair_text(value)
    if isinstance(value, list):
        return [repaired(v) for v in value]
    if isinstance(value, dict):
        return {repair_text(k) if isinstance(k, str) else k: repaired(v) for k, v in value.items()}
    return value


def encode_payload(value: object) -> str:
    """Compact JSON of `value`, exactly as received: non-ASCII text stays itself, and a
    lone surrogate is written as its `\\uXXXX` escape (a lone surrogate can only sit
    inside a JSON string, where the escape means the same), so the text can be
    stored as UTF-8 and parsed back to the very same value."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return _LONE_SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def _update_id(item: object) -> int | None:
    if not isinstance(item, dict):
        return None
    value = item.get("update_id")
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value


def _chat_of(item: object) -> str | None:
    """The chat an update belongs to, read without parsing it (None: unknown)."""
    if not isinstance(item, dict):
        return None
    for kind in _CHAT_KINDS:
        body = item.get(kind)
        if isinstance(body, dict):
            chat = body.get("chat")
            if isinstance(chat, dict) and isinstance(chat.get("id"), int | str):
                return str(chat["id"])[:64]
    query = item.get("callback_query")
    if isinstance(query, dict) and isinstance(query.get("message"), dict):
        return _chat_of({"message": query["message"]})
    return None


def _author_of(item: object) -> str | None:
    """The sender of a plain message (no command) in a private chat, read without
    parsing: how the turn of an earlier one sees a burst behind it. None otherwise."""
    if not isinstance(item, dict):
        return None
    body = item.get("message")
    if not isinstance(body, dict):
        return None
    chat, sender, text = body.get("chat"), body.get("from"), body.get("text")
    if not isinstance(chat, dict) or chat.get("type") != "private":
        return None
    if not isinstance(sender, dict) or sender.get("is_bot") is True:
        return None
    if isinstance(text, str) and text.lstrip().startswith("/"):
        return None  # a command answers by itself, in its turn
    user = sender.get("id")
    if isinstance(user, bool) or not isinstance(user, int | str):
        return None
    return str(user)[:64]


def raw_events(items: Sequence[object], *, now: datetime | None = None) -> list[RawEvent]:
    """Inbox events for a batch of raw updates, in order.

    The key is the `update_id`; an item without a usable one (never sent by Telegram,
    but a body is hostile until proven otherwise) is keyed by a hash of its content,
    so it is stored once and failed when handled.
    """
    received = now or datetime.now(UTC)
    events = []
    for item in items:
        payload = encode_payload(item)
        update_id = _update_id(item)
        if update_id is None:
            key = "invalid:" + hashlib.sha256(payload.encode()).hexdigest()[:32]
        else:
            key = str(update_id)
        events.append(
            RawEvent(
                key=key,
                payload=payload,
                chat=_chat_of(item),
                received_at=received,
                author=_author_of(item),
            )
        )
    return events


def next_offset(items: Sequence[object], current: int | None) -> int | None:
    """The offset that confirms `items`: one past the highest update_id seen."""
    ids = [i for i in (_update_id(item) for item in items) if i is not None]
    if not ids:
        return current
    highest = max(ids) + 1
    return highest if current is None else max(current, highest)


class Backoff:
    """Waits after failures: `first_s` doubling up to `max_s`, each with ±25 % jitter."""

    def __init__(
        self, first_s: float = 0.5, max_s: float = 30.0, *, rng: random.Random | None = None
    ) -> None:
        self.first_s = first_s
        self.max_s = max_s
        self.failures = 0
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        """The wait after one more failure."""
        self.failures += 1
        base = min(self.max_s, self.first_s * 2.0 ** min(self.failures - 1, 30))
        return float(base * self._rng.uniform(0.75, 1.25))

    def reset(self) -> None:
        """A success: the next failure waits `first_s` again."""
        self.failures = 0


Accept = Callable[[Sequence[RawEvent]], Awaitable[int]]


class UpdatePoller:
    """The getUpdates loop: fetch a batch, commit it, only then confirm it.

    `accept` commits a batch in one transaction (the inbox's `accept` for this
    platform); it must raise if the batch is not durable. `calls` counts getUpdates
    requests, `batches` the batches committed.
    """

    def __init__(
        self,
        bot: RawUpdatesBot,
        accept: Accept,
        *,
        allowed_updates: Sequence[str],
        timeout_s: int = 10,
        limit: int = 100,
        min_empty_interval_s: float = 1.0,
        backoff: Backoff | None = None,
    ) -> None:
        self.bot = bot
        self.accept = accept
        self.allowed_updates = list(allowed_updates)
        self.timeout_s = timeout_s
        self.limit = limit
        self.min_empty_interval_s = min_empty_interval_s
        self.backoff = backoff or Backoff()
        self.offset: int | None = None
        self.calls = 0
        self.batches = 0
        self.started = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        """Poll until `stop` is set. Raises `AdapterError` if the token is rejected."""
        while not stop.is_set():
            began = time.monotonic()
            try:
                items = await self._until_stopped(self._fetch(), stop)
            except InvalidToken:
                raise AdapterError(
                    "telegram: the Bot API rejected the token (401 Unauthorized)"
                ) from None
            except RetryAfter as exc:
                await _sleep(max(1.0, retry_after_s(exc)), stop)
                continue
            except Conflict as exc:  # a webhook is set, or another process polls
                await self._failed("telegram.poll_conflict", exc, stop)
                continue
            except TelegramError as exc:  # the network, a 5xx, a body that is not JSON
                await self._failed("telegram.poll_failed", exc, stop)
                continue
            if items is None:  # stopped while waiting: nothing fetched is confirmed
                return
            if not items:
                self.backoff.reset()
                # Telegram answers an empty batch only after the timeout: sooner means
                # a server that does not long-poll, and must not make us spin.
                rest = self.min_empty_interval_s - (time.monotonic() - began)
                if rest > 0:
                    await _sleep(rest, stop)
                continue
            await self._commit(items, stop)
        await self._confirm_last()

    async def _fetch(self) -> list[object]:
        self.calls += 1
        items = await self.bot.get_raw_updates(
            self.offset,
            timeout_s=self.timeout_s,
            limit=self.limit,
            allowed_updates=self.allowed_updates,
        )
        self.started.set()
        return items

    async def _commit(self, items: list[object], stop: asyncio.Event) -> None:
        events = raw_events(items)
        try:
            # Shielded: once the commit has begun, a stop waits for it, so a batch
            # is never half-known (committed here, yet not confirmed by our offset).
            new = await asyncio.shield(self.accept(events))
        except Exception as exc:  # not durable: ask for the same batch again, later
            await self._failed("telegram.inbox_commit_failed", exc, stop)
            return
        offset = next_offset(items, self.offset)
        if offset == self.offset:
            # Only items without an update_id: stored (once), but nothing confirms
            # them, so the same batch will come back; never fast.
            await self._failed("telegram.poll_no_update_id", ValueError(str(len(items))), stop)
            return
        self.offset = offset
        self.batches += 1
        self.backoff.reset()
        log.debug("telegram.batch_committed", updates=len(items), new=new, offset=offset)

    async def _failed(self, event: str, exc: BaseException, stop: asyncio.Event) -> None:
        delay = self.backoff.next_delay()
        log.warning(event, error=str(exc)[:300], retry_in_s=round(delay, 2))
        await _sleep(delay, stop)

    async def _confirm_last(self) -> None:
        """On a clean stop, confirm the last committed batch (else the next start is
        sent it again: harmless, as the inbox ignores repeats, but wasteful)."""
        if self.offset is None:
            return
        try:
            await wait_for(self.bot.get_raw_updates(self.offset, timeout_s=0, limit=1), timeout=5)
        except (TelegramError, TimeoutError) as exc:
            log.debug("telegram.confirm_failed", error=str(exc))

    @staticmethod
    async def _until_stopped(
        work: Awaitable[list[object]], stop: asyncio.Event
    ) -> list[object] | None:
        """`work`'s result, or None (the call cancelled) as soon as `stop` is set."""
        task = asyncio.ensure_future(work)
        stopper = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
        if task.done():
            return task.result()
        task.cancel()
        with suppress(asyncio.CancelledError, TelegramError):
            await task
        return None


async def _sleep(seconds: float, stop: asyncio.Event) -> None:
    """Sleep, cut short by `stop`."""
    with suppress(TimeoutError):
        await wait_for(stop.wait(), timeout=seconds)


def webhook_events(body: bytes, *, now: datetime | None = None) -> list[RawEvent]:
    """The event for one posted webhook body: an update object, or (anything else)
    the body itself, keyed by its hash, to be failed with its reason when handled."""
    text = body.decode("utf-8", "replace")
    try:
        value: object = json.loads(text)
    except ValueError:
        key = "invalid:" + hashlib.sha256(body).hexdigest()[:32]
        return [RawEvent(key=key, payload=text, chat=None, received_at=now or datetime.now(UTC))]
    return raw_events([value], now=now)
