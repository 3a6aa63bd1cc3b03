"""`Memory`: long-term memory in the bot's own database (SQLite or PostgreSQL).

What it promises:

- **Isolation.** Every read is filtered by a `MemoryScope`: the speaker's user row
  and the conversation they speak in (which fixes platform, place and persona). A
  DM is its own conversation, so DM memories surface only in that DM, and a
  channel's memories only in that channel, and only the speaker's own: messages
  they wrote and the persona's replies to them, facts and summaries about them.
  Every candidate any index returns is read back through the scope filter.
- **Hybrid ranking.** The backend's full-text ranking (SQLite: FTS5 BM25 with
  unicode61 + porter and trigram; PostgreSQL: tsvector and pg_trgm) and, when an
  embedding model is available, cosine similarity (SQLite: numpy over vectors kept
  in the database; PostgreSQL: pgvector's HNSW index), fused with reciprocal rank
  fusion; then recency decay, importance and a boost for items inside a time range
  the query names ("last week", "上周"). See `hybrid.py` (one search) and
  `ranking.py` (the scoring, written once).
- **Graceful degradation.** Without numpy/sentence-transformers, or when the model
  fails, search is full-text + recency (logged once).
- **No blocking in the loop.** SQL runs through `Database.run`/`read`; embedding and
  numpy scans run in a worker thread; embeddings are computed in batches by a
  background task (`flush()` waits for it).

The backend (`backend.py`) is picked by the database's dialect. `SQLiteMemory` is
this class's older name, kept for the code that imports it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import structlog
from sqlalchemy import Connection

from bot.db import Database
from bot.llm.base import LLMBackend
from bot.memory import learning, rows
from bot.memory.backend import SearchBackend, search_backend_for
from bot.memory.embeddings import Embedder
from bot.memory.extract import Extraction
from bot.memory.forget import ForgetRefused, Forgotten, forget_rows, parse_target
from bot.memory.hybrid import HybridSearch
from bot.memory.indexer import Indexer
from bot.memory.ranking import pack_memories
from bot.memory.types import (
    Kind,
    MemoryHit,
    MemoryItem,
    MemoryScope,
    SearchWeights,
    aware,
    db_time,
    parse_dt,
)

if TYPE_CHECKING:
    from bot.engine import RecallRequest, TurnRecord
    from bot.metrics import Metrics

__all__ = [
    "ForgetRefused",
    "Memory",
    "MemoryHit",
    "MemoryItem",
    "MemoryScope",
    "SQLiteMemory",
    "SearchWeights",
    "pack_memories",
]

log = structlog.get_logger("bot.memory")

#: Persona id -> the backend that voices it (facts and summaries are written by it).
BackendFor = Callable[[str], Awaitable[LLMBackend]]


class Memory:
    """The `MemorySource` of the engine, and the API people control memory through."""

    def __init__(
        self,
        db: Database,
        *,
        embedder: Embedder | None = None,
        backend_for: BackendFor | None = None,
        extract_facts: bool = False,
        summary_window: int = 60,
        quiet_after: timedelta = timedelta(hours=1),
        weights: SearchWeights | None = None,
        embed_delay_s: float = 1.0,
        embed_batch: int = 256,
        cache_vectors: int = 2_000_000,
        extract_max_tokens: int = 512,
        context_turns: int = 1,
        metrics: Metrics | None = None,
    ) -> None:
        self.db = db
        #: Times each search (`personabot_memory_search_seconds{backend}`) when set.
        self.metrics = metrics
        self.embedder = embedder
        self.backend_for = backend_for
        self.extract_facts = extract_facts
        self.summary_window = summary_window
        self.quiet_after = quiet_after
        self.extract_max_tokens = extract_max_tokens
        self._dense_off_logged = False
        # One thread for the model and the numpy scans: torch uses its own threads
        # inside, and one caller at a time keeps memory use predictable.
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bot-memory")
        self.search_backend: SearchBackend = search_backend_for(
            db,
            model=embedder.name if embedder is not None else None,
            thread=self._thread,
            cache_vectors=cache_vectors,
        )
        self.indexer = Indexer(
            db,
            embedder,
            self.search_backend,
            self._thread,
            delay_s=embed_delay_s,
            batch=embed_batch,
            context_turns=context_turns,
            on_unavailable=self._dense_unavailable,
        )
        self.searcher = HybridSearch(
            db,
            self.search_backend,
            embedder=embedder,
            thread=self._thread,
            weights=weights or SearchWeights(),
            on_unavailable=self._dense_unavailable,
        )

    @property
    def weights(self) -> SearchWeights:
        """The search's weights (`memory.search` in the config)."""
        return self.searcher.weights

    # -- the engine's seam ------------------------------------------------------------

    async def recall(self, request: RecallRequest) -> str:
        """Dated facts, summaries and recalled messages for this turn, within budget."""
        scope = MemoryScope(request.user_id, request.conversation_id)
        hits, summaries = await asyncio.gather(
            self.search(scope, request.query, k=30, now=request.now, exclude=request.history_ids),
            self._latest_summaries(scope, 3),
        )
        hits = [h for h in hits if not (h.kind == "message" and h.id == request.message_id)]
        return pack_memories(hits, summaries, request.budget_tokens, request.tokens)

    async def observe(self, turn: TurnRecord) -> None:
        """Index the turn (embeddings batched in the background), extract facts when
        configured, and summarise when the conversation outgrew the window."""
        self.enqueue([("message", turn.incoming_id), ("message", turn.reply_id)])
        scope = MemoryScope(turn.user_id, turn.conversation_id)
        if self.extract_facts and self.backend_for is not None:
            backend = await self.backend_for(turn.scope.persona)
            await self.extract(scope, turn.scope.persona, backend, now=turn.at)
        if self.backend_for is not None and await self._unsummarised(scope) >= self.summary_window:
            backend = await self.backend_for(turn.scope.persona)
            await self.summarise(scope, turn.scope.persona, backend, now=turn.at)

    # -- indexing -----------------------------------------------------------------------

    def enqueue(self, items: Iterable[tuple[Kind, int]]) -> None:
        """Queue items for embedding; a background task embeds them in batches.

        Full-text search needs nothing: the database indexes every row as it is
        written (FTS5 triggers, PostgreSQL's generated columns). Without an embedder
        this does nothing.
        """
        self.indexer.enqueue(items)

    async def flush(self) -> None:
        """Wait until every queued item is embedded (or embedding turned out to be off)."""
        await self.indexer.flush()

    def _dense_unavailable(self, exc: BaseException) -> None:
        if not self._dense_off_logged:
            self._dense_off_logged = True
            log.warning("memory.dense_off", reason=str(exc), fallback="bm25")

    # -- search -------------------------------------------------------------------------

    async def search(
        self,
        scope: MemoryScope,
        query: str,
        *,
        k: int = 10,
        now: datetime | None = None,
        exclude: Iterable[int] = (),
        kinds: Sequence[Kind] = ("message", "fact"),
    ) -> list[MemoryHit]:
        """The `k` best memories for `query` in `scope`, best first.

        Never raises for odd text: an empty, huge, punctuation- or emoji-only query
        or one full of search syntax simply finds what its words find (maybe nothing).
        """
        run = self.searcher.search
        if self.metrics is None:
            return await run(scope, query, k=k, now=now, exclude=exclude, kinds=kinds)
        with self.metrics.timed_search(self.db.engine.dialect.name):
            return await run(scope, query, k=k, now=now, exclude=exclude, kinds=kinds)

    # -- facts and summaries -------------------------------------------------------------

    async def extract(
        self,
        scope: MemoryScope,
        persona_id: str,
        backend: LLMBackend,
        *,
        now: datetime,
        recent: int = 12,
    ) -> Extraction:
        """Ask the model for facts in the person's recent messages and store them
        (deduplicated; `replaces` marks older facts superseded)."""
        result, new_ids = await learning.extract_facts(
            self.db,
            scope,
            persona_id,
            backend,
            now=now,
            recent=recent,
            max_tokens=self.extract_max_tokens,
        )
        self.enqueue(("fact", i) for i in new_ids)
        return result

    async def summarise(
        self, scope: MemoryScope, persona_id: str, backend: LLMBackend, *, now: datetime
    ) -> int | None:
        """Summarise the person's messages since the last summary; returns its id."""
        sid = await learning.summarise(self.db, scope, persona_id, backend, now=now)
        if sid is not None:
            self.enqueue([("summary", sid)])
        return sid

    async def summarise_quiet(self, now: datetime) -> list[int]:
        """For the scheduler: summarise conversations quiet for `quiet_after` that have
        unsummarised messages. Returns the new summary ids."""
        if self.backend_for is None:
            return []
        cutoff = aware(now) - self.quiet_after
        pending = await self.db.run(
            lambda conn: list(
                conn.execute(rows.QUIET, {"cutoff": db_time(cutoff, conn.dialect.name)})
            )
        )
        made = []
        for row in pending:
            backend = await self.backend_for(row.persona_id)
            sid = await self.summarise(
                MemoryScope(row.user_id, row.conversation_id), row.persona_id, backend, now=now
            )
            if sid is not None:
                made.append(sid)
        return made

    async def _unsummarised(self, scope: MemoryScope) -> int:
        return int(
            await self.db.run(
                lambda conn: conn.execute(
                    rows.COUNT_UNSUMMARISED, {"uid": scope.user_id, "cid": scope.conversation_id}
                ).scalar_one()
            )
        )

    async def _latest_summaries(self, scope: MemoryScope, n: int) -> list[MemoryHit]:
        def work(conn: Connection) -> list[MemoryHit]:
            found = conn.execute(
                rows.LATEST_SUMMARIES,
                {"uid": scope.user_id, "cid": scope.conversation_id, "n": n},
            ).all()
            return [
                MemoryHit("summary", r.id, r.text, 0.0, parse_dt(r.end_at), "", ())
                for r in reversed(found)
            ]

        return await self.db.read(work)

    # -- people in control -----------------------------------------------------------------

    async def find_user(self, platform: str, platform_user_id: str) -> int | None:
        """The user row id of a person, or None if we never met them."""
        if any(0xD800 <= ord(c) <= 0xDFFF for c in platform + platform_user_id):
            return None  # not encodable, so never stored: nobody has that id
        if "\x00" in platform + platform_user_id:
            return None  # never stored either (and PostgreSQL refuses NUL in text)
        return await self.db.run(
            lambda conn: conn.execute(
                rows.FIND_USER, {"p": platform, "u": platform_user_id}
            ).scalar()
        )

    async def list_memories(
        self, user_id: int, *, persona_id: str | None = None
    ) -> list[MemoryItem]:
        """The facts (current ones) and summaries kept about a person, newest first."""

        def work(conn: Connection) -> list[MemoryItem]:
            params = {"uid": user_id, "persona": persona_id}
            items = [
                MemoryItem(
                    ref=f"f{r.id}",
                    kind="fact",
                    text=r.text,
                    at=parse_dt(r.updated_at),
                    persona_id=r.persona_id,
                    source_ids=tuple(json.loads(r.source_ids)),
                    confidence=r.confidence,
                )
                for r in conn.execute(rows.LIST_FACTS, params)
            ]
            items += [
                MemoryItem(
                    ref=f"s{r.id}",
                    kind="summary",
                    text=r.text,
                    at=parse_dt(r.end_at),
                    persona_id=r.persona_id,
                    source_ids=(r.first_message_id, r.last_message_id),
                )
                for r in conn.execute(rows.LIST_SUMMARIES, params)
            ]
            return sorted(items, key=lambda i: i.at, reverse=True)

        return await self.db.run(work)

    async def forget(
        self, user_id: int, target: str, *, persona_id: str | None = None
    ) -> dict[str, int]:
        """Delete one memory (`f12`, `s3`, `m45`) or `all` of a person's memories, and
        leave no byte of it behind: see `bot.memory.forget` for what goes with each,
        and the backend's `scrub` for how the engine's files lose it.

        Returns counts per table, plus `reembedded`: the turns after a forgotten
        message, embedded again with their new context. Raises `ForgetRefused`
        (deleting nothing) for an id that is not the person's, `KeyError` for one
        that does not exist, `ValueError` for one that is not an id, and
        `StorageError` when the deleted rows' old bytes could not be removed from
        the engine's files (the rows are gone; on SQLite old page images stay in
        the WAL until the next checkpoint).
        """
        parsed = parse_target(target)
        done: Forgotten | None = None
        try:
            # No embedding batch may run meanwhile: one that read a forgotten text
            # before the delete would store its vector after it.
            async with self.indexer.lock:
                done = await self.db.run(
                    lambda conn: forget_rows(conn, user_id, parsed, persona_id)
                )
                await self.search_backend.forgotten(user_id)
                counts = dict(done.counts)
                counts["reembedded"] = await self.indexer.reembed(done.neighbours)
        finally:
            if done is not None:  # something was deleted: its old bytes go too
                await self.search_backend.scrub(done.tables)
        log.info("memory.forgot", user_id=user_id, target=parsed.ref, **counts)
        return counts

    # -- lifecycle -----------------------------------------------------------------------

    async def aclose(self) -> None:
        """Embed what is queued if the model is already loaded, then stop the worker."""
        await self.indexer.aclose()
        self._thread.shutdown(wait=False, cancel_futures=True)


#: The older name of `Memory`, from when SQLite was its only database.
SQLiteMemory = Memory
