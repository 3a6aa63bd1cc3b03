"""The inbox: platform events committed before the platform is told they arrived.

An adapter hands a batch of raw events to `Inbox.accept`; once it returns they are
durable and the adapter may acknowledge them (ask Telegram for the next offset,
answer a webhook 200). A redelivery of an event key already stored is ignored. The
worker (`bot.inbox.worker`) then handles `pending` events and marks each `done` or
`failed` with its reason; `replay` puts failed ones back to `pending` after a fix.
"""

from __future__ import annotations

import builtins
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Table, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import SQLModel

from bot.db import Database, storable
from bot.models import InboxRow, InboxStatus

__all__ = ["MAX_PAYLOAD_BYTES", "Inbox", "InboxEvent", "RawEvent", "settle_event"]

#: The most bytes of a raw payload stored; a bigger event is stored cut and failed.
MAX_PAYLOAD_BYTES = 64 * 1024
_MAX_KEY = 256
_MAX_REASON = 4000

_inbox: Table = SQLModel.metadata.tables[InboxRow.__tablename__]


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class RawEvent:
    """One platform event as received, before any parsing."""

    #: The platform's event id (Telegram `update_id`, Discord message id).
    key: str
    #: The raw JSON text as received.
    payload: str
    #: The ordering key, if known without parsing: must equal `Adapter.chat_key` of
    #: the scope the event's messages get, so recovered turns and new events of one
    #: chat share one lane. None: ordered with nothing.
    chat: str | None = None
    received_at: datetime = field(default_factory=_utcnow)
    #: The author of a plain message (not a command, edit or reaction) in a private
    #: chat, if known without parsing: lets a turn see a burst behind it. None: the
    #: event never coalesces with others.
    author: str | None = None


@dataclass(frozen=True, slots=True)
class InboxEvent:
    """A stored inbox event, as the worker hands it to `Adapter.handle_event`."""

    id: int
    platform: str
    key: str
    chat: str | None
    payload: str
    status: InboxStatus
    received_at: datetime
    truncated: bool = False
    reason: str | None = None
    attempts: int = 0
    processed_at: datetime | None = None
    author: str | None = None


def _safe(text: str) -> str:
    """Text every database can store (see `bot.db.storable`)."""
    return storable(text)


def _bounded_key(key: str) -> str:
    # A key is never cut or repaired lossily: two keys made equal would drop the
    # second event as a redelivery. Unstorable text is escaped, long keys hashed.
    if storable(key) != key:
        key = "esc:" + key.encode("unicode_escape").decode("ascii")
    if len(key) <= _MAX_KEY:
        return key
    return "sha256:" + hashlib.sha256(key.encode("utf-8")).hexdigest()


def _bounded_payload(payload: str) -> tuple[str, bool]:
    payload = _safe(payload)
    data = payload.encode("utf-8")
    if len(data) <= MAX_PAYLOAD_BYTES:
        return payload, False
    return data[:MAX_PAYLOAD_BYTES].decode("utf-8", "ignore"), True


def _row(row: Any) -> InboxEvent:
    return InboxEvent(
        id=int(row.id),
        platform=row.platform,
        key=row.event_key,
        chat=row.chat,
        payload=row.payload,
        status=InboxStatus(row.status),
        received_at=_aware(row.received_at) or _utcnow(),
        truncated=bool(row.truncated),
        reason=row.reason,
        attempts=int(row.attempts),
        processed_at=_aware(row.processed_at),
        author=row.author,
    )


def settle_event(
    conn: Connection, event_id: int, status: InboxStatus, reason: str | None, at: datetime
) -> None:
    """Mark inbox event `event_id` `status` (with `reason`) in the caller's transaction,
    unless it is done already. A command's reply commits the done mark with itself
    (bot/inbox/outbox.py, Discord's interaction answers), and a later failure of
    the handler (a send) must not make `replay` run the command again."""
    conn.execute(
        update(_inbox)
        .where(_inbox.c.id == event_id, _inbox.c.status != InboxStatus.DONE.value)
        .values(
            status=status.value,
            reason=reason,
            attempts=_inbox.c.attempts + 1,
            processed_at=at,
        )
    )


class Inbox:
    """The `inbox_events` table: accept, hand out, settle, list and replay events."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def accept(self, platform: str, events: Sequence[RawEvent]) -> int:
        """Commit a batch in ONE transaction, redeliveries ignored; returns how many
        were new. Only after this returns may the adapter acknowledge the batch.

        A payload over `MAX_PAYLOAD_BYTES` is stored cut and `failed` at once, with
        its size as the reason: kept for a person to look at, never half-handled.
        """
        if not events:
            return 0
        rows = []
        for event in events:
            payload, cut = _bounded_payload(event.payload)
            chat = _safe(event.chat)[:_MAX_KEY] if event.chat is not None else None
            # An author that does not fit is no author: a cut one could match another's.
            author = event.author
            if author is not None and (storable(author) != author or len(author) > _MAX_KEY):
                author = None
            rows.append(
                {
                    "platform": platform[:32],
                    "event_key": _bounded_key(event.key),
                    "chat": chat,
                    "author": author if chat is not None else None,
                    "status": (InboxStatus.FAILED if cut else InboxStatus.PENDING).value,
                    "payload": payload,
                    "truncated": cut,
                    "reason": (
                        f"payload of {len(event.payload.encode('utf-8', 'surrogatepass'))} "
                        f"bytes is over the {MAX_PAYLOAD_BYTES}-byte limit"
                        if cut
                        else None
                    ),
                    "attempts": 0,
                    "received_at": event.received_at,
                    "processed_at": event.received_at if cut else None,
                }
            )

        def work(conn: Connection) -> int:
            if conn.dialect.name == "postgresql":
                statement: Any = pg_insert(_inbox).on_conflict_do_nothing()
            else:
                statement = sqlite_insert(_inbox).on_conflict_do_nothing()
            # A row comes back for each event stored; a redelivery returns none.
            # (rowcount is no count here: psycopg reports 0 for INSERT ... RETURNING.)
            # SQLAlchemy sends the batch as one multi-row INSERT ("insertmanyvalues",
            # up to 1,000 rows a statement), its rows in the batch's order, so ids
            # follow arrival order, one round trip instead of one per event.
            statement = statement.returning(_inbox.c.id)
            return len(conn.execute(statement, rows).all())

        return await self.db.run(work)

    async def pending(
        self,
        platform: str,
        *,
        limit: int,
        after_id: int = 0,
        exclude: frozenset[int] = frozenset(),
    ) -> list[InboxEvent]:
        """Pending events of `platform` with ids above `after_id`, oldest first."""

        def work(conn: Connection) -> list[InboxEvent]:
            statement = (
                select(_inbox)
                .where(
                    _inbox.c.status == InboxStatus.PENDING.value,
                    _inbox.c.platform == platform,
                    _inbox.c.id > after_id,
                )
                .order_by(_inbox.c.id)
                .limit(limit + len(exclude))
            )
            found = [_row(r) for r in conn.execute(statement)]
            return [e for e in found if e.id not in exclude][:limit]

        return await self.db.read(work)

    async def newer_from(self, event: InboxEvent) -> bool:
        """Whether `event` is inside a burst of its author that a later message will
        answer: it waited (it arrived while an earlier message of the same author in
        the same chat was still to be handled, as the engine's line would have made
        it wait) and a later one of the author is still pending behind it. The first
        message of a burst is answered by itself, the newest with all of them in view.
        False for an event without an author or chat. Indexed queries; any worker."""
        if event.author is None or event.chat is None:
            return False
        same = (
            _inbox.c.platform == event.platform,
            _inbox.c.chat == event.chat,
            _inbox.c.author == event.author,
        )

        def work(conn: Connection) -> bool:
            behind = select(_inbox.c.id).where(
                *same, _inbox.c.status == InboxStatus.PENDING.value, _inbox.c.id > event.id
            )
            if conn.execute(behind.limit(1)).first() is None:
                return False
            # The author's message just before it: still to be handled, or handled
            # only after this one arrived, means this one waited behind it.
            ahead = (
                select(_inbox.c.processed_at)
                .where(*same, _inbox.c.id < event.id)
                .order_by(_inbox.c.id.desc())
                .limit(1)
            )
            row = conn.execute(ahead).first()
            if row is None:
                return False
            handled = _aware(row.processed_at)
            return handled is None or handled > event.received_at

        return await self.db.read(work)

    async def done(self, event_id: int, *, now: datetime | None = None) -> None:
        """The event was handled: it will not be handed out again."""
        await self._settle(event_id, InboxStatus.DONE, None, now)

    async def fail(self, event_id: int, reason: str, *, now: datetime | None = None) -> None:
        """The event could not be handled: kept, with its payload and `reason`, for replay."""
        await self._settle(event_id, InboxStatus.FAILED, _safe(reason)[:_MAX_REASON], now)

    async def _settle(
        self, event_id: int, status: InboxStatus, reason: str | None, now: datetime | None
    ) -> None:
        at = now or _utcnow()

        def work(conn: Connection) -> None:
            settle_event(conn, event_id, status, reason, at)

        await self.db.run(work)

    async def get(self, event_id: int) -> InboxEvent | None:
        """One event by id, or None."""

        def work(conn: Connection) -> InboxEvent | None:
            row = conn.execute(select(_inbox).where(_inbox.c.id == event_id)).first()
            return _row(row) if row is not None else None

        return await self.db.read(work)

    async def list(
        self,
        *,
        status: InboxStatus | None = None,
        platform: str | None = None,
        limit: int = 100,
    ) -> list[InboxEvent]:
        """The newest `limit` events, optionally of one status and platform, newest first."""

        def work(conn: Connection) -> list[InboxEvent]:
            statement = select(_inbox).order_by(_inbox.c.id.desc()).limit(max(0, limit))
            if status is not None:
                statement = statement.where(_inbox.c.status == status.value)
            if platform is not None:
                statement = statement.where(_inbox.c.platform == platform)
            return [_row(r) for r in conn.execute(statement)]

        return await self.db.read(work)

    async def last_keys(self, platform: str) -> dict[str, str]:
        """Per chat, the key of the newest event stored (by id): where a catch-up from
        the platform's history starts."""

        def work(conn: Connection) -> dict[str, str]:
            newest = (
                select(func.max(_inbox.c.id))
                .where(_inbox.c.platform == platform, _inbox.c.chat.is_not(None))
                .group_by(_inbox.c.chat)
            )
            rows = conn.execute(
                select(_inbox.c.chat, _inbox.c.event_key).where(_inbox.c.id.in_(newest))
            ).all()
            return {str(chat): str(key) for chat, key in rows}

        return await self.db.read(work)

    async def counts(self, platform: str | None = None) -> dict[str, int]:
        """How many events are in each status."""

        def work(conn: Connection) -> dict[str, int]:
            statement = select(_inbox.c.status, func.count()).group_by(_inbox.c.status)
            if platform is not None:
                statement = statement.where(_inbox.c.platform == platform)
            return {str(s): int(n) for s, n in conn.execute(statement).all()}

        return await self.db.read(work)

    async def replay(
        self, event_ids: Sequence[int] = (), *, failed: bool = False, platform: str | None = None
    ) -> builtins.list[int]:
        """Put events back to `pending` so the running (or next) worker handles them
        again: the given ids, or with `failed=True` every failed one (of `platform`).

        Only events that still have their payload can be replayed; a cut (too large)
        one cannot. Returns the ids that were put back.
        """

        def work(conn: Connection) -> list[int]:
            where = [
                _inbox.c.status != InboxStatus.PENDING.value,
                _inbox.c.truncated.is_(False),
                _inbox.c.payload != "",
            ]
            if failed:
                where.append(_inbox.c.status == InboxStatus.FAILED.value)
            if event_ids:
                where.append(_inbox.c.id.in_([int(i) for i in event_ids]))
            elif not failed:
                return []
            if platform is not None:
                where.append(_inbox.c.platform == platform)
            ids = [int(i) for i in conn.execute(select(_inbox.c.id).where(*where)).scalars()]
            if ids:
                conn.execute(
                    update(_inbox)
                    .where(_inbox.c.id.in_(ids))
                    .values(status=InboxStatus.PENDING.value, processed_at=None)
                )
            return ids

        return await self.db.run(work)

    async def prune(self, now: datetime, *, keep: timedelta) -> int:
        """Clear the payload of events `done` before `now - keep` (raw text is not kept
        forever); failed ones keep theirs for replay. Returns how many were cleared."""

        def work(conn: Connection) -> int:
            result = conn.execute(
                update(_inbox)
                .where(
                    _inbox.c.status == InboxStatus.DONE.value,
                    _inbox.c.processed_at < now - keep,
                    _inbox.c.payload != "",
                )
                .values(payload="")
            )
            return max(result.rowcount, 0)

        return await self.db.run(work)
