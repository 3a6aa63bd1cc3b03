"""One turn of conversation: from an `Incoming` to the `Outgoing` that answers it.

    clean → store (committed) → wait for earlier turns of this conversation
          → history → prompt → generate (global concurrency limit) → clean reply
          → store reply (or the failure and an apology) → Outgoing

Messages of one conversation are answered in the order they arrived; different
conversations run concurrently. The engine never calls a platform API and never
asks which platform a message came from.

This module holds `PersonaEngine`'s public face and a turn's way in (store, the
conversation's line, bursts, staleness, recovery); its parts live beside it:
`engine_types` (protocols and records, re-exported here), `engine_answer` (answering
a stored message), `engine_prompt` (prompt assembly), `engine_generate` (generation),
`engine_proactive` (greetings and proactive turns), `engine_inflight` (background
observers and drain).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import structlog

from bot.config import EngineSettings
from bot.engine_answer import Answering
from bot.engine_proactive import PersonaInitiated
from bot.engine_types import (
    AdapterChooser,
    BackendSource,
    DeltaCallback,
    MemorySource,
    PersonaSource,
    RecallRequest,
    TurnObserver,
    TurnRecord,
    TurnResult,
)
from bot.errors import PersonaError, StorageError
from bot.memory.ledger import Ledger, Unfinished
from bot.messages import Incoming, Outgoing, Scope
from bot.metrics import Metrics
from bot.models import MessageStatus
from bot.personas import LoreBook
from bot.personas.lorebook.timers import LoreTimers
from bot.prompt import PromptBuilder, SystemLayout
from bot.safety.coalesce import Bursts, newer_waiting, settle_coalesced
from bot.safety.stage import SafetyStage
from bot.text import clean_text
from bot.turns import ConversationLine, away_notice

__all__ = [
    "BackendSource",
    "DeltaCallback",
    "MemorySource",
    "PersonaEngine",
    "PersonaSource",
    "RecallRequest",
    "TurnObserver",
    "TurnRecord",
    "TurnResult",
]

log = structlog.get_logger("bot.engine")


class PersonaEngine(Answering, PersonaInitiated):
    """Answers incoming messages with a persona's voice, storing everything on the way."""

    def __init__(
        self,
        *,
        personas: PersonaSource,
        ledger: Ledger,
        backends: BackendSource,
        settings: EngineSettings,
        max_concurrency: int = 16,
        context_window: int = 4096,
        timezone: str = "UTC",
        memory: MemorySource | None = None,
        observers: Sequence[TurnObserver] = (),
        safety: SafetyStage | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        #: Counters and latency histograms (bot/metrics/); /metrics reads them.
        self.metrics = metrics if metrics is not None else Metrics()
        #: Crisis, disclosure and moderation around every turn (bot/safety).
        self.safety = safety if safety is not None else SafetyStage.default()
        #: Canary and serving adapters per conversation; None: the persona's own.
        self.adapters: AdapterChooser | None = None
        self.memory = memory
        self.observers = list(observers)
        self.personas = personas
        self.ledger = ledger
        self.backends = backends
        self.settings = settings
        self.context_window = context_window
        self.timezone = ZoneInfo(timezone)
        self._slots = asyncio.Semaphore(max_concurrency)
        self._line = ConversationLine()  # each conversation's turns in arrival order
        self._bursts = Bursts()  # who waits in each line: a burst is answered once
        self._builders: dict[int, PromptBuilder] = {}
        self._layouts: dict[str, SystemLayout] = {}  # by persona content hash
        self._lore: dict[tuple[object, ...], LoreBook] = {}  # by content hash and worlds
        self._lore_timers = LoreTimers(ledger.db)
        self._active = 0  # turns and background observations in flight
        self._background: set[asyncio.Task[None]] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._accepting = True

    # -- public ---------------------------------------------------------------------

    async def handle(
        self,
        incoming: Incoming,
        *,
        on_delta: DeltaCallback | None = None,
        expire_before: datetime | None = None,
    ) -> list[Outgoing]:
        """Store `incoming` and answer it; returns the replies (none if not addressed).

        With `expire_before`, an addressed message received before it is stored as
        `expired` instead of answered late (see `expire`). Raises `StorageError` only
        when the message could not be stored (so nothing was accepted); every later
        failure is recorded and answered with an apology.
        """
        result = await self.run_turn(incoming, on_delta=on_delta, expire_before=expire_before)
        return list(result.outgoing)

    async def resume(self, stored: Unfinished) -> list[Outgoing]:
        """Answer an incoming message that is already stored but was never answered
        (recovery after a stop or crash), in its conversation's order.

        Returns [] when the message is no longer there to answer (it was answered,
        failed or expired meanwhile): `Ledger.claim` decides, so no message is
        answered twice.
        """
        if stored.direction != "in":
            raise ValueError("resume answers incoming messages; replies go to the outbox")
        self._active += 1
        self._idle.clear()
        incoming = stored.incoming
        key = incoming.scope.conversation_key
        place = self._line.join(key)
        try:
            await place.wait()
            if not await self.ledger.claim(stored.message_id):
                log.info("turn.resume_skipped", message_id=stored.message_id)
                return []
            with structlog.contextvars.bound_contextvars(
                platform=incoming.scope.platform, conversation=key, user=incoming.scope.user
            ):
                text = clean_text(stored.text)
                log.info("turn.resumed", message_id=stored.message_id)
                result = await self._answer(
                    incoming, text, stored.stored, time.perf_counter(), None
                )
                return list(result.outgoing)
        finally:
            place.release()
            self._settle()

    async def expire(
        self, stored: Unfinished, *, reason: str, notify: bool = True
    ) -> Outgoing | None:
        """Record an unfinished message as too old to act on (an incoming one
        `expired`, a reply `undeliverable`), and with `notify` return the persona's
        "sorry, I was away" for that person if it has one and it was not just said."""
        if not await self.ledger.expire(stored.message_id, reason):
            return None
        if stored.user_id is None or not notify:
            return None
        reply_to = stored.message_id if stored.direction == "in" else None
        return await self._away(stored.scope, stored.conversation_id, stored.user_id, reply_to)

    async def _away(
        self, scope: Scope, conversation_id: int, user_id: int, reply_to: int | None
    ) -> Outgoing | None:
        try:
            loaded = self.personas.get(scope.persona)
        except PersonaError:
            return None
        return await away_notice(
            self.ledger, loaded, scope, conversation_id, user_id, reply_to_id=reply_to
        )

    async def run_turn(
        self,
        incoming: Incoming,
        *,
        on_delta: DeltaCallback | None = None,
        expire_before: datetime | None = None,
    ) -> TurnResult:
        """`handle` with timings: framework overhead and generation measured apart."""
        if not self._accepting:
            raise StorageError("the engine is shutting down and accepts no new messages")
        self._active += 1
        self._idle.clear()
        try:
            with structlog.contextvars.bound_contextvars(
                platform=incoming.scope.platform,
                conversation=incoming.scope.conversation_key,
                user=incoming.scope.user,
                persona=incoming.scope.persona,
            ):
                return await self._turn(incoming, on_delta, expire_before)
        finally:
            self._settle()

    # -- the turn -------------------------------------------------------------------

    async def _turn(
        self,
        incoming: Incoming,
        on_delta: DeltaCallback | None,
        expire_before: datetime | None = None,
    ) -> TurnResult:
        started = time.perf_counter()
        text = clean_text(incoming.text)
        for attachment in incoming.attachments:
            label = attachment.kind + (f" {attachment.filename}" if attachment.filename else "")
            described = clean_text(attachment.description)
            text += f"\n[{label}{': ' + described if described else ''}]"
        text = text.strip()
        if not text:
            log.info("turn.ignored_empty")
            return TurnResult(outgoing=(), stored=None)

        key = incoming.scope.conversation_key
        # The next message of this conversation waits for us, and we for the one before.
        place = self._line.join(key)
        previous = place.previous
        try:
            addressed = incoming.addressed_to_bot
            stale = (
                addressed and expire_before is not None and incoming.received_at < expire_before
            )
            # Under the inbox a burst waits there, not in this line: a later message of
            # the same person already stored answers this one too (bot/safety/coalesce).
            superseded = (
                addressed
                and self.settings.coalesce_bursts
                and not stale
                and await newer_waiting()
                and self.safety.may_coalesce(text)
            )
            if not addressed:
                status = MessageStatus.IGNORED
            elif previous is None and not stale and not superseded:
                # Nothing to wait for: generation starts now, so it is `answering` at once.
                status = MessageStatus.ANSWERING
            else:
                status = MessageStatus.RECEIVED
            stored = await self.ledger.record_incoming(
                incoming,
                text,
                truncated=len(text) > self.settings.max_input_chars,
                status=status,
                # With no earlier turn in flight the history is final now: read it in
                # the same round trip as the insert.
                with_history=self._history_limit(incoming.scope.persona)
                if previous is None and status is MessageStatus.ANSWERING
                else None,
            )
            platform = incoming.scope.platform
            if stored.duplicate:
                log.info("turn.duplicate", message_id=stored.message_id)
                self.metrics.turn(platform, "duplicate")
                return TurnResult(outgoing=(), stored=stored)
            if not addressed:
                self.metrics.turn(platform, "ignored")
                return TurnResult(outgoing=(), stored=stored)
            if stale:
                log.info("turn.expired", message_id=stored.message_id)
                self.metrics.turn(platform, "expired")
                age = (datetime.now(UTC) - incoming.received_at).total_seconds()
                await self.ledger.expire(
                    stored.message_id,
                    f"received {age:.0f} s before it could be answered, older than the "
                    "staleness limit (engine.stale_after_s)",
                )
                away = await self._away(
                    incoming.scope, stored.conversation_id, stored.user_id, stored.message_id
                )
                return TurnResult(outgoing=(away,) if away else (), stored=stored)
            if superseded:
                await settle_coalesced(self.ledger, stored.message_id)
                self.safety.counters[("burst", "coalesced")] += 1
                self.metrics.turn(platform, "coalesced")
                return TurnResult(outgoing=(), stored=stored)
            if previous is not None:
                burst = (key, incoming.scope.user, stored.message_id)
                self._bursts.arrived(*burst)
                try:
                    await place.wait()
                    if (
                        self.settings.coalesce_bursts
                        and self._bursts.newer_waiting(*burst)
                        and self.safety.may_coalesce(text)
                    ):
                        # The newest one answers them all.
                        await settle_coalesced(self.ledger, stored.message_id)
                        self.safety.counters[("burst", "coalesced")] += 1
                        self.metrics.turn(platform, "coalesced")
                        return TurnResult(outgoing=(), stored=stored)
                finally:
                    self._bursts.left(*burst)
                if not await self.ledger.claim(stored.message_id):
                    return TurnResult(outgoing=(), stored=stored)
            return await self._answer(incoming, text, stored, started, on_delta)
        finally:
            place.release()
