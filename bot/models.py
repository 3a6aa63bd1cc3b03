"""The database tables (SQLModel). Migrations in `bot/migrations/` create them.

Every time is stored in UTC. Every message row knows its conversation (and so its
scope) and, for replies, the persona version, backend, model, latency and token
counts that produced it, so that exports and audits can say where a line came from.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from enum import StrEnum

from sqlalchemy import (
    Column,
    DateTime,
    Float,
    Index,
    LargeBinary,
    Text,
    Unicode,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel

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


class UTCDateTime(TypeDecorator[datetime]):
    """A point in time, stored as UTC on every database, read back aware.

    Aware values are converted to UTC before they are written: SQLite's DATETIME
    would keep the wall-clock digits and drop the offset (12:00+05:00 read back as
    12:00 UTC), while PostgreSQL's timestamptz converts. Naive values are taken as
    UTC. Reads come back aware in UTC on both (SQLite hands back naive ones). The
    same conversion applies to values compared with the column in a query.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value if value.utcoffset() == _ZERO else value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value if value.utcoffset() == _ZERO else value.astimezone(UTC)


_ZERO = timedelta(0)


def _ts(*, nullable: bool = False, index: bool = False) -> Column[datetime]:
    return Column(UTCDateTime(), nullable=nullable, index=index)


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


class InboxStatus(StrEnum):
    """An inbox event: `pending` (committed, not yet handled) → `done` | `failed`."""

    PENDING = "pending"
    DONE = "done"
    FAILED = "failed"


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


class InboxRow(SQLModel, table=True):
    """A platform event as received, committed before the platform is told it arrived.

    `event_key` is the platform's own id (Telegram `update_id`, Discord message id):
    a redelivery of a key already stored is ignored. The raw payload is kept until
    the event is handled (and cleared after a retention window once `done`), so a
    `failed` one can be replayed after a fix.
    """

    __tablename__ = "inbox_events"
    __table_args__ = (
        UniqueConstraint("platform", "event_key"),
        Index("ix_inbox_events_status_platform_id", "status", "platform", "id"),
        Index("ix_inbox_events_platform_chat_status_id", "platform", "chat", "status", "id"),
        # The burst question (Inbox.newer_from): one author's events of a chat in order.
        Index("ix_inbox_events_platform_chat_author_id", "platform", "chat", "author", "id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    platform: str = Field(max_length=32)
    event_key: str = Field(max_length=256)
    #: The ordering key (chat or channel) when the adapter knew it without parsing.
    chat: str | None = Field(default=None, max_length=256)
    #: Who wrote it, for a plain message in a private chat (read without parsing):
    #: how a turn sees that its author has a later message waiting (a burst).
    author: str | None = Field(default=None, max_length=256)
    status: str = Field(default="pending", max_length=16)
    payload: str = Field(sa_column=Column(Text, nullable=False))
    #: The payload was longer than the limit and is stored cut.
    truncated: bool = False
    reason: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    attempts: int = 0
    received_at: datetime = Field(sa_column=_ts(index=True))
    processed_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    #: The worker (`cluster_workers.id`) that took the event; None: nobody yet, or one
    #: process on SQLite (bot/cluster).
    claimed_by: int | None = None


class ClusterWorkerRow(SQLModel, table=True):
    """One `bot run` process that joined a PostgreSQL database (bot/cluster).

    Whether it is alive is not stored: it holds an advisory lock keyed by `id` for
    as long as its connection lives. `adopted_by` names the survivor that took over
    its unfinished work after it died; `stopped_at` is set by a clean stop too.
    """

    __tablename__ = "cluster_workers"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=200)
    host: str = Field(max_length=200)
    pid: int
    started_at: datetime = Field(sa_column=_ts())
    seen_at: datetime = Field(sa_column=_ts())
    stopped_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True, index=True))
    adopted_by: int | None = None


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


class SafetyRecord(SQLModel, table=True):
    """A safety hit or block (bot/safety): a crisis, a disclosure, a blocked reply.

    Crisis rows are also the moderators' queue (unreviewed, newest first) and hold the
    alert's delivery state and the proactive pause for the person."""

    __tablename__ = "safety_events"
    __table_args__ = (
        Index("ix_safety_events_queue", "check_name", "reviewed_at", "id"),
        Index("ix_safety_events_person", "user_id", "persona_id", "check_name"),
    )

    id: int | None = Field(default=None, primary_key=True)
    created_at: datetime = Field(sa_column=_ts(index=True))
    platform: str = Field(max_length=32)
    platform_user_id: str = Field(max_length=256)
    persona_id: str = Field(max_length=64)
    # Plain ids, no foreign keys: retention and forget delete messages, and the
    # record of a crisis outlives them (its excerpt is cut to a short phrase).
    conversation_id: int | None = None
    message_id: int | None = None
    user_id: int | None = None
    check_name: str = Field(max_length=32)
    verdict: str = Field(max_length=32)
    reason: str = Field(sa_column=Column(Text, nullable=False))
    #: JSON: language, detection layer, matched phrase, ...
    details: str = Field(default="{}", sa_column=Column(Text, nullable=False))
    #: Proactive messages to this person and persona wait until then (crisis).
    pause_until: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    #: none | pending | sent | failed | queued (no channel configured: the queue only)
    alert_status: str = Field(default="none", max_length=16)
    alert_reason: str | None = Field(default=None, max_length=512)
    reviewed_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    reviewed_by: str | None = Field(default=None, max_length=256)


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


class PersonLimit(SQLModel, table=True):
    """A moderator's standing decision about one person (bot/safety/limits.py):
    muted (until a time, or for good), banned, or exempt from the rate limits, for
    one persona or for all (`persona_id` "*")."""

    __tablename__ = "person_limits"
    __table_args__ = (UniqueConstraint("platform", "platform_user_id", "persona_id"),)

    id: int | None = Field(default=None, primary_key=True)
    platform: str = Field(max_length=32)
    platform_user_id: str = Field(max_length=256)
    persona_id: str = Field(max_length=64)
    muted: bool = False
    #: A mute ends by itself then (None: until unmuted).
    muted_until: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    banned: bool = False
    exempt: bool = Field(default=False, description="No rate or token limits.")
    reason: str | None = Field(default=None, max_length=512)
    updated_at: datetime = Field(sa_column=_ts())
    updated_by: str = Field(max_length=256)


class ModerationAction(SQLModel, table=True):
    """The audit of every moderator action: who did what to whom, when, and the
    person's standing before and after (JSON)."""

    __tablename__ = "moderation_actions"
    __table_args__ = (
        Index("ix_moderation_actions_target", "platform", "target_user_id"),
        # One action per inbox event: a command run again after a crash (its reply was
        # not stored yet) finds its first run here instead of acting twice.
        Index("ux_moderation_actions_event", "event_id", unique=True),
    )

    id: int | None = Field(default=None, primary_key=True)
    created_at: datetime = Field(sa_column=_ts(index=True))
    platform: str = Field(max_length=32)
    moderator_id: str = Field(max_length=256)
    action: str = Field(max_length=16)
    target_user_id: str = Field(max_length=256)
    persona_id: str = Field(max_length=64)
    before: str = Field(default="{}", sa_column=Column(Text, nullable=False))
    after: str = Field(default="{}", sa_column=Column(Text, nullable=False))
    reason: str | None = Field(default=None, max_length=512)
    #: The inbox event (`inbox_events.id`) whose command did this; None from elsewhere.
    event_id: int | None = Field(default=None)


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


class DashboardModerator(SQLModel, table=True):
    """An account of the moderators' dashboard (bot/web/dashboard): a role, and for a
    moderator the personas it may change (JSON list; NULL: every persona). Password
    accounts hold an argon2 hash; Discord sign-ins hold the Discord user id."""

    __tablename__ = "dashboard_moderators"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=64, unique=True)
    role: str = Field(max_length=16)
    personas: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    password_hash: str | None = Field(default=None, max_length=255)
    discord_id: str | None = Field(default=None, max_length=32, unique=True)
    created_at: datetime = Field(sa_column=_ts())


class DashboardSession(SQLModel, table=True):
    """A signed-in browser: the SHA-256 of its cookie (never the cookie itself), its
    CSRF token, and when it expires."""

    __tablename__ = "dashboard_sessions"

    token_hash: str = Field(max_length=64, primary_key=True)
    moderator_id: int = Field(
        foreign_key="dashboard_moderators.id", index=True, ondelete="CASCADE"
    )
    csrf: str = Field(max_length=64)
    created_at: datetime = Field(sa_column=_ts())
    expires_at: datetime = Field(sa_column=_ts(index=True))


class DashboardLoginFailure(SQLModel, table=True):
    """A failed sign-in, under one key per limit (`name:NAME`, `ip:ADDRESS`), so every
    worker counts the same failures."""

    __tablename__ = "dashboard_login_failures"
    __table_args__ = (Index("ix_dashboard_login_failures_key_at", "key", "at"),)

    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(max_length=128)
    at: datetime = Field(sa_column=_ts())


class DashboardAudit(SQLModel, table=True):
    """Every change made through the dashboard: who, what, to what, when, and the
    thing before and after (JSON)."""

    __tablename__ = "dashboard_audit"

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(sa_column=_ts(index=True))
    actor: str = Field(max_length=64, index=True)
    action: str = Field(max_length=64)
    target: str = Field(max_length=255, index=True)
    before: str = Field(default="null", sa_column=Column(Text, nullable=False))
    after: str = Field(default="null", sa_column=Column(Text, nullable=False))


class InteractionAnswer(SQLModel, table=True):
    """The answer to one interaction (a Discord slash command), beside its inbox event.

    A row appears when the interaction is deferred ("thinking…", `status` `deferred`,
    no text yet) or when its reply is stored with the event's done mark (`generated`);
    then `sending` (`parts_sent` of its split parts confirmed) → `delivered` |
    `undeliverable` | `expired` (settled: the text cleared), each with its `reason`.
    `created_at` is the interaction's own time (Discord's clock): its token lives 15
    minutes from then.
    """

    __tablename__ = "interaction_answers"
    __table_args__ = (Index("ix_interaction_answers_platform_status", "platform", "status"),)

    #: The event's id, never one of its own (no sequence on PostgreSQL).
    event_id: int = Field(
        primary_key=True, foreign_key="inbox_events.id", sa_column_kwargs={"autoincrement": False}
    )
    platform: str = Field(max_length=32)
    status: str = Field(max_length=16)
    text: str = Field(default="", sa_column=Column(Text, nullable=False))
    parts_sent: int = 0
    ephemeral: bool = True
    deferred_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    reason: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    created_at: datetime = Field(sa_column=_ts())
    updated_at: datetime = Field(sa_column=_ts())
