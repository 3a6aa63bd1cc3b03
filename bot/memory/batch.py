"""`bot memory search` beyond one query: which conversations a search covers, and
many queries from a file in one process (the model loads once, not per query).

A place is named by platform, server (`space`), channel and thread, the way
conversations are keyed: two servers' `#general` are different places, and a
channel name that exists in several servers needs `--space`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, text

from bot.memory.lines import InputFileError, read_lines
from bot.text import clean_text

__all__ = ["Place", "Query", "find_places", "hits_json", "parse_time", "read_queries"]

#: The most queries one file may hold.
MAX_QUERIES = 100_000
_SHOWN = 50


@dataclass(frozen=True, slots=True)
class Place:
    """A conversation a search covers."""

    conversation_id: int
    space: str | None
    channel: str
    thread: str | None


def find_places(
    conn: Connection,
    *,
    user_id: int,
    persona: str,
    platform: str,
    channel: str | None,
    space: str | None,
    thread: str | None,
) -> list[Place]:
    """The person's conversations with `persona` in the named place: their DMs when
    `channel` is None; otherwise that channel (in `space` when given, in the
    channel itself unless `thread` is)."""
    where = ["m.user_id = :uid", "c.persona_id = :persona", "c.platform = :platform"]
    if channel is None:
        where.append("c.is_direct")
    else:
        where.append("c.channel = :channel")
        where.append("c.thread = :thread" if thread is not None else "c.thread IS NULL")
        if space is not None:
            where.append("c.space = :space")
    rows = conn.execute(
        text(
            "SELECT DISTINCT c.id, c.space, c.channel, c.thread FROM conversations c "
            f"JOIN messages m ON m.conversation_id = c.id WHERE {' AND '.join(where)} "
            "ORDER BY c.id"
        ),
        {
            "uid": user_id,
            "persona": persona,
            "platform": platform,
            "channel": channel,
            "space": space,
            "thread": thread,
        },
    ).all()
    return [Place(int(r.id), r.space, r.channel, r.thread) for r in rows]


def parse_time(value: str, what: str = "--now") -> datetime:
    """An ISO 8601 time (naive means UTC); `ValueError` naming `what` otherwise."""
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise ValueError(
            f"{what} {value!r}: not an ISO 8601 time (e.g. 2026-05-01T12:00:00Z)"
        ) from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Query:
    """One query of a `--queries` file, with its own clock and `k` when it says so."""

    text: str
    line: int
    id: Any = None
    k: int | None = None
    now: datetime | None = None


def read_queries(path: Path) -> list[Query]:
    """The queries of `path`: one per line, as plain text or as a JSON object
    `{"query": ..., "id"?: ..., "k"?: 1-1000, "now"?: ISO time}`. Blank lines are
    skipped. `InputFileError` lists every bad line; nothing runs then."""
    out: list[Query] = []
    problems: list[str] = []
    total = 0
    for line in read_lines(path):
        problem = line.problem
        query: Query | None = None
        if problem is None and line.text.strip():
            try:
                query = _query(line.text, line.number)
            except ValueError as exc:
                problem = str(exc)
        if problem is not None:
            total += 1
            if len(problems) < _SHOWN:
                problems.append(f"{path}:{line.number}: {problem}")
        elif query is not None:
            out.append(query)
            if len(out) > MAX_QUERIES:
                raise InputFileError([f"{path}: more than {MAX_QUERIES:,} queries"])
    if total:
        raise InputFileError(problems, total=total)
    return out


def _query(raw: str, number: int) -> Query:
    if not raw.lstrip().startswith("{"):
        return Query(clean_text(raw), number)
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"invalid JSON: {exc.msg} at column {exc.colno}") from None
    if not isinstance(data, dict):
        raise ValueError("a JSON line must be an object with a 'query'")
    unknown = sorted(set(data) - {"query", "id", "k", "now"})
    if unknown:
        raise ValueError(f"unknown field(s) {', '.join(map(repr, unknown))}")
    query = data.get("query")
    if not isinstance(query, str):
        raise ValueError("query: must be a string")
    k = data.get("k")
    if k is not None and (isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= 1000):
        raise ValueError("k: must be an integer from 1 to 1000")
    now = data.get("now")
    if now is not None and not isinstance(now, str):
        raise ValueError("now: must be an ISO 8601 time string")
    return Query(
        clean_text(query),
        number,
        id=data.get("id"),
        k=k,
        now=parse_time(now, "now") if now is not None else None,
    )


def hits_json(hits: Sequence[Any]) -> list[dict[str, Any]]:
    """Search hits as the CLI prints them in JSON."""
    return [
        {
            "id": h.ref,
            "kind": h.kind,
            "score": round(h.score, 6),
            "text": h.text,
            "at": h.at.isoformat(),
            "speaker": h.speaker,
            "source_ids": list(h.source_ids),
        }
        for h in hits
    ]
