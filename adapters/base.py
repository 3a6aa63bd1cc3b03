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
splitting in `adapters._split`; both are re-exported here. The delivery policy
itself is `adapters._delivery`, the inbox side `adapters._intake`: `Adapter`
inherits both, and their public names are re-exported here too.
"""

from __future__ import annotations

import abc
import asyncio
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, final

import structlog

from adapters._delivery import DeliveryError, KeyedLocks, RateLimited, Unreachable
from adapters._intake import _Intake
from adapters._pacing import Clock, DeliveryStats, MonotonicClock, Pacer, PacingPolicy
from adapters._split import split_message
from bot.commands import CommandContext, Commands
from bot.engine import PersonaEngine
from bot.errors import AdapterError, BotError
from bot.groups.policy import GroupSettings
from bot.groups.router import GroupRouter
from bot.groups.store import GroupStore
from bot.inbox import Inbox, InboxEvent, InboxWorker
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


class Adapter(_Intake, abc.ABC):
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

    async def _send_typing(self, scope: Scope) -> None:  # optional for a platform
        """Show "typing…" in the scope's chat (lasts a few seconds on the platform)."""

    async def handle_event(self, event: InboxEvent) -> None:
        """Handle one stored inbox event: parse `event.payload`, run its turn or
        command (through `answer` / `command` + `send`), and return when done.

        Raise (anything) when the event cannot be parsed or handled: the worker
        records it as failed with the reason and goes on with the next event. The
        worker calls this for one chat's events one at a time, in stored order.
        """
        raise AdapterError(f"{self.platform}: this adapter does not take inbox events")

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
        expire_before = datetime.now(UTC) - timedelta(seconds=self.engine.settings.stale_after_s)
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
