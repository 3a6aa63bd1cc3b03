"""The ledger's state changes of stored messages: an incoming message claimed,
expired or failed; a reply sending, its parts confirmed, delivered or undeliverable."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, exists, func, insert, select, update

from bot.db import Database
from bot.memory.ledger_sql import (
    _UNFINISHED_IN,
    _UNFINISHED_OUT,
    _failures,
    _messages,
    _new_id,
)
from bot.models import Direction, MessageStatus


class _MessageStates:
    """The ledger's message states (a part of `Ledger`)."""

    db: Database

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
