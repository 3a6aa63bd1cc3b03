"""Messages the persona starts itself: the greeting for someone who just arrived, and
proactive turns (habits, check-ins, follow-ups) generated in the conversation's line.

A mixin of `PersonaEngine` (bot/engine.py), which owns the state declared here.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import structlog

from bot.aio import wait_for
from bot.engine_generate import Generation
from bot.engine_inflight import InFlight
from bot.engine_prompt import PromptAssembly
from bot.engine_types import BackendSource
from bot.errors import BackendError, PersonaError
from bot.llm.tokens import fit_window
from bot.memory.ledger import ReplyRecord
from bot.messages import Actor, Outgoing, Scope, TurnKind
from bot.personas.greetings import render_first_message_async
from bot.prompt import turn_prompt
from bot.safety.stage import OutputContext, SafetyStage
from bot.turns import ConversationLine

log = structlog.get_logger("bot.engine")


class PersonaInitiated(PromptAssembly, Generation, InFlight):
    """Greetings and proactive turns, stored with their own kind."""

    backends: BackendSource
    safety: SafetyStage
    _slots: asyncio.Semaphore
    _line: ConversationLine

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
                text, completion, _ = await wait_for(
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
