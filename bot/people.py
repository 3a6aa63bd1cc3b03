"""What the bot keeps about people besides their messages: consent, reachability,
time zone, feedback on replies, edits and deletions, and persona switches.

Adapters reach it through `AdapterServices.people`; everything is keyed by the
platform user id (never a display name). All work runs through `Database.run`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Table, and_, delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import SQLModel

from bot.db import Database
from bot.messages import Reaction, Scope
from bot.models import (
    ConsentEvent,
    Conversation,
    Direction,
    Failure,
    Feedback,
    Message,
    PersonaBinding,
    User,
)
from bot.text import clean_text

__all__ = ["People", "place_key"]

_t = SQLModel.metadata.tables
_users: Table = _t[User.__tablename__]
_consent: Table = _t[ConsentEvent.__tablename__]
_feedback: Table = _t[Feedback.__tablename__]
_messages: Table = _t[Message.__tablename__]
_conversations: Table = _t[Conversation.__tablename__]
_bindings: Table = _t[PersonaBinding.__tablename__]
_failures: Table = _t[Failure.__tablename__]


def place_key(platform: str, space: str | None, channel: str | None) -> str:
    """Where a persona binding applies: a channel, a whole server (channel None), or a DM."""
    return f"{platform}/{space or '-'}/{channel or '*'}"


def _now() -> datetime:
    return datetime.now(UTC)


class People:
    """Consent, reachability and feedback, per platform user."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # -- users -----------------------------------------------------------------------

    @staticmethod
    def _user_row(conn: Connection, platform: str, user_id: str) -> Any:
        return conn.execute(
            select(_users).where(
                and_(_users.c.platform == platform, _users.c.platform_user_id == user_id)
            )
        ).first()

    @staticmethod
    def _ensure_user(conn: Connection, platform: str, user_id: str, now: datetime) -> int:
        row = People._user_row(conn, platform, user_id)
        if row is not None:
            return int(row.id)
        try:
            # In a savepoint: when another worker inserts the same person first, only
            # this insert rolls back (PostgreSQL would otherwise abort the whole
            # transaction), and their row is read instead.
            with conn.begin_nested():
                result = conn.execute(
                    insert(_users).values(
                        platform=platform,
                        platform_user_id=user_id,
                        display_name="",
                        is_bot=False,
                        created_at=now,
                        last_seen_at=now,
                        opted_out=False,
                    )
                )
        except IntegrityError:
            row = People._user_row(conn, platform, user_id)
            assert row is not None, "an insert that collided leaves the other row"
            return int(row.id)
        key = result.inserted_primary_key
        assert key is not None
        return int(key[0])

    async def set_opted_out(self, platform: str, user_id: str, opted_out: bool) -> None:
        """Record an opt-out (or opt-in) now; the history of both is kept for exports."""
        now = _now()

        def work(conn: Connection) -> None:
            uid = self._ensure_user(conn, platform, user_id, now)
            conn.execute(update(_users).where(_users.c.id == uid).values(opted_out=opted_out))
            conn.execute(insert(_consent).values(user_id=uid, opted_in=not opted_out, at=now))

        await self.db.run(work)

    async def is_opted_out(self, platform: str, user_id: str) -> bool:
        """Whether the person has opted out (unknown people have not)."""

        def work(conn: Connection) -> bool:
            row = self._user_row(conn, platform, user_id)
            return bool(row is not None and row.opted_out)

        return await self.db.run(work)

    async def mark_unreachable(self, platform: str, user_id: str, reason: str) -> None:
        """The platform refused to deliver to this person (blocked, never started, DMs
        closed): no more proactive sends until they write again."""
        now = _now()

        def work(conn: Connection) -> None:
            uid = self._ensure_user(conn, platform, user_id, now)
            conn.execute(
                update(_users)
                .where(_users.c.id == uid)
                .values(unreachable_at=now, unreachable_reason=reason[:512])
            )

        await self.db.run(work)

    async def mark_reachable(self, platform: str, user_id: str) -> None:
        """The person wrote to us again: they can be reached."""

        def work(conn: Connection) -> None:
            conn.execute(
                update(_users)
                .where(and_(_users.c.platform == platform, _users.c.platform_user_id == user_id))
                .values(unreachable_at=None, unreachable_reason=None)
            )

        await self.db.run(work)

    async def is_reachable(self, platform: str, user_id: str) -> bool:
        """False once a send to the person was refused as unreachable."""

        def work(conn: Connection) -> bool:
            row = self._user_row(conn, platform, user_id)
            return row is None or row.unreachable_at is None

        return await self.db.run(work)

    async def set_timezone(self, platform: str, user_id: str, zone: str) -> None:
        """The person's IANA time zone (validated by the caller)."""
        now = _now()

        def work(conn: Connection) -> None:
            uid = self._ensure_user(conn, platform, user_id, now)
            conn.execute(update(_users).where(_users.c.id == uid).values(timezone=zone))

        await self.db.run(work)

    # -- feedback, edits, deletions ------------------------------------------------------

    @staticmethod
    def _message_in_scope(
        conn: Connection, scope: Scope, platform_message_id: str, direction: Direction
    ) -> int | None:
        found = conn.execute(
            select(_messages.c.id)
            .select_from(
                _messages.join(_conversations, _messages.c.conversation_id == _conversations.c.id)
            )
            .where(
                _conversations.c.key == scope.conversation_key,
                _messages.c.platform_message_id == platform_message_id,
                _messages.c.direction == direction.value,
            )
            .order_by(_messages.c.id.desc())
        ).first()
        return None if found is None else int(found.id)

    async def author_persona(
        self, scope: Scope, platform_message_id: str, personas: tuple[str, ...]
    ) -> str | None:
        """Which of `personas` sent the message `platform_message_id` in `scope`'s place
        (its reply there); None if none of them did. The groups layer asks this to
        know whom a reply to the bot's account was meant for."""
        keys = {scope.with_persona(p).conversation_key: p for p in personas}

        def work(conn: Connection) -> str | None:
            found = conn.execute(
                select(_conversations.c.key)
                .select_from(
                    _messages.join(
                        _conversations, _messages.c.conversation_id == _conversations.c.id
                    )
                )
                .where(
                    _conversations.c.key.in_(list(keys)),
                    _messages.c.platform_message_id == platform_message_id,
                    _messages.c.direction == Direction.OUT.value,
                )
                .order_by(_messages.c.id.desc())
            ).first()
            return None if found is None else keys.get(str(found.key))

        return await self.db.run(work)

    async def record_reaction(self, reaction: Reaction) -> bool:
        """Store a reaction on one of the persona's messages; False if it is not one."""

        def work(conn: Connection) -> bool:
            message_id = self._message_in_scope(
                conn, reaction.scope, reaction.platform_message_id, Direction.OUT
            )
            if message_id is None:
                return False
            uid = self._ensure_user(conn, reaction.actor.platform, reaction.actor.id, reaction.at)
            conn.execute(
                insert(_feedback).values(
                    message_id=message_id,
                    user_id=uid,
                    emoji=reaction.emoji[:64],
                    added=reaction.added,
                    at=reaction.at,
                )
            )
            return True

        return await self.db.run(work)

    async def record_edit(self, scope: Scope, platform_message_id: str, text: str) -> bool:
        """A person edited their message: the stored text follows; False if unknown."""
        return await self._update_incoming(
            scope, platform_message_id, text=clean_text(text), edited_at=_now()
        )

    async def record_delete(self, scope: Scope, platform_message_id: str) -> bool:
        """A person deleted their message: it leaves prompts and exports; False if unknown."""
        return await self._update_incoming(scope, platform_message_id, deleted_at=_now())

    async def _update_incoming(self, scope: Scope, platform_message_id: str, **values: Any) -> bool:
        """Set `values` on the person's message in `scope`; False if it is not known."""

        def work(conn: Connection) -> bool:
            message_id = self._message_in_scope(conn, scope, platform_message_id, Direction.IN)
            if message_id is None:
                return False
            conn.execute(update(_messages).where(_messages.c.id == message_id).values(**values))
            return True

        return await self.db.run(work)

    async def forget_messages(self, platform: str, user_id: str) -> int:
        """Delete every message by or to this person, and what hangs off them; returns
        how many messages went. (The memory part, when present, also forgets facts.)"""

        def work(conn: Connection) -> int:
            row = self._user_row(conn, platform, user_id)
            if row is None:
                return 0
            ids = select(_messages.c.id).where(_messages.c.user_id == row.id)
            conn.execute(delete(_feedback).where(_feedback.c.message_id.in_(ids)))
            conn.execute(
                update(_failures).where(_failures.c.message_id.in_(ids)).values(message_id=None)
            )
            conn.execute(
                update(_messages).where(_messages.c.reply_to_id.in_(ids)).values(reply_to_id=None)
            )
            result = conn.execute(delete(_messages).where(_messages.c.user_id == row.id))
            return int(result.rowcount or 0)

        return await self.db.run(work)

    # -- persona bindings ---------------------------------------------------------------

    async def bound_persona(self, place: str) -> str | None:
        """The persona someone switched this place to, if any."""

        def work(conn: Connection) -> str | None:
            row = conn.execute(select(_bindings.c.persona_id).where(_bindings.c.place == place))
            value = row.scalar()
            return None if value is None else str(value)

        return await self.db.run(work)

    async def bind_persona(
        self, place: str, persona_id: str, *, platform: str, by_user: str | None
    ) -> None:
        """Switch the persona of a place (a channel, a server, or a DM)."""
        now = _now()

        def work(conn: Connection) -> None:
            uid = self._ensure_user(conn, platform, by_user, now) if by_user else None
            existing = conn.execute(
                select(_bindings.c.id).where(_bindings.c.place == place)
            ).scalar()
            if existing is None:
                try:
                    with conn.begin_nested():  # another worker may bind it first
                        conn.execute(
                            insert(_bindings).values(
                                place=place, persona_id=persona_id, set_by=uid, at=now
                            )
                        )
                    return
                except IntegrityError:
                    pass  # theirs is there now: the later switch wins, as below
            conn.execute(
                update(_bindings)
                .where(_bindings.c.place == place)
                .values(persona_id=persona_id, set_by=uid, at=now)
            )

        await self.db.run(work)
