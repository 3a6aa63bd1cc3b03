"""The memory tables: facts, summaries and embedding vectors (SQLModel).

Every row carries the person (`user_id`), the persona and the conversation it was
learned in, which is what recall filters on (see `bot.memory.scopes`). The FTS5
indexes over messages and facts are virtual tables created by migration 0002 with
raw SQL and kept in sync by triggers; SQLAlchemy does not model them, so
`include_object` hides them from Alembic's comparison.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Column, Index, LargeBinary, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from bot.models import UTCDateTime

__all__ = [
    "FTS_TABLES",
    "PG_ONLY_COLUMNS",
    "PG_POSTINGS",
    "Embedding",
    "Fact",
    "Summary",
    "include_object",
]

#: The FTS5 virtual tables migration 0002 creates (their shadow tables share the prefix).
FTS_TABLES = ("messages_fts", "messages_fts_tri", "facts_fts", "facts_fts_tri")
#: Columns migration 0011 adds on PostgreSQL only, derived from portable ones
#: (`search_words` is generated from `text`; `embedding` is filled from `vector`):
#: not modelled, not copied by `bot db copy` (it fills them: `backfill_vectors`).
PG_ONLY_COLUMNS = {"messages": ("search_words",), "facts": ("search_words",),
                   "embeddings": ("embedding",)}  # fmt: skip
#: The postings tables migration 0021 creates on PostgreSQL only, by source table:
#: derived from it by triggers, not modelled, not copied (the target's triggers
#: fill them as the source rows are inserted).
PG_POSTINGS = {"messages": "message_terms", "facts": "fact_terms"}
#: Indexes migration 0011 creates on PostgreSQL only (over those columns).
_PG_ONLY_INDEX_PREFIXES = (
    "ix_messages_search_words",
    "ix_messages_text_trgm",
    "ix_facts_search_words",
    "ix_facts_text_trgm",
    "ix_messages_user_conversation",
    "ix_embeddings_scope",
    "ix_embeddings_hnsw_",
)


def _ts(*, nullable: bool = False) -> Column[datetime]:
    return Column(UTCDateTime(), nullable=nullable)


class Fact(SQLModel, table=True):
    """Something a person told the persona, extracted from their messages.

    `superseded_by` points at the newer fact that replaced this one ("moved to
    Berlin" supersedes "lives in Paris"); a superseded fact is never recalled.
    """

    __tablename__ = "facts"
    __table_args__ = (Index("ix_facts_user_persona", "user_id", "persona_id"),)

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(foreign_key="users.id")
    persona_id: str = Field(max_length=64)
    conversation_id: int = Field(foreign_key="conversations.id", index=True)
    is_direct: bool
    text: str = Field(sa_column=Column(Text, nullable=False))
    #: JSON list of the ledger message ids the fact was read from.
    source_ids: str = Field(sa_column=Column(Text, nullable=False))
    confidence: float = 1.0
    importance: float = 0.5
    created_at: datetime = Field(sa_column=_ts())
    updated_at: datetime = Field(sa_column=_ts())
    superseded_by: int | None = Field(default=None, foreign_key="facts.id")


class Summary(SQLModel, table=True):
    """A summary of one person's stretch of a conversation (messages first..last)."""

    __tablename__ = "summaries"
    __table_args__ = (Index("ix_summaries_conversation_user", "conversation_id", "user_id"),)

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(foreign_key="users.id", index=True)
    persona_id: str = Field(max_length=64)
    conversation_id: int = Field(foreign_key="conversations.id")
    text: str = Field(sa_column=Column(Text, nullable=False))
    first_message_id: int
    last_message_id: int
    start_at: datetime = Field(sa_column=_ts())
    end_at: datetime = Field(sa_column=_ts())
    created_at: datetime = Field(sa_column=_ts())


class Embedding(SQLModel, table=True):
    """A dense vector (float32, little-endian) of a message, fact or summary.

    A row of kind `forget` holds no vector: it tells processes that cache the
    conversation's vectors that some were forgotten (`bot.memory.forget`).
    """

    __tablename__ = "embeddings"
    __table_args__ = (
        UniqueConstraint("kind", "item_id", "model"),
        Index("ix_embeddings_user_model_id", "user_id", "model", "id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    kind: str = Field(max_length=16)
    item_id: int
    user_id: int = Field(foreign_key="users.id")
    conversation_id: int = Field(foreign_key="conversations.id")
    model: str = Field(max_length=256)
    dim: int
    vector: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    created_at: datetime = Field(sa_column=_ts())


def include_object(
    obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
) -> bool:
    """Alembic hook: leave the FTS5 virtual tables (and their shadow tables) and
    PostgreSQL's derived search columns, postings tables and indexes alone."""
    if name is None:
        return True
    if type_ == "table":
        return not name.startswith(FTS_TABLES) and name not in PG_POSTINGS.values()
    if type_ == "column":
        table = getattr(getattr(obj, "table", None), "name", None)
        return name not in PG_ONLY_COLUMNS.get(str(table), ())
    if type_ == "index":
        return not name.startswith(_PG_ONLY_INDEX_PREFIXES)
    return True
