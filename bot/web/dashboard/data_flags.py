"""Moderators' flags and corrections of the persona's replies, each audited in the
same transaction (re-exported by bot/web/dashboard/data_service.py).
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select, update

from bot.web.dashboard.data_tables import (
    NotFound,
    _msg,
)
from bot.web.dashboard.store import Moderator, audit

__all__ = [
    "CORRECTION_MAX_CHARS",
    "FLAG_REASON_MAX_CHARS",
    "correct_reply",
    "flag_reply",
    "message_persona",
    "unflag_reply",
]

CORRECTION_MAX_CHARS = 8000
FLAG_REASON_MAX_CHARS = 500


def message_persona(conn: Connection, message_id: int) -> tuple[str, str, int]:
    """(persona id, direction, conversation id) of a message; `NotFound` if none."""
    row = conn.execute(
        select(_msg.c.persona_id, _msg.c.direction, _msg.c.conversation_id).where(
            _msg.c.id == message_id
        )
    ).first()
    if row is None:
        raise NotFound(f"no message {message_id}")
    return str(row.persona_id), str(row.direction), int(row.conversation_id)


def _reply_state(conn: Connection, message_id: int) -> Any:
    row = conn.execute(
        select(
            _msg.c.direction,
            _msg.c.flagged_at,
            _msg.c.flag_reason,
            _msg.c.corrected_text,
            _msg.c.corrected_by,
        ).where(_msg.c.id == message_id)
    ).first()
    if row is None:
        raise NotFound(f"no message {message_id}")
    if row.direction != "out":
        raise ValueError("only the persona's replies can be flagged or corrected")
    return row


def _digest(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    return {"chars": len(text), "sha256": hashlib.sha256(text.encode()).hexdigest()}


def _state(row: Any) -> dict[str, Any]:
    return {
        "flagged": row.flagged_at is not None,
        "reason": row.flag_reason,
        "correction": _digest(row.corrected_text),
    }


def flag_reply(
    conn: Connection, who: Moderator, message_id: int, reason: str, *, now: datetime
) -> None:
    """Flag the persona's reply `message_id`: it leaves every later training export
    (`bot export`'s `flagged` filter). Audited."""
    reason = " ".join(reason.split())[:FLAG_REASON_MAX_CHARS] or "flagged by a moderator"
    before = _reply_state(conn, message_id)
    conn.execute(
        update(_msg).where(_msg.c.id == message_id).values(flagged_at=now, flag_reason=reason)
    )
    after = _reply_state(conn, message_id)
    audit(conn, who, "reply.flag", f"message:{message_id}", _state(before), _state(after), now=now)


def unflag_reply(conn: Connection, who: Moderator, message_id: int, *, now: datetime) -> None:
    """Take a flag back (and the correction with it: a corrected reply stays flagged
    for as long as it has a correction). Audited."""
    before = _reply_state(conn, message_id)
    conn.execute(
        update(_msg)
        .where(_msg.c.id == message_id)
        .values(
            flagged_at=None, flag_reason=None, corrected_text=None, corrected_by=None,
            corrected_at=None,
        )
    )  # fmt: skip
    after = _reply_state(conn, message_id)
    audit(
        conn, who, "reply.unflag", f"message:{message_id}", _state(before), _state(after), now=now
    )


def correct_reply(
    conn: Connection, who: Moderator, message_id: int, text: str, *, now: datetime
) -> None:
    """Store what the persona should have said instead of reply `message_id`. The
    reply is flagged too (it leaves the SFT files), and `bot export` writes a DPO pair:
    the correction chosen, the reply rejected (source `correction`). Audited (the
    correction by length and SHA-256, see the module doc)."""
    text = text.replace("\r\n", "\n").strip()
    if not text:
        raise ValueError("the corrected reply is empty")
    if len(text) > CORRECTION_MAX_CHARS:
        raise ValueError(f"the corrected reply is longer than {CORRECTION_MAX_CHARS} characters")
    before = _reply_state(conn, message_id)
    values: dict[str, Any] = {
        "corrected_text": text,
        "corrected_by": who.name[:64],
        "corrected_at": now,
    }
    if before.flagged_at is None:
        values.update(flagged_at=now, flag_reason="corrected by a moderator")
    conn.execute(update(_msg).where(_msg.c.id == message_id).values(**values))
    after = _reply_state(conn, message_id)
    audit(
        conn, who, "reply.correct", f"message:{message_id}", _state(before), _state(after), now=now
    )
