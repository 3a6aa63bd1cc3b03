"""The database tables (SQLModel). Migrations in `bot/migrations/` create them.

The inbox's tables are in models_inbox.py, safety and moderation's in
models_safety.py, the dashboard's in models_dashboard.py; every table is importable
from here, and importing this module registers them all on `SQLModel.metadata`.

Every time is stored in UTC. Every message row knows its conversation (and so its
scope) and, for replies, the persona version, backend, model, latency and token
counts that produced it, so that exports and audits can say where a line came from.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import (
    Column,
    Float,
    Index,
    LargeBinary,
    Text,
    Unicode,
    UniqueConstraint,
)
from sqlmodel import Field, SQLModel

from bot.model_types import UTCDateTime
from bot.model_types import ts as _ts
from bot.models_dashboard import (
    DashboardAudit,
    DashboardLoginFailure,
    DashboardModerator,
    DashboardSession,
)
from bot.models_inbox import ClusterWorkerRow, InboxRow, InboxStatus, InteractionAnswer
from bot.models_safety import ModerationAction, PersonLimit, SafetyRecord

__all__ = [
    "ClusterWorkerRow",
    "ConsentEvent",
    "Conversation",
    "DashboardAudit",
    "DashboardLoginFailure",
    "DashboardModerator",
    "DashboardSession",
    "Direction",
    "Failure",
    "Feedback",
    "FollowUp",
    "InboxRow",
    "InboxStatus",
    "InteractionAnswer",
    "LoraAdapterRow",
    "Message",
    "MessageStatus",
    "ModerationAction",
    "PersonLimit",
    "PersonaBinding",
    "PersonaVersion",
    "SafetyRecord",
    "SchedulerJob",
    "UTCDateTime",
    "User",
]


class Direction(StrEnum):
    """Who wrote a message: a person (`in`) or the persona (`out`)."""

    IN = "in"
    OUT = "out"


class MessageStatus(StrEnum):
    """Where a message is in its life.

    Incoming: `received` (stored) → `answering` (a reply is being generated) →
    `answered` | `failed` | `expired` (too old when the bot came back), or `ignored`
    (not addressed to the bot). Outgoing: `generated` (stored, not sent) → `sending`
    (parts leaving; `parts_sent` of them confirmed) → `delivered` | `undeliverable`.
    Every step is committed, so a restart knows where each message stood.
    """

    RECEIVED = "received"
    ANSWERING = "answering"
    ANSWERED = "answered"
    FAILED = "failed"
    EXPIRED = "expired"
    IGNORED = "ignored"
    GENERATED = "generated"
    SENDING = "sending"
    DELIVERED = "delivered"
    UNDELIVERABLE = "undeliverable"


class User(SQLModel, table=True):
    """A person on one platform, keyed by the platform's user id (never the name)."""

    __tablename__ = "users"
    __table_args__ = (UniqueConstraint("platform", "platform_user_id"),)

    id: int | None = Field(default=None, primary_key=True)
    platform: str = Field(max_length=32)
    platform_user_id: str = Field(max_length=256)
    display_name: str = Field(default="", max_length=256)
    is_bot: bool = False
    created_at: datetime = Field(sa_column=_ts())
    last_seen_at: datetime = Field(sa_column=_ts())
    opted_out: bool = Field(default=False, description="No training use, no proactive messages.")
    timezone: str | None = Field(default=None, max_length=64)
    unreachable_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    unreachable_reason: str | None = Field(default=None, max_length=512)
    #: A mature persona's age question (bot/safety/rating.py): "adult" or "minor".
    age_answer: str | None = Field(default=None, max_length=16)
    age_answered_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))


class Conversation(SQLModel, table=True):
    """One place a persona talks: a DM, a channel or a thread, with one persona."""

    __tablename__ = "conversations"
    #: The dashboard lists conversations by latest activity, a page at a time (0015).
    __table_args__ = (Index("ix_conversations_last_message_at_id", "last_message_at", "id"),)

    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(max_length=1024, unique=True)
    platform: str = Field(max_length=32)
    space: str | None = Field(default=None, max_length=256)
    channel: str = Field(max_length=256)
    thread: str | None = Field(default=None, max_length=256)
    persona_id: str = Field(max_length=64, index=True)
    is_direct: bool
    created_at: datetime = Field(sa_column=_ts())
    last_message_at: datetime = Field(sa_column=_ts())


class Message(SQLModel, table=True):
    """A message in either direction: the ledger every other part reads."""

    __tablename__ = "messages"
    __table_args__ = (
        Index("ix_messages_conversation_id_id", "conversation_id", "id"),
        Index("ix_messages_platform_ref", "conversation_id", "platform_message_id"),
        Index("ix_messages_status", "status"),
    )

    id: int | None = Field(default=None, primary_key=True)
    conversation_id: int = Field(foreign_key="conversations.id")
    user_id: int | None = Field(default=None, foreign_key="users.id", index=True)
    direction: str = Field(max_length=3)
    kind: str = Field(default="message", max_length=16)
    status: str = Field(max_length=16)
    text: str = Field(sa_column=Column(Text, nullable=False))
    truncated: bool = False
    platform_message_id: str | None = Field(default=None, max_length=256)
    reply_to_id: int | None = Field(default=None, foreign_key="messages.id", index=True)
    persona_id: str = Field(max_length=64)
    persona_hash: str | None = Field(default=None, max_length=64)
    backend: str | None = Field(default=None, max_length=32)
    model: str | None = Field(default=None, max_length=256)
    latency_ms: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    created_at: datetime = Field(sa_column=_ts(index=True))
    #: Outgoing: how many split parts the platform confirmed (a restart sends the rest).
    parts_sent: int = Field(default=0)
    edited_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    deleted_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    #: Set by a moderator: the message stays in the ledger but never in training data.
    flagged_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    flag_reason: str | None = Field(default=None, max_length=512)
    #: A moderator's corrected reply (the dashboard): `bot export` pairs it, as chosen,
    #: with this reply, as rejected (DPO source "correction"). Goes with the row.
    corrected_text: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    corrected_by: str | None = Field(default=None, max_length=64)
    corrected_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))


class Failure(SQLModel, table=True):
    """Something that went wrong, with its reason: failures are recorded, not swallowed."""

    __tablename__ = "failures"

    id: int | None = Field(default=None, primary_key=True)
    message_id: int | None = Field(default=None, foreign_key="messages.id", index=True)
    conversation_id: int | None = Field(default=None, foreign_key="conversations.id")
    stage: str = Field(max_length=32)
    error_type: str = Field(max_length=128)
    reason: str = Field(sa_column=Column(Text, nullable=False))
    created_at: datetime = Field(sa_column=_ts(index=True))


class PersonaVersion(SQLModel, table=True):
    """Every persona file version that was ever served, by content hash."""

    __tablename__ = "persona_versions"
    __table_args__ = (UniqueConstraint("persona_id", "content_hash"),)

    id: int | None = Field(default=None, primary_key=True)
    persona_id: str = Field(max_length=64)
    content_hash: str = Field(max_length=64, index=True)
    path: str = Field(max_length=1024)
    source: str = Field(sa_column=Column(Text, nullable=False))
    loaded_at: datetime = Field(sa_column=_ts())


class ConsentEvent(SQLModel, table=True):
    """Every opt-out and opt-in, in order: exports read consent as of each message."""

    __tablename__ = "consent_events"

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(foreign_key="users.id", index=True)
    opted_in: bool
    at: datetime = Field(sa_column=_ts())


class Feedback(SQLModel, table=True):
    """A reaction a person put on (or took off) one of the persona's messages."""

    __tablename__ = "feedback"

    id: int | None = Field(default=None, primary_key=True)
    message_id: int = Field(foreign_key="messages.id", index=True)
    user_id: int = Field(foreign_key="users.id")
    emoji: str = Field(max_length=64)
    added: bool = True
    at: datetime = Field(sa_column=_ts())


class PersonaBinding(SQLModel, table=True):
    """Which persona speaks in a place, when someone switched it with `/persona`."""

    __tablename__ = "persona_bindings"

    id: int | None = Field(default=None, primary_key=True)
    place: str = Field(max_length=1024, unique=True)
    persona_id: str = Field(max_length=64)
    set_by: int | None = Field(default=None, foreign_key="users.id")
    at: datetime = Field(sa_column=_ts())


class FollowUp(SQLModel, table=True):
    """Something the persona decided to ask about later ("how did the exam go?")."""

    __tablename__ = "followups"

    id: int | None = Field(default=None, primary_key=True)
    conversation_id: int = Field(foreign_key="conversations.id", index=True)
    user_id: int = Field(foreign_key="users.id")
    persona_id: str = Field(max_length=64)
    source_message_id: int | None = Field(default=None, foreign_key="messages.id")
    text: str = Field(sa_column=Column(Text, nullable=False))
    due_at: datetime = Field(sa_column=_ts(index=True))
    #: pending -> sent | skipped (the policy said no) | failed
    status: str = Field(default="pending", max_length=16)
    reason: str | None = Field(default=None, max_length=256)
    created_at: datetime = Field(sa_column=_ts())
    fired_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))


class SchedulerJob(SQLModel, table=True):
    """APScheduler's job store table, declared here so migrations own its shape."""

    __tablename__ = "apscheduler_jobs"

    id: str = Field(sa_column=Column("id", Unicode(191), primary_key=True))
    next_run_time: float | None = Field(default=None, sa_column=Column(Float(25), index=True))
    job_state: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


class LoraAdapterRow(SQLModel, table=True):
    """A LoRA adapter registered for serving (bot/train/registry.py, `bot adapters`).

    `status`: candidate → canary (a `canary_share` of the persona's conversations) →
    serving (all of them) → retired (replaced by a newer one), or rolled_back. The
    name is what vLLM serves it as, and what each reply it wrote records as `model`.
    """

    __tablename__ = "lora_adapters"
    __table_args__ = (Index("ix_lora_adapters_persona_status", "persona_id", "status"),)

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=64, unique=True)
    persona_id: str = Field(max_length=64)
    path: str = Field(sa_column=Column(Text, nullable=False))
    sha256: str = Field(max_length=64)
    base_model: str = Field(sa_column=Column(Text, nullable=False))
    rank: int
    #: train_report.json as it was at deploy time ("{}" when there was none).
    report: str = Field(default="{}", sa_column=Column(Text, nullable=False))
    status: str = Field(max_length=16)
    canary_share: float = 0.0
    #: Deployed with --force past a failed or missing gate.
    forced: bool = False
    #: Why it last changed status (a rollback's comparison, "promoted by hand", ...).
    reason: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    created_at: datetime = Field(sa_column=_ts())
    promoted_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    retired_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))


class LoreTimerRow(SQLModel, table=True):
    """A lore entry's timed effects in one conversation (bot/personas/lorebook/timers.py):
    conversation lengths, in messages, until which it stays and cannot fire again."""

    __tablename__ = "lore_timers"

    conversation_id: int = Field(
        foreign_key="conversations.id", primary_key=True, ondelete="CASCADE"
    )
    persona_id: str = Field(max_length=64, primary_key=True)
    entry_key: str = Field(max_length=200, primary_key=True)
    sticky_until: int = 0
    cooldown_until: int = 0


class GroupChannelRow(SQLModel, table=True):
    """A group channel's state shared by every worker (bot/groups/store.py): the bot
    chain, the last minute's replies per second and each persona's last unprompted
    reply (JSON text), and when it was last written (seconds since the epoch)."""

    __tablename__ = "group_channels"

    channel_key: str = Field(max_length=255, primary_key=True)
    bot_chain: int = 0
    replies: str = Field(default="{}", sa_column=Column(Text, nullable=False))
    unprompted: str = Field(default="{}", sa_column=Column(Text, nullable=False))
    updated_at: float = Field(sa_column=Column(Float(53), nullable=False, index=True))
