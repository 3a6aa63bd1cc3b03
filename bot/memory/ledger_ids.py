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

from sqlalchemy import Connection, and_, insert, select, update
from sqlalchemy.exc import IntegrityError

from bot.db import Database, storable
from bot.memory.ledger_sql import _conversations, _new_id, _users
from bot.messages import Actor, Scope


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
        where = and_(_users.c.platform == actor.platform, _users.c.platform_user_id == actor.id)
        row = conn.execute(select(_users.c.id, _users.c.display_name).where(where)).first()
        if row is None:
            try:
                with conn.begin_nested():
                    user_id = _new_id(
                        conn.execute(
                            insert(_users).values(
                                platform=actor.platform,
                                platform_user_id=actor.id,
                                display_name=storable(actor.display_name),
                                is_bot=actor.is_bot,
                                created_at=now,
                                last_seen_at=now,
                            )
                        )
                    )
            except IntegrityError:  # another process inserted the same user just now
                user_id = int(conn.execute(select(_users.c.id).where(where)).scalar_one())
        else:
            user_id = int(row.id)
            conn.execute(
                update(_users)
                .where(_users.c.id == user_id)
                .values(display_name=storable(actor.display_name), last_seen_at=now)
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
        found: int | None = conn.execute(
            select(_conversations.c.id).where(_conversations.c.key == key)
        ).scalar()
        if found is None:
            try:
                with conn.begin_nested():
                    found = _new_id(
                        conn.execute(
                            insert(_conversations).values(
                                key=key,
                                platform=scope.platform,
                                space=scope.space,
                                channel=scope.channel,
                                thread=scope.thread,
                                persona_id=scope.persona,
                                is_direct=scope.is_direct,
                                created_at=now,
                                last_message_at=now,
                            )
                        )
                    )
            except IntegrityError:
                found = conn.execute(
                    select(_conversations.c.id).where(_conversations.c.key == key)
                ).scalar_one()
        conversation_id = int(found)
        pending.append(lambda: self._conversation_ids.put(key, conversation_id))
        return conversation_id
