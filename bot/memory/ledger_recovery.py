"""The ledger's queries for what a stop or crash left behind: every unfinished
message of a platform, and whether an `away` notice was the last thing said."""

from __future__ import annotations

from sqlalchemy import Connection, and_, or_, select

from bot.db import Database
from bot.memory.ledger_records import Unfinished
from bot.memory.ledger_sql import (
    _UNFINISHED_IN,
    _UNFINISHED_OUT,
    _aware,
    _conversations,
    _messages,
    _users,
)
from bot.messages import Scope
from bot.models import Direction

#: Outgoing kinds a restart delivers: every reply that moves through the outbox's
#: states. A greeting and a command's reply do since bot/inbox/outbox.py (a greeting
#: stored before that, with no person, is never found: it was sent inside /start's text).
_REDELIVERED_KINDS = (
    *("message", "proactive", "apology", "away", "greeting", "command"),
    *("crisis", "disclosure", "limited", "age_gate"),  # the safety stage's fixed replies
)


class _RecoveryQueries:
    """The ledger's recovery queries (a part of `Ledger`)."""

    db: Database

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
