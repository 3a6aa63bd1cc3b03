"""The tables, the page size and the small pieces every dashboard query shares
(bot/web/dashboard/data_service.py re-exports the public ones).
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Table
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


def _like(text: str) -> str:
    """`text` as a LIKE pattern that matches it literally anywhere (escape `\\`)."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _prefix(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"{escaped}%"


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
