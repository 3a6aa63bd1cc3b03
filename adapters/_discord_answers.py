"""The `interaction_answers` table: a slash command's defer and reply, kept until delivered.

One row per interaction inbox event (bot/models.py `InteractionAnswer` tells the
states). The reply is stored in the same transaction as the event's done mark, so
that after it the command never runs again and the reply is what a restart sends.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Table, insert, select, update
from sqlmodel import SQLModel

from bot.db import Database, storable
from bot.inbox.store import settle_event
from bot.models import InboxRow, InboxStatus, InteractionAnswer

__all__ = [
    "INITIAL_WINDOW_S",
    "INTERACTION_KEY",
    "TOKEN_LIFETIME_S",
    "WAITING",
    "Answer",
    "InteractionAnswers",
]

_answers: Table = SQLModel.metadata.tables[InteractionAnswer.__tablename__]
_inbox: Table = SQLModel.metadata.tables[InboxRow.__tablename__]

#: The inbox key prefix of an interaction event.
INTERACTION_KEY = "interaction:"
#: Discord takes an interaction's first answer within this long of it only.
INITIAL_WINDOW_S = 3.0
#: An interaction's token answers (follow-ups, `@original`) this long after it.
TOKEN_LIFETIME_S = 15 * 60.0
#: Answer states whose reply is stored and not yet delivered: a restart sends them.
WAITING = ("generated", "sending")
_MAX_REASON = 2000


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Answer:
    """One row of `interaction_answers`."""

    event_id: int
    status: str
    text: str
    parts_sent: int
    ephemeral: bool
    deferred: bool
    created_at: datetime
    reason: str | None = None

    @property
    def stored(self) -> bool:
        """Whether the command's reply is stored (the command never runs again)."""
        return self.status != "deferred"


def _answer(row: Any) -> Answer:
    return Answer(
        event_id=int(row.event_id),
        status=str(row.status),
        text=str(row.text),
        parts_sent=int(row.parts_sent or 0),
        ephemeral=bool(row.ephemeral),
        deferred=row.deferred_at is not None,
        created_at=_aware(row.created_at),
        reason=row.reason,
    )


class InteractionAnswers:
    """Reads and moves the answers of one platform's interactions."""

    def __init__(self, db: Database, platform: str) -> None:
        self.db = db
        self.platform = platform

    async def get(self, event_id: int) -> Answer | None:
        """The answer row of an event, or None (neither deferred nor answered yet)."""

        def work(conn: Connection) -> Answer | None:
            row = conn.execute(select(_answers).where(_answers.c.event_id == event_id)).first()
            return None if row is None else _answer(row)

        return await self.db.read(work)

    async def deferring(
        self, event_id: int, *, created_at: datetime, ephemeral: bool, now: datetime
    ) -> None:
        """Record the defer BEFORE it is sent: a restart then follows up (a defer lost
        in flight costs one refused follow-up, recorded) rather than leave "thinking…"."""

        def work(conn: Connection) -> None:
            found = conn.execute(
                select(_answers.c.event_id).where(_answers.c.event_id == event_id)
            ).first()
            if found is not None:
                conn.execute(
                    update(_answers)
                    .where(_answers.c.event_id == event_id)
                    .values(deferred_at=now, updated_at=now)
                )
                return
            conn.execute(
                insert(_answers).values(
                    event_id=event_id,
                    platform=self.platform,
                    status="deferred",
                    text="",
                    parts_sent=0,
                    ephemeral=ephemeral,
                    deferred_at=now,
                    created_at=created_at,
                    updated_at=now,
                )
            )

        await self.db.run(work)

    async def store_reply(
        self,
        event_id: int,
        text: str,
        *,
        created_at: datetime,
        ephemeral: bool,
        now: datetime,
        status: str = "generated",
        reason: str | None = None,
    ) -> bool:
        """Store the reply and mark the inbox event done, in ONE transaction. False
        (nothing changed) when a reply was stored already: the caller delivers that one.
        A reply stored as never to be sent (`status` not `generated`) keeps no text."""

        def work(conn: Connection) -> bool:
            row = conn.execute(
                select(_answers.c.status).where(_answers.c.event_id == event_id)
            ).first()
            values = {
                "status": status,
                "text": storable(text) if status == "generated" else "",
                "reason": None if reason is None else storable(reason)[:_MAX_REASON],
                "updated_at": now,
            }
            if row is not None and row.status != "deferred":
                return False
            if row is None:
                conn.execute(
                    insert(_answers).values(
                        event_id=event_id,
                        platform=self.platform,
                        parts_sent=0,
                        ephemeral=ephemeral,
                        created_at=created_at,
                        **values,
                    )
                )
            else:
                conn.execute(update(_answers).where(_answers.c.event_id == event_id).values(values))
            settle_event(conn, event_id, InboxStatus.DONE, None, now)
            return True

        return await self.db.run(work)

    async def sending(self, event_id: int, *, parts_sent: int, now: datetime) -> None:
        """Before a part leaves (and after each one Discord confirmed): `parts_sent`."""
        await self._set(event_id, now, status="sending", parts_sent=parts_sent)

    async def settle(
        self, event_id: int, status: str, *, now: datetime, reason: str | None = None
    ) -> None:
        """`delivered`, `undeliverable` or `expired`, with `reason`: settled for good,
        so the text is let go (no token would take it later, and it may list what a
        person has since had forgotten: `/memory` before `/forget`)."""
        values: dict[str, object] = {"status": status, "text": ""}
        if reason is not None:
            values["reason"] = storable(reason)[:_MAX_REASON]
        await self._set(event_id, now, **values)

    async def waiting(self) -> list[Answer]:
        """Stored replies not yet delivered, oldest first: what a restart sends."""

        def work(conn: Connection) -> list[Answer]:
            rows = conn.execute(
                select(_answers)
                .where(_answers.c.platform == self.platform, _answers.c.status.in_(WAITING))
                .order_by(_answers.c.event_id)
            )
            return [_answer(r) for r in rows]

        return await self.db.read(work)

    async def undeferred(self, since: datetime) -> list[int]:
        """Pending interaction events received after `since` and not deferred, oldest
        first: those a stopping adapter defers for its next start to answer."""

        def work(conn: Connection) -> list[int]:
            answered = select(_answers.c.event_id).where(_answers.c.event_id == _inbox.c.id)
            rows = conn.execute(
                select(_inbox.c.id)
                .where(
                    _inbox.c.platform == self.platform,
                    _inbox.c.status == InboxStatus.PENDING.value,
                    _inbox.c.event_key.startswith(INTERACTION_KEY, autoescape=True),
                    _inbox.c.received_at > since,
                    ~answered.exists(),
                )
                .order_by(_inbox.c.id)
            )
            return [int(r.id) for r in rows]

        return await self.db.read(work)

    async def _set(self, event_id: int, now: datetime, **values: object) -> None:
        def work(conn: Connection) -> None:
            conn.execute(
                update(_answers)
                .where(_answers.c.event_id == event_id)
                .values(updated_at=now, **values)
            )

        await self.db.run(work)
