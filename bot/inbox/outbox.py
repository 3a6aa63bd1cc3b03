"""Command replies through the outbox: stored with the command's done mark, sent
from there, recovered without running the command again.

A command event (Telegram's `/start`, `/help`, `/forget` ...) is handled in its
chat's lane like a turn: the command runs, then ONE transaction stores its reply
(and `/start`'s greeting before it) as outgoing `messages` rows in `generated` and
marks the inbox event `done`; only then does the reply leave, through
`Adapter.send`, so it moves `sending` → `delivered` | `undeliverable` like every
reply. A crash before that commit leaves the event pending and the command runs
again on restart (its effects are idempotent or audited, and no reply of the
first run exists to be sent twice); a crash after it leaves the event done and
the reply in the outbox, where recovery (`bot.inbox.recovery`) delivers it once,
in the chat's order, without the command.

A command reply is stored as kind `command`, out of the persona's history, exports
and memory (only spoken kinds are read there), and only until its delivery is
settled: a delivered one is deleted, an undeliverable one keeps its row (its
failure points at it) without its text. It may list what a person asked to have
forgotten (`/memory` before `/forget`), and it was never the persona's speech.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Protocol

import structlog
from sqlalchemy import Connection, Table, delete, insert, update
from sqlmodel import SQLModel

from bot.db import storable
from bot.errors import BotError
from bot.inbox.store import settle_event
from bot.inbox.worker import current_event
from bot.messages import Actor, Outgoing, Scope, TurnKind
from bot.models import Direction, InboxRow, InboxStatus, MessageStatus

if TYPE_CHECKING:
    from bot.commands import CommandReply
    from bot.engine import PersonaEngine

__all__ = ["COMMAND_KIND", "OutboxTarget", "clear_settled", "deliver_command", "store_replies"]

#: The `messages.kind` of a command's reply.
COMMAND_KIND = "command"

log = structlog.get_logger("bot.inbox.outbox")

_messages: Table = SQLModel.metadata.tables["messages"]
_inbox: Table = SQLModel.metadata.tables[InboxRow.__tablename__]


class OutboxTarget(Protocol):
    """What delivering a command reply needs of an adapter (`adapters.base.Adapter`)."""

    platform: str
    engine: PersonaEngine

    async def send(self, outgoing: Outgoing, *, first_part: int = 0) -> list[str | None]:
        """Deliver a stored reply, recording its states."""
        ...


async def store_replies(
    engine: PersonaEngine,
    actor: Actor,
    replies: Sequence[tuple[Outgoing, str]],
    *,
    event_id: int | None = None,
    delivered: bool = False,
) -> list[Outgoing]:
    """Store `(reply, kind)` pairs of one scope as outgoing rows, in order, in ONE
    transaction that also marks inbox event `event_id` done (if given and not done
    already); returns the replies with their `message_id`.

    Rows start `generated` (for `Adapter.send` to move on), or with `delivered`
    already `delivered`: for a caller that answers in place, without an outbox. The
    person (`actor`) is the rows' user, so recovery knows whom to deliver them to.
    """
    if not replies:
        return []
    scope = replies[0][0].scope
    ledger = engine.ledger
    conversation_id = await ledger.conversation_id(scope)
    user_id = await ledger.user_id(actor)
    status = MessageStatus.DELIVERED if delivered else MessageStatus.GENERATED
    now = datetime.now(UTC)

    def work(conn: Connection) -> list[int]:
        ids = []
        for reply, kind in replies:
            result = conn.execute(
                insert(_messages).values(
                    conversation_id=conversation_id,
                    user_id=user_id,
                    direction=Direction.OUT.value,
                    kind=kind,
                    status=status.value,
                    text=storable(reply.text),
                    truncated=False,
                    persona_id=reply.scope.persona,
                    persona_hash=reply.persona_hash,
                    latency_ms=0.0,
                    parts_sent=0,
                    created_at=now,
                )
            )
            key = result.inserted_primary_key
            assert key is not None
            ids.append(int(key[0]))
        if event_id is not None:
            # The reply and the event's end commit together: after this the command
            # never runs again, and its reply is the outbox's to deliver.
            settle_event(conn, event_id, InboxStatus.DONE, None, now)
        return ids

    ids = await ledger.db.run(work)
    return [
        reply.model_copy(update={"message_id": mid, "scope": scope})
        for (reply, _), mid in zip(replies, ids, strict=True)
    ]


async def deliver_command(
    target: OutboxTarget,
    reply: CommandReply,
    scope: Scope,
    actor: Actor,
    *,
    reply_to_platform_id: str | None = None,
) -> list[Outgoing]:
    """Store a command's reply (greeting first) with the current inbox event's done
    mark, then send it; returns what was stored. A delivery failure is recorded by
    `send` (the row `undeliverable`) and not raised: the command itself succeeded.

    Outside an inbox event (no event in hand, `bot.inbox.worker.current_event`) the
    rows are stored the same way, without a done mark to share.
    """
    event = current_event()
    pairs: list[tuple[Outgoing, str]] = []
    if reply.greeting is not None:
        pairs.append((reply.greeting.model_copy(update={"scope": scope}), TurnKind.GREETING.value))
    text = reply.text if reply.text.strip() else "(nothing to say)"
    pairs.append(
        (
            Outgoing(scope=scope, text=text, reply_to_platform_id=reply_to_platform_id),
            COMMAND_KIND,
        )
    )
    stored = await store_replies(
        target.engine, actor, pairs, event_id=event.id if event is not None else None
    )
    for outgoing in stored:
        try:
            await target.send(outgoing)
        except BotError as exc:  # recorded by send (or left for recovery); the rest goes on
            log.info("outbox.command_send_failed", message_id=outgoing.message_id, error=str(exc))
    await clear_settled(target.engine, [o.message_id for o in stored if o.message_id is not None])
    return stored


async def clear_settled(engine: PersonaEngine, message_ids: Sequence[int]) -> None:
    """Let go of the command replies among `message_ids` whose delivery is settled:
    nothing sends them again. Delivered ones are deleted; undeliverable ones lose
    their text and keep their row for the failure recorded about them. Others (still
    waiting, or not command replies) are left alone."""
    if not message_ids:
        return
    ids = [int(i) for i in message_ids]
    mine = (_messages.c.id.in_(ids), _messages.c.kind == COMMAND_KIND)

    def work(conn: Connection) -> None:
        conn.execute(
            delete(_messages).where(*mine, _messages.c.status == MessageStatus.DELIVERED.value)
        )
        conn.execute(
            update(_messages)
            .where(*mine, _messages.c.status == MessageStatus.UNDELIVERABLE.value)
            .values(text="")
        )

    await engine.ledger.db.run(work)
