"""The tables, the page size and the small pieces every dashboard query shares
(bot/web/dashboard/data_service.py re-exports the public ones).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, Table, or_
from sqlmodel import SQLModel

import bot.memory.tables  # facts, summaries in the metadata
import bot.models  # noqa: F401  (the ledger's tables in the metadata)

__all__ = ["PAGE", "NotFound"]

#: Rows per page of every list.
PAGE = 50

_t = SQLModel.metadata.tables
_conv: Table = _t["conversations"]
_msg: Table = _t["messages"]
_users: Table = _t["users"]
_fail: Table = _t["failures"]
_safety: Table = _t["safety_events"]
_consent: Table = _t["consent_events"]
_facts: Table = _t["facts"]
_summaries: Table = _t["summaries"]
_limits: Table = _t["person_limits"]
_adapters: Table = _t["lora_adapters"]
_feedback: Table = _t["feedback"]


class NotFound(LookupError):
    """No such conversation, message or person (the page answers 404)."""


def _matches(column: ColumnElement[Any], text: str, *, prefix: bool = False) -> ColumnElement[bool]:
    """`column` holds `text` literally anywhere (or, with `prefix`, starts with it),
    case-insensitively: LIKE's wildcards in `text` match only themselves."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return column.ilike(f"{escaped}%" if prefix else f"%{escaped}%", escape="\\")


def _person_match(text: str) -> ColumnElement[bool]:
    """A person whose platform user id is `text`, or whose display name starts with it
    (the people list's search and the conversations list's person filter)."""
    return or_(
        _users.c.platform_user_id == text, _matches(_users.c.display_name, text, prefix=True)
    )


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
