"""The ledger's tables, the statements its hot path builds once, and the row helpers
every part of the ledger shares (the history read, aware times, inserted ids)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, CursorResult, Table, bindparam, insert, or_, select, update
from sqlmodel import SQLModel

from bot.memory.ledger_records import HistoryTurn
from bot.messages import TurnKind
from bot.models import (
    Conversation,
    Direction,
    Failure,
    Message,
    MessageStatus,
    PersonaVersion,
    User,
)

_tables = SQLModel.metadata.tables
_users: Table = _tables[User.__tablename__]
_conversations: Table = _tables[Conversation.__tablename__]
_messages: Table = _tables[Message.__tablename__]
_failures: Table = _tables[Failure.__tablename__]
_versions: Table = _tables[PersonaVersion.__tablename__]

# Kinds of outgoing rows that are part of the conversation the model should see
# ("away": the "sorry, I was away" a person got for messages that expired).
_SPOKEN_KINDS = (
    TurnKind.MESSAGE.value,
    TurnKind.PROACTIVE.value,
    TurnKind.GREETING.value,
    "away",
)

# Statements on the hot path are built once: SQLAlchemy then reuses their compiled
# form, which halves the cost of a turn's queries compared to building them per call.
_INSERT_MESSAGE = insert(_messages)
_FIND_INCOMING = select(_messages.c.id).where(
    _messages.c.conversation_id == bindparam("conversation_id"),
    _messages.c.platform_message_id == bindparam("platform_message_id"),
    _messages.c.direction == Direction.IN.value,
)
_TOUCH_CONVERSATION = (
    update(_conversations)
    .where(_conversations.c.id == bindparam("cid"))
    .values(last_message_at=bindparam("at"))
)
_SET_STATUS = (
    update(_messages)
    .where(_messages.c.id == bindparam("mid"))
    .values(status=bindparam("new_status"))
)
_HISTORY_COLUMNS = (
    _messages.c.id,
    _messages.c.direction,
    _messages.c.text,
    _messages.c.created_at,
    _users.c.display_name,
    _users.c.platform_user_id,
)
_HISTORY_BASE = (
    select(*_HISTORY_COLUMNS)
    .select_from(_messages.outerjoin(_users, _messages.c.user_id == _users.c.id))
    .where(
        _messages.c.conversation_id == bindparam("conversation_id"),
        _messages.c.deleted_at.is_(None),
        _messages.c.kind.in_(_SPOKEN_KINDS),
    )
    .order_by(_messages.c.id.desc())
    .limit(bindparam("limit"))
)
_HISTORY_ALL = _HISTORY_BASE
# Replies may carry larger ids than the message being answered (it was stored while an
# earlier turn was still generating), so the cut-off applies to what people said, not
# to what the persona answered.
_HISTORY_BEFORE = _HISTORY_BASE.where(
    or_(_messages.c.id < bindparam("before_id"), _messages.c.direction == Direction.OUT.value)
)


def _aware(value: datetime) -> datetime:
    # SQLite hands back naive datetimes; everything we store is UTC.
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


_UNFINISHED_IN = (MessageStatus.RECEIVED.value, MessageStatus.ANSWERING.value)
_UNFINISHED_OUT = (MessageStatus.GENERATED.value, MessageStatus.SENDING.value)


def _read_history(
    conn: Connection, conversation_id: int, before_id: int | None, limit: int
) -> list[HistoryTurn]:
    if limit <= 0:
        return []
    params: dict[str, Any] = {"conversation_id": conversation_id, "limit": limit}
    statement = _HISTORY_ALL
    if before_id is not None:
        statement = _HISTORY_BEFORE
        params["before_id"] = before_id
    rows = conn.execute(statement, params).all()
    return [
        history_turn(
            row.id, row.direction, row.text, row.display_name, row.platform_user_id, row.created_at
        )
        for row in reversed(rows)
    ]


def history_turn(
    message_id: int,
    direction: str,
    text: str,
    display_name: str | None,
    user_platform_id: str | None,
    created_at: datetime,
) -> HistoryTurn:
    """One history row as a turn: what every history read (here and the
    one-statement record on PostgreSQL, bot/memory/ledger_pg.py) makes of it."""
    return HistoryTurn(
        message_id=message_id,
        role="user" if direction == _IN else "assistant",
        text=text,
        display_name=display_name or "",
        user_platform_id=user_platform_id,
        created_at=_aware(created_at),
    )


_IN = Direction.IN.value


def _new_id(result: CursorResult[Any]) -> int:
    key = result.inserted_primary_key
    assert key is not None, "an INSERT of one row returns its primary key"
    return int(key[0])
