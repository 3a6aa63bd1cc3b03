"""`PostgresSearch`: the PostgreSQL backend of the memory (migration 0011).

- Words: a generated `tsvector` column on messages and facts (`search_words`,
  text search configuration `english`, GIN index), cut into postings tables kept
  by triggers (migration 0021), ranked by exact BM25 in SQL (pg_words.py).
  `english` because SQLite's index is `porter unicode61` for every language: the
  same stemmer family over the same Unicode word splitting, so both backends find
  the same words (non-English words pass the English stemmer mostly unchanged, as
  they pass porter). A deployment for one other language can change
  the configuration in the migration; `simple` would lose stemming for English.
- Chinese and Japanese, which have no word breaks: pg_trgm (a GIN `gin_trgm_ops`
  index on `text`); a query's CJK runs are cut into trigrams, a row matches any,
  and rows are ranked by how many they contain. Runs of one or two characters,
  too short for trigrams, are a substring scan of the scope.
- Vectors: a PostgreSQL-only `embedding vector` column beside the portable
  `vector` blob (float32, what `bot db copy` copies), filled when vectors are
  stored (`store_vectors`) or copied (`backfill_vectors`); searched with
  pgvector's HNSW indexes (cosine, over the vectors cast to `halfvec`: half the
  pages to visit; migration 0017), partial per dimension, with iterative scans
  so that a scope's filter still fills the page. Nothing is cached in the process,
  so a forget in another process needs no tombstone.
- After a forget: `VACUUM (FULL, ANALYZE)` of every table that lost or rewrote
  rows, and of the postings of messages and facts, which held their words: a
  plain DELETE (and a plain VACUUM) leaves the old tuple bytes in heap pages and
  the words in GIN entry pages; VACUUM FULL writes new files without
  them. Then, where the role may (superuser or pg_checkpoint), a CHECKPOINT and WAL
  switches so that WAL segments holding the text are recycled. See
  docs/memory.md ("Forget on PostgreSQL") for what stays outside the database.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any

import structlog
from sqlalchemy import Connection, text
from sqlalchemy.exc import SQLAlchemyError

from bot.db import Database
from bot.errors import StorageError
from bot.memory.backend import DenseRows, Lexical, QueryVector
from bot.memory.pg_words import TS_CONFIG, lexical_lists
from bot.memory.query import cjk_runs, trigrams, tsquery_expression
from bot.memory.tables import PG_POSTINGS
from bot.memory.types import Kind, MemoryScope

__all__ = ["HNSW_DIMENSIONS", "TS_CONFIG", "PostgresSearch", "backfill_vectors", "vector_literal"]

log = structlog.get_logger("bot.memory")

#: Dimensions with an HNSW index (migration 0017); others are compared exactly.
HNSW_DIMENSIONS = (384, 512, 768, 1024)
#: HNSW candidates per search, at least the page the fusion asks for (100): 200
#: cost 82 ms p50 of hybrid search at 100k in one scope, 100 cost 57 ms
#: (benchmarks.md); the iterative scan goes on past it while the scope's filter
#: leaves the page short.
EF_SEARCH = 100
#: Why a forget leaves WAL bytes on a server that recycles its segments.
WAL_RECYCLED = (
    "wal_recycle is on: recycled WAL segments keep the forgotten text until overwritten "
    "(set wal_recycle = off, as deploy/compose.yaml does)"
)
#: How long a forget's VACUUM FULL waits for its exclusive lock before giving up.
SCRUB_LOCK_TIMEOUT = "10s"
#: Memory for the index rebuilds of a forget's VACUUM FULL (HNSW above all).
SCRUB_WORK_MEM = "1GB"


def vector_literal(values: Any) -> str:
    """pgvector's text form of a float vector: `[0.1,0.2,...]`."""
    return "[" + ",".join(repr(float(v)) for v in values) + "]"


#: How long a scope's row count (BM25's document count) is reused: it moves slowly.
SCOPE_SIZE_TTL_S = 60.0
_SIZES_KEPT = 10_000

_HAS_VECTORS = text(
    "SELECT 1 FROM embeddings WHERE user_id = :uid AND conversation_id = :cid "
    "AND model = :model AND embedding IS NOT NULL LIMIT 1"
)


def _nearest_sql(dim: int) -> Any:
    # The order is that of the partial HNSW index of this dimension (migration 0017:
    # the vectors cast to halfvec, the same cast and `dim` condition here, so the
    # planner can use it); the similarity is computed from the full vector.
    full = f"CAST(embedding AS vector({dim})) <=> CAST(:q AS vector({dim}))"
    order = (
        f"CAST(embedding AS halfvec({dim})) <=> CAST(:q AS halfvec({dim}))"
        if dim in HNSW_DIMENSIONS
        else full
    )
    return text(
        f"SELECT kind, item_id, 1 - ({full}) AS similarity FROM embeddings "
        f"WHERE dim = {dim} AND user_id = :uid AND conversation_id = :cid AND model = :model "
        f"AND embedding IS NOT NULL ORDER BY {order} LIMIT :n"
    )


#: The HNSW scan's settings for one transaction, in one round trip; and a plan for
#: this query's scope, not a generic one (see pg_words.py: a prepared statement's
#: generic plan does not know the scope's size).
_HNSW_SETTINGS = text(
    "SELECT set_config('hnsw.ef_search', :ef, true), "
    "set_config('hnsw.iterative_scan', 'relaxed_order', true), "
    "set_config('plan_cache_mode', 'force_custom_plan', true)"
)


_INSERT_EMBEDDING = text(
    "INSERT INTO embeddings "
    "(kind, item_id, user_id, conversation_id, model, dim, vector, created_at, embedding) "
    "VALUES (:kind, :item_id, :user_id, :conversation_id, :model, :dim, :vector, :created_at, "
    "CAST(:embedding AS vector)) ON CONFLICT (kind, item_id, model) DO UPDATE SET "
    "user_id = excluded.user_id, conversation_id = excluded.conversation_id, "
    "dim = excluded.dim, vector = excluded.vector, created_at = excluded.created_at, "
    "embedding = excluded.embedding"
)


class PostgresSearch:
    """The PostgreSQL `SearchBackend` (see the module docstring)."""

    def __init__(self, db: Database, *, model: str | None) -> None:
        self.db = db
        self.model = model
        # Per scope: when its row counts were taken, and the counts (no text).
        self._sizes: dict[tuple[int, int], tuple[float, dict[str, tuple[int, float]]]] = {}

    def lexical(
        self, scope: MemoryScope, kinds: Sequence[Kind], query: str, n: int
    ) -> Callable[[Connection], Lexical]:
        tsq = tsquery_expression(query)
        grams = trigrams(query)
        short_cjk = cjk_runs(query)
        key = (scope.user_id, scope.conversation_id)
        now = time.monotonic()
        known = self._sizes.get(key)
        fresh = known is not None and now - known[0] < SCOPE_SIZE_TTL_S
        sizes = dict(known[1]) if known is not None and fresh else {}
        taken = known[0] if known is not None and fresh else now

        def work(conn: Connection) -> Lexical:
            lists = lexical_lists(conn, scope, kinds, tsq, grams, short_cjk, n, sizes)
            if len(self._sizes) >= _SIZES_KEPT:
                self._sizes.pop(next(iter(self._sizes)))
            self._sizes[key] = (taken, sizes)
            return lists

        return work

    async def dense(
        self, scope: MemoryScope, query: QueryVector, n: int, *, rows: DenseRows | None = None
    ) -> list[tuple[str, int, float]] | None:
        if self.model is None:
            return None
        params = {"uid": scope.user_id, "cid": scope.conversation_id, "model": self.model}
        if not query.started:
            # A model not loaded yet is loaded only for a scope that holds vectors.
            has = await self.db.read(lambda conn: conn.execute(_HAS_VECTORS, params).first())
            if has is None:
                return None
        qvec = await query.get()
        if qvec is None:
            return None
        dim = len(qvec)
        literal = vector_literal(qvec)

        def nearest(conn: Connection) -> list[tuple[str, int, float]]:
            conn.execute(_HNSW_SETTINGS, {"ef": str(max(EF_SEARCH, n))})
            near = conn.execute(_nearest_sql(dim), {**params, "q": literal, "n": n}).all()
            # relaxed_order: the index may return a few out of order; the scores decide.
            found = [(str(r.kind), int(r.item_id), float(r.similarity)) for r in near]
            found.sort(key=lambda f: -f[2])
            if rows is not None:  # their details in this transaction: no round trip after
                rows(conn, found)
            return found

        # Alone: it sets transaction-scoped settings (bot.db_group would stop it in a
        # shared read and run it again alone), and it runs beside the word lists.
        return await self.db.read(nearest, alone=True)

    def store_vectors(self, conn: Connection, values: Sequence[dict[str, Any]]) -> None:
        import numpy as np

        rows = [
            {**v, "embedding": vector_literal(np.frombuffer(v["vector"], dtype="<f4"))}
            for v in values
        ]
        conn.execute(_INSERT_EMBEDDING, rows)

    async def forgotten(self, user_id: int) -> None:
        return None  # nothing of anyone is held in this process

    async def scrub(self, tables: Sequence[str]) -> None:
        if not tables:
            return
        # A source table's postings held its words: they are rewritten with it.
        postings = [PG_POSTINGS[t] for t in tables if t in PG_POSTINGS]
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, scrub_tables, self.db, [*tables, *postings])


def scrub_tables(db: Database, tables: Sequence[str]) -> dict[str, float]:
    """`VACUUM (FULL, ANALYZE)` each table (new files without the dead tuples, indexes
    rebuilt, statistics resampled from the rows left), then a CHECKPOINT and WAL
    switches where this role may. Blocking. Returns seconds per step.

    Raises `StorageError` when a VACUUM could not run (its lock was not granted in
    `SCRUB_LOCK_TIMEOUT`, or the role does not own the table): the rows are deleted,
    their bytes stay in the table's pages until a VACUUM FULL runs.
    """
    timings: dict[str, float] = {}
    engine = db.engine.execution_options(isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f"SET lock_timeout = '{SCRUB_LOCK_TIMEOUT}'"))
        # VACUUM FULL rebuilds every index; an HNSW graph built within memory is many
        # times faster than one spilling (the default is 64MB).
        conn.execute(text(f"SET maintenance_work_mem = '{SCRUB_WORK_MEM}'"))
        # The text first; the vectors last: their rewrite rebuilds the HNSW index,
        # by far the longest step (minutes at 100k vectors, see docs/memory.md).
        for table in sorted(tables, key=lambda t: (t == "embeddings", t)):
            if not table.replace("_", "").isalnum():
                raise ValueError(f"not a table name: {table!r}")
            started = time.perf_counter()
            try:
                conn.execute(text(f'VACUUM (FULL, ANALYZE) "{table}"'))
            except SQLAlchemyError as exc:
                raise StorageError(
                    f"forgotten rows are deleted, but VACUUM FULL of {table} failed "
                    f"(their bytes stay in its pages until one runs): {getattr(exc, 'orig', exc)}"
                ) from exc
            timings[table] = time.perf_counter() - started
        started = time.perf_counter()
        try:
            # The statistics ANALYZE replaced are dead tuples of pg_statistic now.
            conn.execute(text("VACUUM FULL pg_catalog.pg_statistic"))
            # WAL segments still hold the text: a switch and a checkpoint make them
            # old, and the next checkpoints recycle (or, wal_recycle=off, remove) them.
            for _ in range(3):
                conn.execute(text("SELECT pg_switch_wal()"))
                conn.execute(text("CHECKPOINT"))
            # A recycled segment is renamed for reuse with its old bytes in it: only
            # with wal_recycle off are the segments that held the text removed.
            if conn.execute(text("SHOW wal_recycle")).scalar_one() != "off":
                log.warning("memory.forget_wal_left", reason=WAL_RECYCLED)
        except SQLAlchemyError as exc:
            log.info("memory.forget_wal_left", reason=str(getattr(exc, "orig", exc)))
        timings["wal"] = time.perf_counter() - started
    log.info("memory.forget_scrubbed", **{k: round(v, 3) for k, v in timings.items()})
    return timings


_UNFILLED = text(
    "SELECT id, vector FROM embeddings WHERE embedding IS NULL AND dim > 0 AND id > :after "
    "ORDER BY id LIMIT :n"
)
_FILL = text("UPDATE embeddings SET embedding = CAST(:embedding AS vector) WHERE id = :id")


def backfill_vectors(conn: Connection, *, batch: int = 1000) -> int:
    """Fill the PostgreSQL-only `embeddings.embedding` column from the portable float32
    `vector` blobs, for rows copied in without it (`bot db copy`). Returns how many
    rows it filled; on SQLite (no such column) 0. Runs in the caller's transaction.
    """
    if conn.dialect.name != "postgresql":
        return 0
    import numpy as np

    filled = 0
    after = 0
    while True:
        rows = conn.execute(_UNFILLED, {"after": after, "n": batch}).all()
        if not rows:
            return filled
        values = [
            {"id": r.id, "embedding": vector_literal(np.frombuffer(r.vector, dtype="<f4"))}
            for r in rows
        ]
        conn.execute(_FILL, values)
        filled += len(values)
        after = rows[-1].id
