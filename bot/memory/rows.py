"""The memory's SQL that every backend shares: reading candidates back in scope,
the text to embed, facts and summaries. Dialect-neutral (SQLite and PostgreSQL);
where the dialects differ, the statement is picked by `conn.dialect.name`.

Search SQL (full-text, vectors) is each backend's own: `sqlite_search.py` and
`pg_search.py`. Everything here runs on a database thread, inside the caller's
transaction.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, text

from bot.memory.extract import KnownFact, SourceMessage
from bot.memory.types import Kind, MemoryScope, parse_dt

__all__ = [
    "FACT_SCOPE",
    "MESSAGE_SCOPE",
    "SPOKEN",
    "chunks",
    "details",
    "existing_messages",
    "extraction_input",
    "ids_in",
    "texts_for",
    "unsummarised_rows",
]

SPOKEN = "('message', 'proactive', 'greeting')"
MESSAGE_SCOPE = (
    f"m.user_id = :uid AND m.conversation_id = :cid AND m.deleted_at IS NULL AND m.kind IN {SPOKEN}"
)
FACT_SCOPE = "f.user_id = :uid AND f.conversation_id = :cid AND f.superseded_by IS NULL"


def ids_in(conn: Connection, param: str = "ids") -> str:
    """A subquery of the integers in the JSON list bound as `:param` (one parameter
    however many ids: a forget of everything can name 100k rows)."""
    if conn.dialect.name == "postgresql":
        return (
            "(SELECT CAST(value AS bigint) FROM "
            f"jsonb_array_elements_text(CAST(:{param} AS jsonb)))"
        )
    return f"(SELECT value FROM json_each(:{param}))"


def chunks(ids: Sequence[int], size: int = 500) -> Iterable[Sequence[int]]:
    """`ids` as ints, in lists of at most `size` (literal IN lists stay short)."""
    for i in range(0, len(ids), size):
        yield [int(x) for x in ids[i : i + size]]


def details(
    conn: Connection, scope: MemoryScope, keys: Sequence[tuple[str, int]]
) -> dict[tuple[str, int], dict[str, Any]]:
    """Text, time and speaker of candidates, re-checking scope (a stale vector cache
    or a deleted row can never smuggle anything in)."""
    out: dict[tuple[str, int], dict[str, Any]] = {}
    params = {"uid": scope.user_id, "cid": scope.conversation_id}
    message_ids = [i for kd, i in keys if kd == "message"]
    fact_ids = [i for kd, i in keys if kd == "fact"]
    summary_ids = [i for kd, i in keys if kd == "summary"]
    for chunk in chunks(message_ids):
        rows = conn.execute(
            text(
                "SELECT m.id, m.text, m.created_at, m.direction, m.persona_id, u.display_name "
                "FROM messages m LEFT JOIN users u ON u.id = m.user_id "
                f"WHERE m.id IN ({','.join(map(str, chunk))}) AND {MESSAGE_SCOPE}"
            ),
            params,
        )
        for r in rows:
            out[("message", r.id)] = {
                "text": r.text,
                "at": parse_dt(r.created_at),
                "speaker": (r.display_name or "them") if r.direction == "in" else "you",
                "name": ((r.display_name or "") if r.direction == "in" else r.persona_id).lower(),
                "importance": 0.0,
                "sources": (r.id,),
            }
    for chunk in chunks(fact_ids):
        rows = conn.execute(
            text(
                "SELECT f.id, f.text, f.updated_at, f.importance, f.source_ids FROM facts f "
                f"WHERE f.id IN ({','.join(map(str, chunk))}) AND {FACT_SCOPE}"
            ),
            params,
        )
        for r in rows:
            out[("fact", r.id)] = {
                "text": r.text,
                "at": parse_dt(r.updated_at),
                "speaker": "",
                "name": "",
                "importance": float(r.importance),
                "sources": tuple(json.loads(r.source_ids)),
            }
    for chunk in chunks(summary_ids):
        rows = conn.execute(
            text(
                "SELECT s.id, s.text, s.end_at, s.first_message_id, s.last_message_id "
                f"FROM summaries s WHERE s.id IN ({','.join(map(str, chunk))}) "
                "AND s.user_id = :uid AND s.conversation_id = :cid"
            ),
            params,
        )
        for r in rows:
            out[("summary", r.id)] = {
                "text": r.text,
                "at": parse_dt(r.end_at),
                "speaker": "",
                "name": "",
                "importance": 0.5,
                "sources": (r.first_message_id, r.last_message_id),
            }
    return out


_PREVIOUS_TURN = text(
    "SELECT m.text, m.direction, m.persona_id, u.display_name FROM messages m "
    "LEFT JOIN users u ON u.id = m.user_id WHERE m.conversation_id = :cid AND m.id < :id "
    f"AND m.user_id = :uid AND m.deleted_at IS NULL AND m.kind IN {SPOKEN} "
    "ORDER BY m.id DESC LIMIT 1"
)


def texts_for(
    conn: Connection, batch: Sequence[tuple[Kind, int]], context_turns: int = 0
) -> list[dict[str, Any]]:
    """What to embed: a message with its speaker's name (the name matters to queries
    like "what did Anna say about..."), after the turn before it when `context_turns`
    (an answer means little without its question); a fact or a summary."""
    out: list[dict[str, Any]] = []
    message_ids = [i for kd, i in batch if kd == "message"]
    for chunk in chunks(message_ids):
        rows = conn.execute(
            text(
                "SELECT m.id, m.text, m.direction, m.user_id, m.conversation_id, m.persona_id, "
                "u.display_name FROM messages m LEFT JOIN users u ON u.id = m.user_id "
                f"WHERE m.id IN ({','.join(map(str, chunk))}) AND m.user_id IS NOT NULL"
            )
        )
        for r in rows:
            name = (r.display_name or "") if r.direction == "in" else r.persona_id
            body = f"{name}: {r.text}" if name else r.text
            if context_turns:
                prev = conn.execute(
                    _PREVIOUS_TURN, {"cid": r.conversation_id, "id": r.id, "uid": r.user_id}
                ).first()
                if prev is not None:
                    who = (prev.display_name or "") if prev.direction == "in" else prev.persona_id
                    body = f"{who}: {prev.text[:300]}\n{body}"
            out.append(
                {
                    "kind": "message",
                    "id": r.id,
                    "text": body,
                    "user_id": r.user_id,
                    "conversation_id": r.conversation_id,
                }
            )
    for kind, table in (("fact", "facts"), ("summary", "summaries")):
        ids = [i for kd, i in batch if kd == kind]
        for chunk in chunks(ids):
            rows = conn.execute(
                text(
                    f"SELECT id, text, user_id, conversation_id FROM {table} "
                    f"WHERE id IN ({','.join(map(str, chunk))})"
                )
            )
            out += [
                {
                    "kind": kind,
                    "id": r.id,
                    "text": r.text,
                    "user_id": r.user_id,
                    "conversation_id": r.conversation_id,
                }
                for r in rows
            ]
    return out


INSERT_FACT = text(
    "INSERT INTO facts (user_id, persona_id, conversation_id, is_direct, text, source_ids, "
    "confidence, importance, created_at, updated_at) VALUES (:uid, :persona, :cid, :direct, "
    ":text, :sources, :confidence, :importance, :at, :at) RETURNING id"
)
_TOUCH_FACT = {
    "sqlite": text(
        "UPDATE facts SET updated_at = :at, confidence = max(confidence, :confidence) "
        "WHERE id = :id"
    ),
    "postgresql": text(
        "UPDATE facts SET updated_at = :at, confidence = greatest(confidence, :confidence) "
        "WHERE id = :id"
    ),
}
SUPERSEDE = text(
    "UPDATE facts SET superseded_by = :new, updated_at = updated_at "
    "WHERE id = :old AND user_id = :uid AND superseded_by IS NULL"
)
INSERT_SUMMARY = text(
    "INSERT INTO summaries (user_id, persona_id, conversation_id, text, first_message_id, "
    "last_message_id, start_at, end_at, created_at) VALUES (:uid, :persona, :cid, :text, "
    ":first, :last, :start, :end, :at) RETURNING id"
)
_LAST_SUMMARISED = (
    "(SELECT coalesce(max(s.last_message_id), 0) FROM summaries s "
    "WHERE s.user_id = m.user_id AND s.conversation_id = m.conversation_id)"
)
COUNT_UNSUMMARISED = text(
    f"SELECT count(*) FROM messages m WHERE {MESSAGE_SCOPE} AND m.id > {_LAST_SUMMARISED}"
)
QUIET = text(
    "SELECT c.id AS conversation_id, c.persona_id, m.user_id FROM conversations c "
    "JOIN messages m ON m.conversation_id = c.id "
    "WHERE c.last_message_at < :cutoff AND m.user_id IS NOT NULL AND m.deleted_at IS NULL "
    f"AND m.id > {_LAST_SUMMARISED} GROUP BY c.id, c.persona_id, m.user_id "
    "HAVING count(*) >= 4"
)
LATEST_SUMMARIES = text(
    "SELECT id, text, end_at FROM summaries WHERE user_id = :uid AND conversation_id = :cid "
    "ORDER BY id DESC LIMIT :n"
)
_PERSONA = "(CAST(:persona AS VARCHAR) IS NULL OR persona_id = :persona)"
LIST_FACTS = text(
    "SELECT id, text, updated_at, persona_id, source_ids, confidence FROM facts "
    f"WHERE user_id = :uid AND superseded_by IS NULL AND {_PERSONA} ORDER BY id DESC"
)
LIST_SUMMARIES = text(
    "SELECT id, text, end_at, persona_id, first_message_id, last_message_id FROM summaries "
    f"WHERE user_id = :uid AND {_PERSONA} ORDER BY id DESC"
)
FIND_USER = text("SELECT id FROM users WHERE platform = :p AND platform_user_id = :u")


def touch_fact(conn: Connection, fact_id: int, at: Any, confidence: float) -> None:
    """A fact seen again: newer, and as confident as its most confident sighting."""
    statement = _TOUCH_FACT["postgresql" if conn.dialect.name == "postgresql" else "sqlite"]
    conn.execute(statement, {"id": fact_id, "at": at, "confidence": confidence})


def existing_messages(conn: Connection, ids: Sequence[int]) -> set[int]:
    """Which of `ids` are still stored (a forget may have run meanwhile)."""
    if not ids:
        return set()
    rows = conn.execute(
        text(f"SELECT id FROM messages WHERE id IN {ids_in(conn)}"),
        {"ids": json.dumps(sorted(set(ids)))},
    ).scalars()
    return {int(i) for i in rows}


@dataclass(frozen=True, slots=True)
class Row:
    """One message of a stretch to summarise."""

    id: int
    speaker: str
    text: str
    created_at: datetime


def unsummarised_rows(conn: Connection, scope: MemoryScope, limit: int) -> list[Row]:
    """The scope's messages after its last summary, oldest first."""
    rows = conn.execute(
        text(
            "SELECT m.id, m.text, m.created_at, m.direction, m.persona_id, u.display_name "
            "FROM messages m LEFT JOIN users u ON u.id = m.user_id "
            f"WHERE {MESSAGE_SCOPE} AND m.id > {_LAST_SUMMARISED} ORDER BY m.id LIMIT :n"
        ),
        {"uid": scope.user_id, "cid": scope.conversation_id, "n": limit},
    ).all()
    return [
        Row(
            r.id,
            (r.display_name or "them") if r.direction == "in" else r.persona_id,
            r.text,
            parse_dt(r.created_at),
        )
        for r in rows
    ]


def extraction_input(
    conn: Connection, scope: MemoryScope, persona_id: str, recent: int
) -> tuple[list[SourceMessage], list[KnownFact], bool]:
    """The person's recent messages, the facts known already, and whether the
    conversation is a DM: what fact extraction shows the model."""
    params = {"uid": scope.user_id, "cid": scope.conversation_id, "n": recent}
    rows = conn.execute(
        text(
            "SELECT m.id, m.text, m.direction, m.persona_id, u.display_name "
            "FROM messages m LEFT JOIN users u ON u.id = m.user_id "
            f"WHERE {MESSAGE_SCOPE} ORDER BY m.id DESC LIMIT :n"
        ),
        params,
    ).all()
    shown = [
        SourceMessage(
            id=r.id,
            speaker=(r.display_name or "them") if r.direction == "in" else r.persona_id,
            text=r.text[:2000],
            from_person=r.direction == "in",
        )
        for r in reversed(rows)
    ]
    known = [
        KnownFact(r.id, r.text)
        for r in conn.execute(
            text(
                f"SELECT f.id, f.text FROM facts f WHERE {FACT_SCOPE} ORDER BY f.id DESC LIMIT 50"
            ),
            params,
        )
    ]
    is_direct = bool(
        conn.execute(text("SELECT is_direct FROM conversations WHERE id = :cid"), params).scalar()
    )
    return shown, known, is_direct
