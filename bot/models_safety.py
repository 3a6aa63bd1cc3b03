"""The tables of safety and moderation (bot/safety): safety events, moderators'
standing decisions about people, and the audit of their actions."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, Index, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from bot.model_types import ts as _ts

__all__ = ["ModerationAction", "PersonLimit", "SafetyRecord"]


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
