"""A burst from one person answered as one turn.

When a person's messages queue up behind a turn of their conversation (ten messages
in five seconds while the persona is still writing), each waiting message whose
author has a newer one waiting behind it is not answered by itself: it is stored,
settled as `ignored` (coalesced) and left in the history, and the newest one is
answered with all of them in view. One generation instead of ten; nothing lost.

`Bursts` is the engine's record of who waits in which line. It lives where turns
are queued (the engine's conversation line) and costs a dict entry per waiting turn.
"""

from __future__ import annotations

import structlog
from sqlalchemy import Connection, Table, update
from sqlmodel import SQLModel

from bot.memory.ledger import Ledger
from bot.models import Message, MessageStatus

__all__ = ["Bursts", "settle_coalesced"]

log = structlog.get_logger("bot.safety")

_messages: Table = SQLModel.metadata.tables[Message.__tablename__]


class Bursts:
    """Addressed messages waiting in each conversation's line, by author."""

    def __init__(self) -> None:
        self._waiting: dict[tuple[str, str], set[int]] = {}

    def arrived(self, key: str, user: str, message_id: int) -> None:
        """A stored, addressed message of `user` takes its place in `key`'s line."""
        self._waiting.setdefault((key, user), set()).add(message_id)

    def newer_waiting(self, key: str, user: str, message_id: int) -> bool:
        """True when `user` has a later message in the same line (that one answers)."""
        return any(m > message_id for m in self._waiting.get((key, user), ()))

    def left(self, key: str, user: str, message_id: int) -> None:
        """The message's turn is over (answered, coalesced, failed or cancelled)."""
        ids = self._waiting.get((key, user))
        if ids is None:
            return
        ids.discard(message_id)
        if not ids:
            del self._waiting[(key, user)]

    def __len__(self) -> int:
        return sum(len(ids) for ids in self._waiting.values())


async def settle_coalesced(ledger: Ledger, message_id: int) -> bool:
    """Settle a message answered by a later one of its author: `ignored`, unless it
    was finished meanwhile. True when it was settled here."""

    def work(conn: Connection) -> bool:
        result = conn.execute(
            update(_messages)
            .where(
                _messages.c.id == message_id,
                _messages.c.status == MessageStatus.RECEIVED.value,
            )
            .values(status=MessageStatus.IGNORED.value)
        )
        return bool(result.rowcount == 1)

    settled = await ledger.db.run(work)
    log.info("turn.coalesced", message_id=message_id, settled=settled)
    return settled
