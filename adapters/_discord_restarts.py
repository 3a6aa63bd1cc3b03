"""What a stop and a start do for Discord's interactions (a part of
`DiscordInteractions`): defer those the stopping worker no longer took, and send
the stored replies a crash left undelivered."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import discord
import structlog

from adapters._discord_answers import (
    INITIAL_WINDOW_S,
    INTERACTION_KEY,
    WAITING,
    InteractionAnswers,
)
from adapters._discord_client import reset_webhook_routes, use_routes_for_webhooks
from bot.errors import AdapterError
from bot.inbox import InboxEvent, InboxWorker

if TYPE_CHECKING:
    from adapters._discord_commands import SlashCall
    from adapters.discord import DiscordAdapter

log = structlog.get_logger("adapters.discord")

#: How long a stop waits for interactions still being committed.
_COMMITTING_WAIT_S = 1.5


class _Restarts:
    """How `DiscordInteractions` stops and starts (a part of it)."""

    adapter: DiscordAdapter
    _now: Callable[[], datetime]
    _accepting: set[asyncio.Task[None]]

    if TYPE_CHECKING:  # DiscordInteractions'

        @property
        def answers(self) -> InteractionAnswers: ...

        def _parse(self, event: InboxEvent) -> tuple[discord.Interaction, SlashCall]: ...

        @staticmethod
        def _created(interaction: discord.Interaction, event: InboxEvent) -> datetime: ...

        async def _defer(
            self,
            event: InboxEvent,
            interaction: discord.Interaction,
            call: SlashCall,
            created: datetime,
        ) -> str | None: ...

        async def _deliver(self, interaction: discord.Interaction, event: InboxEvent) -> None: ...

    async def defer_for_next_start(self) -> int:
        """Stopping, after the worker stopped: defer the interactions it no longer
        took, so that the next start (within 15 minutes) answers them instead of
        finding them past 3 s. Returns how many were deferred."""
        if self._accepting:  # what is still being committed
            await asyncio.wait(set(self._accepting), timeout=_COMMITTING_WAIT_S)
        inbox = self.adapter.inbox
        if inbox is None:
            return 0
        since = self._now() - timedelta(seconds=INITIAL_WINDOW_S)
        deferred = 0
        for event_id in await self.answers.undeferred(since):
            event = await inbox.get(event_id)
            if event is None:
                continue
            try:
                interaction, call = self._parse(event)
            except AdapterError:  # unparsable
                continue  # failed by the next start's worker, with its reason
            if await self._defer(event, interaction, call, self._created(interaction, event)):
                continue  # refused (logged; the next start finds it past 3 s)
            deferred += 1
        if deferred:
            log.info("discord.interactions_deferred_for_restart", deferred=deferred)
        return deferred

    # -- recovery --------------------------------------------------------------------------

    async def recover(self, worker: InboxWorker) -> int:
        """Queue the delivery of every stored, undelivered reply (each in a lane of its
        own, looked at again when it runs); returns how many. Pending interaction
        events need nothing here: the worker takes them like any other."""
        waiting = await self.answers.waiting()
        for answer in waiting:
            event_id = answer.event_id

            async def job(event_id: int = event_id) -> None:
                # Queued from wherever recovery runs (a dead worker's adoption too):
                # the answer goes to the configured API all the same.
                routes = use_routes_for_webhooks(self.adapter._routes)
                try:
                    await self._redeliver(event_id)
                finally:
                    if routes is not None:
                        reset_webhook_routes(routes)

            worker.submit(f"{INTERACTION_KEY}{event_id}", job, name=f"interaction-{event_id}")
        if waiting:
            log.info("discord.interactions_recovered", replies=len(waiting))
        return len(waiting)

    async def _redeliver(self, event_id: int) -> None:
        answers = self.answers
        answer = await answers.get(event_id)
        if answer is None or answer.status not in WAITING:
            return  # delivered meanwhile
        inbox = self.adapter.inbox
        event = None if inbox is None else await inbox.get(event_id)
        if event is None or not event.payload:
            await answers.settle(
                event_id, "expired", now=self._now(), reason="not sent: its payload is gone"
            )
            return
        try:
            interaction, _ = self._parse(event)
        except AdapterError as exc:
            await answers.settle(event_id, "undeliverable", now=self._now(), reason=str(exc))
            return
        await self._deliver(interaction, event)
