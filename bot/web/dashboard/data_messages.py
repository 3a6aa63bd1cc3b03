"""One conversation's messages, each with why it went as it did (replies, failures,
safety checks, reactions), for the conversation page (re-exported by
bot/web/dashboard/data_service.py).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, select

from bot.web.dashboard.data_conversations import ConversationRow
from bot.web.dashboard.data_tables import (
    PAGE,
    NotFound,
    _adapters,
    _conv,
    _fail,
    _feedback,
    _msg,
    _safety,
    _users,
    _utc,
)

__all__ = ["MessageRow", "MessageView", "conversation_view"]


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
