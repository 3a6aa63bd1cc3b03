"""Safety events in the database: the record, who was told, the pause, the queue.

`SafetyStore` is the stage's `EventSink` (one row of `safety_events` per hit or
block) and the first-contact check's `Disclosures`. A crisis row is also the
moderators' queue entry (`queue`, `review`) and carries the alert's delivery state
and the person's proactive pause (`pause_until`, read by the scheduler).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Table, and_, func, insert, select, update
from sqlmodel import SQLModel

from bot.db import Database, storable
from bot.models import SafetyRecord
from bot.safety.stage import SafetyEvent

__all__ = ["QueueItem", "SafetyStore", "pause_until"]

_events: Table = SQLModel.metadata.tables[SafetyRecord.__tablename__]

#: Called after a crisis row is committed: (its id, the event). The alerter.
OnCrisis = Callable[[int, SafetyEvent], Awaitable[None]]


def _aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _json_default(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


@dataclass(frozen=True, slots=True)
class QueueItem:
    """One crisis in the moderators' queue (what a dashboard shows)."""

    id: int
    created_at: datetime
    platform: str
    platform_user_id: str
    persona_id: str
    conversation_id: int | None
    message_id: int | None
    reason: str
    details: dict[str, Any]
    pause_until: datetime | None
    alert_status: str
    alert_reason: str | None


def pause_until(conn: Connection, user_id: int, persona: str) -> datetime | None:
    """Until when proactive messages to this person from `persona` pause (the latest
    crisis's pause), or None."""
    value = conn.execute(
        select(func.max(_events.c.pause_until)).where(
            _events.c.user_id == user_id,
            _events.c.persona_id == persona,
            _events.c.check_name == "crisis",
        )
    ).scalar()
    return _aware(value)


class SafetyStore:
    """Safety events in `safety_events`; see the module docstring."""

    def __init__(self, db: Database, *, on_crisis: OnCrisis | None = None) -> None:
        self.db = db
        self.on_crisis = on_crisis
        self._told: set[tuple[int, str]] = set()

    # -- EventSink --------------------------------------------------------------------

    async def record(self, event: SafetyEvent) -> None:
        """Commit one event; a crisis is then handed to `on_crisis` (the alert)."""
        crisis = event.verdict == "crisis"
        details = {k: v for k, v in event.details.items() if k != "pause_until"}
        pause = event.details.get("pause_until")
        row = {
            "created_at": event.at,
            "platform": event.scope.platform,
            "platform_user_id": event.scope.user,
            "persona_id": event.scope.persona,
            "conversation_id": event.conversation_id,
            "message_id": event.message_id,
            "user_id": event.user_id,
            "check_name": event.check[:32],
            "verdict": event.verdict[:32],
            "reason": storable(event.reason[:2000]),  # it may quote what was said
            "details": json.dumps(details, default=_json_default, ensure_ascii=False)[:4000],
            "pause_until": pause if isinstance(pause, datetime) else None,
            "alert_status": "pending" if crisis else "none",
        }

        def work(conn: Connection) -> int:
            result = conn.execute(insert(_events).values(**row))
            key = result.inserted_primary_key
            return int(key[0]) if key else 0

        event_id = await self.db.run(work)
        if event.check == "disclosure" and event.user_id is not None:
            self._told.add((event.user_id, event.scope.persona))
        if crisis and self.on_crisis is not None:
            await self.on_crisis(event_id, event)

    # -- Disclosures ------------------------------------------------------------------

    async def disclosed(self, user_id: int, persona: str) -> bool:
        """True once a disclosure was recorded for this person and persona."""
        if (user_id, persona) in self._told:
            return True
        found = await self.db.read(
            lambda c: c.execute(
                select(_events.c.id)
                .where(
                    _events.c.user_id == user_id,
                    _events.c.persona_id == persona,
                    _events.c.check_name == "disclosure",
                )
                .limit(1)
            ).first()
        )
        if found is not None:
            self._told.add((user_id, persona))
        return found is not None

    async def mark(self, user_id: int, persona: str) -> None:
        """Remembered in this process at once; the event row is the durable mark."""
        self._told.add((user_id, persona))

    # -- the pause and the queue ------------------------------------------------------

    async def pause_until(self, user_id: int, persona: str) -> datetime | None:
        """See the module function `pause_until`."""
        return await self.db.read(lambda c: pause_until(c, user_id, persona))

    async def queue(self, *, limit: int = 100, include_reviewed: bool = False) -> list[QueueItem]:
        """Crises for moderators, newest first (unreviewed only unless asked)."""
        conditions = [_events.c.check_name == "crisis"]
        if not include_reviewed:
            conditions.append(_events.c.reviewed_at.is_(None))

        def work(conn: Connection) -> list[QueueItem]:
            rows = conn.execute(
                select(_events).where(and_(*conditions)).order_by(_events.c.id.desc()).limit(limit)
            ).all()
            return [
                QueueItem(
                    id=r.id,
                    created_at=_aware(r.created_at) or r.created_at,
                    platform=r.platform,
                    platform_user_id=r.platform_user_id,
                    persona_id=r.persona_id,
                    conversation_id=r.conversation_id,
                    message_id=r.message_id,
                    reason=r.reason,
                    details=json.loads(r.details or "{}"),
                    pause_until=_aware(r.pause_until),
                    alert_status=r.alert_status,
                    alert_reason=r.alert_reason,
                )
                for r in rows
            ]

        return await self.db.read(work)

    async def review(self, event_id: int, by: str, *, now: datetime | None = None) -> bool:
        """A moderator has seen it: out of the queue. False when there is no such row."""
        at = now or datetime.now(UTC)
        count = await self.db.run(
            lambda c: (
                c.execute(
                    update(_events)
                    .where(_events.c.id == event_id, _events.c.reviewed_at.is_(None))
                    .values(reviewed_at=at, reviewed_by=by[:256])
                ).rowcount
            )
        )
        return bool(count)

    async def set_alert(self, event_id: int, status: str, reason: str | None = None) -> None:
        """The alert's delivery state: sent, failed (with why), queued, pending."""
        await self.db.run(
            lambda c: c.execute(
                update(_events)
                .where(_events.c.id == event_id)
                .values(alert_status=status[:16], alert_reason=(reason or None) and reason[:512])
            )
        )

    async def pending_alerts(self) -> list[tuple[int, str, str, str, str]]:
        """Crises whose alert has not gone out: (id, platform, user, persona, reason)."""
        rows = await self.db.read(
            lambda c: c.execute(
                select(
                    _events.c.id,
                    _events.c.platform,
                    _events.c.platform_user_id,
                    _events.c.persona_id,
                    _events.c.reason,
                )
                .where(_events.c.check_name == "crisis", _events.c.alert_status == "pending")
                .order_by(_events.c.id)
            ).all()
        )
        return [(int(r[0]), str(r[1]), str(r[2]), str(r[3]), str(r[4])) for r in rows]
