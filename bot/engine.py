"""One turn of conversation: from an `Incoming` to the `Outgoing` that answers it.

    clean → store (committed) → wait for earlier turns of this conversation
          → history → prompt → generate (global concurrency limit) → clean reply
          → store reply (or the failure and an apology) → Outgoing

Messages of one conversation are answered in the order they arrived; different
conversations run concurrently. The engine never calls a platform API and never
asks which platform a message came from.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Protocol
from zoneinfo import ZoneInfo

import structlog

from bot.config import EngineSettings
from bot.errors import BackendError, EmptyCompletion, PersonaError, StorageError
from bot.llm.base import (
    ChatMessage,
    ChatRequest,
    Completion,
    LLMBackend,
    Sampling,
    TokenCounter,
)
from bot.llm.tokens import fit_window
from bot.memory.ledger import HistoryTurn, Ledger, ReplyRecord, StoredIncoming, Unfinished
from bot.messages import Actor, Incoming, Outgoing, Scope, TurnKind
from bot.metrics import Metrics
from bot.models import MessageStatus
from bot.personas import (
    LoadedPersona,
    LoreBook,
    PromptContext,
    render_system_prompt_async,
)
from bot.personas.greetings import render_first_message_async
from bot.personas.lorebook import LoreResult, TimerState
from bot.personas.lorebook.timers import LoreTimers, lore_turn
from bot.postprocess import StreamCleaner, clean_reply
from bot.prompt import (
    AssembledPrompt,
    PromptBuilder,
    PromptTurn,
    SystemLayout,
    persona_guidance,
    speaker_label,
    turn_prompt,
)
from bot.safety.coalesce import Bursts, newer_waiting, settle_coalesced
from bot.safety.replies import record_fixed_reply
from bot.safety.stage import InputContext, OutputContext, SafetyStage
from bot.text import clean_text, truncate
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

DeltaCallback = Callable[[str], Awaitable[None]]


class PersonaSource(Protocol):
    """Where the engine gets the persona version to serve (the registry)."""

    def get(self, persona_id: str) -> LoadedPersona:
        """The persona version serving now; raises `PersonaNotFound`."""
        ...


@dataclass(frozen=True, slots=True)
class RecallRequest:
    """What the memory part gets to choose what this turn should remember."""

    scope: Scope
    user_id: int
    conversation_id: int
    message_id: int
    query: str
    budget_tokens: int
    tokens: TokenCounter
    now: datetime
    #: Ledger ids already in the prompt as recent history (no need to recall them).
    history_ids: frozenset[int]


@dataclass(frozen=True, slots=True)
class TurnRecord:
    """A finished turn, handed to the memory part to learn from (after the reply)."""

    scope: Scope
    user_id: int
    conversation_id: int
    incoming_id: int
    reply_id: int
    incoming_text: str
    reply_text: str
    at: datetime


class TurnObserver(Protocol):
    """Something that learns from finished turns (memory, follow-up extraction)."""

    async def observe(self, turn: TurnRecord) -> None:
        """Learn from a finished turn (runs in the background, after the reply)."""
        ...


class MemorySource(Protocol):
    """Long-term memory: what to put in the prompt, and what to learn from a turn.

    `recall` returns text for the end of the system message (dated facts, summaries,
    recalled messages), within `budget_tokens`; it must only use memories the
    speaker may see in this scope. `observe` runs after the reply is stored and must
    not delay it (index, extract facts in the background).
    """

    async def recall(self, request: RecallRequest) -> str:
        """Memory text for this turn's prompt ("" for none)."""
        ...

    async def observe(self, turn: TurnRecord) -> None:
        """Learn from a finished turn."""
        ...


class AdapterChooser(Protocol):
    """Picks the LoRA adapter that answers a conversation (bot/train/canary.py)."""

    async def adapter_for(
        self, persona_id: str, conversation_key: str, default: str | None
    ) -> str | None:
        """The adapter's served name; `default` is the persona's own `model.adapter`."""
        ...


class BackendSource(Protocol):
    """Where the engine gets the backend for a persona."""

    async def for_persona(self, persona: LoadedPersona) -> LLMBackend:
        """The backend (and model) this persona is voiced by."""
        ...


@dataclass(frozen=True, slots=True)
class TurnResult:
    """What a turn produced, with the numbers a benchmark or log wants."""

    outgoing: tuple[Outgoing, ...]
    stored: StoredIncoming | None
    overhead_ms: float = 0.0
    generation_ms: float = 0.0


class PersonaEngine:
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

    async def greeting(
        self, scope: Scope, display_name: str = "", *, store: bool = True
    ) -> Outgoing | None:
        """The persona's greeting for a person who just arrived, stored as a turn.

        With `store=False` it is only rendered (`message_id` None): the caller stores
        it with what else it commits (a command's reply, bot/inbox/outbox.py)."""
        loaded = self.personas.get(scope.persona)
        # The greeting or one of the card's alternates, the same per person (greetings.py).
        ctx = self._context(scope, display_name)
        text = await render_first_message_async(loaded.persona, scope, ctx)
        if not text:
            return None
        if not store:
            return Outgoing(
                scope=scope, text=text, persona_hash=loaded.content_hash, kind=TurnKind.GREETING
            )
        conversation_id = await self.ledger.conversation_id(scope)
        message_id = await self.ledger.record_reply(
            ReplyRecord(
                conversation_id=conversation_id,
                user_id=None,
                reply_to_id=None,
                text=text,
                persona_id=loaded.persona.id,
                persona_hash=loaded.content_hash,
                latency_ms=0.0,
                kind=TurnKind.GREETING.value,
            )
        )
        return Outgoing(
            scope=scope,
            text=text,
            message_id=message_id,
            persona_hash=loaded.content_hash,
            kind=TurnKind.GREETING,
        )

    async def proactive(
        self,
        scope: Scope,
        *,
        instruction: str,
        display_name: str = "",
        kind: TurnKind = TurnKind.PROACTIVE,
        now: datetime | None = None,
    ) -> Outgoing | None:
        """A message the persona starts itself (a habit, a check-in, a follow-up).

        It is generated like any turn, with the conversation's history and memories,
        but as a turn of its own kind: the instruction goes to the system message,
        no user message is faked, and the reply is stored with `kind`. Returns None
        when generation failed (the failure is recorded; nothing is sent).
        """
        self._active += 1
        self._idle.clear()
        key = scope.conversation_key
        place = self._line.join(key)
        try:
            await place.wait()
            with structlog.contextvars.bound_contextvars(
                platform=scope.platform, conversation=key, user=scope.user, persona=scope.persona
            ):
                return await self._proactive(scope, instruction, display_name, kind, now)
        finally:
            place.release()
            self._settle()

    async def _proactive(
        self,
        scope: Scope,
        instruction: str,
        display_name: str,
        kind: TurnKind,
        now: datetime | None,
    ) -> Outgoing | None:
        at = now or datetime.now(UTC)
        conversation_id = await self.ledger.conversation_id(scope)
        try:
            loaded = self.personas.get(scope.persona)
            backend = await self.backends.for_persona(loaded)
            system = await self._system_text(loaded, scope, display_name)
        except (PersonaError, BackendError) as exc:
            await self.ledger.record_failure(
                stage="proactive", error=exc, conversation_id=conversation_id
            )
            self.metrics.failure("proactive")
            return None
        persona = loaded.persona
        user_id = await self.ledger.user_id(
            Actor(platform=scope.platform, id=scope.user, display_name=display_name)
        )
        history = await self.ledger.history(conversation_id, limit=self._history_limit(persona.id))
        window = fit_window(persona.model.context_window or self.context_window, backend.tokens)
        remembered = ""
        if self.memory is not None:
            try:
                remembered = await self.memory.recall(
                    self._recall_request(
                        loaded,
                        backend,
                        scope=scope,
                        user_id=user_id,
                        conversation_id=conversation_id,
                        message_id=0,
                        query=instruction,
                        now=at,
                        history=history,
                    )
                )
            except Exception as exc:
                log.warning("memory.recall_failed", error=str(exc))
        lore = await self._lore_for(loaded, backend, instruction, history, conversation_id)
        cue = (
            "Now you write first, without being asked. "
            f"{instruction.strip()}\nWrite only the message you send, in your own voice."
        )
        prompt = turn_prompt(
            self._builder(backend),
            system=system,
            lore=lore,
            dynamic=(remembered, cue),
            history=[self._prompt_turn(t, self.settings.max_input_chars) for t in history],
            new_message=None,
            budget_tokens=max(64, window - persona.sampling.max_tokens),
            group=not scope.is_direct,
            user_name=display_name,
            persona_name=persona.name,
            now=datetime.now(self.timezone),  # {{time}} in lore, as templates see it
        )
        request = await self._routed(self._chat_request(loaded, prompt.messages), scope)
        started = time.perf_counter()
        checked = OutputContext(scope, loaded, kind, conversation_id, user_id=user_id)
        names = (persona.name, persona.id)
        try:
            async with self._slots:
                text, completion, _ = await asyncio.wait_for(
                    self.safety.moderate(
                        checked, lambda d: self._generate(backend, request, names, d)
                    ),
                    timeout=self.settings.reply_timeout_s,
                )
        except (BackendError, TimeoutError) as exc:
            error = exc if isinstance(exc, BackendError) else BackendError("timed out")
            log.warning("proactive.failed", error=str(error))
            await self.ledger.record_failure(
                stage="proactive", error=error, conversation_id=conversation_id
            )
            self.metrics.failure("proactive")
            return None
        message_id = await self.ledger.record_reply(
            ReplyRecord(
                conversation_id=conversation_id,
                user_id=user_id,
                reply_to_id=None,
                text=text,
                persona_id=persona.id,
                persona_hash=loaded.content_hash,
                backend=backend.name,
                model=completion.model,
                latency_ms=round((time.perf_counter() - started) * 1000, 3),
                prompt_tokens=completion.prompt_tokens or prompt.prompt_tokens,
                completion_tokens=completion.completion_tokens,
                kind=kind.value,
                created_at=at,
            )
        )
        log.info("proactive.generated", message_id=message_id, kind=kind.value)
        return Outgoing(
            scope=scope,
            text=text,
            message_id=message_id,
            persona_hash=loaded.content_hash,
            kind=kind,
        )

    async def drain(self, grace_s: float = 30.0) -> bool:
        """Stop accepting turns and wait up to `grace_s` for those in flight; True if
        all finished."""
        self._accepting = False
        try:
            await asyncio.wait_for(self._idle.wait(), timeout=grace_s)
        except TimeoutError:
            log.warning("engine.drain_timeout", turns_in_flight=self._active)
            return False
        return True

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

    async def _answer(
        self,
        incoming: Incoming,
        text: str,
        stored: StoredIncoming,
        started: float,
        on_delta: DeltaCallback | None,
    ) -> TurnResult:
        scope = incoming.scope
        try:
            loaded = self.personas.get(scope.persona)
        except PersonaError as exc:
            return await self._fail(incoming, stored, "persona", exc, None)
        persona = loaded.persona
        try:
            backend = await self.backends.for_persona(loaded)
        except BackendError as exc:
            return await self._fail(incoming, stored, "backend", exc, loaded)

        history = stored.history
        if history is None:
            history = tuple(
                await self.ledger.history(
                    stored.conversation_id,
                    before_id=stored.message_id,
                    limit=self._history_limit(persona.id),
                )
            )
        verdict = await self.safety.before_turn(
            InputContext(
                incoming,
                text,
                stored.message_id,
                stored.conversation_id,
                stored.user_id,
                loaded,
                first_in_conversation=not history,
                now=incoming.received_at,
            )
        )
        if verdict.answers:  # crisis, disclosure, ...: the model is not asked
            fixed = await record_fixed_reply(
                self.ledger, incoming, stored, loaded, verdict, started=started
            )
            self.metrics.turn(scope.platform, "fixed")
            return TurnResult((fixed,) if fixed is not None else (), stored)
        model_text, cut = truncate(text, self.settings.max_input_chars)
        if cut:
            model_text += (
                f"\n\n[This message was {len(text)} characters long; only the first "
                f"{len(model_text)} are shown.]"
            )
        try:
            system = await self._system_text(loaded, scope, incoming.actor.display_name)
        except PersonaError as exc:
            return await self._fail(incoming, stored, "persona", exc, loaded)

        builder = self._builder(backend)
        window = fit_window(persona.model.context_window or self.context_window, backend.tokens)
        sampling = persona.sampling
        group = not scope.is_direct
        remembered = ""
        if self.memory is not None:
            try:
                with self.metrics.memory_recall.time():
                    remembered = await self.memory.recall(
                        self._recall_request(
                            loaded,
                            backend,
                            scope=scope,
                            user_id=stored.user_id,
                            conversation_id=stored.conversation_id,
                            message_id=stored.message_id,
                            query=model_text,
                            now=incoming.received_at,
                            history=history,
                        )
                    )
            except Exception as exc:  # a turn without memories beats no turn at all
                log.warning("memory.recall_failed", error=str(exc), error_type=type(exc).__name__)
                await self.ledger.record_failure(
                    stage="recall", error=exc, conversation_id=stored.conversation_id
                )
                self.metrics.failure("recall")
        lore = await self._lore_for(loaded, backend, model_text, history, stored.conversation_id)
        prompt = turn_prompt(
            builder,
            system=system,
            lore=lore,
            dynamic=(remembered, verdict.guidance),
            history=[self._prompt_turn(turn, self.settings.max_input_chars) for turn in history],
            new_message=PromptTurn("user", model_text, speaker_label(incoming.actor.display_name)),
            budget_tokens=max(64, window - sampling.max_tokens),
            group=group,
            user_name=incoming.actor.display_name,
            persona_name=persona.name,
            now=datetime.now(self.timezone),  # {{time}} in lore, as templates see it
        )
        request = await self._routed(self._chat_request(loaded, prompt.messages), scope)
        overhead_ms = (time.perf_counter() - started) * 1000
        names = (persona.name, persona.id)
        checked = OutputContext(
            scope,
            loaded,
            TurnKind.MESSAGE,
            stored.conversation_id,
            message_id=stored.message_id,
            user_id=stored.user_id,
            incoming_text=text,
        )
        gen_started = time.perf_counter()
        if on_delta is not None:  # time to first token: the first text the person sees
            on_delta = self._first_token_timer(on_delta, started, scope.platform)
        try:
            async with self._slots:
                reply, completion, moderated = await asyncio.wait_for(
                    self.safety.moderate(
                        checked, lambda d: self._generate(backend, request, names, d), on_delta
                    ),
                    timeout=self.settings.reply_timeout_s,
                )
        except (BackendError, TimeoutError) as exc:
            if isinstance(exc, TimeoutError):
                exc = BackendError(f"no reply within {self.settings.reply_timeout_s:g} s")
            return await self._fail(incoming, stored, "generate", exc, loaded)
        generation_ms = (time.perf_counter() - gen_started) * 1000
        after = time.perf_counter()
        sent = _join(*verdict.notices, reply)  # a first-contact disclosure goes first
        message_id = await self.ledger.record_reply(
            ReplyRecord(
                conversation_id=stored.conversation_id,
                user_id=stored.user_id,
                reply_to_id=stored.message_id,
                text=sent,
                persona_id=persona.id,
                persona_hash=loaded.content_hash,
                backend=backend.name,
                model=completion.model,
                latency_ms=round((after - started) * 1000, 3),
                prompt_tokens=completion.prompt_tokens or prompt.prompt_tokens,
                completion_tokens=completion.completion_tokens,
            )
        )
        if self.memory is not None or self.observers:
            self._observe(
                TurnRecord(
                    scope=scope,
                    user_id=stored.user_id,
                    conversation_id=stored.conversation_id,
                    incoming_id=stored.message_id,
                    reply_id=message_id,
                    incoming_text=text,
                    reply_text=reply,
                    at=incoming.received_at,
                )
            )
        overhead_ms += (time.perf_counter() - after) * 1000
        self._count_answered(scope.platform, overhead_ms, generation_ms, completion, prompt)
        log.info(
            "turn.answered",
            message_id=message_id,
            generation_ms=round(generation_ms, 1),
            prompt_tokens=completion.prompt_tokens,
            history=prompt.history_used,
        )
        out = Outgoing(
            scope=scope,
            text=sent,
            reply_to_platform_id=incoming.platform_message_id,
            message_id=message_id,
            persona_hash=loaded.content_hash,
            safety=None if moderated.ok else "blocked",
        )
        return TurnResult((out,), stored, overhead_ms=overhead_ms, generation_ms=generation_ms)

    async def _generate(
        self,
        backend: LLMBackend,
        request: ChatRequest,
        names: tuple[str, ...],
        on_delta: DeltaCallback | None,
    ) -> tuple[str, Completion]:
        """Generate a clean, non-empty reply; an empty one is retried once."""
        stops = request.sampling.stop
        for attempt in range(2):
            if on_delta is None:
                completion = await backend.complete(request)
                text = clean_reply(completion.text, names=names, stops=stops)
            else:
                completion, text = await self._stream(backend, request, names, on_delta)
            if text:
                return text, completion
            log.warning("turn.empty_completion", attempt=attempt + 1, raw=completion.text[:200])
        raise EmptyCompletion("the model produced no text twice in a row")

    async def _stream(
        self,
        backend: LLMBackend,
        request: ChatRequest,
        names: tuple[str, ...],
        on_delta: DeltaCallback,
    ) -> tuple[Completion, str]:
        cleaner = StreamCleaner(names=names, stops=request.sampling.stop)
        shown: list[str] = []
        completion: Completion | None = None
        async with AsyncExitStack() as stack:
            chunks = backend.stream(request)
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                stack.push_async_callback(aclose)
            async for chunk in chunks:
                piece = cleaner.feed(chunk.delta)
                if piece:
                    shown.append(piece)
                    await on_delta(piece)
                if chunk.completion is not None:
                    completion = chunk.completion
                if cleaner.stopped:
                    break
        tail = cleaner.finish()
        if tail:
            shown.append(tail)
            await on_delta(tail)
        text = "".join(shown).strip()
        if completion is None:
            completion = Completion(
                text=text, model=request.adapter or request.model or backend.model
            )
        return completion, text

    async def _fail(
        self,
        incoming: Incoming,
        stored: StoredIncoming,
        stage: str,
        error: Exception,
        loaded: LoadedPersona | None,
    ) -> TurnResult:
        log.warning("turn.failed", stage=stage, error=str(error), error_type=type(error).__name__)
        self.metrics.failure(stage)
        self.metrics.turn(incoming.scope.platform, "failed")
        await self.ledger.record_failure(
            stage=stage,
            error=error,
            message_id=stored.message_id,
            conversation_id=stored.conversation_id,
        )
        apology = self.settings.apology
        if loaded is not None and loaded.persona.safety.apology:
            apology = loaded.persona.safety.apology
        message_id = await self.ledger.record_reply(
            ReplyRecord(
                conversation_id=stored.conversation_id,
                user_id=stored.user_id,
                reply_to_id=stored.message_id,
                text=apology,
                persona_id=incoming.scope.persona,
                persona_hash=loaded.content_hash if loaded else None,
                kind="apology",
            )
        )
        out = Outgoing(
            scope=incoming.scope,
            text=apology,
            reply_to_platform_id=incoming.platform_message_id,
            message_id=message_id,
            persona_hash=loaded.content_hash if loaded else None,
            is_error=True,
        )
        return TurnResult((out,), stored)

    # -- helpers --------------------------------------------------------------------

    def _count_answered(
        self,
        platform: str,
        overhead_ms: float,
        generation_ms: float,
        completion: Completion,
        prompt: AssembledPrompt,
    ) -> None:
        metrics = self.metrics
        metrics.turn(platform, "answered")
        metrics.overhead.labels(platform).observe(overhead_ms / 1000)
        metrics.generation.labels(platform).observe(generation_ms / 1000)
        metrics.used_tokens(
            platform, completion.prompt_tokens or prompt.prompt_tokens, completion.completion_tokens
        )

    def _first_token_timer(
        self, on_delta: DeltaCallback, started: float, platform: str
    ) -> DeltaCallback:
        """`on_delta` that observes the time from `started` to its first call."""
        first = [True]

        async def timed(piece: str) -> None:
            if first[0]:
                first[0] = False
                self.metrics.first_token.labels(platform).observe(time.perf_counter() - started)
            await on_delta(piece)

        return timed

    def _context(self, scope: Scope, display_name: str) -> PromptContext:
        now: datetime = datetime.now(self.timezone)
        return PromptContext(
            # Names are strangers' data: the template sees them as a speaker label only.
            user_display_name=speaker_label(display_name, fallback="friend"),
            user_id=scope.user,
            platform=scope.platform,
            now=now,
            timezone=str(self.timezone),
            is_direct=scope.is_direct,
        )

    async def _system_text(self, loaded: LoadedPersona, scope: Scope, display_name: str) -> str:
        """The system message's persona part: static head, guidance, per-person tail.

        Rendered in a thread within the persona render bounds, so a slow template
        costs its own turn at most, never the event loop."""
        ctx = self._context(scope, display_name)
        rendered = await render_system_prompt_async(loaded.persona, ctx)
        layout = self._layouts.get(loaded.content_hash)
        if layout is None:
            # Two more renders, once per version: in a thread too. They are for made-up
            # people; a template that fails only for them still serves real ones, with
            # its text in one piece after the guidance.
            try:
                layout = await asyncio.to_thread(SystemLayout.for_persona, loaded.persona)
            except PersonaError:
                layout = SystemLayout(static_head="", guidance=persona_guidance(loaded.persona))
            self._layouts[loaded.content_hash] = layout
        return layout.compose(rendered)

    def _recall_request(
        self,
        loaded: LoadedPersona,
        backend: LLMBackend,
        *,
        scope: Scope,
        user_id: int,
        conversation_id: int,
        message_id: int,
        query: str,
        now: datetime,
        history: Sequence[HistoryTurn],
    ) -> RecallRequest:
        """What memory is asked for this turn: the persona's memory budget (a quarter
        of the context window unless set), counted with the backend's tokenizer, and
        the history already in the prompt, which need not be recalled."""
        persona = loaded.persona
        window = fit_window(persona.model.context_window or self.context_window, backend.tokens)
        return RecallRequest(
            scope=scope,
            user_id=user_id,
            conversation_id=conversation_id,
            message_id=message_id,
            query=query,
            budget_tokens=persona.memory.budget_tokens or window // 4,
            tokens=backend.tokens,
            now=now,
            history_ids=frozenset(turn.message_id for turn in history),
        )

    async def _lore_for(
        self,
        loaded: LoadedPersona,
        backend: LLMBackend,
        latest: str,
        history: Sequence[HistoryTurn],
        conversation_id: int,
    ) -> LoreResult:
        """The persona's lore for this turn, counted with the backend's tokenizer, its
        timers read from and written to the conversation's `lore_timers` (a storage
        failure costs the timers of this turn, never the turn)."""
        # The worlds are part of the version: a persona reloaded after a world changed
        # has the same file hash and new world objects (the book keeps them alive).
        key = (loaded.content_hash, *map(id, loaded.worlds))
        book = self._lore.get(key)
        if book is None:
            book = self._lore[key] = LoreBook(loaded.persona.lore, loaded.worlds)
        if not book.active:
            return LoreResult()
        persona_id = loaded.persona.id
        length, timers = len(history) + 1, dict[str, TimerState]()
        if book.timed:  # the timers cost a read and a write: only for books that use them
            try:
                length, timers = await self._lore_timers.load(conversation_id, persona_id)
            except StorageError as exc:
                log.warning("lore.timers_unreadable", error=str(exc))
        result = lore_turn(book, latest, [t.text for t in history], backend.tokens, length, timers)
        if result.timers:
            try:
                await self._lore_timers.save(conversation_id, persona_id, result.timers)
            except StorageError as exc:
                log.warning("lore.timers_unsaved", error=str(exc))
        return result

    async def _routed(self, request: ChatRequest, scope: Scope) -> ChatRequest:
        """`request` with the adapter `adapters` picks for this conversation (the
        reply's `model` then records it)."""
        if self.adapters is None:
            return request
        chosen = await self.adapters.adapter_for(
            scope.persona, scope.conversation_key, request.adapter
        )
        return request if chosen == request.adapter else replace(request, adapter=chosen)

    @staticmethod
    def _chat_request(loaded: LoadedPersona, messages: tuple[ChatMessage, ...]) -> ChatRequest:
        persona = loaded.persona
        sampling = persona.sampling
        extra = dict(sampling.extra)
        if sampling.repetition_penalty is not None:
            extra.setdefault("repetition_penalty", sampling.repetition_penalty)
        return ChatRequest(
            messages=messages,
            sampling=Sampling(
                temperature=sampling.temperature,
                top_p=sampling.top_p,
                max_tokens=sampling.max_tokens,
                stop=tuple(sampling.stop),
                seed=sampling.seed,
                extra=extra,
            ),
            model=persona.model.name,
            adapter=persona.model.adapter,
        )

    def _observe(self, turn: TurnRecord) -> None:
        """Hand a finished turn to memory and the other observers in the background;
        `drain` waits for them. One failing observer does not stop the others."""
        observers: list[TurnObserver] = [*([self.memory] if self.memory else []), *self.observers]

        async def observe() -> None:
            try:
                for observer in observers:
                    try:
                        await observer.observe(turn)
                    except Exception as exc:
                        log.warning(
                            "turn.observe_failed",
                            observer=type(observer).__name__,
                            error=str(exc),
                            error_type=type(exc).__name__,
                        )
                        await self.ledger.record_failure(
                            stage="observe", error=exc, conversation_id=turn.conversation_id
                        )
                        self.metrics.failure("observe")
            finally:
                self._background.discard(task)
                self._settle()

        self._active += 1
        self._idle.clear()
        task = asyncio.create_task(observe(), name=f"observe-{turn.reply_id}")
        self._background.add(task)

    def _settle(self) -> None:
        self._active -= 1
        if self._active == 0:
            self._idle.set()

    def _history_limit(self, persona_id: str) -> int:
        try:
            limit = self.personas.get(persona_id).persona.memory.history_messages
        except PersonaError:
            limit = None
        return self.settings.history_messages if limit is None else limit

    def _builder(self, backend: LLMBackend) -> PromptBuilder:
        builder = self._builders.get(id(backend.tokens))
        if builder is None:
            builder = PromptBuilder(backend.tokens)
            self._builders[id(backend.tokens)] = builder
        return builder

    @staticmethod
    def _prompt_turn(turn: HistoryTurn, max_chars: int) -> PromptTurn:
        return PromptTurn(
            role=turn.role,
            text=truncate(turn.text, max_chars)[0],
            speaker=speaker_label(turn.display_name),
            key=turn.message_id,
        )


def _join(*parts: str) -> str:
    """The system message's per-turn parts, in order, a blank line apart; empty ones
    left out."""
    return "\n\n".join(part for part in parts if part)
