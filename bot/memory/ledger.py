"""The conversation ledger: every message in and out, stored before it is acted on.

All writes go through `Database.run`, so they happen in order on the database thread
and each call is one transaction. Ids of users and conversations are cached after
their transaction commits (they never change), which keeps a turn to a handful of
indexed statements.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Connection,
    CursorResult,
    Table,
    and_,
    bindparam,
    exists,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlmodel import SQLModel

from bot.db import Database, storable
from bot.messages import Actor, Incoming, Scope, TurnKind
from bot.models import (
    Conversation,
    Direction,
    Failure,
    Message,
    MessageStatus,
    PersonaVersion,
    User,
)

__all__ = ["HistoryTurn", "Ledger", "ReplyRecord", "StoredIncoming", "Unfinished"]

_tables = SQLModel.metadata.tables
_users: Table = _tables[User.__tablename__]
_conversations: Table = _tables[Conversation.__tablename__]
_messages: Table = _tables[Message.__tablename__]
_failures: Table = _tables[Failure.__tablename__]
_versions: Table = _tables[PersonaVersion.__tablename__]

# Kinds of outgoing rows that are part of the conversation the model should see
# ("away": the "sorry, I was away" a person got for messages that expired).
_SPOKEN_KINDS = (
    TurnKind.MESSAGE.value,
    TurnKind.PROACTIVE.value,
    TurnKind.GREETING.value,
    "away",
)

# Statements on the hot path are built once: SQLAlchemy then reuses their compiled
# form, which halves the cost of a turn's queries compared to building them per call.
_INSERT_MESSAGE = insert(_messages)
_FIND_INCOMING = select(_messages.c.id).where(
    _messages.c.conversation_id == bindparam("conversation_id"),
    _messages.c.platform_message_id == bindparam("platform_message_id"),
    _messages.c.direction == Direction.IN.value,
)
_TOUCH_CONVERSATION = (
    update(_conversations)
    .where(_conversations.c.id == bindparam("cid"))
    .values(last_message_at=bindparam("at"))
)
_SET_STATUS = (
    update(_messages)
    .where(_messages.c.id == bindparam("mid"))
    .values(status=bindparam("new_status"))
)
_HISTORY_COLUMNS = (
    _messages.c.id,
    _messages.c.direction,
    _messages.c.text,
    _messages.c.created_at,
    _users.c.display_name,
    _users.c.platform_user_id,
)
_HISTORY_BASE = (
    select(*_HISTORY_COLUMNS)
    .select_from(_messages.outerjoin(_users, _messages.c.user_id == _users.c.id))
    .where(
        _messages.c.conversation_id == bindparam("conversation_id"),
        _messages.c.deleted_at.is_(None),
        _messages.c.kind.in_(_SPOKEN_KINDS),
    )
    .order_by(_messages.c.id.desc())
    .limit(bindparam("limit"))
)
_HISTORY_ALL = _HISTORY_BASE
# Replies may carry larger ids than the message being answered (it was stored while an
# earlier turn was still generating), so the cut-off applies to what people said, not
# to what the persona answered.
_HISTORY_BEFORE = _HISTORY_BASE.where(
    or_(_messages.c.id < bindparam("before_id"), _messages.c.direction == Direction.OUT.value)
)


def _aware(value: datetime) -> datetime:
    # SQLite hands back naive datetimes; everything we store is UTC.
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class StoredIncoming:
    """An incoming message as committed to the ledger."""

    message_id: int
    conversation_id: int
    user_id: int
    duplicate: bool = False
    #: The conversation before this message, when asked for with `with_history`.
    history: tuple[HistoryTurn, ...] | None = None


@dataclass(frozen=True, slots=True)
class HistoryTurn:
    """One earlier message of a conversation, as the prompt needs it."""

    message_id: int
    role: str  # "user" or "assistant"
    text: str
    display_name: str
    user_platform_id: str | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class ReplyRecord:
    """What is stored about a reply the persona produced."""

    conversation_id: int
    user_id: int | None
    reply_to_id: int | None
    text: str
    persona_id: str
    persona_hash: str | None = None
    backend: str | None = None
    model: str | None = None
    latency_ms: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    kind: str = TurnKind.MESSAGE.value
    created_at: datetime | None = None
    #: `generated` for a reply still to be sent (the outbox delivers it); imported
    #: history is stored `delivered`, so no restart ever sends it.
    status: MessageStatus = MessageStatus.GENERATED


@dataclass(frozen=True, slots=True)
class Unfinished:
    """A message a stop or crash left unfinished: an incoming message with no reply
    yet (`received`/`answering`), or a reply not yet delivered (`generated`/`sending`,
    `parts_sent` of its parts confirmed)."""

    message_id: int
    conversation_id: int
    user_id: int | None
    direction: str
    kind: str
    status: str
    text: str
    created_at: datetime
    scope: Scope
    display_name: str = ""
    parts_sent: int = 0
    platform_message_id: str | None = None
    #: For a reply: the platform id of the message it answers (to quote it).
    reply_to_platform_id: str | None = None
    persona_hash: str | None = None

    @property
    def incoming(self) -> Incoming:
        """The incoming message as the engine would have been handed it."""
        return Incoming(
            scope=self.scope,
            actor=Actor(
                platform=self.scope.platform, id=self.scope.user, display_name=self.display_name
            ),
            text=self.text,
            platform_message_id=self.platform_message_id,
            addressed_to_bot=True,
            received_at=self.created_at,
        )

    @property
    def stored(self) -> StoredIncoming:
        """The ledger ids of an incoming message, as the engine's turn carries them."""
        assert self.user_id is not None
        return StoredIncoming(self.message_id, self.conversation_id, self.user_id)


#: Outgoing kinds a restart delivers: every reply that moves through the outbox's
#: states. A greeting and a command's reply do since bot/inbox/outbox.py (a greeting
#: stored before that, with no person, is never found: it was sent inside /start's text).
_REDELIVERED_KINDS = (
    *("message", "proactive", "apology", "away", "greeting", "command"),
    *("crisis", "disclosure", "limited", "age_gate"),  # the safety stage's fixed replies
)
_UNFINISHED_IN = (MessageStatus.RECEIVED.value, MessageStatus.ANSWERING.value)
_UNFINISHED_OUT = (MessageStatus.GENERATED.value, MessageStatus.SENDING.value)


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


class Ledger:
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
            result = conn.execute(
                _INSERT_MESSAGE,
                {
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
                },
            )
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
            result = conn.execute(
                _INSERT_MESSAGE,
                {
                    "conversation_id": reply.conversation_id,
                    "user_id": reply.user_id,
                    "direction": Direction.OUT.value,
                    "kind": reply.kind,
                    "status": reply.status.value,
                    "text": storable(reply.text),
                    "truncated": False,
                    "reply_to_id": reply.reply_to_id,
                    "persona_id": reply.persona_id,
                    "persona_hash": reply.persona_hash,
                    "backend": reply.backend,
                    "model": reply.model,
                    "latency_ms": reply.latency_ms,
                    "prompt_tokens": reply.prompt_tokens,
                    "completion_tokens": reply.completion_tokens,
                    "created_at": created,
                },
            )
            if reply.reply_to_id is not None and reply.kind not in ("apology", "away"):
                conn.execute(
                    _SET_STATUS,
                    {"mid": reply.reply_to_id, "new_status": MessageStatus.ANSWERED.value},
                )
            return _new_id(result)

        return await self.db.run(work)

    async def record_failure(
        self,
        *,
        stage: str,
        error: BaseException | str,
        message_id: int | None = None,
        conversation_id: int | None = None,
    ) -> int:
        """Record why something failed; an incoming message it concerns becomes `failed`."""
        error_type = error if isinstance(error, str) else type(error).__name__
        reason = str(error) if not isinstance(error, str) else error
        if not isinstance(error, str) and not reason:
            reason = repr(error)

        def work(conn: Connection) -> int:
            result = conn.execute(
                insert(_failures).values(
                    message_id=message_id,
                    conversation_id=conversation_id,
                    stage=stage,
                    error_type=error_type[:128],
                    reason=reason or error_type,
                    created_at=datetime.now(UTC),
                )
            )
            if message_id is not None:
                conn.execute(
                    update(_messages)
                    .where(
                        _messages.c.id == message_id,
                        _messages.c.direction == Direction.IN.value,
                    )
                    .values(status=MessageStatus.FAILED.value)
                )
            return _new_id(result)

        return await self.db.run(work)

    async def mark_delivered(
        self,
        message_id: int,
        platform_message_id: str | None,
        *,
        delivered: bool = True,
        parts_sent: int | None = None,
    ) -> None:
        """Record that an adapter delivered (or could not deliver) a reply; the platform
        id already stored (its first part's) is kept."""
        status = MessageStatus.DELIVERED if delivered else MessageStatus.UNDELIVERABLE
        values: dict[str, Any] = {
            "status": status.value,
            "platform_message_id": func.coalesce(
                _messages.c.platform_message_id, platform_message_id
            ),
        }
        if parts_sent is not None:
            values["parts_sent"] = parts_sent

        def work(conn: Connection) -> None:
            conn.execute(update(_messages).where(_messages.c.id == message_id).values(**values))

        await self.db.run(work)

    async def claim(self, message_id: int) -> bool:
        """Mark an incoming message `answering` before its reply is generated; False
        when it is not there to answer (answered, failed, expired, or has a reply):
        whoever gets False must not generate, so no message is answered twice."""
        replied = exists().where(
            _messages.c.reply_to_id == message_id, _messages.c.direction == Direction.OUT.value
        )

        def work(conn: Connection) -> bool:
            result = conn.execute(
                update(_messages)
                .where(
                    _messages.c.id == message_id,
                    _messages.c.direction == Direction.IN.value,
                    _messages.c.status.in_(_UNFINISHED_IN),
                    ~replied,
                )
                .values(status=MessageStatus.ANSWERING.value)
            )
            return bool(result.rowcount == 1)

        return await self.db.run(work)

    async def expire(self, message_id: int, reason: str, *, now: datetime | None = None) -> bool:
        """Record that an unfinished message is too old to act on: an incoming one
        becomes `expired`, a reply `undeliverable`; the reason goes to `failures`.
        False when it was finished meanwhile (nothing changed)."""
        at = now or datetime.now(UTC)

        def work(conn: Connection) -> bool:
            row = conn.execute(
                select(_messages.c.direction, _messages.c.conversation_id).where(
                    _messages.c.id == message_id
                )
            ).first()
            if row is None:
                return False
            incoming = row.direction == Direction.IN.value
            result = conn.execute(
                update(_messages)
                .where(
                    _messages.c.id == message_id,
                    _messages.c.status.in_(_UNFINISHED_IN if incoming else _UNFINISHED_OUT),
                )
                .values(
                    status=(
                        MessageStatus.EXPIRED if incoming else MessageStatus.UNDELIVERABLE
                    ).value
                )
            )
            if result.rowcount != 1:
                return False
            conn.execute(
                insert(_failures).values(
                    message_id=message_id,
                    conversation_id=row.conversation_id,
                    stage="expired",
                    error_type="Expired",
                    reason=reason,
                    created_at=at,
                )
            )
            return True

        return await self.db.run(work)

    async def mark_sending(self, message_id: int) -> None:
        """A reply's parts are about to leave (committed before the first one does)."""

        def work(conn: Connection) -> None:
            conn.execute(
                update(_messages)
                .where(
                    _messages.c.id == message_id,
                    _messages.c.status == MessageStatus.GENERATED.value,
                )
                .values(status=MessageStatus.SENDING.value)
            )

        await self.db.run(work)

    async def mark_part_sent(
        self, message_id: int, parts_sent: int, platform_message_id: str | None
    ) -> None:
        """The platform confirmed parts up to `parts_sent`; the first part's id is the
        reply's platform id (what reactions and quotes point at)."""

        def work(conn: Connection) -> None:
            conn.execute(
                update(_messages)
                .where(_messages.c.id == message_id)
                .values(
                    parts_sent=parts_sent,
                    platform_message_id=func.coalesce(
                        _messages.c.platform_message_id, platform_message_id
                    ),
                )
            )

        await self.db.run(work)

    async def unfinished(self, platform: str) -> list[Unfinished]:
        """Every unfinished message of `platform`, oldest first (see `Unfinished`)."""
        answered = _messages.alias("answered")

        def work(conn: Connection) -> list[Unfinished]:
            statement = (
                select(
                    _messages,
                    _conversations.c.platform,
                    _conversations.c.space,
                    _conversations.c.channel,
                    _conversations.c.thread,
                    _conversations.c.persona_id.label("conversation_persona"),
                    _users.c.platform_user_id,
                    _users.c.display_name,
                    answered.c.platform_message_id.label("answered_platform_id"),
                )
                .select_from(
                    _messages.join(
                        _conversations, _messages.c.conversation_id == _conversations.c.id
                    )
                    .outerjoin(_users, _messages.c.user_id == _users.c.id)
                    .outerjoin(answered, _messages.c.reply_to_id == answered.c.id)
                )
                .where(
                    _conversations.c.platform == platform,
                    _messages.c.deleted_at.is_(None),
                    or_(
                        and_(
                            _messages.c.direction == Direction.IN.value,
                            _messages.c.status.in_(_UNFINISHED_IN),
                        ),
                        and_(
                            _messages.c.direction == Direction.OUT.value,
                            _messages.c.status.in_(_UNFINISHED_OUT),
                            _messages.c.kind.in_(_REDELIVERED_KINDS),
                        ),
                    ),
                )
                .order_by(_messages.c.id)
            )
            found = []
            for row in conn.execute(statement):
                if row.platform_user_id is None:
                    continue  # nobody to answer or deliver to
                scope = Scope(
                    platform=row.platform,
                    space=row.space,
                    channel=row.channel,
                    thread=row.thread,
                    user=row.platform_user_id,
                    persona=row.conversation_persona,
                )
                found.append(
                    Unfinished(
                        message_id=int(row.id),
                        conversation_id=int(row.conversation_id),
                        user_id=row.user_id,
                        direction=row.direction,
                        kind=row.kind,
                        status=row.status,
                        text=row.text,
                        created_at=_aware(row.created_at),
                        scope=scope,
                        display_name=row.display_name or "",
                        parts_sent=int(row.parts_sent or 0),
                        platform_message_id=row.platform_message_id,
                        reply_to_platform_id=row.answered_platform_id,
                        persona_hash=row.persona_hash,
                    )
                )
            return found

        return await self.db.read(work)

    async def away_sent(self, conversation_id: int, user_id: int) -> bool:
        """Whether the last thing the persona said to this person here was an `away`
        notice (then another one would say the same twice)."""

        def work(conn: Connection) -> bool:
            kind = conn.execute(
                select(_messages.c.kind)
                .where(
                    _messages.c.conversation_id == conversation_id,
                    _messages.c.user_id == user_id,
                    _messages.c.direction == Direction.OUT.value,
                )
                .order_by(_messages.c.id.desc())
                .limit(1)
            ).scalar()
            return bool(kind == "away")

        return await self.db.read(work)

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


def _read_history(
    conn: Connection, conversation_id: int, before_id: int | None, limit: int
) -> list[HistoryTurn]:
    if limit <= 0:
        return []
    params: dict[str, Any] = {"conversation_id": conversation_id, "limit": limit}
    statement = _HISTORY_ALL
    if before_id is not None:
        statement = _HISTORY_BEFORE
        params["before_id"] = before_id
    rows = conn.execute(statement, params).all()
    return [
        HistoryTurn(
            message_id=row.id,
            role="user" if row.direction == _IN else "assistant",
            text=row.text,
            display_name=row.display_name or "",
            user_platform_id=row.platform_user_id,
            created_at=_aware(row.created_at),
        )
        for row in reversed(rows)
    ]


_IN = Direction.IN.value


def _new_id(result: CursorResult[Any]) -> int:
    key = result.inserted_primary_key
    assert key is not None, "an INSERT of one row returns its primary key"
    return int(key[0])
