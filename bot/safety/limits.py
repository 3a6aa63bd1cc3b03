"""Limits per person and channel, and moderators' mutes, bans and exemptions.

    LimitStore    `person_limits` (a person's standing per persona, or "*" for all)
                  and `moderation_actions` (the audit: who, what, when, before/after)
    LimitsCheck   the input check: banned → silence; muted → silence; over
                  messages per minute (person or channel) or tokens per day → the
                  persona's limit message once, then silence until the window allows
                  again; exempt people skip the rate limits (a moderator override)

Windows are counted in this process, from each message's `received_at` (the clock
is the message's, so tests never sleep); the token count and every standing are
read from the database, so they hold across restarts and workers.
"""

from __future__ import annotations

import json
from collections import OrderedDict, deque
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Table, func, insert, select, update
from sqlmodel import SQLModel

from bot.config import LimitSettings
from bot.db import Database
from bot.models import Direction, Message, ModerationAction, PersonLimit
from bot.safety.stage import InputContext, InputHit

__all__ = [
    "ACTIONS",
    "AuditEntry",
    "LimitStore",
    "LimitsCheck",
    "Standing",
    "Window",
]

_limits: Table = SQLModel.metadata.tables[PersonLimit.__tablename__]
_actions: Table = SQLModel.metadata.tables[ModerationAction.__tablename__]
_messages: Table = SQLModel.metadata.tables[Message.__tablename__]

#: What a moderator can do, and what each sets.
ACTIONS: dict[str, dict[str, Any]] = {
    "mute": {"muted": True},
    "unmute": {"muted": False, "muted_until": None},
    "ban": {"banned": True},
    "unban": {"banned": False},
    "exempt": {"exempt": True},
    "unexempt": {"exempt": False},
}
ALL = "*"


def _aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Standing:
    """A person's standing with one persona (or with all, `persona` "*")."""

    muted: bool = False
    muted_until: datetime | None = None
    banned: bool = False
    exempt: bool = False
    reason: str | None = None

    def muted_at(self, now: datetime) -> bool:
        """Muted at `now` (a timed mute has ended by itself after `muted_until`)."""
        return self.muted and (self.muted_until is None or now < self.muted_until)

    def merged(self, other: Standing) -> Standing:
        """This standing together with another that also applies (for all personas)."""
        until = None
        if self.muted and other.muted:
            # The later end wins; an open mute (None) outlasts any timed one.
            if self.muted_until is not None and other.muted_until is not None:
                until = max(self.muted_until, other.muted_until)
        elif self.muted or other.muted:
            until = self.muted_until if self.muted else other.muted_until
        return Standing(
            muted=self.muted or other.muted,
            muted_until=until,
            banned=self.banned or other.banned,
            exempt=self.exempt or other.exempt,
            reason=self.reason or other.reason,
        )

    def as_json(self) -> str:
        data = asdict(self)
        if self.muted_until is not None:
            data["muted_until"] = self.muted_until.isoformat()
        return json.dumps(data, ensure_ascii=False)


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One moderator action, as audited."""

    id: int
    at: datetime
    platform: str
    moderator: str
    action: str
    target: str
    persona: str
    before: dict[str, Any]
    after: dict[str, Any]
    reason: str | None


def _json_standing(text: str) -> Standing:
    """A standing as `Standing.as_json` audited it."""
    data = json.loads(text)
    until = data.get("muted_until")
    return Standing(
        muted=bool(data.get("muted")),
        muted_until=_aware(datetime.fromisoformat(until)) if until else None,
        banned=bool(data.get("banned")),
        exempt=bool(data.get("exempt")),
        reason=data.get("reason"),
    )


def _row_standing(row: Any) -> Standing:
    return Standing(
        muted=bool(row.muted),
        muted_until=_aware(row.muted_until),
        banned=bool(row.banned),
        exempt=bool(row.exempt),
        reason=row.reason,
    )


class LimitStore:
    """Standings and the audit in the database (see the module docstring)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def standing(self, platform: str, user: str, persona: str) -> Standing:
        """The person's standing with `persona`, including what holds for all."""

        def work(conn: Connection) -> Standing:
            rows = conn.execute(
                select(_limits).where(
                    _limits.c.platform == platform,
                    _limits.c.platform_user_id == user,
                    _limits.c.persona_id.in_((persona, ALL)),
                )
            ).all()
            result = Standing()
            for row in rows:
                result = result.merged(_row_standing(row))
            return result

        return await self.db.read(work)

    async def apply(
        self,
        action: str,
        *,
        platform: str,
        target: str,
        persona: str,
        moderator: str,
        reason: str | None = None,
        until: datetime | None = None,
        now: datetime | None = None,
        event_id: int | None = None,
    ) -> tuple[Standing, Standing]:
        """Do a moderator's `action` (see `ACTIONS`) and audit it, in one transaction.

        `persona` is a persona id or "*" for all. Returns the standing (of that
        row) before and after. `until` ends a mute by itself.

        `event_id` is the inbox event whose command asks (`current_event()`): an
        action already done for it is not done again, and its audited standings are
        returned. So a command that runs again after a crash (its reply not stored
        yet) neither audits twice nor moves a timed mute's end by the downtime.
        """
        if action not in ACTIONS:
            raise ValueError(f"unknown action {action!r}; one of {', '.join(ACTIONS)}")
        at = now or datetime.now(UTC)
        values = dict(ACTIONS[action])
        if action == "mute":
            values["muted_until"] = until
        if reason is not None and action in ("mute", "ban"):
            values["reason"] = reason[:512]
        key = (
            _limits.c.platform == platform,
            _limits.c.platform_user_id == target,
            _limits.c.persona_id == persona,
        )

        def work(conn: Connection) -> tuple[Standing, Standing]:
            if event_id is not None:
                done = conn.execute(
                    select(_actions.c.before, _actions.c.after).where(
                        _actions.c.event_id == event_id
                    )
                ).first()
                if done is not None:
                    return _json_standing(done.before), _json_standing(done.after)
            row = conn.execute(select(_limits).where(*key)).first()
            before = _row_standing(row) if row is not None else Standing()
            stamp = {"updated_at": at, "updated_by": moderator[:256]}
            if row is None:
                fresh = {"muted": False, "banned": False, "exempt": False, **values, **stamp}
                conn.execute(
                    insert(_limits).values(
                        platform=platform, platform_user_id=target, persona_id=persona, **fresh
                    )
                )
            else:
                conn.execute(update(_limits).where(*key).values(**values, **stamp))
            after_row = conn.execute(select(_limits).where(*key)).one()
            after = _row_standing(after_row)
            conn.execute(
                insert(_actions).values(
                    created_at=at,
                    platform=platform,
                    moderator_id=moderator[:256],
                    action=action,
                    target_user_id=target,
                    persona_id=persona,
                    before=before.as_json(),
                    after=after.as_json(),
                    reason=(reason or None) and reason[:512],
                    event_id=event_id,
                )
            )
            return before, after

        return await self.db.run(work)

    async def audit(
        self, platform: str | None = None, target: str | None = None, *, limit: int = 50
    ) -> list[AuditEntry]:
        """Moderator actions, newest first (for one person, when given)."""
        conditions = []
        if platform is not None:
            conditions.append(_actions.c.platform == platform)
        if target is not None:
            conditions.append(_actions.c.target_user_id == target)

        def work(conn: Connection) -> list[AuditEntry]:
            rows = conn.execute(
                select(_actions).where(*conditions).order_by(_actions.c.id.desc()).limit(limit)
            ).all()
            return [
                AuditEntry(
                    id=r.id,
                    at=_aware(r.created_at) or r.created_at,
                    platform=r.platform,
                    moderator=r.moderator_id,
                    action=r.action,
                    target=r.target_user_id,
                    persona=r.persona_id,
                    before=json.loads(r.before),
                    after=json.loads(r.after),
                    reason=r.reason,
                )
                for r in rows
            ]

        return await self.db.read(work)

    async def tokens_since(self, user_id: int, persona: str, since: datetime) -> int:
        """Prompt and completion tokens of the replies to this person from `persona`
        since `since`."""
        used = func.coalesce(_messages.c.prompt_tokens, 0) + func.coalesce(
            _messages.c.completion_tokens, 0
        )

        def work(conn: Connection) -> int:
            value = conn.execute(
                select(func.coalesce(func.sum(used), 0)).where(
                    _messages.c.user_id == user_id,
                    _messages.c.direction == Direction.OUT.value,
                    _messages.c.persona_id == persona,
                    _messages.c.created_at >= since,
                )
            ).scalar()
            return int(value or 0)

        return await self.db.read(work)


class Window:
    """Events in the last `period`, by key, bounded in keys (the least recently used
    go first) and in events per key (`limit`: only the newest count)."""

    def __init__(self, limit: int, period: timedelta, *, max_keys: int = 100_000) -> None:
        self.limit = limit
        self.period = period
        self.max_keys = max_keys
        self._events: OrderedDict[str, deque[datetime]] = OrderedDict()

    def _trim(self, key: str, now: datetime) -> deque[datetime]:
        events = self._events.get(key)
        if events is None:
            events = self._events[key] = deque(maxlen=max(1, self.limit))
            if len(self._events) > self.max_keys:
                self._events.popitem(last=False)
        else:
            self._events.move_to_end(key)
        while events and events[0] <= now - self.period:
            events.popleft()
        return events

    def full(self, key: str, now: datetime) -> bool:
        """True when `limit` events already fall in the period ending at `now`."""
        return self.limit > 0 and len(self._trim(key, now)) >= self.limit

    def take(self, key: str, now: datetime) -> None:
        self._trim(key, now).append(now)


class LimitsCheck:
    """The input check for bans, mutes and limits (see the module docstring).

    Verdicts: "banned", "muted" (silence: `reply=""`), "limited" (the limit message,
    said once per limit and window; then silence until the window has room again).
    """

    name = "limits"

    def __init__(self, store: LimitStore, settings: LimitSettings | None = None) -> None:
        self.store = store
        self.settings = settings or LimitSettings()
        minute = timedelta(minutes=1)
        self._people = Window(self.settings.messages_per_minute, minute)
        self._channels = Window(self.settings.channel_messages_per_minute, minute)
        # Who was told about which limit, until when (a bounded record).
        self._told: OrderedDict[str, datetime] = OrderedDict()

    async def check(self, ctx: InputContext) -> InputHit | None:
        scope, now = ctx.scope, _aware(ctx.now) or datetime.now(UTC)
        standing = await self.store.standing(scope.platform, scope.user, scope.persona)
        if standing.banned:
            return InputHit(self.name, "banned", standing.reason or "banned", reply="")
        if standing.muted_at(now):
            until = standing.muted_until.isoformat() if standing.muted_until else "unmuted"
            return InputHit(
                self.name,
                "muted",
                standing.reason or "muted",
                reply="",
                details={"until": until},
            )
        if standing.exempt:
            return None
        person = f"{scope.platform}\0{scope.user}\0{scope.persona}"
        channel = f"{scope.platform}\0{scope.channel}\0{scope.thread or ''}"
        if self._people.full(person, now):
            return self._limited(ctx, person, "messages per minute", now + timedelta(minutes=1))
        if self._channels.full(channel, now):
            return self._limited(
                ctx, channel, "channel messages per minute", now + timedelta(minutes=1)
            )
        if self.settings.tokens_per_day > 0:
            day = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
            used = await self.store.tokens_since(ctx.user_id, scope.persona, day)
            if used >= self.settings.tokens_per_day:
                hit = self._limited(ctx, f"{person}\0day", "tokens per day", day + timedelta(1))
                return _with(hit, used=used)
        self._people.take(person, now)
        self._channels.take(channel, now)
        return None

    def _limited(self, ctx: InputContext, key: str, which: str, until: datetime) -> InputHit:
        now = _aware(ctx.now) or datetime.now(UTC)
        told = self._told.get(key)
        say = told is None or told <= now
        if say:
            self._told[key] = until
            self._told.move_to_end(key)
            if len(self._told) > 100_000:
                self._told.popitem(last=False)
        persona_text = getattr(ctx.loaded.persona.safety, "limit_message", None)
        text = persona_text or self.settings.message
        return InputHit(
            self.name,
            "limited",
            f"over {which}",
            reply=text if say else "",
            details={"limit": which, "told": say},
        )


def _with(hit: InputHit, **details: object) -> InputHit:
    return InputHit(
        hit.check,
        hit.verdict,
        hit.reason,
        reply=hit.reply,
        notice=hit.notice,
        guidance=hit.guidance,
        details={**hit.details, **details},
    )
