"""The engine's seams and records: the protocols it is handed (personas, backends,
memory, observers, adapter choice) and the frozen records it passes through them.

Re-exported by `bot.engine`; callers keep importing them from there.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from bot.llm.base import LLMBackend, TokenCounter
from bot.memory.ledger import StoredIncoming
from bot.messages import Outgoing, Scope
from bot.personas import LoadedPersona

__all__ = [
    "AdapterChooser",
    "BackendSource",
    "DeltaCallback",
    "MemorySource",
    "PersonaSource",
    "RecallRequest",
    "TurnObserver",
    "TurnRecord",
    "TurnResult",
]

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
