"""The normalized types every part of the bot speaks.

Adapters turn platform events into these at the edge and deliver these back; the
engine, memory, scheduler and exports never see a platform payload. Every model is
frozen: a message that has been accepted does not change under anyone's feet.

This module imports nothing platform-specific and nothing else of the project.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

__all__ = [
    "Actor",
    "Attachment",
    "Incoming",
    "Outgoing",
    "Reaction",
    "Scope",
    "TurnKind",
]

Id = Annotated[str, StringConstraints(min_length=1, max_length=256)]


def utcnow() -> datetime:
    """The current time, timezone-aware in UTC (the only kind of time we store)."""
    return datetime.now(UTC)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Scope(_Frozen):
    """Where a message lives: the unit of ordering, history and memory isolation.

    `space` is a Discord guild or a Telegram group; it is None for a direct message.
    `channel` is the channel or chat (a DM has its own channel id). `thread` is a
    Discord thread inside `channel`. `user` is the platform user id of the person the
    turn is about (the speaker, or the addressee of a proactive message).
    """

    platform: Id
    space: Id | None = None
    channel: Id
    thread: Id | None = None
    user: Id
    persona: Id

    @property
    def is_direct(self) -> bool:
        """True for a one-to-one conversation (no server or group around it)."""
        return self.space is None

    @property
    def conversation_key(self) -> str:
        """Identifies the conversation: everyone in one channel/thread shares it.

        The user is part of the key only in a DM, where the channel already is the
        user's own; in a server channel the conversation is the channel's.
        """
        parts = (self.platform, self.space or "-", self.channel, self.thread or "-", self.persona)
        return "/".join(p.replace("/", "%2F") for p in parts)

    def with_persona(self, persona: str) -> Scope:
        """The same place, spoken to by another persona."""
        return self.model_copy(update={"persona": persona})


class Actor(_Frozen):
    """A person (or another bot) on a platform, keyed by platform id, never by name."""

    platform: Id
    id: Id
    display_name: str = Field(default="", max_length=256)
    is_bot: bool = False


class Attachment(_Frozen):
    """A file or sticker, described as text: the model sees only the description."""

    kind: str = Field(description="image, file, sticker, voice, video, ...")
    filename: str | None = None
    description: str = ""
    size_bytes: int | None = None


class TurnKind(StrEnum):
    """Why a turn happens: a person spoke, or the persona speaks first."""

    MESSAGE = "message"
    PROACTIVE = "proactive"
    GREETING = "greeting"


class Incoming(_Frozen):
    """A message a person sent that the persona may answer."""

    scope: Scope
    actor: Actor
    text: str = ""
    attachments: tuple[Attachment, ...] = ()
    platform_message_id: str | None = None
    reply_to_platform_id: str | None = None
    addressed_to_bot: bool = Field(
        default=True,
        description="Mentioned, replied to, in a DM or an always-on channel: answer it.",
    )
    received_at: datetime = Field(default_factory=utcnow)
    kind: TurnKind = TurnKind.MESSAGE
    age_restricted: bool | None = Field(
        default=None,
        description="The place is marked for adults (Discord's age-restricted channel); "
        "None: the platform has no such mark or it is not known.",
    )

    def dedupe_key(self) -> str:
        """A stable key for at-most-once handling of platform redeliveries."""
        raw = f"{self.scope.conversation_key}|{self.platform_message_id or ''}"
        return hashlib.sha256(raw.encode()).hexdigest()[:32]


class Outgoing(_Frozen):
    """A message the persona sends; adapters deliver it within platform limits."""

    scope: Scope
    text: str
    reply_to_platform_id: str | None = None
    message_id: int | None = Field(default=None, description="The ledger row of this reply.")
    persona_hash: str | None = None
    kind: TurnKind = TurnKind.MESSAGE
    is_error: bool = Field(default=False, description="An apology standing in for a failed reply.")
    safety: str | None = Field(
        default=None,
        description="Set when the safety stage answered instead of the model: crisis, "
        "disclosure, blocked (the deflection), ...",
    )


class Reaction(_Frozen):
    """An emoji a person put on (or took off) a message: feedback on a reply."""

    scope: Scope
    actor: Actor
    platform_message_id: str
    emoji: str
    added: bool = True
    at: datetime = Field(default_factory=utcnow)
