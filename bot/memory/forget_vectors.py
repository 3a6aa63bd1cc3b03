"""The vectors a forget touches beyond the deleted items' own: the tombstones that
tell other processes' vector caches to reload, and the person's next turn, whose
vector was embedded with the forgotten text as context."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, text

from bot.memory.forget_sql import _IN, _ids, _json, _sql

_SPOKEN = "('message', 'proactive', 'greeting')"
#: The `embeddings.kind` of a row without a vector that a forget writes for each
#: conversation (and model) it took vectors from: every process that caches that
#: scope's vectors sees it with its next search's new rows, and loads them again.
TOMBSTONE = "forget"


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
