"""Intake: raw events committed to the inbox before the platform hears they arrived,
and recovery then the inbox worker run around the adapter (a part of `Adapter`)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, suppress
from typing import TYPE_CHECKING

import structlog

from adapters._delivery import _Delivery
from bot.aio import wait_for
from bot.errors import AdapterError
from bot.inbox import Inbox, InboxEvent, InboxWorker, RawEvent

if TYPE_CHECKING:
    from bot.cluster import ClusterNode

log = structlog.get_logger("adapters")


class _Intake(_Delivery):
    """How `Adapter` takes events through the inbox (a part of it)."""

    inbox: Inbox | None

    if TYPE_CHECKING:  # each platform's, declared in `Adapter`

        async def handle_event(self, event: InboxEvent) -> None: ...

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
                await wait_for(stop.wait(), timeout=1.0)
