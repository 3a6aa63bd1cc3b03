"""The ledger's rows of people and conversations: found or created inside the
caller's transaction, their ids cached once it commits (they never change), and the
per-conversation FIFO lock that keeps one process's message ids in arrival order."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, select, update
from sqlalchemy.dialects import postgresql, sqlite

from bot.db import Database, storable
from bot.memory.ledger_sql import _conversations, _users
from bot.messages import Actor, Scope


def _upsert_user(insert: Any) -> Any:
    statement = insert(_users)
    return statement.on_conflict_do_update(
        index_elements=[_users.c.platform, _users.c.platform_user_id],
        set_={
            "display_name": statement.excluded.display_name,
            "last_seen_at": statement.excluded.last_seen_at,
        },
    ).returning(_users.c.id)


def _create_conversation(insert: Any) -> Any:
    return (
        insert(_conversations)
        .on_conflict_do_nothing(index_elements=[_conversations.c.key])
        .returning(_conversations.c.id)
    )


# By dialect name: both databases have `INSERT ... ON CONFLICT ... RETURNING`
# (SQLite since 3.35), each spelled by its own SQLAlchemy dialect.
_UPSERT_USER = {
    "postgresql": _upsert_user(postgresql.insert),
    "sqlite": _upsert_user(sqlite.insert),
}
_CREATE_CONVERSATION = {
    "postgresql": _create_conversation(postgresql.insert),
    "sqlite": _create_conversation(sqlite.insert),
}


class _LRU(OrderedDict[Any, Any]):
    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def put(self, key: Any, value: Any) -> None:
        self[key] = value
        self.move_to_end(key)
        if len(self) > self.size:
            self.popitem(last=False)


class _KeyedLocks:
    """FIFO locks by key that exist only while someone holds or waits for them."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (None, 0))
        if lock is None:
            lock = asyncio.Lock()
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users <= 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


class _Identities:
    """The ledger's people and conversations (a part of `Ledger`)."""

    db: Database
    _user_ids: _LRU
    _conversation_ids: _LRU

    async def user_id(self, actor: Actor) -> int:
        """The row id of a person, created if new (display name kept up to date)."""
        pending: list[Callable[[], None]] = []
        now = datetime.now(UTC)
        uid = await self.db.run(lambda conn: self._ensure_user(conn, actor, now, pending))
        for apply in pending:
            apply()
        return uid

    async def conversation_id(self, scope: Scope) -> int:
        """The row id of the scope's conversation, created if new."""
        pending: list[Callable[[], None]] = []
        now = datetime.now(UTC)
        cid = await self.db.run(lambda conn: self._ensure_conversation(conn, scope, now, pending))
        for apply in pending:
            apply()
        return cid

    # -- helpers (run on the database thread) ---------------------------------------

    def _ensure_user(
        self, conn: Connection, actor: Actor, now: datetime, pending: list[Callable[[], None]]
    ) -> int:
        key = (actor.platform, actor.id)
        cached = self._user_ids.get(key)
        if cached is not None:
            user_id, name = cached
            if name != actor.display_name:
                conn.execute(
                    update(_users)
                    .where(_users.c.id == user_id)
                    .values(display_name=storable(actor.display_name), last_seen_at=now)
                )
                pending.append(lambda: self._user_ids.put(key, (user_id, actor.display_name)))
            return int(user_id)
        # One upsert: the row is created, or its name and last sight brought up to
        # date, and its id returned; another process inserting the same person at
        # the same moment is waited for by the database, not caught as an error.
        user_id = int(
            conn.execute(
                _UPSERT_USER[conn.dialect.name],
                {
                    "platform": actor.platform,
                    "platform_user_id": actor.id,
                    "display_name": storable(actor.display_name),
                    "is_bot": actor.is_bot,
                    "created_at": now,
                    "last_seen_at": now,
                },
            ).scalar_one()
        )
        pending.append(lambda: self._user_ids.put(key, (user_id, actor.display_name)))
        return user_id

    def _ensure_conversation(
        self, conn: Connection, scope: Scope, now: datetime, pending: list[Callable[[], None]]
    ) -> int:
        key = scope.conversation_key
        cached = self._conversation_ids.get(key)
        if cached is not None:
            return int(cached)
        row = {
            "key": key,
            "platform": scope.platform,
            "space": scope.space,
            "channel": scope.channel,
            "thread": scope.thread,
            "persona_id": scope.persona,
            "is_direct": scope.is_direct,
            "created_at": now,
            "last_message_at": now,
        }
        # A new conversation costs one statement; one stored before (after a restart,
        # or by another worker) two. Not DO UPDATE, which would write the row anew.
        found: int | None = conn.execute(_CREATE_CONVERSATION[conn.dialect.name], row).scalar()
        if found is None:
            found = conn.execute(
                select(_conversations.c.id).where(_conversations.c.key == key)
            ).scalar_one()
        conversation_id = int(found)
        pending.append(lambda: self._conversation_ids.put(key, conversation_id))
        return conversation_id
