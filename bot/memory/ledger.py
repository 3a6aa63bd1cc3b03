"""The conversation ledger: every message in and out, stored before it is acted on.

All writes go through `Database.run`, so they happen in order on the database thread
and each call is one transaction. Ids of users and conversations are cached after
their transaction commits (they never change), which keeps a turn to a handful of
indexed statements.

`Ledger` stores incoming messages and replies here; its other parts live beside it:
the records in `ledger_records`, the tables and statements in `ledger_sql`, people's
and conversations' rows in `ledger_ids`, message states in `ledger_states`, and the
queries a restart runs in `ledger_recovery`. Everything is re-exported here.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy import Connection, insert, select

from bot.db import Database, storable
from bot.memory.ledger_ids import _LRU, _Identities, _KeyedLocks
from bot.memory.ledger_pg import insert_reply, record_incoming_once
from bot.memory.ledger_records import HistoryTurn, ReplyRecord, StoredIncoming, Unfinished
from bot.memory.ledger_recovery import _RecoveryQueries
from bot.memory.ledger_sql import (
    _FIND_INCOMING,
    _INSERT_MESSAGE,
    _SET_STATUS,
    _TOUCH_CONVERSATION,
    _new_id,
    _read_history,
    _versions,
)
from bot.memory.ledger_states import _MessageStates
from bot.messages import Incoming
from bot.models import Direction, MessageStatus

__all__ = ["HistoryTurn", "Ledger", "ReplyRecord", "StoredIncoming", "Unfinished"]


class Ledger(_Identities, _MessageStates, _RecoveryQueries):
    """Stores and reads conversations; the single writer of the `messages` table."""

    def __init__(self, db: Database, *, cache_size: int = 100_000) -> None:
        self.db = db
        self._user_ids = _LRU(cache_size)  # (platform, user id) -> (row id, display name)
        self._conversation_ids = _LRU(cache_size)  # conversation key -> row id
        self._arrivals = _KeyedLocks()

    # -- writes -----------------------------------------------------------------

    async def record_incoming(
        self,
        incoming: Incoming,
        text: str,
        *,
        truncated: bool = False,
        status: MessageStatus = MessageStatus.RECEIVED,
        with_history: int | None = None,
    ) -> StoredIncoming:
        """Commit an incoming message (and its user and conversation) before any answer.

        A platform redelivery of a message already stored (same conversation and
        platform message id) returns the stored row with `duplicate=True`.
        `with_history=N` also reads the N messages before it in the same round trip
        (what `history(..., before_id=...)` would return), saving a turn one query.
        """
        pending: list[Callable[[], None]] = []

        # Every database stores these (PostgreSQL refuses NUL in text): see `storable`.
        platform_id = (
            storable(incoming.platform_message_id)
            if incoming.platform_message_id is not None
            else None
        )

        def work(conn: Connection) -> StoredIncoming:
            now = incoming.received_at
            user_id = self._ensure_user(conn, incoming.actor, now, pending)
            conversation_id = self._ensure_conversation(conn, incoming.scope, now, pending)
            values = {
                "conversation_id": conversation_id,
                "user_id": user_id,
                "direction": Direction.IN.value,
                "kind": incoming.kind.value,
                "status": status.value,
                "text": storable(text),
                "truncated": truncated,
                "platform_message_id": platform_id,
                "persona_id": incoming.scope.persona,
                "created_at": now,
            }
            if conn.dialect.name == "postgresql":
                # One round trip instead of four (see `ledger_pg`).
                once = record_incoming_once(conn, values, history_limit=with_history or 0)
                if once.message_id is None:
                    assert once.duplicate_of is not None
                    return StoredIncoming(
                        once.duplicate_of, conversation_id, user_id, duplicate=True
                    )
                return StoredIncoming(
                    once.message_id,
                    conversation_id,
                    user_id,
                    history=tuple(once.history) if with_history is not None else None,
                )
            if platform_id is not None:
                existing = conn.execute(
                    _FIND_INCOMING,
                    {
                        "conversation_id": conversation_id,
                        "platform_message_id": platform_id,
                    },
                ).scalar()
                if existing is not None:
                    return StoredIncoming(existing, conversation_id, user_id, duplicate=True)
            result = conn.execute(_INSERT_MESSAGE, values)
            conn.execute(_TOUCH_CONVERSATION, {"cid": conversation_id, "at": now})
            message_id = _new_id(result)
            history = None
            if with_history is not None:
                history = tuple(_read_history(conn, conversation_id, message_id, with_history))
            return StoredIncoming(message_id, conversation_id, user_id, history=history)

        if self.db.ordered:
            stored = await self.db.run(work)
        else:
            # On a pool, two messages of one conversation stored at once could get
            # their ids in either order; the engine reads ids as arrival order (who
            # is newest in a burst, what history precedes a message). A FIFO lock per
            # conversation keeps one process's ids in the order messages arrived.
            async with self._arrivals.hold(incoming.scope.conversation_key):
                stored = await self.db.run(work)
        for apply in pending:
            apply()
        return stored

    async def record_reply(self, reply: ReplyRecord) -> int:
        """Store a reply and mark the message it answers as answered; returns its id."""

        def work(conn: Connection) -> int:
            created = reply.created_at or datetime.now(UTC)
            values = {
                "conversation_id": reply.conversation_id,
                "user_id": reply.user_id,
                "direction": Direction.OUT.value,
                "kind": reply.kind,
                "status": reply.status.value,
                "text": storable(reply.text),
                "truncated": False,
                "platform_message_id": None,
                "reply_to_id": reply.reply_to_id,
                "persona_id": reply.persona_id,
                "persona_hash": reply.persona_hash,
                "backend": reply.backend,
                "model": reply.model,
                "latency_ms": reply.latency_ms,
                "prompt_tokens": reply.prompt_tokens,
                "completion_tokens": reply.completion_tokens,
                "created_at": created,
            }
            # A stand-in (apology, "away") does not answer the message: it stays open.
            answers = reply.reply_to_id if reply.kind not in ("apology", "away") else None
            if conn.dialect.name == "postgresql":
                return insert_reply(conn, values, answers=answers)  # one round trip
            result = conn.execute(_INSERT_MESSAGE, values)
            if answers is not None:
                conn.execute(
                    _SET_STATUS, {"mid": answers, "new_status": MessageStatus.ANSWERED.value}
                )
            return _new_id(result)

        return await self.db.run(work)

    async def record_persona_version(
        self, persona_id: str, content_hash: str, path: str, source: str
    ) -> None:
        """Keep a persona version (idempotent: a version already stored is left alone)."""

        def work(conn: Connection) -> None:
            exists = conn.execute(
                select(_versions.c.id).where(
                    _versions.c.persona_id == persona_id, _versions.c.content_hash == content_hash
                )
            ).scalar()
            if exists is None:
                conn.execute(
                    insert(_versions).values(
                        persona_id=persona_id,
                        content_hash=content_hash,
                        path=path,
                        source=source,
                        loaded_at=datetime.now(UTC),
                    )
                )

        await self.db.run(work)

    # -- reads ------------------------------------------------------------------

    async def history(
        self, conversation_id: int, *, before_id: int | None = None, limit: int = 40
    ) -> list[HistoryTurn]:
        """The last `limit` spoken messages, oldest first, without people's messages
        from `before_id` on (the one being answered and any that came after it).

        Deleted messages and stand-in apologies are left out: the model should see
        the conversation people saw, not our failures.
        """
        if limit <= 0:
            return []

        return await self.db.run(
            lambda conn: _read_history(conn, conversation_id, before_id, limit)
        )
