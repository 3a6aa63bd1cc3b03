"""Which worker handles which inbox event, on PostgreSQL.

Events with a chat are taken by chat: a worker first holds the chat's advisory lock
(`ClusterNode.try_chat`), then *pulls* the chat's pending events one at a time,
oldest first, straight from the table (`pull`), and lets the lock go when none is
left. So one chat's events run in one process at a time and in stored order, and
an event a dead worker had in hand is simply pulled again by the next holder (who
is told, by the old `claimed_by`, to finish that worker's turn first).

`discover` is how a worker finds chats with work: pending events of chats whose
lock no *other* worker holds, a chat once, oldest first. Events without a chat
(nothing to order them by) are claimed outright, `FOR UPDATE SKIP LOCKED`, by
whoever asks first (`claim_unordered`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, bindparam, text

from bot.cluster.node import CHAT_KEY_SQL, NS_CHAT, THIS_DATABASE_SQL
from bot.db import Database
from bot.inbox.store import InboxEvent, _row

__all__ = ["Pulled", "claim_unordered", "discover", "pull"]

_HELD = (
    "select l.objid::bigint as k from pg_locks l where l.locktype = 'advisory' "
    f"and l.database = {THIS_DATABASE_SQL} and l.classid = :ns and l.objsubid = 2 "
    "and l.granted and l.pid <> :me_pid"
)
_DISCOVER = text(
    f"with held as ({_HELD}) "
    "select e.chat, min(e.id) as first from inbox_events e "
    "where e.status = 'pending' and e.platform = :platform and e.chat is not null "
    "and not (e.chat = any(:skip)) "
    f"and {CHAT_KEY_SQL.format(platform='e.platform', chat='e.chat')} "
    "not in (select k from held) "
    "group by e.chat order by first limit :limit"
).bindparams(bindparam("skip", expanding=False))
_PULL = text(
    "with next as (select id, claimed_by as previous from inbox_events "
    "where platform = :platform and chat = :chat and status = 'pending' "
    "and not (id = any(:skip)) order by id limit 1 for update) "
    "update inbox_events e set claimed_by = :me from next where e.id = next.id "
    "returning e.*, next.previous, exists (select 1 from inbox_events m "
    "where m.platform = :platform and m.chat = :chat and m.status = 'pending' "
    "and m.id > next.id) as more"
)
_UNORDERED = text(
    "update inbox_events e set claimed_by = :me where e.id in ("
    "select id from inbox_events where platform = :platform and chat is null "
    "and status = 'pending' and claimed_by is null order by id limit :limit "
    "for update skip locked) returning e.*"
)


@dataclass(frozen=True, slots=True)
class Pulled:
    """The next event of a chat, the worker that had it before (None: nobody), and
    whether a later one was pending too (if not, the lane lets the chat go after
    this one without asking again; one stored meanwhile is found by discovery)."""

    event: InboxEvent
    previous: int | None
    more: bool = True


async def discover(
    db: Database,
    platform: str,
    *,
    me_pid: int,
    limit: int,
    skip: Sequence[str] = (),
) -> list[str]:
    """Chats of `platform` with pending events that no other worker holds (by the
    server pid of its lock connection), oldest first, not those in `skip`."""

    def work(conn: Connection) -> list[str]:
        rows = conn.execute(
            _DISCOVER,
            {
                "ns": NS_CHAT,
                "me_pid": me_pid,
                "platform": platform,
                "skip": list(skip),
                "limit": max(0, limit),
            },
        )
        return [str(r.chat) for r in rows]

    return await db.read(work)


async def pull(
    db: Database, platform: str, chat: str, *, me: int, skip: Sequence[int] = ()
) -> Pulled | None:
    """Claim the oldest pending event of `chat` (hold its lock first), not one of
    `skip` (those whose settling failed in this pass); None when there is none."""

    def work(conn: Connection) -> Pulled | None:
        row = conn.execute(
            _PULL, {"platform": platform, "chat": chat, "me": me, "skip": list(skip)}
        ).first()
        if row is None:
            return None
        previous: Any = row.previous
        return Pulled(
            _row(row), int(previous) if previous is not None else None, bool(row.more)
        )

    return await db.run(work)


async def claim_unordered(db: Database, platform: str, *, me: int, limit: int) -> list[InboxEvent]:
    """Claim up to `limit` pending events without a chat, oldest first; rows another
    worker is claiming at this moment are skipped, never waited for."""

    def work(conn: Connection) -> list[InboxEvent]:
        rows = conn.execute(_UNORDERED, {"platform": platform, "me": me, "limit": max(0, limit)})
        return sorted((_row(r) for r in rows), key=lambda e: e.id)

    return await db.run(work)
