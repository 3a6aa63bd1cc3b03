"""What every platform adapter shares: the delivery policy around a raw send.

`Adapter.send` is the template method: it splits a reply to the platform's length
limit, paces it per chat and overall, retries a rate-limited send after the
platform's `retry_after` (a bounded number of times), and on a 403/blocked answer
marks the person unreachable on that platform and records why, never retrying in a
loop. Each platform implements only `_deliver` (one raw send), `_send_typing` and
`run`. `Adapter.answer` runs a turn with the typing indicator kept alive.
"""

from __future__ import annotations

import abc
import asyncio
import re
import time
from collections import deque
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Generic, Protocol, TypeVar, final

import structlog

from bot.commands import CommandContext, Commands
from bot.engine import PersonaEngine
from bot.errors import AdapterError, BotError
from bot.inbox import Inbox, InboxEvent, InboxWorker, RawEvent
from bot.inbox.worker import in_lane
from bot.messages import Incoming, Outgoing, Reaction, Scope
from bot.people import People

__all__ = [
    "Adapter",
    "AdapterServices",
    "Clock",
    "DeliveryError",
    "DeliveryStats",
    "KeyedLocks",
    "MonotonicClock",
    "Pacer",
    "PacingPolicy",
    "RateLimited",
    "Unreachable",
    "split_message",
]

log = structlog.get_logger("adapters")

K = TypeVar("K")

#: Waits shorter than this are no wait: a float a hair above a deadline must not
#: ask for a sleep too short to move any clock.
_EPSILON = 1e-6

_SENTENCE_END = re.compile(r"(?<=[.!?。！？…])\s*")
_FENCE = "```"


class DeliveryError(BotError):
    """A platform refused or failed a send (not retried by the base)."""


class RateLimited(DeliveryError):
    """The platform said to wait: 429 with `retry_after` seconds; `everything` when
    the limit is the bot's overall one rather than the chat's."""

    def __init__(self, retry_after: float, detail: str = "", *, everything: bool = False) -> None:
        super().__init__(f"rate limited, retry after {retry_after:g} s {detail}".strip())
        self.retry_after = retry_after
        self.everything = everything


class Unreachable(DeliveryError):
    """The person cannot be messaged (blocked the bot, never started it, DMs closed)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _code_spans(text: str) -> list[tuple[int, int]]:
    spans = []
    start = text.find(_FENCE)
    while start != -1:
        end = text.find(_FENCE, start + 3)
        if end == -1:
            spans.append((start, len(text)))
            break
        spans.append((start, end + 3))
        start = text.find(_FENCE, end + 3)
    return spans


def _inside(spans: list[tuple[int, int]], at: int) -> bool:
    return any(s < at < e for s, e in spans)


def split_message(text: str, limit: int) -> list[str]:
    """Parts of at most `limit` characters, cut at a paragraph, line, sentence or word
    boundary, in that order of preference, and never inside a ``` code block when a
    boundary outside one exists. A code block longer than `limit` is itself split at
    line boundaries and each part re-fenced, so every part renders as code. A single
    word longer than `limit` is the only thing ever cut mid-word."""
    if limit <= 8:
        raise ValueError("limit must be more than 8 characters")
    parts: list[str] = []
    rest = text.strip()
    while len(rest) > limit:
        spans = _code_spans(rest)
        window = rest[:limit]
        cut = _best_cut(window, spans, limit)
        if cut is None:  # inside a code block that does not fit: split it, re-fenced
            block_start = next(s for s, e in spans if s < limit < e or s <= limit <= e)
            if block_start > limit // 3:
                cut = block_start
            else:
                cut = _split_code_block(rest, block_start, limit, parts)
                rest = rest[cut:].lstrip("\n")
                continue
        parts.append(rest[:cut].rstrip())
        rest = rest[cut:].lstrip()
    if rest:
        parts.append(rest)
    return [p for p in parts if p]


def _best_cut(window: str, spans: list[tuple[int, int]], limit: int) -> int | None:
    floor = limit // 3
    for sep in ("\n\n", "\n"):
        at = window.rfind(sep)
        while at > floor:
            if not _inside(spans, at):
                return at
            at = window.rfind(sep, 0, at)
    ends = [m.end() for m in _SENTENCE_END.finditer(window) if m.end() > floor]
    ends = [e for e in ends if e <= len(window) and not _inside(spans, e)]
    if ends:
        return ends[-1]
    at = window.rfind(" ")
    while at > 0:
        if not _inside(spans, at):
            return at
        at = window.rfind(" ", 0, at)
    if any(s < limit <= e for s, e in spans):
        return None
    return limit


def _split_code_block(rest: str, start: int, limit: int, parts: list[str]) -> int:
    """Emit the code block starting at `start` as re-fenced parts; return where it ends."""
    if start:
        parts.append(rest[:start].rstrip())
    end = rest.find(_FENCE, start + 3)
    end = len(rest) if end == -1 else end + 3
    block = rest[start:end]
    first_nl = block.find("\n")
    opener = block[: first_nl + 1] if first_nl != -1 else _FENCE + "\n"
    body = block[len(opener) :]
    body = body[:-3] if body.endswith(_FENCE) else body
    room = limit - len(opener) - len("\n" + _FENCE)
    chunk = ""
    for line in body.splitlines(keepends=True):
        while len(line) > room:  # a single line longer than the room: hard cut
            if chunk:
                parts.append(f"{opener}{chunk.rstrip()}\n{_FENCE}")
                chunk = ""
            parts.append(f"{opener}{line[:room]}\n{_FENCE}")
            line = line[room:]
        if len(chunk) + len(line) > room:
            parts.append(f"{opener}{chunk.rstrip()}\n{_FENCE}")
            chunk = ""
        chunk += line
    if chunk.strip():
        parts.append(f"{opener}{chunk.rstrip()}\n{_FENCE}")
    return end


class KeyedLocks(Generic[K]):
    """One FIFO lock per key (asyncio.Lock wakes waiters in order), forgotten as soon
    as nobody holds or waits for it, so a bot that met a million chats keeps none."""

    def __init__(self) -> None:
        self._entries: dict[K, tuple[asyncio.Lock, list[int]]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    @asynccontextmanager
    async def hold(self, key: K) -> AsyncIterator[None]:
        """Hold `key`'s lock for the block, after those who asked before."""
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = (asyncio.Lock(), [0])
        lock, users = entry
        users[0] += 1
        try:
            async with lock:
                yield
        finally:
            users[0] -= 1
            if users[0] == 0:
                del self._entries[key]


@dataclass(frozen=True)
class PacingPolicy:
    """How fast one adapter may send: per chat, per group chat, and overall.

    Per chat: a short burst of `per_chat_burst`, then one per `per_chat_interval_s`
    (a token bucket). Per group
    chat: at most `group_per_minute` in any 60 s. Overall: at most
    `global_per_second` in any one second, and no two closer than
    `1 / global_per_second`. Typing indicators may use at most
    `typing_share` of the overall budget, and only while no reply waits for it.
    """

    per_chat_interval_s: float = 1.0
    group_per_minute: int = 20
    global_per_second: float = 30.0
    max_rate_limit_retries: int = 3
    max_retry_after_s: float = 60.0
    per_chat_burst: int = 3
    typing_share: float = 0.5


class Clock(Protocol):
    """Time for the pacer: tests pass a virtual clock, so they never sleep."""

    def now(self) -> float:
        """Seconds on a monotonic scale."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait `seconds` (other tasks run meanwhile)."""
        ...


class MonotonicClock:
    """The real clock: `time.monotonic` and `asyncio.sleep`."""

    def now(self) -> float:
        """Seconds on the monotonic clock."""
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        """`asyncio.sleep`."""
        await asyncio.sleep(seconds)


class _Window:
    """At most `limit` events in any `period` seconds: the times of the last `limit`."""

    __slots__ = ("limit", "period", "times")

    def __init__(self, limit: int, period: float) -> None:
        self.limit = max(1, limit)
        self.period = period
        self.times: deque[float] = deque()

    def delay(self, now: float) -> float:
        """How long until one more event fits (0: now)."""
        while self.times and now - self.times[0] >= self.period:
            self.times.popleft()
        if len(self.times) < self.limit:
            return 0.0
        return self.period - (now - self.times[0])

    def used(self, now: float) -> int:
        self.delay(now)
        return len(self.times)

    def take(self, now: float) -> None:
        self.times.append(now)
        while len(self.times) > self.limit:
            self.times.popleft()

    def idle(self, now: float) -> bool:
        return not self.times or now - self.times[-1] >= self.period


class _Bucket:
    """A token bucket: `capacity` at once, then one per `interval` seconds."""

    __slots__ = ("capacity", "interval", "stamp", "tokens")

    def __init__(self, capacity: int, interval: float, now: float) -> None:
        self.capacity = max(1, capacity)
        self.interval = interval
        self.tokens = float(self.capacity)
        self.stamp = now

    def _refill(self, now: float) -> None:
        if self.interval <= 0:
            self.tokens = float(self.capacity)
        else:
            self.tokens = min(self.capacity, self.tokens + (now - self.stamp) / self.interval)
        self.stamp = now

    def delay(self, now: float) -> float:
        self._refill(now)
        return 0.0 if self.tokens >= 1 else (1 - self.tokens) * self.interval

    def take(self, now: float) -> None:
        self._refill(now)
        self.tokens -= 1

    def idle(self, now: float) -> bool:
        self._refill(now)
        return self.tokens >= self.capacity


@dataclass
class DeliveryStats:
    """What one adapter's sender did: the numbers a benchmark or /metrics reads."""

    sent: int = 0
    rate_limited: int = 0
    failed: int = 0
    typing_sent: int = 0
    typing_skipped: int = 0


class Pacer:
    """The one owner of an adapter's rate limits: spaces sends so the platform's
    limits are met before it has to say 429 (see `PacingPolicy`).

    Sends to one chat take their turn in order (FIFO); waiting is `clock.sleep`, so
    other chats go on meanwhile. A 429 pauses the chat it concerns (or everything,
    for a global one) for its `retry_after`. Typing indicators ask `try_typing`,
    which says no whenever a reply is waiting or the overall budget is half used.
    """

    def __init__(self, policy: PacingPolicy, *, clock: Clock | None = None) -> None:
        self.policy = policy
        self.clock: Clock = clock or MonotonicClock()
        self.stats = DeliveryStats()
        self._chat: dict[str, _Bucket] = {}
        self._group: dict[str, _Window] = {}
        self._paused: dict[str, float] = {}
        self._paused_all = 0.0
        self._global: _Window | None = None
        self._locks: dict[str, asyncio.Lock] = {}
        self._global_lock = asyncio.Lock()
        self._last_grant = float("-inf")
        self._waiting = 0

    @property
    def backlog(self) -> int:
        """Sends waiting for their turn right now."""
        return self._waiting

    def _overall(self) -> _Window:
        rate = self.policy.global_per_second
        if self._global is None or self._global.limit != max(1, int(rate)):
            # Below 1/s the window is one send per 1/rate seconds.
            limit, period = (int(rate), 1.0) if rate >= 1 else (1, 1.0 / rate)
            self._global = _Window(limit, period)
        return self._global

    def _chat_window(self, chat: str) -> _Bucket:
        burst = max(1, self.policy.per_chat_burst)
        interval = self.policy.per_chat_interval_s
        bucket = self._chat.get(chat)
        if bucket is None or bucket.capacity != burst or bucket.interval != interval:
            bucket = self._chat[chat] = _Bucket(burst, interval, self.clock.now())
        return bucket

    def _group_window(self, chat: str) -> _Window:
        window = self._group.get(chat)
        if window is None or window.limit != self.policy.group_per_minute:
            window = self._group[chat] = _Window(self.policy.group_per_minute, 60.0)
        return window

    async def wait(self, chat: str, *, group: bool) -> None:
        """Return when a message to `chat` may be sent now (its send is counted)."""
        lock = self._locks.setdefault(chat, asyncio.Lock())
        self._waiting += 1
        try:
            async with lock:
                while True:
                    now = self.clock.now()
                    delay = max(
                        self._chat_window(chat).delay(now),
                        self._group_window(chat).delay(now) if group else 0.0,
                        self._paused.get(chat, 0.0) - now,
                        self._paused_all - now,
                    )
                    if delay <= _EPSILON:
                        break
                    await self.clock.sleep(delay)
                await self._take_global()
                sent = self.clock.now()
                self._chat_window(chat).take(sent)
                if group:
                    self._group_window(chat).take(sent)
        finally:
            self._waiting -= 1
        if len(self._locks) > 10_000:
            self._forget_idle(self.clock.now())

    async def _take_global(self) -> None:
        # Evenly spaced as well as windowed: 30 grants in one instant would reach the
        # platform with jitter, and some of them in the next second's count.
        spacing = 1.0 / self.policy.global_per_second
        async with self._global_lock:
            while True:
                now = self.clock.now()
                window = self._overall()
                delay = max(
                    window.delay(now), self._paused_all - now, self._last_grant + spacing - now
                )
                if delay <= _EPSILON:
                    window.take(now)
                    self._last_grant = now
                    return
                await self.clock.sleep(delay)

    def try_typing(self) -> bool:
        """Whether a typing indicator may go out now; if so it is counted. No while
        any reply waits, nor once `typing_share` of the overall budget is used."""
        now = self.clock.now()
        window = self._overall()
        free = self._waiting == 0 and not self._global_lock.locked() and now >= self._paused_all
        if free and window.used(now) < window.limit * self.policy.typing_share:
            window.take(now)
            self.stats.typing_sent += 1
            return True
        self.stats.typing_skipped += 1
        return False

    def rate_limited(self, chat: str | None, retry_after: float) -> float:
        """The platform said 429: pause `chat` (None: everything) for `retry_after`
        (bounded by the policy); returns the pause. Counted."""
        self.stats.rate_limited += 1
        pause = min(max(retry_after, 0.0), self.policy.max_retry_after_s)
        until = self.clock.now() + pause
        if chat is None:
            self._paused_all = max(self._paused_all, until)
        else:
            self._paused[chat] = max(self._paused.get(chat, 0.0), until)
        return pause

    def _forget_idle(self, now: float) -> None:
        # Chats nobody is sending to and whose windows have run out need no state.
        for chat in [c for c, lock in self._locks.items() if not lock.locked()]:
            chat_window, group_window = self._chat.get(chat), self._group.get(chat)
            if (chat_window is None or chat_window.idle(now)) and (
                group_window is None or group_window.idle(now)
            ):
                self._locks.pop(chat, None)
                self._chat.pop(chat, None)
                self._group.pop(chat, None)
                if self._paused.get(chat, 0.0) <= now:
                    self._paused.pop(chat, None)


@dataclass(frozen=True)
class AdapterServices:
    """What an adapter needs of the bot: the engine, the commands, the people store,
    and the inbox its events are committed to (None: events are handled directly)."""

    engine: PersonaEngine
    commands: Commands
    people: People
    inbox: Inbox | None = None


class Adapter(abc.ABC):
    """A platform connection: turns platform events into `Incoming` for the engine and
    delivers the engine's `Outgoing` under one delivery policy."""

    #: The platform's name, as used in `Scope.platform`.
    platform: str
    #: The longest text one platform message may carry.
    max_message_length: int = 4000
    #: How often the typing indicator is renewed while a reply is generated.
    typing_interval_s: float = 4.0
    #: A reply ready sooner than this shows no typing indicator (saves an API call).
    typing_delay_s: float = 0.0
    pacing: PacingPolicy = PacingPolicy()

    def __init__(self, services: AdapterServices) -> None:
        self.services = services
        self.engine = services.engine
        self.inbox = services.inbox
        self.pacer = Pacer(self.pacing)
        self._sending: KeyedLocks[str] = KeyedLocks()
        #: The running inbox worker (inside `processing()`), else None.
        self.worker: InboxWorker | None = None

    # -- what each platform implements ----------------------------------------------------

    @abc.abstractmethod
    async def run(self, stop: asyncio.Event) -> None:
        """Receive and answer messages until `stop` is set, then finish replies in hand."""

    @abc.abstractmethod
    async def _deliver(self, outgoing: Outgoing, text: str) -> str | None:
        """Send one part of a reply; return the platform's message id.

        Raise `RateLimited` for a 429, `Unreachable` for a 403/blocked/cannot-DM
        answer, `DeliveryError` for anything else the platform refused.
        """

    async def _send_typing(self, scope: Scope) -> None:  # noqa: B027  (optional for a platform)
        """Show "typing…" in the scope's chat (lasts a few seconds on the platform)."""

    async def handle_event(self, event: InboxEvent) -> None:
        """Handle one stored inbox event: parse `event.payload`, run its turn or
        command (through `answer` / `command` + `send`), and return when done.

        Raise (anything) when the event cannot be parsed or handled: the worker
        records it as failed with the reason and goes on with the next event. The
        worker calls this for one chat's events one at a time, in stored order.
        """
        raise AdapterError(f"{self.platform}: this adapter does not take inbox events")

    # -- the inbox ----------------------------------------------------------------------

    async def accept(self, events: Sequence[RawEvent]) -> int:
        """Commit a batch of raw events to the inbox (one transaction, redeliveries
        ignored) and wake the worker; returns how many were new. Acknowledge the
        batch to the platform only after this returns; if it raises, do not.
        """
        if self.inbox is None:
            raise AdapterError(f"{self.platform}: no inbox configured")
        new = await self.inbox.accept(self.platform, events)
        if self.worker is not None and new:
            self.worker.wake()
        return new

    @asynccontextmanager
    async def processing(
        self, *, drain_timeout_s: float = 120.0, concurrency: int = 256
    ) -> AsyncIterator[InboxWorker]:
        """Run recovery and then the inbox worker for as long as the block runs.

        Recovery (unfinished turns resumed or expired, undelivered replies sent) is
        queued in each chat's lane before the first pending event is taken, so a
        chat's old work leaves before its new. Call `accept` for new events inside
        the block. On exit no more events are taken, those in hand are finished (up
        to `drain_timeout_s`), and the rest stay pending for the next start.
        """
        if self.inbox is None:
            raise AdapterError(f"{self.platform}: no inbox configured")
        from bot.inbox.recovery import recover

        # A chat waiting out its pacing holds a slot: room for many such chats, so
        # the busy ones never starve the rest (memory per slot is one event).
        worker = InboxWorker(self.inbox, self.platform, self.handle_event, concurrency=concurrency)
        self.worker = worker
        await recover(self, worker)
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop), name=f"inbox-{self.platform}")
        try:
            yield worker
        finally:
            stop.set()
            await task
            await worker.drain(drain_timeout_s)
            self.worker = None

    def chat_key(self, scope: Scope) -> str:
        """The unit the platform rate-limits by: the channel or thread."""
        return f"{scope.channel}/{scope.thread}" if scope.thread else scope.channel

    # -- the shared policy ------------------------------------------------------------------

    @final
    async def answer(self, incoming: Incoming) -> list[Outgoing]:
        """Run a turn with the typing indicator on, then deliver its replies.

        A message older than `engine.stale_after_s` is recorded as expired instead
        of answered late. When the message could not even be stored, this logs it
        and returns [] for an adapter without an inbox; under the inbox worker it
        raises, so the event is recorded as failed (and can be replayed) rather
        than marked done.
        """
        expire_before = datetime.now(UTC) - timedelta(
            seconds=self.engine.settings.stale_after_s
        )
        try:
            async with self.typing(incoming.scope, enabled=incoming.addressed_to_bot):
                replies = await self.engine.handle(incoming, expire_before=expire_before)
        except BotError as exc:  # not stored: nothing was accepted, and the person should know
            log.error("turn.not_accepted", error=str(exc), platform=self.platform)
            if self.worker is not None:
                raise
            return []
        for reply in replies:
            with suppress(DeliveryError):  # recorded by send; one bad send must not stop others
                await self.send(reply)
        return replies

    @asynccontextmanager
    async def typing(self, scope: Scope, *, enabled: bool = True) -> AsyncIterator[None]:
        """Keep the typing indicator alive for as long as the block runs.

        Best effort: each indicator asks the pacer first, which says no while
        replies wait for the send budget (`Pacer.try_typing`), so typing never
        takes capacity a reply needs and is skipped under backlog.
        """
        if not enabled:
            yield
            return

        async def keep_typing() -> None:
            if self.typing_delay_s > 0:
                await asyncio.sleep(self.typing_delay_s)
            while True:
                if self._typing_allowed():
                    try:
                        await self._send_typing(scope)
                    except Exception as exc:  # typing is cosmetic; never fail a turn for it
                        log.debug("typing.failed", error=str(exc))
                await asyncio.sleep(self.typing_interval_s)

        task = asyncio.create_task(keep_typing(), name=f"typing-{self.platform}")
        try:
            yield
        finally:
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task

    def _typing_allowed(self) -> bool:
        # Under a backlog (more events in hand than a second of sends), the replies
        # behind need every send: typing would only delay them.
        worker = self.worker
        if worker is not None and worker.backlog > self.pacing.global_per_second:
            self.pacer.stats.typing_skipped += 1
            return False
        return self.pacer.try_typing()

    @final
    async def send(self, outgoing: Outgoing, *, first_part: int = 0) -> list[str | None]:
        """Deliver a reply in as many parts as the platform needs, and record the outcome.

        The outbox states: a stored reply (`outgoing.message_id`) is marked `sending`
        before its first part leaves, `parts_sent` is committed after each part the
        platform confirmed, and `delivered` after the last. `first_part` skips parts
        already confirmed (a restart resends only the rest: at most the part in
        flight at a crash repeats). Raises `DeliveryError` (after recording it, the
        reply `undeliverable`) when a part could not be delivered.

        Called from outside the inbox worker while it runs (a proactive message from
        the scheduler), the send takes its place in the chat's lane, behind the
        events already queued there: a chat's messages leave in the order of what
        caused them.
        """
        worker = self.worker
        if worker is not None and not in_lane():
            chat = self.chat_key(outgoing.scope)
            return await worker.call(chat, lambda: self._send_now(outgoing, first_part))
        return await self._send_now(outgoing, first_part)

    async def _send_now(self, outgoing: Outgoing, first_part: int) -> list[str | None]:
        ids: list[str | None] = []
        ledger = self.engine.ledger
        chat = self.chat_key(outgoing.scope)
        group = not outgoing.scope.is_direct
        mid = outgoing.message_id
        parts = split_message(outgoing.text, self.max_message_length)
        try:
            # One reply at a time per chat: a reply waiting out a 429 must not be
            # overtaken by the next one, nor its parts interleaved with another's.
            async with self._sending.hold(chat):
                if mid is not None:
                    await ledger.mark_sending(mid)
                for index in range(first_part, len(parts)):
                    sent = await self._send_part(outgoing, parts[index], chat, group, index)
                    ids.append(sent)
                    if mid is not None and index + 1 < len(parts):
                        await ledger.mark_part_sent(mid, index + 1, sent)
        except DeliveryError as exc:
            self.pacer.stats.failed += 1
            log.warning(
                "deliver.failed",
                platform=self.platform,
                error=str(exc),
                message_id=mid,
            )
            if isinstance(exc, Unreachable):
                await self.services.people.mark_unreachable(
                    self.platform, outgoing.scope.user, exc.reason
                )
            await ledger.record_failure(stage="deliver", error=exc, message_id=mid)
            if mid is not None:
                await ledger.mark_delivered(mid, None, delivered=False)
            raise
        if mid is not None:
            await ledger.mark_delivered(mid, ids[0] if ids else None, parts_sent=len(parts))
        return ids

    async def _send_part(
        self, outgoing: Outgoing, text: str, chat: str, group: bool, index: int
    ) -> str | None:
        attempts = 0
        while True:
            await self.pacer.wait(chat, group=group)
            try:
                sent = await self._deliver_part(outgoing, text, index)
            except RateLimited as exc:
                attempts += 1
                wait = self.pacer.rate_limited(None if exc.everything else chat, exc.retry_after)
                if attempts > self.pacing.max_rate_limit_retries:
                    raise DeliveryError(f"still rate limited after {attempts - 1} retries") from exc
                log.info("deliver.rate_limited", platform=self.platform, retry_after=wait)
                continue  # the pacer holds the chat for `wait` before the next try
            self.pacer.stats.sent += 1
            return sent

    async def _deliver_part(self, outgoing: Outgoing, text: str, part: int) -> str | None:
        """Send part `part` (0-based, stable across restarts) of a reply; by default
        `_deliver`. A platform that can make a resend idempotent overrides this and
        uses `part_nonce(outgoing, part)` (Discord's `enforce_nonce`)."""
        return await self._deliver(outgoing, text)

    @staticmethod
    def part_nonce(outgoing: Outgoing, part: int) -> str | None:
        """A nonce for one part of a stored reply, the same after a restart (at most
        25 characters, as Discord allows); None for a reply that is not stored."""
        if outgoing.message_id is None:
            return None
        return f"{outgoing.message_id}.{part}"[:25]

    # -- events other than messages -------------------------------------------------------

    async def command(self, name: str, args: str, ctx: CommandContext) -> str:
        """Run a slash command the platform received; returns the text to answer with."""
        return await self.services.commands.run(name, args, ctx)

    async def on_reaction(self, reaction: Reaction) -> bool:
        """Store a reaction on one of the persona's messages as feedback."""
        return await self.services.people.record_reaction(reaction)

    async def on_edit(self, scope: Scope, platform_message_id: str, text: str) -> bool:
        """A person edited a message: update the stored text."""
        return await self.services.people.record_edit(scope, platform_message_id, text)

    async def on_delete(self, scope: Scope, platform_message_id: str) -> bool:
        """A person deleted a message: mark it deleted (it leaves prompts and exports)."""
        return await self.services.people.record_delete(scope, platform_message_id)
