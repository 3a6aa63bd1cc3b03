"""The memory's public value types, shared by every backend.

`MemoryScope` is the isolation boundary (one person in one conversation);
`MemoryHit` and `MemoryItem` are what searches and listings return;
`SearchWeights` tunes the fusion (see docs/memory.md). Also the small time helpers
every module that writes raw SQL uses. This module imports nothing of the project.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

__all__ = [
    "Kind",
    "MemoryHit",
    "MemoryItem",
    "MemoryScope",
    "SearchWeights",
    "aware",
    "db_time",
    "parse_dt",
]

Kind = Literal["message", "fact", "summary"]


@dataclass(frozen=True, slots=True)
class MemoryScope:
    """Whose memories a read may see: this person, in this conversation."""

    user_id: int
    conversation_id: int


@dataclass(frozen=True, slots=True)
class MemoryHit:
    """One search result."""

    kind: Kind
    id: int
    text: str
    score: float
    at: datetime
    speaker: str = ""
    source_ids: tuple[int, ...] = ()

    @property
    def ref(self) -> str:
        """The id people see: `m12`, `f3`, `s7`."""
        return f"{self.kind[0]}{self.id}"


@dataclass(frozen=True, slots=True)
class MemoryItem:
    """A fact or summary as shown to its owner (`/memory`, `bot memory show`)."""

    ref: str
    kind: Kind
    text: str
    at: datetime
    persona_id: str
    source_ids: tuple[int, ...] = ()
    confidence: float | None = None


@dataclass(frozen=True, slots=True)
class SearchWeights:
    """How the ranked lists are fused and adjusted (see docs/memory.md)."""

    bm25: float = 1.5
    dense: float = 1.0
    recency: float = 0.1
    half_life_days: float = 30.0
    importance: float = 0.2
    time_boost: float = 1.0
    #: Share of a message's neighbours' score it inherits (turns answer turns).
    neighbour: float = 0.5
    candidates: int = 100
    #: Reciprocal rank fusion's k: lower trusts the top of each list more.
    rrf_k: float = 10.0
    #: Boost for messages by someone the query names ("what did Anna say...").
    speaker: float = 0.3
    #: Cosine similarity below which a vector match is noise, not a memory.
    min_similarity: float = 0.15


def aware(value: datetime) -> datetime:
    """`value` with a time zone (a naive value is UTC, as SQLite stores it)."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def db_time(value: datetime, dialect: str = "sqlite") -> Any:
    """A time as a raw-SQL parameter of `dialect`: on SQLite the text SQLAlchemy's
    DateTime stores (naive UTC), so rows written with raw SQL compare and sort like
    the ledger's own; elsewhere the aware datetime itself (timestamptz)."""
    utc = aware(value).astimezone(UTC)
    if dialect == "sqlite":
        return utc.strftime("%Y-%m-%d %H:%M:%S.%f")
    return utc


def parse_dt(value: Any) -> datetime:
    """A stored time (datetime or SQLite's text) as an aware datetime."""
    if isinstance(value, datetime):
        return aware(value)
    return aware(datetime.fromisoformat(str(value)))
