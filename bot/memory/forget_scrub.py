"""What a forget rewrites rather than deletes, so that no forgotten text stays: the
safety events' quotes, handled inbox events' raw payloads, and the FTS5 indexes
(merged, which drops the deleted rows' terms)."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Connection, inspect, text

from bot.memory.forget_sql import _IN, _sql

#: The FTS5 indexes over each table (migration 0002).
_FTS = {"messages": ("messages_fts", "messages_fts_tri"), "facts": ("facts_fts", "facts_fts_tri")}


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


def _rewrite_indexes(conn: Connection, table: str) -> None:
    """Merge the table's FTS5 indexes into one segment each, which drops the terms of
    deleted rows (their tombstones cancel them) instead of leaving them in older
    segments. Costs a rewrite of the index: forgetting is rare, and must be complete."""
    for index in _FTS[table]:
        conn.execute(text(f"INSERT INTO {index}({index}) VALUES ('optimize')"))
