"""The records the ledger hands out and takes: a stored incoming message, a turn of
history, a reply to store, and an unfinished message a restart finds."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from bot.messages import Actor, Incoming, Scope, TurnKind
from bot.models import MessageStatus

__all__ = ["HistoryTurn", "ReplyRecord", "StoredIncoming", "Unfinished"]


@dataclass(frozen=True, slots=True)
class StoredIncoming:
    """An incoming message as committed to the ledger."""

    message_id: int
    conversation_id: int
    user_id: int
    duplicate: bool = False
    #: The conversation before this message, when asked for with `with_history`.
    history: tuple[HistoryTurn, ...] | None = None


@dataclass(frozen=True, slots=True)
class HistoryTurn:
    """One earlier message of a conversation, as the prompt needs it."""

    message_id: int
    role: str  # "user" or "assistant"
    text: str
    display_name: str
    user_platform_id: str | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class ReplyRecord:
    """What is stored about a reply the persona produced."""

    conversation_id: int
    user_id: int | None
    reply_to_id: int | None
    text: str
    persona_id: str
    persona_hash: str | None = None
    backend: str | None = None
    model: str | None = None
    latency_ms: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    kind: str = TurnKind.MESSAGE.value
    created_at: datetime | None = None
    #: `generated` for a reply still to be sent (the outbox delivers it); imported
    #: history is stored `delivered`, so no restart ever sends it.
    status: MessageStatus = MessageStatus.GENERATED


@dataclass(frozen=True, slots=True)
class Unfinished:
    """A message a stop or crash left unfinished: an incoming message with no reply
    yet (`received`/`answering`), or a reply not yet delivered (`generated`/`sending`,
    `parts_sent` of its parts confirmed)."""

    message_id: int
    conversation_id: int
    user_id: int | None
    direction: str
    kind: str
    status: str
    text: str
    created_at: datetime
    scope: Scope
    display_name: str = ""
    parts_sent: int = 0
    platform_message_id: str | None = None
    #: For a reply: the platform id of the message it answers (to quote it).
    reply_to_platform_id: str | None = None
    persona_hash: str | None = None

    @property
    def incoming(self) -> Incoming:
        """The incoming message as the engine would have been handed it."""
        return Incoming(
            scope=self.scope,
            actor=Actor(
                platform=self.scope.platform, id=self.scope.user, display_name=self.display_name
            ),
            text=self.text,
            platform_message_id=self.platform_message_id,
            addressed_to_bot=True,
            received_at=self.created_at,
        )

    @property
    def stored(self) -> StoredIncoming:
        """The ledger ids of an incoming message, as the engine's turn carries them."""
        assert self.user_id is not None
        return StoredIncoming(self.message_id, self.conversation_id, self.user_id)
