"""Forgetting: what goes when a person says `/forget` or runs `bot memory forget`,
and making sure none of it stays behind in the database file.

What goes (the scope of one forget):

- `m45`, a message: the message; when it is the person's own, the persona's replies
  to it (they answer it, and often quote it); the facts read from any of these
  messages (with the facts they replaced), the summaries whose stretch includes
  them, the follow-ups the persona planned from them and the reactions on them.
- `f12`, a fact: the fact and the facts it replaced ("moved to Berlin" must not
  bring back "lives in Paris").
- `s3`, a summary: the summary.
- `all` (optionally of one persona): every message by or to the person, their
  facts, summaries and follow-ups.

Always: the embeddings of everything that goes. Failures recorded about a message
that goes keep their stage, type and time, but lose their reason (it may quote the
text) and their link to it. Handled inbox events of the same chat that carry a
forgotten message's text lose their raw payload.

What makes sure no byte stays (the caller, `SQLiteMemory.forget`, does the last
three after this module's transaction):

- rows are deleted with `PRAGMA secure_delete=ON` (every connection, `bot.db`), so
  freed space and freelist pages are zeroed;
- the FTS5 indexes of the tables that lost rows are optimized in the same
  transaction: merged into one segment, which drops the deleted rows' terms (a
  plain FTS5 delete only adds a tombstone, and the terms stay in older segments);
- a message is embedded after the turn before it, so the person's next turn after
  a forgotten message loses its vector in the same transaction, and is re-embedded
  with its new context;
- the person's in-memory vector caches are zeroed and dropped;
- the WAL is checkpointed and truncated (`Database.checkpoint`).

Everything here runs on the database thread, inside one transaction.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy import Connection, TextClause, inspect, text

__all__ = ["TOMBSTONE", "ForgetRefused", "Forgotten", "Target", "forget_rows", "parse_target"]

_SPOKEN = "('message', 'proactive', 'greeting')"
#: The `embeddings.kind` of a row without a vector that a forget writes for each
#: conversation (and model) it took vectors from: every process that caches that
#: scope's vectors sees it with its next search's new rows, and loads them again.
TOMBSTONE = "forget"
_TABLES = {"fact": "facts", "summary": "summaries", "message": "messages"}
_PREFIX = {"f": "fact", "s": "summary", "m": "message"}
#: The FTS5 indexes over each table (migration 0002).
_FTS = {"messages": ("messages_fts", "messages_fts_tri"), "facts": ("facts_fts", "facts_fts_tri")}


class ForgetRefused(PermissionError):
    """A forget request named a memory that is not the requester's (nothing deleted)."""


@dataclass(frozen=True, slots=True)
class Target:
    """What a person asked to forget: one item, or everything (`kind == "all"`)."""

    kind: Literal["message", "fact", "summary", "all"]
    item: int = 0

    @property
    def ref(self) -> str:
        """The id as people write it: `m45`, `f12`, `s3` or `all`."""
        return "all" if self.kind == "all" else f"{self.kind[0]}{self.item}"


def parse_target(target: str) -> Target:
    """`f12`, `s3`, `m45` or `all` (any case, spaces around); `ValueError` otherwise."""
    cleaned = target.strip().lower()
    if cleaned == "all":
        return Target("all")
    kind = _PREFIX.get(cleaned[:1])
    digits = cleaned[1:]
    if kind is None or not digits.isascii() or not digits.isdigit() or len(digits) > 18:
        raise ValueError(f"{target!r} is not a memory id (f12, s3, m45) or 'all'")
    return Target(kind, int(digits))  # type: ignore[arg-type]


@dataclass(slots=True)
class Forgotten:
    """What one forget deleted, per table, and which messages need new vectors."""

    counts: dict[str, int] = field(default_factory=dict)
    #: Every table this forget deleted or rewrote rows of: where old row versions may
    #: linger until the backend scrubs them (PostgreSQL keeps dead tuples in pages).
    tables: list[str] = field(default_factory=list)
    #: Messages whose vector was embedded with forgotten text as context: dropped, to
    #: be embedded again with the context they have now.
    neighbours: list[int] = field(default_factory=list)


def forget_rows(
    conn: Connection, user_id: int, target: Target, persona_id: str | None = None
) -> Forgotten:
    """Delete what `target` covers (see the module docstring) in this transaction.

    Raises `KeyError` for an id that does not exist and `ForgetRefused` for one that
    is someone else's; both delete nothing. `persona_id` narrows `all`.
    """
    if target.kind == "all":
        messages, facts, summaries = _everything(conn, user_id, persona_id)
    else:
        _check_owner(conn, user_id, target)
        messages, facts, summaries = [], [], []
        if target.kind == "message":
            messages = _with_replies(conn, user_id, target.item)
            facts = _facts_from(conn, user_id, messages)
            summaries = _summaries_over(conn, user_id, messages)
        elif target.kind == "fact":
            facts = [target.item]
        else:
            summaries = [target.item]
    facts = _with_replaced(conn, user_id, facts)
    everything = target.kind == "all"
    return _delete(
        conn, user_id, messages, facts, summaries, everything=everything, persona_id=persona_id
    )


def _check_owner(conn: Connection, user_id: int, target: Target) -> None:
    table = _TABLES[target.kind]
    owner = conn.execute(
        text(f"SELECT user_id FROM {table} WHERE id = :id"), {"id": target.item}
    ).first()
    if owner is None:
        raise KeyError(f"no memory {target.ref}")
    if owner.user_id != user_id:
        raise ForgetRefused(f"memory {target.ref} is not yours; nothing was deleted")


def _sql(conn: Connection, sql: str) -> TextClause:
    """`sql`, written in SQLite's dialect, with the few fragments that PostgreSQL
    spells differently swapped in when `conn` is PostgreSQL."""
    if conn.dialect.name == "postgresql":
        for sqlite_form, pg_form in _PG_FORMS:
            sql = sql.replace(sqlite_form, pg_form)
    return text(sql)


def _ids(conn: Connection, sql: str, **params: Any) -> list[int]:
    return [int(i) for i in conn.execute(_sql(conn, sql), params).scalars()]


def _json(ids: Iterable[int]) -> str:
    return json.dumps(sorted(set(ids)))


_IN = "(SELECT value FROM json_each(:ids))"
_TYPE_NAME = (
    "(CASE WHEN error_type GLOB '*[^A-Za-z0-9_.]*' OR length(error_type) > 64 "
    "THEN 'error' ELSE error_type END)"
)
_PERSONA_NULL = ":persona IS NULL"
_PG_FORMS = [
    *(
        (f"(SELECT value FROM json_each(:{p}))",
         f"(SELECT CAST(value AS bigint) FROM jsonb_array_elements_text(CAST(:{p} AS jsonb)))")
        for p in ("ids", "m", "f", "s")
    ),
    ("json_each(f.source_ids) j WHERE f.user_id = :uid AND j.value IN",
     "jsonb_array_elements_text(CAST(f.source_ids AS jsonb)) AS j(value) "
     "WHERE f.user_id = :uid AND CAST(j.value AS bigint) IN"),
    ("error_type GLOB '*[^A-Za-z0-9_.]*'", "error_type ~ '[^A-Za-z0-9_.]'"),
    ("json_each(:forms) f WHERE instr(inbox_events.payload, f.value) > 0",
     "jsonb_array_elements_text(CAST(:forms AS jsonb)) AS f(value) "
     "WHERE strpos(inbox_events.payload, f.value) > 0"),
    (_PERSONA_NULL, "CAST(:persona AS VARCHAR) IS NULL"),
]  # fmt: skip


def _everything(
    conn: Connection, user_id: int, persona_id: str | None
) -> tuple[list[int], list[int], list[int]]:
    persona = "(:persona IS NULL OR persona_id = :persona)"
    params = {"uid": user_id, "persona": persona_id}
    return (
        _ids(conn, f"SELECT id FROM messages WHERE user_id = :uid AND {persona}", **params),
        _ids(conn, f"SELECT id FROM facts WHERE user_id = :uid AND {persona}", **params),
        _ids(conn, f"SELECT id FROM summaries WHERE user_id = :uid AND {persona}", **params),
    )


def _with_replies(conn: Connection, user_id: int, message_id: int) -> list[int]:
    replies = _ids(
        conn,
        "SELECT r.id FROM messages r JOIN messages m ON m.id = r.reply_to_id "
        "WHERE r.reply_to_id = :id AND r.direction = 'out' AND m.direction = 'in' "
        "AND r.user_id = :uid",
        id=message_id,
        uid=user_id,
    )
    return [message_id, *replies]


def _facts_from(conn: Connection, user_id: int, messages: Sequence[int]) -> list[int]:
    return _ids(
        conn,
        "SELECT DISTINCT f.id FROM facts f, json_each(f.source_ids) j "
        f"WHERE f.user_id = :uid AND j.value IN {_IN}",
        uid=user_id,
        ids=_json(messages),
    )


def _summaries_over(conn: Connection, user_id: int, messages: Sequence[int]) -> list[int]:
    return _ids(
        conn,
        "SELECT DISTINCT s.id FROM summaries s JOIN messages m ON m.conversation_id = "
        "s.conversation_id AND m.id BETWEEN s.first_message_id AND s.last_message_id "
        f"WHERE s.user_id = :uid AND m.id IN {_IN}",
        uid=user_id,
        ids=_json(messages),
    )


def _with_replaced(conn: Connection, user_id: int, facts: Sequence[int]) -> list[int]:
    """`facts` and, transitively, the older facts they superseded."""
    found = set(facts)
    frontier = set(facts)
    while frontier:
        older = _ids(
            conn,
            f"SELECT id FROM facts WHERE user_id = :uid AND superseded_by IN {_IN}",
            uid=user_id,
            ids=_json(frontier),
        )
        frontier = set(older) - found
        found |= frontier
    return sorted(found)


def _delete(
    conn: Connection,
    user_id: int,
    messages: Sequence[int],
    facts: Sequence[int],
    summaries: Sequence[int],
    *,
    everything: bool,
    persona_id: str | None = None,
) -> Forgotten:
    done = Forgotten()
    mids, fids, sids = _json(messages), _json(facts), _json(summaries)
    cached = _cached_scopes(conn, user_id, mids, fids, sids)
    if everything:  # and the conversations of vectors whose item went without them
        cached = sorted(set(cached) | set(_vector_scopes(conn, user_id, persona_id)))
    embeddings = 0
    for kind, ids in (("message", mids), ("fact", fids), ("summary", sids)):
        embeddings += conn.execute(
            _sql(conn, f"DELETE FROM embeddings WHERE kind = :kind AND item_id IN {_IN}"),
            {"kind": kind, "ids": ids},
        ).rowcount
    places: Sequence[Any] = ()
    if messages:
        # Where each message stood, to find the turn after it once it is gone.
        places = conn.execute(
            _sql(conn, f"SELECT id, conversation_id, user_id FROM messages WHERE id IN {_IN}"),
            {"ids": mids},
        ).all()
        done.counts["inbox_payloads"] = _clear_inbox(conn, mids)
        done.counts["followups"] = conn.execute(
            _sql(conn, f"DELETE FROM followups WHERE source_message_id IN {_IN}"), {"ids": mids}
        ).rowcount
        done.counts["reactions"] = conn.execute(
            _sql(conn, f"DELETE FROM feedback WHERE message_id IN {_IN}"), {"ids": mids}
        ).rowcount
        done.counts["failures_scrubbed"] = conn.execute(
            _sql(
                conn,
                # A failure recorded from a plain string has that string as its type.
                f"UPDATE failures SET message_id = NULL, error_type = {_TYPE_NAME}, "
                f"reason = {_TYPE_NAME} || ' (details removed with a forgotten message)' "
                f"WHERE message_id IN {_IN}",
            ),
            {"ids": mids},
        ).rowcount
        conn.execute(
            _sql(conn, f"UPDATE messages SET reply_to_id = NULL WHERE reply_to_id IN {_IN}"),
            {"ids": mids},
        )
        done.counts["safety_scrubbed"] = _scrub_safety(conn, f"message_id IN {_IN}", {"ids": mids})
    if everything:
        params = {"uid": user_id, "persona": persona_id}
        done.counts["followups"] = done.counts.get("followups", 0) + (
            conn.execute(
                _sql(
                    conn,
                    "DELETE FROM followups WHERE user_id = :uid "
                    "AND (:persona IS NULL OR persona_id = :persona)",
                ),
                params,
            ).rowcount
        )
        done.counts["safety_scrubbed"] = done.counts.get("safety_scrubbed", 0) + _scrub_safety(
            conn,
            "user_id = :uid AND (:persona IS NULL OR persona_id = :persona)",
            params,
        )
        # Vectors whose item went without them (retention deletes messages only).
        embeddings += conn.execute(
            _sql(
                conn,
                "DELETE FROM embeddings WHERE user_id = :uid AND (:persona IS NULL OR "
                "conversation_id IN (SELECT id FROM conversations WHERE persona_id = :persona))",
            ),
            params,
        ).rowcount
    done.counts["messages"] = conn.execute(
        _sql(conn, f"DELETE FROM messages WHERE id IN {_IN}"), {"ids": mids}
    ).rowcount
    done.counts["facts"] = conn.execute(
        _sql(conn, f"DELETE FROM facts WHERE id IN {_IN}"), {"ids": fids}
    ).rowcount
    done.counts["summaries"] = conn.execute(
        _sql(conn, f"DELETE FROM summaries WHERE id IN {_IN}"), {"ids": sids}
    ).rowcount
    done.counts["embeddings"] = embeddings
    if places and not everything:
        done.neighbours = _drop_neighbour_vectors(conn, places)
    done.tables = _touched(done.counts, embeddings)
    if conn.dialect.name == "sqlite":
        for table, deleted in (("messages", messages), ("facts", facts)):
            if deleted:
                _rewrite_indexes(conn, table)
        # Only SQLite's backend caches vectors in processes (PostgreSQL searches them
        # in the server), so only there do other processes need telling.
        _tombstones(conn, user_id, cached)
    return done


_TOUCHED = {
    "messages": ("messages",),
    "facts": ("facts",),
    "summaries": ("summaries",),
    "followups": ("followups",),
    "reactions": ("feedback",),
    "failures_scrubbed": ("failures",),
    "safety_scrubbed": ("safety_events",),
    "inbox_payloads": ("inbox_events",),
}


def _touched(counts: dict[str, int], embeddings: int) -> list[str]:
    """The tables whose rows this forget deleted or rewrote (an update leaves the old
    row version behind too, on engines that keep versions)."""
    tables = {t for key, n in counts.items() if n for t in _TOUCHED.get(key, ())}
    if embeddings or counts.get("messages"):
        tables.add("embeddings")  # neighbours' vectors go with a message
    if counts.get("messages"):
        tables.add("messages")  # reply_to_id cleared on the rows that answered it
    return sorted(tables)


def _cached_scopes(
    conn: Connection, user_id: int, mids: str, fids: str, sids: str
) -> list[tuple[int, str]]:
    """The (conversation, model) pairs whose vectors a process may hold in memory."""
    rows = conn.execute(
        _sql(
            conn,
            "SELECT DISTINCT conversation_id, model FROM embeddings WHERE user_id = :uid "
            "AND conversation_id IN ("
            f"SELECT conversation_id FROM messages WHERE id IN {_IN.replace(':ids', ':m')} "
            f"UNION SELECT conversation_id FROM facts WHERE id IN {_IN.replace(':ids', ':f')} "
            f"UNION SELECT conversation_id FROM summaries WHERE id IN {_IN.replace(':ids', ':s')})",
        ),
        {"uid": user_id, "m": mids, "f": fids, "s": sids},
    ).all()
    return [(int(r.conversation_id), str(r.model)) for r in rows]


def _vector_scopes(conn: Connection, user_id: int, persona_id: str | None) -> list[tuple[int, str]]:
    rows = conn.execute(
        _sql(
            conn,
            "SELECT DISTINCT e.conversation_id, e.model FROM embeddings e "
            "JOIN conversations c ON c.id = e.conversation_id WHERE e.user_id = :uid "
            "AND (:persona IS NULL OR c.persona_id = :persona)",
        ),
        {"uid": user_id, "persona": persona_id},
    ).all()
    return [(int(r.conversation_id), str(r.model)) for r in rows]


def _tombstones(conn: Connection, user_id: int, scopes: Sequence[tuple[int, str]]) -> None:
    for cid, model in scopes:
        conn.execute(
            text(
                "INSERT OR REPLACE INTO embeddings (kind, item_id, user_id, conversation_id, "
                "model, dim, vector, created_at) VALUES (:kind, :item, :uid, :cid, :model, 0, "
                "x'', strftime('%Y-%m-%d %H:%M:%f', 'now'))"
            ),
            # One per person and conversation: replaced (with a new, larger id) each time.
            {"kind": TOMBSTONE, "item": (user_id << 32) | cid, "uid": user_id, "cid": cid,
             "model": model},
        )  # fmt: skip


def _scrub_safety(conn: Connection, where: str, params: dict[str, Any]) -> int:
    """Keep that a safety event happened (a crisis stays in the moderators' record and
    its pause stands) but drop what it quoted: the matched phrase, the blocked reply's
    excerpt and the reason text live in `details` and `reason`."""
    if not inspect(conn).has_table("safety_events"):
        return 0
    return conn.execute(
        _sql(
            conn,
            "UPDATE safety_events SET details = '{\"forgotten\": true}', "
            "reason = check_name || ': ' || verdict || ' (details removed with a forgotten "
            f"message)', message_id = NULL WHERE {where}",
        ),
        params,
    ).rowcount


def _clear_inbox(conn: Connection, mids: str) -> int:
    """Clear the raw payloads of handled (`done` or `failed`) inbox events of the same
    platform and chat that carry a forgotten message's text, as the inbox's own
    pruning clears old ones (a cleared event cannot be replayed into a message
    again). Pending events are new messages, not these."""
    if not inspect(conn).has_table("inbox_events"):
        return 0
    rows = conn.execute(
        _sql(
            conn,
            "SELECT m.text, c.platform, c.channel FROM messages m "
            f"JOIN conversations c ON c.id = m.conversation_id WHERE m.id IN {_IN}",
        ),
        {"ids": mids},
    ).all()
    cleared = 0
    for platform, channel in {(r.platform, r.channel) for r in rows}:
        forms: set[str] = set()
        for r in rows:
            if (r.platform, r.channel) == (platform, channel) and r.text.strip():
                # As received, or as JSON writes it (escaped, with or without ASCII).
                forms |= {
                    r.text,
                    json.dumps(r.text)[1:-1],
                    json.dumps(r.text, ensure_ascii=False)[1:-1],
                }
        cleared += conn.execute(
            _sql(
                conn,
                "UPDATE inbox_events SET payload = '' WHERE status IN ('done', 'failed') "
                "AND platform = :platform AND (chat IS NULL OR chat = :channel) "
                "AND payload != '' AND EXISTS (SELECT 1 FROM json_each(:forms) f "
                "WHERE instr(inbox_events.payload, f.value) > 0)",
            ),
            {"platform": platform, "channel": channel, "forms": json.dumps(sorted(forms))},
        ).rowcount
    return cleared


def _drop_neighbour_vectors(conn: Connection, places: Sequence[Any]) -> list[int]:
    """The person's next turn after each deleted message: its vector was embedded
    with the deleted text as context, so it goes (the caller embeds it again)."""
    after = set()
    for row in places:
        nxt = conn.execute(
            _sql(
                conn,
                "SELECT min(id) FROM messages WHERE conversation_id = :cid AND user_id = :uid "
                f"AND id > :id AND deleted_at IS NULL AND kind IN {_SPOKEN}",
            ),
            {"cid": row.conversation_id, "uid": row.user_id, "id": row.id},
        ).scalar()
        if nxt is not None:
            after.add(int(nxt))
    if not after:
        return []
    had = _ids(
        conn,
        f"DELETE FROM embeddings WHERE kind = 'message' AND item_id IN {_IN} RETURNING item_id",
        ids=_json(after),
    )
    return sorted(set(had))


def _rewrite_indexes(conn: Connection, table: str) -> None:
    """Merge the table's FTS5 indexes into one segment each, which drops the terms of
    deleted rows (their tombstones cancel them) instead of leaving them in older
    segments. Costs a rewrite of the index: forgetting is rare, and must be complete."""
    for index in _FTS[table]:
        conn.execute(text(f"INSERT INTO {index}({index}) VALUES ('optimize')"))
