"""Delivery: the policy every adapter sends under (`Adapter.send`, a part of `Adapter`).

A reply is split to the platform's length limit, sent one reply at a time per chat
and paced, a rate-limited part retried after `retry_after` (a bounded number of
times), an unreachable person marked so, and a stored reply moved through the
outbox states as its parts leave; the typing indicator is kept alive meanwhile.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import TYPE_CHECKING, Generic, TypeVar, final

import structlog

from adapters._pacing import Pacer, PacingPolicy
from adapters._split import split_message
from bot.aio import wait_for
from bot.errors import BotError
from bot.inbox.worker import in_lane
from bot.messages import Outgoing, Scope

if TYPE_CHECKING:
    from adapters.base import AdapterServices
    from bot.engine import PersonaEngine
    from bot.inbox import InboxWorker

__all__ = ["DeliveryError", "KeyedLocks", "RateLimited", "Unreachable"]

log = structlog.get_logger("adapters")

#: How long a turn waits for its cancelled typing indicator to end.
_TYPING_STOP_S = 1.0

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


class _Delivery:
    """How `Adapter` sends (a part of it; the platform's raw send is `_deliver`)."""

    platform: str
    max_message_length: int
    typing_interval_s: float
    typing_delay_s: float
    pacing: PacingPolicy
    pacer: Pacer
    services: AdapterServices
    engine: PersonaEngine
    worker: InboxWorker | None
    _sending: KeyedLocks[str]

    if TYPE_CHECKING:  # each platform's, declared in `Adapter`

        async def _deliver(self, outgoing: Outgoing, text: str) -> str | None: ...

        async def _send_typing(self, scope: Scope) -> None: ...

    def chat_key(self, scope: Scope) -> str:
        """The unit the platform rate-limits by: the channel or thread."""
        return f"{scope.channel}/{scope.thread}" if scope.thread else scope.channel

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

        # The loop ends on `done` as well as on cancel: a platform call that swallows
        # a cancellation (Python 3.11's `asyncio.wait_for` does, when the call ends as
        # the cancel arrives; bot/aio.py) must not keep the indicator going for good.
        done = asyncio.Event()

        async def keep_typing() -> None:
            if self.typing_delay_s > 0:
                with suppress(TimeoutError):
                    await wait_for(done.wait(), self.typing_delay_s)
            while not done.is_set():
                if self._typing_allowed():
                    try:
                        await self._send_typing(scope)
                    except Exception as exc:  # typing is cosmetic; never fail a turn for it
                        log.debug("typing.failed", error=str(exc))
                with suppress(TimeoutError):
                    await wait_for(done.wait(), self.typing_interval_s)

        task = asyncio.create_task(keep_typing(), name=f"typing-{self.platform}")
        try:
            yield
        finally:
            done.set()
            task.cancel()
            # Waited for briefly, never for good: a platform library that does not
            # end a request promptly on cancel must not hold up the turn (and its
            # chat's lane) for a cosmetic indicator.
            await asyncio.wait({task}, timeout=_TYPING_STOP_S)

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
