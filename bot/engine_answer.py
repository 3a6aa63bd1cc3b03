"""Answering one stored, claimed incoming message: persona and backend, safety before
the turn, prompt, generation under the concurrency limit and moderation, the reply
stored (or the failure and an apology), metrics, and the turn handed to observers.

A mixin of `PersonaEngine` (bot/engine.py), which owns the state declared here.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime

import structlog

from bot.aio import wait_for
from bot.engine_generate import Generation
from bot.engine_inflight import InFlight
from bot.engine_prompt import PromptAssembly
from bot.engine_types import BackendSource, DeltaCallback, TurnRecord, TurnResult
from bot.errors import BackendError, PersonaError
from bot.llm.base import Completion
from bot.llm.tokens import fit_window
from bot.memory.ledger import ReplyRecord, StoredIncoming
from bot.messages import Incoming, Outgoing, TurnKind
from bot.personas import LoadedPersona
from bot.prompt import AssembledPrompt, PromptTurn, speaker_label, turn_prompt
from bot.safety.replies import record_fixed_reply
from bot.safety.stage import InputContext, OutputContext, SafetyStage
from bot.text import truncate

log = structlog.get_logger("bot.engine")


class Answering(PromptAssembly, Generation, InFlight):
    """The answer to one incoming message, from persona to stored reply."""

    backends: BackendSource
    safety: SafetyStage
    _slots: asyncio.Semaphore

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
                reply, completion, moderated = await wait_for(
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


def _join(*parts: str) -> str:
    """The system message's per-turn parts, in order, a blank line apart; empty ones
    left out."""
    return "\n\n".join(part for part in parts if part)
