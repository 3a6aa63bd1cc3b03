"""A burst from one person answered as one turn.

When a person's messages queue up behind a turn of their conversation (ten messages
in five seconds while the persona is still writing), each waiting message whose
author has a newer one waiting behind it is not answered by itself: it is stored,
settled as `ignored` (coalesced) and left in the history, and the newest one is
answered with all of them in view. One generation instead of ten; nothing lost.

`Bursts` is the engine's record of who waits in which line. It lives where turns
are queued (the engine's conversation line) and costs a dict entry per waiting turn.

Under the inbox a chat's events are handled one after another, so a turn never
queues behind another in the engine: there the burst is seen in the inbox instead.
The inbox worker sets a probe (`waiting_probe`) for the event it hands out, and the
engine asks `newer_waiting()` whether the event's author has a later message still
pending in the same chat (bot/inbox/store.py `Inbox.newer_from`); if so the earlier
one is settled as coalesced and the later one answers with it in the history. The
question goes to the database, so it holds across workers and restarts.

A message in which the crisis check finds anything is never coalesced: it is
answered by itself (bot/safety/stage.py `SafetyStage.may_coalesce`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import structlog
from sqlalchemy import Connection, Table, update
from sqlmodel import SQLModel

from bot.memory.ledger import Ledger
from bot.models import Message, MessageStatus

__all__ = ["Bursts", "newer_waiting", "settle_coalesced", "waiting_probe"]

log = structlog.get_logger("bot.safety")

_messages: Table = SQLModel.metadata.tables[Message.__tablename__]

#: Set by the inbox worker while it hands out one event: does its author have a
#: later message waiting in the same chat?
_PROBE: ContextVar[Callable[[], Awaitable[bool]] | None] = ContextVar(
    "burst_probe", default=None
)


@contextmanager
def waiting_probe(probe: Callable[[], Awaitable[bool]] | None) -> Iterator[None]:
    """Within this block (and the tasks it starts), `newer_waiting` asks `probe`."""
    token = _PROBE.set(probe)
    try:
        yield
    finally:
        _PROBE.reset(token)


async def newer_waiting() -> bool:
    """Whether the message being handled has a later one of its author waiting
    behind it (False outside the inbox, or when the probe cannot tell)."""
    probe = _PROBE.get()
    if probe is None:
        return False
    try:
        return await probe()
    except Exception as exc:  # a failed look is no burst: the message is answered
        log.warning("turn.burst_probe_failed", error=str(exc))
        return False


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
