"""Pacing: the one owner of an adapter's rate limits (see `Pacer`).

Time comes from a `Clock` passed in (the real one by default), so tests run bursts
of thousands of sends on a virtual clock without sleeping.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from dataclasses import dataclass
from typing import Protocol

__all__ = ["Clock", "DeliveryStats", "MonotonicClock", "Pacer", "PacingPolicy"]

#: Waits shorter than this are no wait: a float a hair above a deadline must not
#: ask for a sleep too short to move any clock.
_EPSILON = 1e-6


@dataclass(frozen=True)
class PacingPolicy:
    """How fast one adapter may send: per chat, per group chat, and overall.

    Per chat: a short burst of `per_chat_burst`, then one per `per_chat_interval_s`
    (a token bucket). Per group
    chat: at most `group_per_minute` in any 60 s. Overall: at most
    `global_per_second` in any one second, and no two closer than
    `1 / global_per_second`. `global_reserve` sends of each second's budget are held
    back from the window, so that the platform's own count of any one second stays
    within its limit even when sends reach it unevenly (a request takes a little
    more or less time on its way). Typing indicators may use at most
    `typing_share` of the overall budget, and only while no reply waits for it.
    """

    per_chat_interval_s: float = 1.0
    group_per_minute: int = 20
    global_per_second: float = 30.0
    max_rate_limit_retries: int = 3
    max_retry_after_s: float = 60.0
    per_chat_burst: int = 3
    typing_share: float = 0.5
    global_reserve: int = 0


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
        self._next_slot = float("-inf")
        self._waiting = 0

    @property
    def backlog(self) -> int:
        """Sends waiting for their turn right now."""
        return self._waiting

    def _overall(self) -> _Window:
        rate = self.policy.global_per_second
        # The window admits ceil(rate) less the reserve in any second and a quarter
        # slot: even spacing (1/rate) holds the average to `rate`, the window bounds
        # what lands in any one second when the event loop catches up after a stall,
        # and the reserve absorbs the jitter between our clock and the platform's.
        if rate >= 1:
            limit = max(1, math.ceil(rate) - max(0, self.policy.global_reserve))
            period = 1.0 + 0.25 / rate
        else:  # below 1/s the window is one send per 1/rate seconds
            limit, period = 1, 1.0 / rate
        if self._global is None or (self._global.limit, self._global.period) != (limit, period):
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
                delay = max(window.delay(now), self._paused_all - now, self._next_slot - now)
                if delay <= _EPSILON:
                    window.take(now)
                    # The next slot follows this one's, not the moment we woke: the
                    # event loop's lag is caught up instead of piling up (never
                    # closer than half a slot, and the window caps any second).
                    lag = now - self._next_slot
                    base = self._next_slot if lag <= spacing / 2 else now  # idle: start anew
                    self._next_slot = base + spacing
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
