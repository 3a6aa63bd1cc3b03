"""The tables of the durable path (bot/inbox, bot/cluster): every platform event as
it arrived, the workers sharing one database, and the answers to interactions."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import Column, Index, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from bot.model_types import ts as _ts

__all__ = ["ClusterWorkerRow", "InboxRow", "InboxStatus", "InteractionAnswer"]


class InboxStatus(StrEnum):
    """An inbox event: `pending` (committed, not yet handled) → `done` | `failed`."""

    PENDING = "pending"
    DONE = "done"
    FAILED = "failed"


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
