"""The conversations list: its filter, its rows and its key-paged cursor
(re-exported by bot/web/dashboard/data_service.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, and_, exists, func, or_, select

from bot.web.dashboard.data_tables import (
    PAGE,
    _conv,
    _matches,
    _msg,
    _person_match,
    _users,
    _utc,
)

__all__ = [
    "SEARCH_WINDOW",
    "ConversationFilter",
    "ConversationPage",
    "ConversationRow",
    "list_conversations",
    "parse_cursor",
]

#: How many of the newest messages a text search looks through.
SEARCH_WINDOW = 100_000


@dataclass(frozen=True, slots=True)
class ConversationFilter:
    """What the conversations list is narrowed to (every field optional)."""

    persona: str | None = None
    platform: str | None = None
    channel: str | None = None
    #: A platform user id (exact) or the start of a display name.
    person: str | None = None
    #: Words in a message (among the newest `SEARCH_WINDOW`).
    text: str | None = None


@dataclass(frozen=True, slots=True)
class ConversationRow:
    id: int
    platform: str
    space: str | None
    channel: str
    thread: str | None
    persona_id: str
    is_direct: bool
    last_message_at: datetime


@dataclass(frozen=True, slots=True)
class ConversationPage:
    rows: list[ConversationRow]
    #: The cursor of the next (older) page, or None.
    next_cursor: str | None


def parse_cursor(cursor: str | None) -> tuple[datetime, int] | None:
    """`<epoch microseconds>.<id>` (what `next_cursor` gives) -> (time, id);
    `ValueError` for anything else."""
    if not cursor:
        return None
    micros, _, ident = cursor.partition(".")
    if not (micros.isascii() and micros.isdigit() and ident.isascii() and ident.isdigit()):
        raise ValueError("not a page cursor")
    if len(micros) > 17 or len(ident) > 18:
        raise ValueError("not a page cursor")
    try:
        at = datetime.fromtimestamp(int(micros) / 1_000_000, UTC)
    except (OverflowError, OSError, ValueError):
        raise ValueError("not a page cursor") from None
    return at, int(ident)


def _cursor(row: ConversationRow) -> str:
    at = row.last_message_at.astimezone(UTC)
    micros = int(at.timestamp()) * 1_000_000 + at.microsecond
    return f"{micros}.{row.id}"


def _person_ids(text: str) -> Any:
    """The ids (at most 50) of people whose platform id is `text` or whose display
    name starts with it."""
    return select(_users.c.id).where(_person_match(text)).limit(50).scalar_subquery()


def list_conversations(
    conn: Connection,
    where: ConversationFilter,
    *,
    cursor: str | None = None,
    limit: int = PAGE,
) -> ConversationPage:
    """Conversations, the most recently active first, `limit` per page."""
    limit = max(1, min(limit, 200))
    c = _conv.c
    query = select(_conv).order_by(c.last_message_at.desc(), c.id.desc()).limit(limit + 1)
    if where.persona:
        query = query.where(c.persona_id == where.persona)
    if where.platform:
        query = query.where(c.platform == where.platform)
    if where.channel:
        query = query.where(
            or_(c.channel == where.channel, c.space == where.channel, c.thread == where.channel)
        )
    if where.person:
        # From the person's messages (the user_id index) to their conversations, not
        # from every conversation to its messages.
        query = query.where(
            c.id.in_(
                select(_msg.c.conversation_id).where(_msg.c.user_id.in_(_person_ids(where.person)))
            )
        )
    if where.text:
        newest = conn.execute(select(func.max(_msg.c.id))).scalar() or 0
        query = query.where(
            exists().where(
                _msg.c.conversation_id == c.id,
                _msg.c.id > newest - SEARCH_WINDOW,
                _matches(_msg.c.text, where.text),
            )
        )
    after = parse_cursor(cursor)
    if after is not None:
        at, ident = after
        query = query.where(
            or_(c.last_message_at < at, and_(c.last_message_at == at, c.id < ident))
        )
    rows = [
        ConversationRow(
            id=r.id,
            platform=r.platform,
            space=r.space,
            channel=r.channel,
            thread=r.thread,
            persona_id=r.persona_id,
            is_direct=bool(r.is_direct),
            last_message_at=_utc(r.last_message_at) or datetime.now(UTC),
        )
        for r in conn.execute(query)
    ]
    more = len(rows) > limit
    rows = rows[:limit]
    return ConversationPage(rows, _cursor(rows[-1]) if more and rows else None)
