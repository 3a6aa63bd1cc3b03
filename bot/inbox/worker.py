"""The inbox worker: hands pending events of one platform to its adapter, in order
per chat, and settles each one.

Events of one chat (`InboxEvent.chat`) run one after another, in the order they
were stored; different chats run concurrently, at most `concurrency` at a time.
An event is marked `done` when the handler returns and `failed`, with the reason,
when it raises or runs past `event_timeout_s`: one bad event costs one failure row
and never blocks the events behind it. Recovery puts its own jobs (resumed turns,
undelivered replies) into the same lanes before the first event is taken, so a
chat's old work goes out before its new.

With `claims` (several workers on one PostgreSQL database, `bot.cluster`), a lane
first takes its chat's lock, so the chat runs in this process alone, and then
*pulls* the chat's pending events from the table one by one, oldest first, until
none is left; the lock goes when the lane empties. Events are found by
`claims.discover` (chats no other worker holds) instead of a cursor. A lane that
only had pulls queued and finds its chat held elsewhere just ends (that worker
handles them); one with other work (recovery, a proactive send) waits its turn.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, TypeVar

import structlog

from bot.aio import wait_for
from bot.inbox.claims import ChatClaims, Pull
from bot.inbox.store import Inbox, InboxEvent
from bot.safety.coalesce import waiting_probe

__all__ = [
    "ChatClaims",
    "EventHandler",
    "InboxWorker",
    "Job",
    "Pull",
    "WorkerStats",
    "current_event",
    "in_lane",
]

T = TypeVar("T")

#: Set while a lane runs an event or job (and in the tasks it starts).
_IN_LANE: ContextVar[bool] = ContextVar("inbox_in_lane", default=False)


_EVENT: ContextVar[InboxEvent | None] = ContextVar("inbox_event", default=None)


def current_event() -> InboxEvent | None:
    """The inbox event whose handler the caller runs in, or None: what a command's
    reply commits its done mark with (bot/inbox/outbox.py)."""
    return _EVENT.get()


def in_lane() -> bool:
    """Whether the caller runs inside a worker lane (an event or a recovery job)."""
    return _IN_LANE.get()


log = structlog.get_logger("bot.inbox")

#: How long a drain past its time waits for the lanes it cancelled to end.
_CANCEL_WAIT_S = 5.0

#: What handles one event: the adapter's `handle_event`.
EventHandler = Callable[[InboxEvent], Awaitable[None]]
#: Other work that must keep a chat's order (recovery): recorded by the job itself.
Job = Callable[[], Awaitable[None]]


@dataclass
class WorkerStats:
    """What the worker did since it started."""

    handled: int = 0
    failed: int = 0
    jobs: int = 0
    jobs_failed: int = 0
    #: Reasons of the last failures, newest last (bounded).
    last_failures: deque[str] = field(default_factory=lambda: deque(maxlen=20))


@dataclass(frozen=True, slots=True)
class _Item:
    event: InboxEvent | None
    job: Job | None
    name: str
    #: Pull the chat's pending events from the table (with `claims`).
    pull: bool = False


class InboxWorker:
    """Takes pending events of `platform` from `inbox` and runs `handler` on each."""

    def __init__(
        self,
        inbox: Inbox,
        platform: str,
        handler: EventHandler,
        *,
        concurrency: int = 64,
        max_in_hand: int = 512,
        poll_s: float = 1.0,
        rescan_s: float = 15.0,
        event_timeout_s: float = 900.0,
        claims: ChatClaims | None = None,
    ) -> None:
        self.inbox = inbox
        self.platform = platform
        self.handler = handler
        self.max_in_hand = max_in_hand
        self.poll_s = poll_s
        self.rescan_s = rescan_s
        self.event_timeout_s = event_timeout_s
        self.stats = WorkerStats()
        self._slots = asyncio.Semaphore(concurrency)
        self._lanes: dict[str, deque[_Item]] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._in_hand: set[int] = set()
        self._cursor = 0
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._unordered = itertools.count()
        self.claims = claims
        #: Chats with a pull queued or running (with `claims`).
        self._pulling: set[str] = set()
        self._stopping = False
        #: Set by a drain past its time: lanes take no further item.
        self._abandoned = False

    # -- feeding ------------------------------------------------------------------------

    def wake(self) -> None:
        """New events were accepted: look for them now rather than at the next poll."""
        self._wake.set()

    def submit(self, chat: str | None, job: Job, *, name: str = "job") -> None:
        """Run `job` in `chat`'s lane, after everything already queued for that chat."""
        self._enqueue(chat, _Item(None, job, name))

    async def call(self, chat: str | None, work: Callable[[], Awaitable[T]]) -> T:
        """Run `work` in `chat`'s lane, after what is queued there, and return its
        result (or raise its error): how work from outside the inbox (a proactive
        message) keeps its place in a chat's order."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        async def job() -> None:
            try:
                result = await work()
            except Exception as exc:
                if not future.done():
                    future.set_exception(exc)
                return
            if not future.done():
                future.set_result(result)

        self.submit(chat, job, name="call")
        value: T = await future
        return value

    @property
    def backlog(self) -> int:
        """Events and jobs queued or running."""
        return sum(len(lane) for lane in self._lanes.values())

    async def run(self, stop: asyncio.Event) -> None:
        """Take and handle events until `stop` is set; then finish those in hand.

        Events not started by then stay `pending` for the next start.
        """
        last_scan = -self.rescan_s
        stopping = asyncio.ensure_future(stop.wait())
        try:
            while not stop.is_set():
                self._wake.clear()
                if self.claims is not None:
                    if await self._discover():
                        continue
                    await self._doze(stopping)
                    continue
                room = self.max_in_hand - len(self._in_hand)
                if room > 0:
                    now = time.monotonic()
                    rescan = now - last_scan >= self.rescan_s
                    if rescan:
                        last_scan = now
                    try:
                        events = await self.inbox.pending(
                            self.platform,
                            limit=room,
                            after_id=0 if rescan else self._cursor,
                            exclude=frozenset(self._in_hand),
                        )
                    except Exception as exc:  # the database is busy or gone: try again soon
                        log.warning("inbox.fetch_failed", platform=self.platform, error=str(exc))
                        events = []
                    for event in events:
                        self._cursor = max(self._cursor, event.id)
                        self._in_hand.add(event.id)
                        self._enqueue(event.chat, _Item(event, None, f"event-{event.id}"))
                    if len(events) == room:
                        continue  # more are waiting: take them as soon as there is room
                await self._doze(stopping)
        finally:
            self._stopping = True
            stopping.cancel()

    async def _doze(self, stopping: asyncio.Future[Any]) -> None:
        woken = asyncio.ensure_future(self._wake.wait())
        await asyncio.wait({woken, stopping}, timeout=self.poll_s, return_when="FIRST_COMPLETED")
        woken.cancel()

    async def _discover(self) -> bool:
        """With claims: queue a pull for each chat with work; True when more may wait."""
        claims = self.claims
        assert claims is not None
        room = self.max_in_hand - self.backlog
        if room <= 0:
            return False
        try:
            chats = await claims.discover(limit=room, skip=sorted(self._pulling))
            for chat in chats:
                self._pulling.add(chat)
                self._enqueue(chat, _Item(None, None, f"pull-{chat}", pull=True))
            loose = await claims.unordered(limit=max(0, room - len(chats)))
        except Exception as exc:  # the database is busy or gone: try again soon
            log.warning("inbox.discover_failed", platform=self.platform, error=str(exc))
            return False
        for event in loose:
            self._in_hand.add(event.id)
            self._enqueue(None, _Item(event, None, f"event-{event.id}"))
        return len(chats) + len(loose) >= room

    async def drain(self, timeout_s: float) -> bool:
        """Wait up to `timeout_s` for everything in hand; cancel the rest (it stays
        pending). True if all finished."""
        try:
            await wait_for(self._idle.wait(), timeout=timeout_s)
        except TimeoutError:
            log.warning("inbox.drain_timeout", platform=self.platform, in_hand=self.backlog)
            # A lane whose cancel is lost (a library that swallows it) must not go on
            # to its next event, nor hold the stop for good: it is told to abandon,
            # and waited for a bounded time.
            self._abandoned = True
            tasks = list(self._tasks.values())
            for task in tasks:
                task.cancel()
            if tasks:
                _, stuck = await asyncio.wait(tasks, timeout=_CANCEL_WAIT_S)
                if stuck:
                    log.error("inbox.lanes_not_stopped", platform=self.platform, lanes=len(stuck))
            return False
        return True

    async def idle(self) -> None:
        """Return once nothing is queued or running (tests, recovery)."""
        await self._idle.wait()

    # -- lanes --------------------------------------------------------------------------

    def _enqueue(self, chat: str | None, item: _Item) -> None:
        key = chat if chat is not None else f"\0{next(self._unordered)}"
        lane = self._lanes.get(key)
        if lane is None:
            lane = self._lanes[key] = deque()
        lane.append(item)
        self._idle.clear()
        if key not in self._tasks:
            self._tasks[key] = asyncio.create_task(self._run_lane(key), name=f"inbox-{key[:40]}")

    async def _run_lane(self, key: str) -> None:
        _IN_LANE.set(True)  # this task's own context: lanes' sends go straight out
        lane = self._lanes[key]
        ordered = self.claims is not None and not key.startswith("\0")
        try:
            while lane and not self._abandoned:
                if ordered and not await self._acquire(key, lane):
                    lane.clear()  # only pulls were queued: the holder handles them
                    self._pulling.discard(key)
                    break
                while lane and not self._abandoned:
                    item = lane[0]
                    if item.pull:
                        await self._pull(key)
                    else:
                        async with self._slots:
                            if item.event is not None:
                                await self._handle(item.event)
                            elif item.job is not None:
                                await self._job(item)
                    lane.popleft()
                if ordered:
                    await self._release(key)  # more may have come meanwhile: loop
        finally:
            if not lane:
                self._lanes.pop(key, None)
            self._tasks.pop(key, None)
            if not self._tasks:
                self._idle.set()

    async def _acquire(self, chat: str, lane: deque[_Item]) -> bool:
        """Hold `chat`'s lock before its lane runs; False (give up) when another worker
        holds it and only pulls are queued, else wait for it."""
        assert self.claims is not None
        delay = 0.05
        while True:
            try:
                if await self.claims.acquire(chat):
                    return True
            except Exception as exc:
                log.warning("inbox.lock_failed", chat=chat, error=str(exc))
            if all(item.pull for item in lane):
                return False
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)

    async def _release(self, chat: str) -> None:
        assert self.claims is not None
        try:
            await self.claims.release(chat)
        except Exception as exc:  # the connection is gone: `bot run` stops
            log.error("inbox.unlock_failed", chat=chat, error=str(exc))

    async def _pull(self, chat: str) -> None:
        """Handle `chat`'s pending events, oldest first, until none is left."""
        claims = self.claims
        assert claims is not None
        skip: list[int] = []
        try:
            while not self._stopping:
                async with self._slots:
                    pulled = await claims.pull(chat, skip=skip)
                    if pulled is None:
                        return
                    event = pulled.event
                    self._in_hand.add(event.id)
                    if pulled.previous is not None and pulled.previous != claims.me:
                        # Its worker died with it in hand: finish that turn (or deliver
                        # its reply) before the event is looked at again.
                        await claims.stale(chat)
                    if not await self._handle(event):
                        skip.append(event.id)
                    elif not pulled.more:
                        return  # nothing behind it: no need to ask again
        except Exception as exc:  # found again by the next discovery
            log.warning("inbox.pull_failed", chat=chat, error=str(exc))
        finally:
            self._pulling.discard(chat)

    async def _handle(self, event: InboxEvent) -> bool:
        try:
            # A later message of the same author waiting in this chat answers this one
            # too (a burst, bot/safety/coalesce.py): the engine asks through the probe.
            probe = (lambda: self.inbox.newer_from(event)) if event.author else None
            token = _EVENT.set(event)
            try:
                with (
                    structlog.contextvars.bound_contextvars(
                        platform=self.platform, inbox_event=event.id
                    ),
                    waiting_probe(probe),
                ):
                    await wait_for(self.handler(event), timeout=self.event_timeout_s)
            finally:
                _EVENT.reset(token)
        except asyncio.CancelledError:
            self._in_hand.discard(event.id)  # left pending: the next start handles it
            raise
        except Exception as exc:
            reason = _reason(exc, self.event_timeout_s)
            self.stats.failed += 1
            self.stats.last_failures.append(reason)
            log.warning(
                "inbox.event_failed",
                platform=self.platform,
                event_id=event.id,
                key=event.key,
                reason=reason,
            )
            return await self._settle(event, reason)
        self.stats.handled += 1
        return await self._settle(event, None)

    async def _settle(self, event: InboxEvent, reason: str | None) -> bool:
        """Mark the event done or failed; False when that could not be stored."""
        try:
            if reason is None:
                await self.inbox.done(event.id)
            else:
                await self.inbox.fail(event.id, reason)
        except Exception as exc:  # stays pending: handled again after the next rescan
            log.error("inbox.settle_failed", event_id=event.id, error=str(exc))
            return False
        finally:
            self._in_hand.discard(event.id)
        return True

    async def _job(self, item: _Item) -> None:
        assert item.job is not None
        self.stats.jobs += 1
        try:
            await item.job()
        except Exception as exc:  # a job records its own failures; it must not stop the lane
            self.stats.jobs_failed += 1
            log.error(
                "inbox.job_failed", job=item.name, error=str(exc), error_type=type(exc).__name__
            )


def _reason(exc: Exception, timeout_s: float) -> str:
    if isinstance(exc, TimeoutError):
        return f"TimeoutError: not handled within {timeout_s:g} s"
    text = str(exc) or repr(exc)
    return f"{type(exc).__name__}: {text}"
