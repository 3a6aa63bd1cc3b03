"""What goes into a turn's prompt: the persona's system text, recall request, lore,
history limit and turns, and the chat request routed to a conversation's adapter.

A mixin of `PersonaEngine` (bot/engine.py), which owns the state declared here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from zoneinfo import ZoneInfo

import structlog

from bot.config import EngineSettings
from bot.engine_types import AdapterChooser, PersonaSource, RecallRequest
from bot.errors import PersonaError, StorageError
from bot.llm.base import ChatMessage, ChatRequest, LLMBackend, Sampling
from bot.llm.tokens import fit_window
from bot.memory.ledger import HistoryTurn
from bot.messages import Scope
from bot.personas import LoadedPersona, LoreBook, PromptContext, render_system_prompt_async
from bot.personas.lorebook import LoreResult, TimerState
from bot.personas.lorebook.timers import LoreTimers, lore_turn
from bot.prompt import PromptBuilder, PromptTurn, SystemLayout, persona_guidance, speaker_label
from bot.text import truncate

log = structlog.get_logger("bot.engine")


class PromptAssembly:
    """The engine's prompt parts, cached per persona version and per tokenizer."""

    personas: PersonaSource
    settings: EngineSettings
    context_window: int
    timezone: ZoneInfo
    adapters: AdapterChooser | None
    _builders: dict[int, PromptBuilder]
    _layouts: dict[str, SystemLayout]
    _lore: dict[tuple[object, ...], LoreBook]
    _lore_timers: LoreTimers

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
