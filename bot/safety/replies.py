"""A fixed reply of the safety stage (crisis, disclosure, ...), stored and addressed.

The engine calls this when `before_turn` answers: the reply is stored as a reply of
the verdict's kind (so exports leave it out and a restart redelivers it) and the
message it answers becomes answered; the model is not asked. An empty reply is
silence (a ban, a mute): no reply at all, and the message is settled as `ignored`
(the safety event keeps the reason), so recovery never answers it later.
"""

from __future__ import annotations

import time

import structlog
from sqlalchemy import Connection, Table, update
from sqlmodel import SQLModel

from bot.memory.ledger import Ledger, ReplyRecord, StoredIncoming
from bot.messages import Incoming, Outgoing
from bot.models import Message, MessageStatus
from bot.personas import LoadedPersona
from bot.safety.stage import InputVerdict

__all__ = ["record_fixed_reply"]

log = structlog.get_logger("bot.safety")

_messages: Table = SQLModel.metadata.tables[Message.__tablename__]


async def record_fixed_reply(
    ledger: Ledger,
    incoming: Incoming,
    stored: StoredIncoming,
    loaded: LoadedPersona,
    verdict: InputVerdict,
    *,
    started: float,
) -> Outgoing | None:
    """Store `verdict.reply` as the answer to `stored`; the `Outgoing` that sends it,
    or None for silence (an empty reply)."""
    if verdict.reply is None or verdict.kind is None:
        raise ValueError("record_fixed_reply needs a verdict that answers")
    if not verdict.reply:
        mid = stored.message_id

        def settle(conn: Connection) -> None:
            conn.execute(
                update(_messages)
                .where(_messages.c.id == mid)
                .values(status=MessageStatus.IGNORED.value)
            )

        await ledger.db.run(settle)
        log.info("turn.safety_silence", message_id=mid, safety=verdict.kind)
        return None
    message_id = await ledger.record_reply(
        ReplyRecord(
            conversation_id=stored.conversation_id,
            user_id=stored.user_id,
            reply_to_id=stored.message_id,
            text=verdict.reply,
            persona_id=loaded.persona.id,
            persona_hash=loaded.content_hash,
            latency_ms=round((time.perf_counter() - started) * 1000, 3),
            kind=verdict.kind[:16],
        )
    )
    log.info("turn.safety_reply", message_id=message_id, safety=verdict.kind)
    return Outgoing(
        scope=incoming.scope,
        text=verdict.reply,
        reply_to_platform_id=incoming.platform_message_id,
        message_id=message_id,
        persona_hash=loaded.content_hash,
        safety=verdict.kind,
    )
