"""The people list and one person's page: memories, consent history, standing limits
and conversations (re-exported by bot/web/dashboard/data_service.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Connection, func, select

from bot.web.dashboard.data_tables import (
    PAGE,
    NotFound,
    _consent,
    _conv,
    _facts,
    _limits,
    _msg,
    _person_match,
    _summaries,
    _users,
    _utc,
)

__all__ = ["MemoryRow", "PersonRow", "PersonView", "list_people", "memory_persona", "person_view"]


@dataclass(frozen=True, slots=True)
class PersonRow:
    id: int
    platform: str
    platform_user_id: str
    display_name: str
    is_bot: bool
    opted_out: bool
    last_seen_at: datetime


def list_people(
    conn: Connection,
    *,
    query: str | None = None,
    platform: str | None = None,
    before: int | None = None,
    limit: int = PAGE,
) -> tuple[list[PersonRow], int | None]:
    """People, newest first; `query` is a platform user id or the start of a name.
    Returns the page and the `before` id of the next one (or None)."""
    limit = max(1, min(limit, 200))
    u = _users.c
    stmt = select(_users).order_by(u.id.desc()).limit(limit + 1)
    if query:
        stmt = stmt.where(_person_match(query))
    if platform:
        stmt = stmt.where(u.platform == platform)
    if before is not None:
        stmt = stmt.where(u.id < before)
    rows = [
        PersonRow(
            r.id,
            r.platform,
            r.platform_user_id,
            r.display_name,
            bool(r.is_bot),
            bool(r.opted_out),
            _utc(r.last_seen_at) or datetime.now(UTC),
        )
        for r in conn.execute(stmt)
    ]
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (rows[-1].id if more and rows else None)


@dataclass(frozen=True, slots=True)
class MemoryRow:
    ref: str
    kind: str
    text: str
    persona_id: str
    at: datetime | None
    sources: str


@dataclass(frozen=True, slots=True)
class PersonView:
    person: PersonRow
    timezone: str | None
    age_answer: str | None
    unreachable: str | None
    consent: list[tuple[datetime, bool]]
    memories: list[MemoryRow]
    #: (persona, muted, banned, exempt, reason, updated_by)
    limits: list[tuple[str, bool, bool, bool, str | None, str]]
    #: (conversation id, persona, platform, channel, messages by or to the person)
    conversations: list[tuple[int, str, str, str, int]]
    personas: list[str]


def person_view(conn: Connection, user_id: int, *, limit: int = 200) -> PersonView:
    """What the bot keeps about one person: memories (current facts and summaries,
    newest first, at most `limit` each), consent history, standing limits, and the
    conversations their messages are in."""
    r = conn.execute(select(_users).where(_users.c.id == user_id)).first()
    if r is None:
        raise NotFound(f"no person {user_id}")
    person = PersonRow(
        r.id,
        r.platform,
        r.platform_user_id,
        r.display_name,
        bool(r.is_bot),
        bool(r.opted_out),
        _utc(r.last_seen_at) or datetime.now(UTC),
    )
    consent = [
        (_utc(at) or datetime.now(UTC), bool(opted_in))
        for at, opted_in in conn.execute(
            select(_consent.c.at, _consent.c.opted_in)
            .where(_consent.c.user_id == user_id)
            .order_by(_consent.c.at.desc(), _consent.c.id.desc())
            .limit(limit)
        )
    ]
    memories = [
        MemoryRow(f"f{f.id}", "fact", f.text, f.persona_id, _utc(f.updated_at), f.source_ids)
        for f in conn.execute(
            select(_facts)
            .where(_facts.c.user_id == user_id, _facts.c.superseded_by.is_(None))
            .order_by(_facts.c.id.desc())
            .limit(limit)
        )
    ]
    memories += [
        MemoryRow(
            f"s{s.id}",
            "summary",
            s.text,
            s.persona_id,
            _utc(s.end_at),
            f"#{s.first_message_id}–#{s.last_message_id}",
        )
        for s in conn.execute(
            select(_summaries)
            .where(_summaries.c.user_id == user_id)
            .order_by(_summaries.c.id.desc())
            .limit(limit)
        )
    ]
    limits = [
        (x.persona_id, bool(x.muted), bool(x.banned), bool(x.exempt), x.reason, x.updated_by)
        for x in conn.execute(
            select(_limits)
            .where(
                _limits.c.platform == person.platform,
                _limits.c.platform_user_id == person.platform_user_id,
            )
            .limit(50)
        )
    ]
    convs = [
        (int(cid), str(pid), str(platform), str(channel), int(n))
        for cid, pid, platform, channel, n in conn.execute(
            select(_conv.c.id, _conv.c.persona_id, _conv.c.platform, _conv.c.channel, func.count())
            .join(_msg, _msg.c.conversation_id == _conv.c.id)
            .where(_msg.c.user_id == user_id)
            .group_by(_conv.c.id, _conv.c.persona_id, _conv.c.platform, _conv.c.channel)
            .order_by(_conv.c.id.desc())
            .limit(50)
        )
    ]
    personas = sorted({m.persona_id for m in memories} | {c[1] for c in convs})
    return PersonView(
        person=person,
        timezone=r.timezone,
        age_answer=r.age_answer,
        unreachable=r.unreachable_reason if r.unreachable_at is not None else None,
        consent=consent,
        memories=sorted(memories, key=lambda m: m.at or datetime.min.replace(tzinfo=UTC),
                        reverse=True),
        limits=limits,
        conversations=convs,
        personas=personas,
    )  # fmt: skip


def memory_persona(conn: Connection, user_id: int, ref: str) -> str | None:
    """The persona a person's memory `f12` / `s3` / `m45` belongs to (None: no such
    memory of this person). For the permission check before a forget."""
    table = {"f": _facts, "s": _summaries, "m": _msg}.get(ref[:1])
    digits = ref[1:]
    if table is None or not digits.isascii() or not digits.isdigit() or len(digits) > 18:
        return None
    row = conn.execute(
        select(table.c.persona_id).where(table.c.id == int(digits), table.c.user_id == user_id)
    ).first()
    return None if row is None else str(row.persona_id)
