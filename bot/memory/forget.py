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

Which rows a target covers is `forget_targets`; the vectors beyond the items'
own, `forget_vectors`; what is rewritten rather than deleted, `forget_scrub`;
the dialect of the SQL, `forget_sql`. The deletion is here, and every public
name is re-exported here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection

from bot.memory.forget_scrub import _clear_inbox, _rewrite_indexes, _scrub_safety
from bot.memory.forget_sql import _IN, _TYPE_NAME, _json, _sql
from bot.memory.forget_targets import (
    ForgetRefused,
    Target,
    _check_owner,
    _everything,
    _facts_from,
    _summaries_over,
    _with_replaced,
    _with_replies,
    parse_target,
)
from bot.memory.forget_vectors import (
    TOMBSTONE,
    _cached_scopes,
    _drop_neighbour_vectors,
    _tombstones,
    _vector_scopes,
)

__all__ = ["TOMBSTONE", "ForgetRefused", "Forgotten", "Target", "forget_rows", "parse_target"]


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
