"""What every platform adapter shares: the delivery policy around a raw send.

`Adapter.send` is the template method: it splits a reply to the platform's length
limit, paces it per chat and overall, retries a rate-limited send after the
platform's `retry_after` (a bounded number of times), and on a 403/blocked answer
marks the person unreachable on that platform and records why, never retrying in a
loop. Each platform implements only `_deliver` (one raw send), `_send_typing` and
`run`. `Adapter.answer` runs a turn with the typing indicator kept alive.

With an inbox, `accept` commits raw events before the platform is told they
arrived, `processing()` runs recovery and the inbox worker, and `handle_event`
(each platform's) handles one stored event. Pacing lives in `adapters._pacing`,
splitting in `adapters._split`; both are re-exported here.
"""

from __future__ import annotations

import abc
import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Generic, TypeVar, final

import structlog

from adapters._pacing import Clock, DeliveryStats, MonotonicClock, Pacer, PacingPolicy
from adapters._split import split_message
from bot.commands import CommandContext, Commands
from bot.engine import PersonaEngine
from bot.errors import AdapterError, BotError
from bot.groups.policy import GroupSettings
from bot.groups.router import GroupRouter
from bot.groups.store import GroupStore
from bot.inbox import Inbox, InboxEvent, InboxWorker, RawEvent
from bot.inbox.worker import in_lane
from bot.messages import Incoming, Outgoing, Reaction, Scope
from bot.people import People

if TYPE_CHECKING:
    from bot.cluster import ClusterNode, Leadership

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
class AdapterServices:
    """What an adapter needs of the bot: the engine, the commands, the people store,
    the inbox its events are committed to (None: events are handled directly), the
    groups settings (None: their defaults), and with several workers on PostgreSQL
    this process's `cluster` node and its `leadership` (None: one process alone)."""

    engine: PersonaEngine
    commands: Commands
    people: People
    inbox: Inbox | None = None
    groups: GroupSettings | None = None
    cluster: ClusterNode | None = None
    leadership: Leadership | None = None


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
        #: Who answers a group message when (bot/groups); its `rng` and `clock` can
        #: be replaced (tests seed them; `clock` is wall-clock seconds).
        self.groups = GroupRouter(
            services.groups if services.groups is not None else GroupSettings(),
            services.engine.personas,
            services.people,
            # In the database: the budget, cooldowns and chain hold across restarts
            # and across the workers on one database (bot/groups/store.py).
            state=GroupStore(services.people.db),
        )

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
        from bot.inbox.recovery import recover, recover_chat

        claims = None
        node = self.services.cluster
        if node is not None:  # several workers: chats are shared through their locks
            from bot.cluster.lanes import ClusterClaims

            async def stale(chat: str) -> object:
                return await recover_chat(self, chat)

            claims = ClusterClaims(node, self.inbox.db, self.platform, stale=stale)
        # A chat waiting out its pacing holds a slot: room for many such chats, so
        # the busy ones never starve the rest (memory per slot is one event). Other
        # workers' events are found by polling, so poll often with claims.
        worker = InboxWorker(
            self.inbox,
            self.platform,
            self.handle_event,
            concurrency=concurrency,
            claims=claims,
            poll_s=0.2 if claims is not None else 1.0,
        )
        self.worker = worker
        await recover(self, worker)

        async def adopt(dead: int) -> None:
            # A worker died: its unfinished turns and replies, queued like at a
            # start (each looks again under its chat's lock when it runs).
            await recover(self, worker)

        stop = asyncio.Event()
        share: asyncio.Task[None] | None = None
        if node is not None:
            node.on_adopt.append(adopt)
            share = asyncio.create_task(self._share_budget(node, stop), name="pacing-share")
        task = asyncio.create_task(worker.run(stop), name=f"inbox-{self.platform}")
        try:
            yield worker
        finally:
            if node is not None:
                node.on_adopt.remove(adopt)
            stop.set()
            if share is not None:
                share.cancel()
            await task
            await worker.drain(drain_timeout_s)
            self.worker = None

    async def _share_budget(self, node: ClusterNode, stop: asyncio.Event) -> None:
        """The platform's overall limit is the bot's, not the process's: with N
        workers alive each paces at 1/N of it (checked every second)."""
        base = self.pacing
        while not stop.is_set():
            workers = max(1, node.live_count)
            rate = base.global_per_second / workers
            if self.pacer.policy.global_per_second != rate:
                self.pacer.policy = dataclasses.replace(base, global_per_second=rate)
                log.info("pacing.shared", platform=self.platform, workers=workers, per_s=rate)
            with suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=1.0)

    def chat_key(self, scope: Scope) -> str:
        """The unit the platform rate-limits by: the channel or thread."""
        return f"{scope.channel}/{scope.thread}" if scope.thread else scope.channel

    # -- the shared policy ------------------------------------------------------------------

    @final
    async def answer(self, incoming: Incoming) -> list[Outgoing]:
        """Run a message's turns and deliver their replies; returns the replies.

        Outside a DM the groups layer decides who answers (`GroupRouter.route`):
        the message is stored once in each present persona's conversation, and
        each persona it picked answers as its own turn. A delivered reply is shown
        to the other personas present as a bot's message (`GroupRouter.echo`), so
        they know what was said and a bot-to-bot chain among them stops at
        `groups.max_bot_chain`.
        """
        replies: list[Outgoing] = []
        queue = [incoming]
        while queue:
            message = queue.pop(0)
            for turn in await self.groups.route(message):
                for reply, sent in await self._answer_one(turn):
                    replies.append(reply)
                    if sent is not None and turn.addressed_to_bot:
                        echoed = self.groups.echo(reply, sent, message.scope.persona)
                        if echoed is not None:
                            queue.append(echoed)
        return replies

    async def _answer_one(self, incoming: Incoming) -> list[tuple[Outgoing, str | None]]:
        """Run one turn with the typing indicator on, then deliver its replies;
        each reply with the platform id of its first part (None: not delivered).

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
        done: list[tuple[Outgoing, str | None]] = []
        for reply in replies:
            ids: list[str | None] = []
            with suppress(DeliveryError):  # recorded by send; one bad send must not stop others
                ids = await self.send(reply)
            done.append((reply, ids[0] if ids else None))
        return done

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
        started = time.perf_counter()
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
            self.engine.metrics.failure("deliver")
            if mid is not None:
                await ledger.mark_delivered(mid, None, delivered=False)
            raise
        if mid is not None:
            await ledger.mark_delivered(mid, ids[0] if ids else None, parts_sent=len(parts))
        self.engine.metrics.delivery.labels(self.platform).observe(time.perf_counter() - started)
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
