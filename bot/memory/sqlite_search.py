"""`FTS5Search`: the SQLite backend of the memory.

- Words: FTS5 BM25 over external-content indexes of messages and facts
  (`porter unicode61` for words, `trigram` for Chinese and Japanese; migration
  0002), each row indexed with a scope token that searches AND into their MATCH;
  runs of one or two CJK characters by a substring scan of the scope.
- Vectors: the `embeddings` rows of a scope loaded once into process memory
  (`Vectors`), topped up with new rows at each search, scanned with numpy.
  Another process's forget reaches this cache through a tombstone row
  (`bot.memory.forget.TOMBSTONE`).
- After a forget: the process's cached vectors of the person are zeroed, and the
  WAL is checkpointed and truncated (secure_delete zeroes freed pages; the forget's
  transaction merges the FTS5 segments).
"""

from __future__ import annotations

import asyncio
import json
import math
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sqlalchemy import Connection, text

from bot.db import Database
from bot.memory.backend import DenseRows, Lexical, QueryVector
from bot.memory.forget import TOMBSTONE
from bot.memory.query import cjk_runs, match_expression, trigram_expression
from bot.memory.rows import FACT_SCOPE, MESSAGE_SCOPE
from bot.memory.types import Kind, MemoryScope
from bot.memory.vectors import Vectors

__all__ = ["FTS5Search", "lexical"]

_INSERT_EMBEDDING = text(
    "INSERT OR REPLACE INTO embeddings "
    "(kind, item_id, user_id, conversation_id, model, dim, vector, created_at) "
    "VALUES (:kind, :item_id, :user_id, :conversation_id, :model, :dim, :vector, :created_at)"
)
_NEW_VECTORS = text(
    "SELECT id, kind, item_id, dim, vector FROM embeddings "
    "WHERE user_id = :uid AND model = :model AND id > :after AND conversation_id = :cid "
    "ORDER BY id"
)


class FTS5Search:
    """The SQLite `SearchBackend` (see the module docstring)."""

    def __init__(
        self,
        db: Database,
        *,
        model: str | None,
        thread: ThreadPoolExecutor,
        cache_vectors: int = 2_000_000,
    ) -> None:
        self.db = db
        self.model = model
        self._thread = thread
        self._cache_limit = cache_vectors
        self._cache: OrderedDict[tuple[int, int], Vectors] = OrderedDict()

    # -- words ------------------------------------------------------------------------

    def lexical(
        self, scope: MemoryScope, kinds: Sequence[Kind], query: str, n: int
    ) -> Callable[[Connection], Lexical]:
        fts = match_expression(query)
        tri = trigram_expression(query)
        short_cjk = cjk_runs(query)
        # The scope's vector count, where known, tells how much of the table it holds.
        cached = self._cache.get((scope.user_id, scope.conversation_id))
        held = len(cached.ids) if cached is not None else None
        return lambda conn: lexical(conn, scope, kinds, fts, tri, short_cjk, n, held)

    # -- vectors ----------------------------------------------------------------------

    async def dense(
        self, scope: MemoryScope, query: QueryVector, n: int, *, rows: DenseRows | None = None
    ) -> list[tuple[str, int, float]] | None:
        # `rows` is not called: the scan runs in this process, on no transaction, and
        # SQLite's read after it is local and cheap.
        if self.model is None:
            return None
        key = (scope.user_id, scope.conversation_id)
        fresh = await self.db.read(lambda conn: self._fresh_vectors(conn, scope))
        if key in self._cache and any(r.kind == TOMBSTONE for r in fresh):
            # Another process forgot something of this scope: what is cached may
            # hold it, so the scope is wiped and loaded again.
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(self._thread, self._drop_scope, key)
            fresh = await self.db.read(lambda conn: self._fresh_vectors(conn, scope))
        # A model not loaded yet is loaded only once this scope is known to hold
        # vectors at all: a person with none costs no model load.
        if not query.started and not fresh and key not in self._cache:
            return None
        qvec = await query.get()
        if qvec is None:
            return None
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, self._dense_top, key, fresh, qvec, n)

    def _fresh_vectors(self, conn: Connection, scope: MemoryScope) -> list[Any]:
        cached = self._cache.get((scope.user_id, scope.conversation_id))
        after = cached.max_id if cached is not None else 0
        return list(
            conn.execute(
                _NEW_VECTORS,
                {
                    "uid": scope.user_id,
                    "cid": scope.conversation_id,
                    "model": self.model,
                    "after": after,
                },
            ).all()
        )

    def _dense_top(
        self, key: tuple[int, int], fresh: Sequence[Any], qvec: Any, n: int
    ) -> list[tuple[str, int, float]]:
        vectors = self._cache.get(key)
        if vectors is None:
            vectors = self._cache[key] = Vectors()
        self._cache.move_to_end(key)
        new = [r for r in fresh if r.id > vectors.max_id]
        real = [r for r in new if r.kind != TOMBSTONE]
        if real:
            vectors.add(real, int(real[0].dim))
        if new:  # a tombstone seen is a tombstone handled
            vectors.max_id = max(vectors.max_id, max(r.id for r in new))
        while (
            sum(len(v.ids) for v in self._cache.values()) > self._cache_limit
            and len(self._cache) > 1
        ):
            self._cache.popitem(last=False)
        return vectors.top(qvec, n)

    def store_vectors(self, conn: Connection, values: Sequence[dict[str, Any]]) -> None:
        conn.execute(_INSERT_EMBEDDING, list(values))

    # -- forgetting -------------------------------------------------------------------

    async def forgotten(self, user_id: int) -> None:
        # On the thread that scans them, so no search is mid-scan of a wipe.
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._thread, self._drop_cached, user_id)

    def _drop_cached(self, user_id: int) -> None:
        """Zero and drop the person's cached vectors (not just unreference them)."""
        for key in [k for k in self._cache if k[0] == user_id]:
            self._drop_scope(key)

    def _drop_scope(self, key: tuple[int, int]) -> None:
        vectors = self._cache.pop(key, None)
        if vectors is not None:
            vectors.wipe()

    async def scrub(self, tables: Sequence[str]) -> None:
        # secure_delete zeroed the freed cells and pages and the forget's transaction
        # merged the FTS5 segments; the old page images left are the WAL's.
        await self.db.checkpoint()


# -- FTS5 SQL (run on a reader thread) ---------------------------------------------------


def _fts_statement(table: str, source: str, alias: str, scope: str) -> Any:
    return text(
        f"SELECT {alias}.id FROM {table} JOIN {source} {alias} ON {alias}.id = {table}.rowid "
        f"WHERE {table} MATCH :q AND {scope} ORDER BY bm25({table}) LIMIT :n"
    )


def _fts_ranked(table: str) -> Any:
    # The index alone: joining every match to its row before sorting costs more than
    # the ranking itself once a scope holds 100k messages (the scope token in the
    # MATCH already limits the hits to this person and channel).
    return text(f"SELECT rowid FROM {table} WHERE {table} MATCH :q ORDER BY bm25({table}) LIMIT :n")


def _in_scope(source: str, alias: str, scope: str) -> Any:
    return text(
        f"SELECT {alias}.id FROM {source} {alias} WHERE {alias}.id IN "
        f"(SELECT value FROM json_each(:ids)) AND {scope}"
    )


_FTS = {
    ("message", "words"): _fts_statement("messages_fts", "messages", "m", MESSAGE_SCOPE),
    ("message", "tri"): _fts_statement("messages_fts_tri", "messages", "m", MESSAGE_SCOPE),
    ("fact", "words"): _fts_statement("facts_fts", "facts", "f", FACT_SCOPE),
    ("fact", "tri"): _fts_statement("facts_fts_tri", "facts", "f", FACT_SCOPE),
}
_FTS_RANKED = {
    key: _fts_ranked(f"{key[0]}s_fts{'_tri' if key[1] == 'tri' else ''}") for key in _FTS
}
_IN_SCOPE = {
    "message": _in_scope("messages", "m", MESSAGE_SCOPE),
    "fact": _in_scope("facts", "f", FACT_SCOPE),
}


#: From this share of all messages up, a scope's messages are ranked without its token.
_UNSCOPED_SHARE = 0.5
_NEWEST_MESSAGE = text("SELECT max(id) FROM messages")


def _ranked_in_scope(
    conn: Connection,
    kind: Kind,
    index: str,
    expression: str,
    params: dict[str, Any],
    share: float = 1.0,
) -> list[int]:
    """The best `n` ids for `expression`, ranked by the index, then checked for scope.

    Rows the scope check drops (deleted, superseded, not spoken, or, for an
    expression without the scope token, someone else's: about 1 - `share` of them)
    are read past with a larger page; when they still leave fewer than `n` out of a
    full page, the exact joined query runs.
    """
    n = int(params["n"])
    page = math.ceil((n + n // 2) / max(share, 0.01))
    ranked = [
        int(i)
        for i in conn.execute(_FTS_RANKED[(kind, index)], {"q": expression, "n": page}).scalars()
    ]
    if not ranked:
        return []
    keep = set(conn.execute(_IN_SCOPE[kind], {**params, "ids": json.dumps(ranked)}).scalars())
    found = [i for i in ranked if i in keep][:n]
    if len(found) < n and len(ranked) == page:
        return [
            int(i) for i in conn.execute(_FTS[(kind, index)], {**params, "q": expression}).scalars()
        ]
    return found


_LIKE = {
    "message": text(
        f"SELECT m.id FROM messages m WHERE {MESSAGE_SCOPE} AND instr(m.text, :s) > 0 "
        "ORDER BY m.id DESC LIMIT :n"
    ),
    "fact": text(
        f"SELECT f.id FROM facts f WHERE {FACT_SCOPE} AND instr(f.text, :s) > 0 "
        "ORDER BY f.id DESC LIMIT :n"
    ),
}


def lexical(
    conn: Connection,
    scope: MemoryScope,
    kinds: Sequence[Kind],
    fts: str | None,
    tri: str | None,
    short_cjk: Sequence[str],
    n: int,
    held: int | None = None,
) -> Lexical:
    """Ranked id lists from the FTS indexes (and short CJK substrings) in `scope`.

    `held` estimates how many messages the scope holds. The scope token that
    narrows a MATCH to the scope costs FTS5 a pass over its whole doclist to weigh
    it, which is wasted when the scope is most of the table (a bot with one main
    person): then messages are ranked without it and checked for scope after.
    """
    params: dict[str, Any] = {"uid": scope.user_id, "cid": scope.conversation_id, "n": n}
    share = 0.0
    if held:
        newest = conn.execute(_NEWEST_MESSAGE).scalar() or 0
        share = min(1.0, held / max(newest, 1))
    lists: Lexical = []
    for kind in kinds:
        if kind == "summary":
            continue
        # The scope token the FTS triggers index with every row (migration 0002).
        token = f'"zq{scope.user_id}x{scope.conversation_id}zq"'
        for index, expression in (("words", fts), ("tri", tri)):
            if expression is None:
                continue
            if kind == "message" and share >= _UNSCOPED_SHARE:
                ids = _ranked_in_scope(conn, kind, index, expression, params, share)
            else:
                ids = _ranked_in_scope(conn, kind, index, f"{token} AND ({expression})", params)
            found: list[tuple[str, int]] = [(kind, i) for i in ids]
            if found:
                lists.append(found)
        for run in short_cjk[:8]:  # too short for trigrams: a substring scan of the scope
            rows = conn.execute(_LIKE[kind], {**params, "s": run}).scalars()
            found = [(kind, int(i)) for i in rows]
            if found:
                lists.append(found)
    return lists
