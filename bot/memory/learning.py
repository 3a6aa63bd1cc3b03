"""Learning from conversations, the same on every backend: facts read by the
persona's model from a person's recent messages, and summaries of stretches.

Both store nothing whose source messages were forgotten while the model read them.
The caller (`Memory`) queues what they store for embedding.
"""

from __future__ import annotations

import json
from datetime import datetime

import structlog
from sqlalchemy import Connection

from bot.db import Database
from bot.errors import BackendError
from bot.llm.base import ChatMessage, ChatRequest, LLMBackend, Sampling
from bot.memory import rows
from bot.memory.extract import Extraction, build_request, parse_extraction
from bot.memory.types import MemoryScope, aware, db_time
from bot.text import strip_controls

__all__ = ["extract_facts", "summarise"]

log = structlog.get_logger("bot.memory")

_SUMMARY_PROMPT = (
    "Summarise this stretch of conversation in at most five sentences, "
    "from the companion's point of view: what the person shared, plans, "
    "feelings, anything to follow up on. Plain text."
)


async def extract_facts(
    db: Database,
    scope: MemoryScope,
    persona_id: str,
    backend: LLMBackend,
    *,
    now: datetime,
    recent: int = 12,
    max_tokens: int = 512,
) -> tuple[Extraction, list[int]]:
    """Ask the model for facts in the person's recent messages and store them
    (deduplicated; `replaces` marks older facts superseded). Returns the parse and
    the ids of the new facts."""
    shown, known, is_direct = await db.run(
        lambda conn: rows.extraction_input(conn, scope, persona_id, recent)
    )
    if not any(m.from_person for m in shown):
        return Extraction(()), []
    request = build_request(shown, known, max_tokens=max_tokens)
    try:
        completion = await backend.complete(request)
    except BackendError as exc:
        log.warning("memory.extract_failed", error=str(exc))
        return Extraction((), (f"backend: {exc}",)), []
    result = parse_extraction(completion.text, shown, known)
    if result.problems:
        log.info("memory.extract_problems", problems=list(result.problems))
    if not result.facts:
        return result, []
    at = aware(now)

    def store(conn: Connection) -> list[int]:
        stamp = db_time(at, conn.dialect.name)
        new_ids = []
        # A source forgotten while the model read it takes its facts with it.
        live = rows.existing_messages(conn, [i for f in result.facts for i in f.source_ids])
        for fact in result.facts:
            if not set(fact.source_ids) <= live:
                continue
            if fact.duplicate_of is not None:
                rows.touch_fact(conn, fact.duplicate_of, stamp, fact.confidence)
                continue
            fid = conn.execute(
                rows.INSERT_FACT,
                {
                    "uid": scope.user_id,
                    "persona": persona_id,
                    "cid": scope.conversation_id,
                    "direct": is_direct,
                    "text": fact.text,
                    "sources": json.dumps(list(fact.source_ids)),
                    "confidence": fact.confidence,
                    "importance": fact.importance,
                    "at": stamp,
                },
            ).scalar_one()
            for old in fact.replaces:
                conn.execute(rows.SUPERSEDE, {"old": old, "new": fid, "uid": scope.user_id})
            new_ids.append(int(fid))
        return new_ids

    return result, await db.run(store)


async def summarise(
    db: Database, scope: MemoryScope, persona_id: str, backend: LLMBackend, *, now: datetime
) -> int | None:
    """Summarise the person's messages since the last summary; returns its id."""
    stretch = await db.run(lambda conn: rows.unsummarised_rows(conn, scope, 400))
    if len(stretch) < 4:
        return None
    transcript = "\n".join(f"{r.speaker}: {r.text}" for r in stretch)[-12000:]
    request = ChatRequest(
        messages=(ChatMessage("system", _SUMMARY_PROMPT), ChatMessage("user", transcript)),
        sampling=Sampling(temperature=0.2, max_tokens=300),
    )
    try:
        completion = await backend.complete(request)
    except BackendError as exc:
        log.warning("memory.summary_failed", error=str(exc))
        return None
    summary = strip_controls(completion.text).strip()  # model output: no controls
    if not summary:
        return None

    def store(conn: Connection) -> int | None:
        if len(rows.existing_messages(conn, [r.id for r in stretch])) < len(stretch):
            return None  # a message of the stretch was forgotten meanwhile
        dialect = conn.dialect.name
        return int(
            conn.execute(
                rows.INSERT_SUMMARY,
                {
                    "uid": scope.user_id,
                    "persona": persona_id,
                    "cid": scope.conversation_id,
                    "text": summary,
                    "first": stretch[0].id,
                    "last": stretch[-1].id,
                    "start": db_time(stretch[0].created_at, dialect),
                    "end": db_time(stretch[-1].created_at, dialect),
                    "at": db_time(now, dialect),
                },
            ).scalar_one()
        )

    return await db.run(store)
