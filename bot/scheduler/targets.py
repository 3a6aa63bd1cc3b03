"""Who a persona may speak first to, read from the ledger.

A target is a direct conversation with the persona in which the person has
written at least once (speaking first to a stranger is not ours to do: on
Telegram a bot cannot, and everywhere it is unwelcome).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Connection, Table, and_, func, select
from sqlmodel import SQLModel

from bot.messages import Scope
from bot.models import Conversation, Direction, Message, User
from bot.safety.store import pause_until
from bot.scheduler.policy import PersonState, local_day_start

__all__ = ["Target", "load_target", "load_targets"]

_t = SQLModel.metadata.tables
_conversations: Table = _t[Conversation.__tablename__]
_messages: Table = _t[Message.__tablename__]
_users: Table = _t[User.__tablename__]


def _aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Target:
    """A person in a direct conversation with a persona, and their state now."""

    conversation_id: int
    user_id: int
    scope: Scope
    display_name: str
    last_incoming_at: datetime | None
    last_proactive_at: datetime | None
    state: PersonState


def _people_in(
    conn: Connection, persona: str, conversation_id: int | None
) -> list[tuple[int, int]]:
    conditions = [_conversations.c.is_direct.is_(True), _conversations.c.persona_id == persona]
    if conversation_id is not None:
        conditions.append(_conversations.c.id == conversation_id)
    rows = conn.execute(
        select(_messages.c.conversation_id, func.min(_messages.c.user_id))
        .select_from(
            _messages.join(_conversations, _messages.c.conversation_id == _conversations.c.id)
        )
        .where(and_(*conditions), _messages.c.direction == Direction.IN.value)
        .group_by(_messages.c.conversation_id)
    ).all()
    return [(int(r[0]), int(r[1])) for r in rows if r[1] is not None]


def load_targets(
    conn: Connection,
    persona: str,
    *,
    now: datetime,
    default_zone: str,
    conversation_id: int | None = None,
) -> list[Target]:
    """Every direct conversation of `persona` with a person who wrote in it."""
    targets = []
    for cid, uid in _people_in(conn, persona, conversation_id):
        conv = conn.execute(select(_conversations).where(_conversations.c.id == cid)).one()
        user = conn.execute(select(_users).where(_users.c.id == uid)).one()
        zone = user.timezone or default_zone
        last_in = _aware(
            conn.execute(
                select(func.max(_messages.c.created_at)).where(
                    _messages.c.conversation_id == cid,
                    _messages.c.direction == Direction.IN.value,
                    _messages.c.deleted_at.is_(None),
                )
            ).scalar()
        )
        proactive = and_(
            _messages.c.conversation_id == cid,
            _messages.c.direction == Direction.OUT.value,
            _messages.c.kind == "proactive",
        )
        day_start = local_day_start(now, zone).astimezone(UTC)
        sent_today = conn.execute(
            select(func.count()).where(proactive, _messages.c.created_at >= day_start)
        ).scalar_one()
        since = [proactive]
        if last_in is not None:
            since.append(_messages.c.created_at > last_in)
        unanswered = conn.execute(select(func.count()).where(*since)).scalar_one()
        last_proactive = _aware(
            conn.execute(select(func.max(_messages.c.created_at)).where(proactive)).scalar()
        )
        scope = Scope(
            platform=conv.platform,
            space=None,
            channel=conv.channel,
            thread=conv.thread,
            user=user.platform_user_id,
            persona=persona,
        )
        targets.append(
            Target(
                conversation_id=cid,
                user_id=uid,
                scope=scope,
                display_name=user.display_name,
                last_incoming_at=last_in,
                last_proactive_at=last_proactive,
                state=PersonState(
                    started=last_in is not None,
                    opted_out=bool(user.opted_out),
                    unreachable=user.unreachable_at is not None,
                    timezone=zone,
                    sent_today=int(sent_today),
                    unanswered_in_row=int(unanswered),
                    paused_until=pause_until(conn, uid, persona),
                ),
            )
        )
    return targets


def load_target(
    conn: Connection, persona: str, conversation_id: int, *, now: datetime, default_zone: str
) -> Target | None:
    """One conversation's target, or None when it is not (or no longer) one."""
    found = load_targets(
        conn, persona, now=now, default_zone=default_zone, conversation_id=conversation_id
    )
    return found[0] if found else None
