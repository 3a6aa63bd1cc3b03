"""The ledger's hot-path writes as one statement each on PostgreSQL.

On a server every statement is a round trip: about 100 µs of our CPU and as much
of the server's on the 2-core reference machine, more than the work it does. So
what SQLite runs as a few statements in-process (the redelivery check, the insert,
the conversation's touch and the history read of `record_incoming`; the insert and
the answered mark of `record_reply`) PostgreSQL runs as one, with data-modifying
CTEs. Both forms commit the same rows in the same transaction; the contract tests
run the ledger over both.

Why the history read in the same statement is the one `_read_history` would make
after the insert: every part of a statement sees one snapshot, taken before the
new row exists, and every people's message that snapshot holds was given its id
before ours (it committed before the snapshot, ours is drawn after it). The
`id < new id` cut-off is kept anyway, so the rule reads as it does for SQLite.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    Connection,
    Integer,
    Select,
    bindparam,
    exists,
    func,
    or_,
    select,
    true,
    update,
)

from bot.memory.ledger_records import HistoryTurn
from bot.memory.ledger_sql import (
    _HISTORY_COLUMNS,
    _SPOKEN_KINDS,
    _conversations,
    _messages,
    _users,
    history_turn,
)
from bot.models import Direction, MessageStatus

__all__ = ["Recorded", "insert_reply", "record_incoming_once"]

_IN = Direction.IN.value
_OUT = Direction.OUT.value

#: The columns an incoming message is stored with (the rest take their defaults).
_INCOMING_COLUMNS = (
    "conversation_id",
    "user_id",
    "direction",
    "kind",
    "status",
    "text",
    "truncated",
    "platform_message_id",
    "persona_id",
    "created_at",
)


def _typed(name: str) -> Any:
    # Typed like the column, so the driver gets the type PostgreSQL expects (a bare
    # parameter in a SELECT list would be `unknown`). Named apart from every column:
    # SQLAlchemy adds a SET clause to an UPDATE, CTEs included, for each execution
    # parameter named like one of the table's columns.
    return bindparam(f"p_{name}", type_=_messages.c[name].type)


def _params(values: dict[str, Any]) -> dict[str, Any]:
    return {f"p_{name}": value for name, value in values.items()}


def _build_incoming() -> Select[Any]:
    # One row whatever is stored: the id of the message this one repeats, or NULL.
    dup = (
        select(func.min(_messages.c.id).label("id"))
        .where(
            _messages.c.conversation_id == _typed("conversation_id"),
            _messages.c.platform_message_id == _typed("platform_message_id"),
            _messages.c.direction == _IN,
        )
        .cte("dup")
    )
    values = (
        select(*(_typed(name) for name in _INCOMING_COLUMNS))
        .select_from(dup)
        .where(dup.c.id.is_(None))
    )
    ins = (
        _messages.insert()
        .from_select(list(_INCOMING_COLUMNS), values)
        .returning(_messages.c.id)
        .cte("ins")
    )
    touch = (
        update(_conversations)
        .where(_conversations.c.id == _typed("conversation_id"), exists(select(ins.c.id)))
        .values(last_message_at=_typed("created_at"))
        .cte("touch")
    )
    history = (
        select(*_HISTORY_COLUMNS)
        .select_from(_messages.outerjoin(_users, _messages.c.user_id == _users.c.id))
        .where(
            _messages.c.conversation_id == _typed("conversation_id"),
            _messages.c.deleted_at.is_(None),
            _messages.c.kind.in_(_SPOKEN_KINDS),
            or_(_messages.c.id < ins.c.id, _messages.c.direction == _OUT),
        )
        .order_by(_messages.c.id.desc())
        .limit(bindparam("history_limit", type_=Integer))
        .lateral("h")
    )
    return (
        select(
            ins.c.id.label("new_id"),
            dup.c.id.label("dup_id"),
            *(column.label(f"h_{column.name}") for column in history.c),
        )
        .add_cte(touch)
        .select_from(dup.outerjoin(ins, true()).outerjoin(history, ins.c.id.is_not(None)))
        .order_by(history.c.id.desc())
    )


_RECORD_INCOMING = _build_incoming()


class Recorded:
    """What the one statement of `record_incoming_once` found: the new message's id
    or the stored one it repeats, and the history before a new one."""

    __slots__ = ("duplicate_of", "history", "message_id")

    def __init__(
        self, message_id: int | None, duplicate_of: int | None, history: list[HistoryTurn]
    ) -> None:
        self.message_id = message_id
        self.duplicate_of = duplicate_of
        self.history = history


def record_incoming_once(
    conn: Connection, values: dict[str, Any], *, history_limit: int
) -> Recorded:
    """Store an incoming message unless the conversation holds it already (same
    platform message id), touch its conversation, and read the `history_limit`
    messages before it: one statement. `values` are the `_INCOMING_COLUMNS`."""
    rows = conn.execute(
        _RECORD_INCOMING, {**_params(values), "history_limit": max(0, history_limit)}
    ).all()
    first = rows[0]  # the statement always yields a row (from `dup`)
    if first.new_id is None:
        assert first.dup_id is not None, "no new row means a stored one matched"
        return Recorded(None, int(first.dup_id), [])
    history = [
        history_turn(
            row.h_id,
            row.h_direction,
            row.h_text,
            row.h_display_name,
            row.h_platform_user_id,
            row.h_created_at,
        )
        for row in reversed(rows)
        if row.h_id is not None
    ]
    return Recorded(int(first.new_id), None, history)


#: The columns a reply is stored with (`Ledger.record_reply` passes each).
_REPLY_COLUMNS = (
    *_INCOMING_COLUMNS[:8],
    "reply_to_id",
    "persona_id",
    "persona_hash",
    "backend",
    "model",
    "latency_ms",
    "prompt_tokens",
    "completion_tokens",
    "created_at",
)


def _build_reply() -> Select[Any]:
    ins = (
        _messages.insert()
        .values({name: _typed(name) for name in _REPLY_COLUMNS})
        .returning(_messages.c.id)
        .cte("ins")
    )
    answered = (
        update(_messages)
        .where(_messages.c.id == bindparam("answers", type_=Integer))
        .values(status=MessageStatus.ANSWERED.value)
        .cte("answered")
    )
    return select(ins.c.id).add_cte(answered)


_INSERT_REPLY = _build_reply()


def insert_reply(conn: Connection, values: dict[str, Any], *, answers: int | None) -> int:
    """Store a reply and mark `answers` (the message it answers, or None: none)
    answered: one statement. `values` are the `_REPLY_COLUMNS`."""
    return int(conn.execute(_INSERT_REPLY, {**_params(values), "answers": answers}).scalar_one())
