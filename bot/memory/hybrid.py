"""`HybridSearch`: one query against one database, full-text and dense at once.

What it promises (the scoring itself is `ranking.py`'s):

- Every list it fuses comes from the `SearchBackend`, which filters by the scope;
  the candidates' details are read back through the scope filter again.
- The word lists and the dense list run side by side: the query is embedded (in
  the memory's worker thread) while the database ranks its words. Each leg reads
  its candidates' details in its own transaction (the dense one where the backend
  reads its vectors in one: `DenseRows`), so that after fusion there is nothing
  left to read but what a leg could not: one round trip fewer on the path.
- Odd text is never an error: the query is cut to 4,000 characters and cleaned of
  lone surrogates; a query the model cannot embed is answered by its words alone,
  and a model that fails turns dense search off for the process (`on_unavailable`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import structlog
from sqlalchemy import Connection

from bot.db import Database
from bot.memory import rows
from bot.memory.backend import Lexical, QueryVector, SearchBackend
from bot.memory.embeddings import Embedder, EmbeddingInputError
from bot.memory.query import words
from bot.memory.ranking import both, fuse, score
from bot.memory.timeparse import parse_time_range
from bot.memory.types import Kind, MemoryHit, MemoryScope, SearchWeights, aware
from bot.text import clean_text

__all__ = ["QUERY_CHARS", "HybridSearch"]

log = structlog.get_logger("bot.memory")

#: The most of a query that is searched: a longer one costs more and finds no better.
QUERY_CHARS = 4000


class HybridSearch:
    """Ranks a scope's memories for a query (see the module docstring)."""

    def __init__(
        self,
        db: Database,
        backend: SearchBackend,
        *,
        embedder: Embedder | None,
        thread: ThreadPoolExecutor,
        weights: SearchWeights,
        on_unavailable: Callable[[BaseException], None],
    ) -> None:
        self.db = db
        self.backend = backend
        self.embedder = embedder
        self.weights = weights
        self._thread = thread
        self._on_unavailable = on_unavailable

    async def search(
        self,
        scope: MemoryScope,
        query: str,
        *,
        k: int,
        now: datetime | None,
        exclude: Iterable[int],
        kinds: Sequence[Kind],
    ) -> list[MemoryHit]:
        """The `k` best memories for `query` in `scope`, best first."""
        now = aware(now or datetime.now(UTC))
        # Lone surrogates (undecodable bytes) cannot reach the database or a tokenizer.
        query = clean_text(query[:QUERY_CHARS])
        period = parse_time_range(query, now)
        weights = self.weights
        n = max(weights.candidates, k)
        lexical = self.backend.lexical(scope, kinds, query, n)
        # The details read so far, and every key asked for (found or not: a row out of
        # scope is absent from `known` and is not asked for again). Each leg adds to
        # them from its own database thread; the other only tests membership.
        known: dict[tuple[str, int], dict[str, Any]] = {}
        asked: set[tuple[str, int]] = set()

        def read_rows(conn: Connection, keys: Iterable[tuple[str, int]]) -> None:
            wanted = [key for key in dict.fromkeys(keys) if key not in asked]
            if wanted:
                known.update(rows.details(conn, scope, wanted))
                asked.update(wanted)

        def ranked_words(conn: Connection) -> Lexical:
            lists = lexical(conn)
            read_rows(conn, (key for found in lists for key in found))
            return lists

        # Full-text ranking on a reader while the query is embedded and the vectors
        # compared: the lists are independent until they are fused. Alone: beside the
        # vector query, never queued into one shared read with it (bot.db_group).
        ranked, dense = await both(
            self.db.read(ranked_words, alone=True),
            self._dense_ranked(scope, query, kinds, n, read_rows),
        )
        lists: list[tuple[Sequence[tuple[str, int]], float]] = [
            (lst, weights.bm25) for lst in ranked
        ]
        if dense is not None:
            lists.append((dense, weights.dense))
        fused = fuse(lists, weights.rrf_k)
        if not fused:
            return []
        if any(key not in asked for key in fused):
            await self.db.read(lambda conn: read_rows(conn, fused))
        return score(
            fused,
            known,
            weights,
            now=now,
            period=period,
            named=set(words(query, keep_stopwords=True)),
            excluded=set(exclude),
            k=k,
        )

    async def _dense_ranked(
        self,
        scope: MemoryScope,
        query: str,
        kinds: Sequence[Kind],
        n: int,
        read_rows: Callable[[Connection, Iterable[tuple[str, int]]], None],
    ) -> list[tuple[str, int]] | None:
        """The scope's nearest vectors to the query, best first; None when there is no
        dense list (no embedder, an empty query, nothing embedded, or the model off).
        `read_rows` reads the details of the ones kept, where the backend lets it."""
        if self.embedder is None or not query.strip():
            return None
        vector = QueryVector(
            lambda: self._query_vector(query), eager=getattr(self.embedder, "loaded", True)
        )
        floor = self.weights.min_similarity

        def kept(scored: Iterable[tuple[str, int, float]]) -> list[tuple[str, int]]:
            return [(kd, i) for kd, i, sim in scored if kd in kinds and sim >= floor]

        def dense_rows(conn: Connection, scored: Sequence[tuple[str, int, float]]) -> None:
            read_rows(conn, kept(scored))

        try:
            scored = await self.backend.dense(scope, vector, n, rows=dense_rows)
        finally:
            vector.cancel()
        if scored is None:
            return None
        return kept(scored)

    async def _query_vector(self, query: str) -> Any:
        embedder = self.embedder
        assert embedder is not None
        loop = asyncio.get_running_loop()
        try:
            vectors = await loop.run_in_executor(self._thread, embedder.embed, [query])
        except EmbeddingInputError as exc:  # this query only: full-text answers it
            log.info("memory.query_not_embedded", reason=str(exc))
            return None
        except Exception as exc:
            self._on_unavailable(exc)
            return None
        return vectors[0]
