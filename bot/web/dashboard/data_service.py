"""What the conversations and people pages read and change, without HTTP.

Every function takes a SQLAlchemy `Connection` (run it with `db.read` / `db.run`)
and is the same SQL on SQLite and PostgreSQL. Every list is bounded and paged by a
key (never OFFSET): conversations by (last message time, id), messages and people
by id. Text search looks at the newest `SEARCH_WINDOW` messages only, so a search
for a rare word costs at most that many rows, however large the ledger grows.

Changes (`flag_reply`, `unflag_reply`, `correct_reply`) write their audit row in
the same transaction. The audit keeps no message text: a correction is recorded by
its length and SHA-256, so that a later forget, which deletes the reply row (and
the correction on it), leaves no byte of it behind in the audit log either.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Table, and_, exists, func, or_, select, update
from sqlmodel import SQLModel

import bot.memory.tables  # facts, summaries in the metadata
import bot.models  # noqa: F401  (the ledger's tables in the metadata)
from bot.web.dashboard.store import Moderator, audit

__all__ = [
    "CORRECTION_MAX_CHARS",
    "PAGE",
    "SEARCH_WINDOW",
    "ConversationFilter",
    "ConversationPage",
    "ConversationRow",
    "MessageRow",
    "MessageView",
    "NotFound",
    "PersonView",
    "conversation_view",
    "correct_reply",
    "flag_reply",
    "list_conversations",
    "list_people",
    "message_persona",
    "parse_cursor",
    "person_view",
    "unflag_reply",
]

#: Rows per page of every list.
PAGE = 50
#: How many of the newest messages a text search looks through.
SEARCH_WINDOW = 100_000
CORRECTION_MAX_CHARS = 8000
FLAG_REASON_MAX_CHARS = 500

_t = SQLModel.metadata.tables
_conv: Table = _t["conversations"]
_msg: Table = _t["messages"]
_users: Table = _t["users"]
_fail: Table = _t["failures"]
_safety: Table = _t["safety_events"]
_consent: Table = _t["consent_events"]
_facts: Table = _t["facts"]
_summaries: Table = _t["summaries"]
_limits: Table = _t["person_limits"]
_adapters: Table = _t["lora_adapters"]
_feedback: Table = _t["feedback"]


class NotFound(LookupError):
    """No such conversation, message or person (the page answers 404)."""


def _like(text: str) -> str:
    """`text` as a LIKE pattern that matches it literally anywhere (escape `\\`)."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _prefix(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"{escaped}%"


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# -- conversations ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConversationFilter:
    """What the conversations list is narrowed to (every field optional)."""

    persona: str | None = None
    platform: str | None = None
    channel: str | None = None
    #: A platform user id (exact) or the start of a display name.
    person: str | None = None
    #: Words in a message (among the newest `SEARCH_WINDOW`).
    text: str | None = None


@dataclass(frozen=True, slots=True)
class ConversationRow:
    id: int
    platform: str
    space: str | None
    channel: str
    thread: str | None
    persona_id: str
    is_direct: bool
    last_message_at: datetime


@dataclass(frozen=True, slots=True)
class ConversationPage:
    rows: list[ConversationRow]
    #: The cursor of the next (older) page, or None.
    next_cursor: str | None


def parse_cursor(cursor: str | None) -> tuple[datetime, int] | None:
    """`<epoch microseconds>.<id>` (what `next_cursor` gives) -> (time, id);
    `ValueError` for anything else."""
    if not cursor:
        return None
    micros, _, ident = cursor.partition(".")
    if not (micros.isascii() and micros.isdigit() and ident.isascii() and ident.isdigit()):
        raise ValueError("not a page cursor")
    if len(micros) > 17 or len(ident) > 18:
        raise ValueError("not a page cursor")
    try:
        at = datetime.fromtimestamp(int(micros) / 1_000_000, UTC)
    except (OverflowError, OSError, ValueError):
        raise ValueError("not a page cursor") from None
    return at, int(ident)


def _cursor(row: ConversationRow) -> str:
    at = row.last_message_at.astimezone(UTC)
    micros = int(at.timestamp()) * 1_000_000 + at.microsecond
    return f"{micros}.{row.id}"


def _person_ids(text: str) -> Any:
    """The ids (at most 50) of people whose platform id is `text` or whose display
    name starts with it."""
    return (
        select(_users.c.id)
        .where(
            or_(
                _users.c.platform_user_id == text,
                _users.c.display_name.ilike(_prefix(text), escape="\\"),
            )
        )
        .limit(50)
        .scalar_subquery()
    )


def list_conversations(
    conn: Connection,
    where: ConversationFilter,
    *,
    cursor: str | None = None,
    limit: int = PAGE,
) -> ConversationPage:
    """Conversations, the most recently active first, `limit` per page."""
    limit = max(1, min(limit, 200))
    c = _conv.c
    query = select(_conv).order_by(c.last_message_at.desc(), c.id.desc()).limit(limit + 1)
    if where.persona:
        query = query.where(c.persona_id == where.persona)
    if where.platform:
        query = query.where(c.platform == where.platform)
    if where.channel:
        query = query.where(
            or_(c.channel == where.channel, c.space == where.channel, c.thread == where.channel)
        )
    if where.person:
        # From the person's messages (the user_id index) to their conversations, not
        # from every conversation to its messages.
        query = query.where(
            c.id.in_(
                select(_msg.c.conversation_id).where(_msg.c.user_id.in_(_person_ids(where.person)))
            )
        )
    if where.text:
        newest = conn.execute(select(func.max(_msg.c.id))).scalar() or 0
        query = query.where(
            exists().where(
                _msg.c.conversation_id == c.id,
                _msg.c.id > newest - SEARCH_WINDOW,
                _msg.c.text.ilike(_like(where.text), escape="\\"),
            )
        )
    after = parse_cursor(cursor)
    if after is not None:
        at, ident = after
        query = query.where(
            or_(c.last_message_at < at, and_(c.last_message_at == at, c.id < ident))
        )
    rows = [
        ConversationRow(
            id=r.id,
            platform=r.platform,
            space=r.space,
            channel=r.channel,
            thread=r.thread,
            persona_id=r.persona_id,
            is_direct=bool(r.is_direct),
            last_message_at=_utc(r.last_message_at) or datetime.now(UTC),
        )
        for r in conn.execute(query)
    ]
    more = len(rows) > limit
    rows = rows[:limit]
    return ConversationPage(rows, _cursor(rows[-1]) if more and rows else None)


@dataclass(slots=True)
class MessageRow:
    """One message as the conversation page shows it, with why it went as it did."""

    id: int
    direction: str
    kind: str
    status: str
    text: str
    created_at: datetime
    person: str | None
    platform_user_id: str | None
    user_id: int | None
    reply_to_id: int | None
    persona_hash: str | None
    backend: str | None
    model: str | None
    adapter: bool
    latency_ms: float | None
    prompt_tokens: int | None
    completion_tokens: int | None
    truncated: bool
    edited: bool
    deleted: bool
    flagged_at: datetime | None
    flag_reason: str | None
    corrected_text: str | None
    corrected_by: str | None
    ups: int = 0
    downs: int = 0
    #: Why the bot spoke or stayed silent, as the ledger and the safety log record it:
    #: (catalogue key, values) pairs.
    why: list[tuple[str, dict[str, Any]]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class MessageView:
    conversation: ConversationRow
    key: str
    #: Oldest first (the page reads top to bottom).
    messages: list[MessageRow]
    #: The `before` id of the next older page, or None.
    older: int | None


#: Why a message went as it did: catalogue keys (data_strings.py), with values.
Why = tuple[str, dict[str, Any]]

_WHY_IN = {
    "ignored": "why.ignored",
    "expired": "why.expired",
    "received": "why.received",
    "answering": "why.answering",
}
_WHY_OUT = {
    "greeting": "why.greeting",
    "proactive": "why.proactive",
    "apology": "why.apology",
}


def _why(row: MessageRow, answered_by: dict[int, list[int]]) -> list[Why]:
    reasons: list[Why] = []
    if row.direction == "in":
        if row.status in _WHY_IN:
            reasons.append((_WHY_IN[row.status], {}))
        replies = answered_by.get(row.id)
        if replies:
            reasons.append(("why.answered_by", {"ids": ", ".join(f"#{i}" for i in replies)}))
        elif row.status == "answered":
            reasons.append(("why.reply_gone", {}))
        elif row.status == "failed":
            reasons.append(("why.failed", {}))
        if row.truncated:
            reasons.append(("why.truncated", {}))
    else:
        if row.kind in _WHY_OUT:
            reasons.append((_WHY_OUT[row.kind], {}))
        elif row.reply_to_id is not None:
            reasons.append(("why.reply_to", {"id": row.reply_to_id}))
        if row.backend is None and row.kind == "message":
            reasons.append(("why.safety_stage", {}))
        if row.status == "undeliverable":
            reasons.append(("why.undeliverable", {}))
    return reasons


def conversation_view(
    conn: Connection, conversation_id: int, *, before: int | None = None, limit: int = PAGE
) -> MessageView:
    """One conversation's messages, newest `limit` before message id `before`."""
    limit = max(1, min(limit, 200))
    conv = conn.execute(select(_conv).where(_conv.c.id == conversation_id)).first()
    if conv is None:
        raise NotFound(f"no conversation {conversation_id}")
    m = _msg.c
    query = (
        select(
            _msg,
            _users.c.display_name,
            _users.c.platform_user_id,
        )
        .select_from(_msg.outerjoin(_users, _users.c.id == m.user_id))
        .where(m.conversation_id == conversation_id)
        .order_by(m.id.desc())
        .limit(limit + 1)
    )
    if before is not None:
        query = query.where(m.id < before)
    raw = list(conn.execute(query))
    more = len(raw) > limit
    raw = raw[:limit]
    ids = [r.id for r in raw]
    models_used = {r.model for r in raw if r.model}
    adapters = (
        {
            str(n)
            for n in conn.execute(
                select(_adapters.c.name).where(_adapters.c.name.in_(sorted(models_used)))
            ).scalars()
        }
        if models_used
        else set()
    )
    rows = [
        MessageRow(
            id=r.id,
            direction=r.direction,
            kind=r.kind,
            status=r.status,
            text=r.text,
            created_at=_utc(r.created_at) or datetime.now(UTC),
            person=(r.display_name or None) if r.direction == "in" else None,
            platform_user_id=r.platform_user_id,
            user_id=r.user_id,
            reply_to_id=r.reply_to_id,
            persona_hash=r.persona_hash,
            backend=r.backend,
            model=r.model,
            adapter=r.model in adapters,
            latency_ms=r.latency_ms,
            prompt_tokens=r.prompt_tokens,
            completion_tokens=r.completion_tokens,
            truncated=bool(r.truncated),
            edited=r.edited_at is not None,
            deleted=r.deleted_at is not None,
            flagged_at=_utc(r.flagged_at),
            flag_reason=r.flag_reason,
            corrected_text=r.corrected_text,
            corrected_by=r.corrected_by,
        )
        for r in reversed(raw)
    ]
    if ids:
        _attach_reasons(conn, conversation_id, rows, ids)
    return MessageView(
        conversation=ConversationRow(
            id=conv.id,
            platform=conv.platform,
            space=conv.space,
            channel=conv.channel,
            thread=conv.thread,
            persona_id=conv.persona_id,
            is_direct=bool(conv.is_direct),
            last_message_at=_utc(conv.last_message_at) or datetime.now(UTC),
        ),
        key=conv.key,
        messages=rows,
        older=raw[-1].id if more and raw else None,
    )


def _attach_reasons(
    conn: Connection, conversation_id: int, rows: list[MessageRow], ids: Sequence[int]
) -> None:
    by_id = {row.id: row for row in rows}
    answered_by: dict[int, list[int]] = defaultdict(list)
    for reply_id, asked in conn.execute(
        select(_msg.c.id, _msg.c.reply_to_id)
        .where(
            _msg.c.conversation_id == conversation_id,
            _msg.c.reply_to_id.in_(ids),
            _msg.c.direction == "out",
        )
        .order_by(_msg.c.id)
        .limit(4 * len(ids))
    ):
        answered_by[int(asked)].append(int(reply_id))
    failures: dict[int, list[Why]] = defaultdict(list)
    for mid, stage, error_type, reason in conn.execute(
        select(_fail.c.message_id, _fail.c.stage, _fail.c.error_type, _fail.c.reason)
        .where(_fail.c.message_id.in_(ids))
        .order_by(_fail.c.id)
        .limit(4 * len(ids))
    ):
        failures[int(mid)].append(
            ("why.failure", {"stage": stage, "type": error_type, "reason": str(reason)[:300]})
        )
    safety: dict[int, list[Why]] = defaultdict(list)
    for mid, check, verdict, reason in conn.execute(
        select(_safety.c.message_id, _safety.c.check_name, _safety.c.verdict, _safety.c.reason)
        .where(_safety.c.message_id.in_(ids))
        .order_by(_safety.c.id)
        .limit(4 * len(ids))
    ):
        safety[int(mid)].append(
            ("why.safety", {"check": check, "verdict": verdict, "reason": str(reason)[:300]})
        )
    # Reactions as they stand now (the latest add/remove per person and emoji).
    latest: dict[tuple[int, int, str], bool] = {}
    for mid, uid, emoji, added in conn.execute(
        select(_feedback.c.message_id, _feedback.c.user_id, _feedback.c.emoji, _feedback.c.added)
        .where(_feedback.c.message_id.in_(ids))
        .order_by(_feedback.c.at, _feedback.c.id)
        .limit(50 * len(ids))
    ):
        latest[(int(mid), int(uid), str(emoji))] = bool(added)
    for (mid, _uid, emoji), added in latest.items():
        if added and emoji.startswith("👍"):
            by_id[mid].ups += 1
        elif added and emoji.startswith("👎"):
            by_id[mid].downs += 1
    for row in rows:
        row.why = _why(row, answered_by) + failures.get(row.id, []) + safety.get(row.id, [])


# -- flags and corrections --------------------------------------------------------------


def message_persona(conn: Connection, message_id: int) -> tuple[str, str, int]:
    """(persona id, direction, conversation id) of a message; `NotFound` if none."""
    row = conn.execute(
        select(_msg.c.persona_id, _msg.c.direction, _msg.c.conversation_id).where(
            _msg.c.id == message_id
        )
    ).first()
    if row is None:
        raise NotFound(f"no message {message_id}")
    return str(row.persona_id), str(row.direction), int(row.conversation_id)


def _reply_state(conn: Connection, message_id: int) -> Any:
    row = conn.execute(
        select(
            _msg.c.direction,
            _msg.c.flagged_at,
            _msg.c.flag_reason,
            _msg.c.corrected_text,
            _msg.c.corrected_by,
        ).where(_msg.c.id == message_id)
    ).first()
    if row is None:
        raise NotFound(f"no message {message_id}")
    if row.direction != "out":
        raise ValueError("only the persona's replies can be flagged or corrected")
    return row


def _digest(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    return {"chars": len(text), "sha256": hashlib.sha256(text.encode()).hexdigest()}


def _state(row: Any) -> dict[str, Any]:
    return {
        "flagged": row.flagged_at is not None,
        "reason": row.flag_reason,
        "correction": _digest(row.corrected_text),
    }


def flag_reply(
    conn: Connection, who: Moderator, message_id: int, reason: str, *, now: datetime
) -> None:
    """Flag the persona's reply `message_id`: it leaves every later training export
    (`bot export`'s `flagged` filter). Audited."""
    reason = " ".join(reason.split())[:FLAG_REASON_MAX_CHARS] or "flagged by a moderator"
    before = _reply_state(conn, message_id)
    conn.execute(
        update(_msg).where(_msg.c.id == message_id).values(flagged_at=now, flag_reason=reason)
    )
    after = _reply_state(conn, message_id)
    audit(conn, who, "reply.flag", f"message:{message_id}", _state(before), _state(after), now=now)


def unflag_reply(conn: Connection, who: Moderator, message_id: int, *, now: datetime) -> None:
    """Take a flag back (and the correction with it: a corrected reply stays flagged
    for as long as it has a correction). Audited."""
    before = _reply_state(conn, message_id)
    conn.execute(
        update(_msg)
        .where(_msg.c.id == message_id)
        .values(
            flagged_at=None, flag_reason=None, corrected_text=None, corrected_by=None,
            corrected_at=None,
        )
    )  # fmt: skip
    after = _reply_state(conn, message_id)
    audit(
        conn, who, "reply.unflag", f"message:{message_id}", _state(before), _state(after), now=now
    )


def correct_reply(
    conn: Connection, who: Moderator, message_id: int, text: str, *, now: datetime
) -> None:
    """Store what the persona should have said instead of reply `message_id`. The
    reply is flagged too (it leaves the SFT files), and `bot export` writes a DPO pair:
    the correction chosen, the reply rejected (source `correction`). Audited (the
    correction by length and SHA-256, see the module doc)."""
    text = text.replace("\r\n", "\n").strip()
    if not text:
        raise ValueError("the corrected reply is empty")
    if len(text) > CORRECTION_MAX_CHARS:
        raise ValueError(f"the corrected reply is longer than {CORRECTION_MAX_CHARS} characters")
    before = _reply_state(conn, message_id)
    values: dict[str, Any] = {
        "corrected_text": text,
        "corrected_by": who.name[:64],
        "corrected_at": now,
    }
    if before.flagged_at is None:
        values.update(flagged_at=now, flag_reason="corrected by a moderator")
    conn.execute(update(_msg).where(_msg.c.id == message_id).values(**values))
    after = _reply_state(conn, message_id)
    audit(
        conn, who, "reply.correct", f"message:{message_id}", _state(before), _state(after), now=now
    )


# -- people -----------------------------------------------------------------------------


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
        stmt = stmt.where(
            or_(u.platform_user_id == query, u.display_name.ilike(_prefix(query), escape="\\"))
        )
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
