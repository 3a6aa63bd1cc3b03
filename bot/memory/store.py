"""`SQLiteMemory`: long-term memory in the bot's own database.

What it promises:

- **Isolation.** Every read is filtered by a `MemoryScope`: the speaker's user row
  and the conversation they speak in (which fixes platform, place and persona). A
  DM is its own conversation, so DM memories surface only in that DM, and a
  channel's memories only in that channel, and only the speaker's own: messages
  they wrote and the persona's replies to them, facts and summaries about them.
- **Hybrid ranking.** FTS5 BM25 (unicode61 + porter for words, trigram for CJK)
  and, when an embedding model is available, cosine similarity over vectors kept
  in SQLite and scanned with numpy, fused with reciprocal rank fusion; then
  recency decay, importance and a boost for items inside a time range the query
  names ("last week", "上周").
- **Graceful degradation.** Without numpy/sentence-transformers, or when the model
  fails, search is BM25 + recency (logged once).
- **No blocking in the loop.** SQL runs through `Database.run`; embedding and the
  numpy scan run in a worker thread; embeddings are computed in batches by a
  background task (`flush()` waits for it).
"""

from __future__ import annotations

import asyncio
import json
import math
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast

import structlog
from sqlalchemy import Connection, text

from bot.db import Database
from bot.errors import BackendError
from bot.llm.base import LLMBackend, TokenCounter
from bot.memory.embeddings import Embedder, EmbeddingInputError, EmbeddingUnavailable
from bot.memory.extract import (
    Extraction,
    KnownFact,
    SourceMessage,
    build_request,
    parse_extraction,
)
from bot.memory.forget import TOMBSTONE, ForgetRefused, Forgotten, forget_rows, parse_target
from bot.memory.query import cjk_runs, match_expression, trigram_expression, words
from bot.memory.timeparse import parse_time_range
from bot.text import clean_text, strip_controls

if TYPE_CHECKING:
    from bot.engine import RecallRequest, TurnRecord

__all__ = [
    "ForgetRefused",
    "MemoryHit",
    "MemoryItem",
    "MemoryScope",
    "SQLiteMemory",
    "SearchWeights",
]

log = structlog.get_logger("bot.memory")

Kind = Literal["message", "fact", "summary"]
A = TypeVar("A")
B = TypeVar("B")
#: Persona id -> the backend that voices it (facts and summaries are written by it).
BackendFor = Callable[[str], Awaitable[LLMBackend]]

_SPOKEN = "('message', 'proactive', 'greeting')"


@dataclass(frozen=True, slots=True)
class MemoryScope:
    """Whose memories a read may see: this person, in this conversation."""

    user_id: int
    conversation_id: int


@dataclass(frozen=True, slots=True)
class MemoryHit:
    """One search result."""

    kind: Kind
    id: int
    text: str
    score: float
    at: datetime
    speaker: str = ""
    source_ids: tuple[int, ...] = ()

    @property
    def ref(self) -> str:
        """The id people see: `m12`, `f3`, `s7`."""
        return f"{self.kind[0]}{self.id}"


@dataclass(frozen=True, slots=True)
class MemoryItem:
    """A fact or summary as shown to its owner (`/memory`, `bot memory show`)."""

    ref: str
    kind: Kind
    text: str
    at: datetime
    persona_id: str
    source_ids: tuple[int, ...] = ()
    confidence: float | None = None


@dataclass(frozen=True, slots=True)
class SearchWeights:
    """How the ranked lists are fused and adjusted (see docs/memory.md)."""

    bm25: float = 1.5
    dense: float = 1.0
    recency: float = 0.1
    half_life_days: float = 30.0
    importance: float = 0.2
    time_boost: float = 1.0
    #: Share of a message's neighbours' score it inherits (turns answer turns).
    neighbour: float = 0.5
    candidates: int = 100
    #: Reciprocal rank fusion's k: lower trusts the top of each list more.
    rrf_k: float = 10.0
    #: Boost for messages by someone the query names ("what did Anna say...").
    speaker: float = 0.3
    #: Cosine similarity below which a vector match is noise, not a memory.
    min_similarity: float = 0.15


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _db_time(value: datetime) -> str:
    # The text SQLAlchemy's DateTime stores in SQLite (naive UTC), so that rows we
    # write with raw SQL compare and sort like the ledger's own.
    return _aware(value).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def _parse_dt(value: Any) -> datetime:
    if isinstance(value, datetime):
        return _aware(value)
    return _aware(datetime.fromisoformat(str(value)))


@dataclass
class _Vectors:
    """One scope's vectors in memory: rows appended as new embeddings appear.

    Rows live in buffers with spare capacity (grown by half when full), so the two
    vectors a turn adds cost a copy of two rows, not of the whole scope.

    Up to `exact_below` vectors are scanned exactly. Above, a sign-bit copy (48 bytes
    for 384 dimensions instead of 1,536) is scanned first by Hamming distance, and
    only the `rescore` nearest are scored exactly: the scan reads a 32nd of the
    memory, and the order of the exact scores decides the result.
    """

    exact_below: int = 20_000
    rescore: int = 1_000
    max_id: int = 0
    size: int = 0
    ids: list[int] = field(default_factory=list)  # embedding row ids
    kinds: list[str] = field(default_factory=list)
    items: list[int] = field(default_factory=list)
    rows: Any = None  # float32 (capacity, dim); rows[:size] are in use
    signs: Any = None  # uint64 (words, capacity): sign bits, one row per 64-bit word

    def add(self, rows: Sequence[Any], dim: int) -> None:
        import numpy as np

        if not rows:
            return
        block = np.frombuffer(b"".join(r.vector for r in rows), dtype="<f4").reshape(-1, dim)
        end = self.size + len(block)
        if self.rows is None or end > len(self.rows):
            grown = np.empty((max(end, int(end * 1.5), 64), dim), dtype=np.float32)
            if self.rows is not None:
                grown[: self.size] = self.rows[: self.size]
            self.rows = grown
            self.signs = None  # rebuilt at the next scan that needs it
        self.rows[self.size : end] = block
        if self.signs is not None:
            self.signs[:, self.size : end] = _sign_words(block).T
        self.size = end
        for r in rows:
            self.ids.append(r.id)
            self.kinds.append(r.kind)
            self.items.append(r.item_id)
        self.max_id = max(self.max_id, rows[-1].id)

    def wipe(self) -> None:
        """Overwrite the vectors and sign bits with zeros and forget them."""
        for buffer in (self.rows, self.signs):
            if buffer is not None:
                buffer.fill(0)
        self.rows = self.signs = None
        self.size = 0
        self.ids, self.kinds, self.items = [], [], []

    def top(self, query: Any, n: int) -> list[tuple[str, int, float]]:
        import numpy as np

        if not self.size:
            return []
        matrix = self.rows[: self.size]
        n = min(n, self.size)
        if self.size < max(self.exact_below, self.rescore + n) or matrix.shape[1] % 64:
            scores = matrix @ query
            best = np.argpartition(-scores, n - 1)[:n]
            best = best[np.argsort(-scores[best])]
            return [(self.kinds[i], self.items[i], float(scores[i])) for i in best]
        if self.signs is None:
            # One row per 64-bit word (column-major): the Hamming distance is then six
            # passes over contiguous memory, about 6x faster than a sum across rows.
            self.signs = np.zeros((matrix.shape[1] // 64, len(self.rows)), dtype=np.uint64)
            self.signs[:, : self.size] = _sign_words(matrix).T
        signs = self.signs[:, : self.size]
        qbits = _sign_words(query[None, :])[0]
        distance = np.bitwise_count(signs[0] ^ qbits[0]).astype(np.uint16)
        for word in range(1, len(qbits)):
            distance += np.bitwise_count(signs[word] ^ qbits[word])
        near = np.argpartition(distance, self.rescore)[: self.rescore]
        scores = matrix[near] @ query
        order = np.argpartition(-scores, n - 1)[:n]
        order = order[np.argsort(-scores[order])]
        return [
            (self.kinds[i], self.items[i], float(scores[j]))
            for j, i in ((j, int(near[j])) for j in order)
        ]


def _sign_words(matrix: Any) -> Any:
    """The sign bits of each row, packed into uint64 words (dim must divide by 64)."""
    import numpy as np

    return np.packbits(matrix > 0, axis=1).view(np.uint64)


class SQLiteMemory:
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
    ) -> None:
        self.db = db
        self.embedder = embedder
        self.backend_for = backend_for
        self.extract_facts = extract_facts
        self.summary_window = summary_window
        self.quiet_after = quiet_after
        self.weights = weights or SearchWeights()
        self.embed_delay_s = embed_delay_s
        self.embed_batch = embed_batch
        self._cache_limit = cache_vectors
        self.extract_max_tokens = extract_max_tokens
        self.context_turns = context_turns
        self._cache: OrderedDict[tuple[int, int], _Vectors] = OrderedDict()
        self._dense_off_logged = False
        self._pending: list[tuple[Kind, int]] = []
        self._wake = asyncio.Event()
        self._batch_ready = asyncio.Event()
        self._flush_requested = False
        self._idle = asyncio.Event()
        self._idle.set()
        self._worker: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._embed_lock = asyncio.Lock()
        # One thread for the model and the numpy scans: torch uses its own threads
        # inside, and one caller at a time keeps memory use predictable.
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bot-memory")

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

        Text search needs nothing: the FTS5 triggers index every row as it is
        written. Without an embedder this does nothing.
        """
        if self.embedder is None:
            return
        self._pending.extend(items)
        if not self._pending:
            return
        self._idle.clear()
        self._wake.set()
        if len(self._pending) >= self.embed_batch:
            self._batch_ready.set()
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._embed_loop(), name="memory-embed")

    async def flush(self) -> None:
        """Wait until every queued item is embedded (or embedding turned out to be off)."""
        if not self._pending and self._idle.is_set():
            return
        self._flush_requested = True
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._embed_loop(), name="memory-embed")
        self._wake.set()
        self._batch_ready.set()
        await self._idle.wait()

    async def _embed_loop(self) -> None:
        while True:
            if not self._pending:
                self._flush_requested = False
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            if len(self._pending) < self.embed_batch and not self._flush_requested:
                # Let a batch gather: one model call for many turns is far cheaper.
                self._batch_ready.clear()
                with suppress(TimeoutError):
                    await asyncio.wait_for(self._batch_ready.wait(), self.embed_delay_s)
            batch = self._pending[: self.embed_batch]
            del self._pending[: self.embed_batch]
            try:
                async with self._embed_lock:
                    await self._embed(batch)
            except EmbeddingUnavailable as exc:
                self._dense_unavailable(exc)
                self._pending.clear()
            except Exception as exc:  # a bad batch must not stop indexing for good
                log.warning("memory.embed_failed", error=str(exc), items=len(batch))

    async def _embed(self, batch: Sequence[tuple[Kind, int]]) -> None:
        embedder = self.embedder
        if embedder is None or not batch:
            return
        rows = await self.db.run(lambda conn: _texts_for(conn, batch, self.context_turns))
        if not rows:
            return
        loop = asyncio.get_running_loop()
        vectors = await loop.run_in_executor(
            self._thread, embedder.embed, [r["text"] for r in rows]
        )
        now = datetime.now(UTC)
        values = [
            {
                "kind": r["kind"],
                "item_id": r["id"],
                "user_id": r["user_id"],
                "conversation_id": r["conversation_id"],
                "model": embedder.name,
                "dim": int(vectors.shape[1]),
                "vector": vectors[i].astype("<f4").tobytes(),
                "created_at": _db_time(now),
            }
            for i, r in enumerate(rows)
        ]

        def store(conn: Connection) -> None:
            conn.execute(_INSERT_EMBEDDING, values)

        await self.db.run(store)

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
        or one full of FTS5 syntax simply finds what its words find (maybe nothing).
        """
        now = _aware(now or datetime.now(UTC))
        # Lone surrogates (undecodable bytes) cannot reach SQLite or a tokenizer.
        query = clean_text(query[:4000])
        period = parse_time_range(query, now)
        weights = self.weights
        n = max(weights.candidates, k)
        fts = match_expression(query)
        tri = trigram_expression(query)
        short_cjk = cjk_runs(query)

        # The scope's vector count, where known, tells how much of the table it holds.
        cached = self._cache.get((scope.user_id, scope.conversation_id))
        held = len(cached.ids) if cached is not None else None

        def lexical(conn: Connection) -> list[list[tuple[str, int]]]:
            return _lexical(conn, scope, kinds, fts, tri, short_cjk, n, held)

        # BM25 on one reader thread while the query is embedded and the vectors
        # scanned: the two lists are independent until they are fused.
        ranked, dense = await _both(
            self.db.read(lexical), self._dense_ranked(scope, query, kinds, n)
        )
        weight_of = [weights.bm25] * len(ranked)
        if dense is not None:
            ranked.append(dense)
            weight_of.append(weights.dense)
        fused: dict[tuple[str, int], float] = {}
        for lst, w in zip(ranked, weight_of, strict=True):
            for rank, key in enumerate(lst):
                fused[key] = fused.get(key, 0.0) + w / (weights.rrf_k + rank + 1)
        excluded = set(exclude)
        named = set(words(query, keep_stopwords=True))
        if not fused:
            return []
        details = await self.db.read(lambda conn: _details(conn, scope, list(fused)))
        if weights.neighbour > 0:
            _spread_to_neighbours(fused, details, weights.neighbour)
        hits: list[MemoryHit] = []
        for key, base in fused.items():
            row = details.get(key)
            if row is None or (key[0] == "message" and key[1] in excluded):
                continue  # deleted since it was indexed, out of scope, or already shown
            at = row["at"]
            age_days = max(0.0, (now - at).total_seconds() / 86400)
            recency = 0.5 ** (age_days / weights.half_life_days)
            factor = 1 + weights.recency * recency + weights.importance * row["importance"]
            if period is not None and period.contains(at):
                factor += weights.time_boost
            if row["name"] and row["name"] in named:
                factor += weights.speaker
            hits.append(
                MemoryHit(
                    kind=key[0],  # type: ignore[arg-type]
                    id=key[1],
                    text=row["text"],
                    score=base * factor,
                    at=at,
                    speaker=row["speaker"],
                    source_ids=row["sources"],
                )
            )
        hits.sort(key=lambda h: (-h.score, -h.id))
        return hits[:k]

    async def _dense_ranked(
        self, scope: MemoryScope, query: str, kinds: Sequence[Kind], n: int
    ) -> list[tuple[str, int]] | None:
        """The scope's nearest vectors to the query, best first; None when there is no
        dense list (no embedder, an empty query, nothing embedded, or the model off)."""
        if self.embedder is None or not query.strip():
            return None
        vector: asyncio.Future[Any] | None = None
        if getattr(self.embedder, "loaded", True):
            vector = asyncio.ensure_future(self._query_vector(query))
        try:
            fresh = await self.db.read(lambda conn: self._fresh_vectors(conn, scope))
            key = (scope.user_id, scope.conversation_id)
            if key in self._cache and any(r.kind == TOMBSTONE for r in fresh):
                # Another process forgot something of this scope: what is cached may
                # hold it, so the scope is wiped and loaded again.
                loop = asyncio.get_running_loop()
                await loop.run_in_executor(self._thread, self._drop_scope, key)
                fresh = await self.db.read(lambda conn: self._fresh_vectors(conn, scope))
            if vector is None:
                # A model not loaded yet is loaded only once this scope is known to
                # hold vectors at all: a person with none costs no model load.
                if not fresh and (scope.user_id, scope.conversation_id) not in self._cache:
                    return None
                vector = asyncio.ensure_future(self._query_vector(query))
            qvec = await vector
        finally:
            if vector is not None and not vector.done():
                vector.cancel()
        if qvec is None:
            return None
        loop = asyncio.get_running_loop()
        scored = await loop.run_in_executor(self._thread, self._dense_top, scope, fresh, qvec, n)
        floor = self.weights.min_similarity
        return [(kd, i) for kd, i, sim in scored if kd in kinds and sim >= floor]

    async def _query_vector(self, query: str) -> Any:
        embedder = self.embedder
        assert embedder is not None
        loop = asyncio.get_running_loop()
        try:
            vectors = await loop.run_in_executor(self._thread, embedder.embed, [query])
        except EmbeddingInputError as exc:  # this query only: BM25 answers it
            log.info("memory.query_not_embedded", reason=str(exc))
            return None
        except Exception as exc:
            self._dense_unavailable(exc)
            return None
        return vectors[0]

    def _fresh_vectors(self, conn: Connection, scope: MemoryScope) -> list[Any]:
        assert self.embedder is not None
        cached = self._cache.get((scope.user_id, scope.conversation_id))
        after = cached.max_id if cached is not None else 0
        return list(
            conn.execute(
                _NEW_VECTORS,
                {
                    "uid": scope.user_id,
                    "cid": scope.conversation_id,
                    "model": self.embedder.name,
                    "after": after,
                },
            ).all()
        )

    def _dense_top(
        self, scope: MemoryScope, fresh: Sequence[Any], qvec: Any, n: int
    ) -> list[tuple[str, int, float]]:
        key = (scope.user_id, scope.conversation_id)
        vectors = self._cache.get(key)
        if vectors is None:
            vectors = self._cache[key] = _Vectors()
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
        shown, known, is_direct = await self.db.run(
            lambda conn: _extraction_input(conn, scope, persona_id, recent)
        )
        if not any(m.from_person for m in shown):
            return Extraction(())
        request = build_request(shown, known, max_tokens=self.extract_max_tokens)
        try:
            completion = await backend.complete(request)
        except BackendError as exc:
            log.warning("memory.extract_failed", error=str(exc))
            return Extraction((), (f"backend: {exc}",))
        result = parse_extraction(completion.text, shown, known)
        if result.problems:
            log.info("memory.extract_problems", problems=list(result.problems))
        if not result.facts:
            return result
        at = _aware(now)

        def store(conn: Connection) -> list[int]:
            new_ids = []
            # A source forgotten while the model read it takes its facts with it.
            live = _existing_messages(conn, [i for f in result.facts for i in f.source_ids])
            for fact in result.facts:
                if not set(fact.source_ids) <= live:
                    continue
                if fact.duplicate_of is not None:
                    conn.execute(
                        _TOUCH_FACT,
                        {
                            "id": fact.duplicate_of,
                            "at": _db_time(at),
                            "confidence": fact.confidence,
                        },
                    )
                    continue
                fid = conn.execute(
                    _INSERT_FACT,
                    {
                        "uid": scope.user_id,
                        "persona": persona_id,
                        "cid": scope.conversation_id,
                        "direct": is_direct,
                        "text": fact.text,
                        "sources": json.dumps(list(fact.source_ids)),
                        "confidence": fact.confidence,
                        "importance": fact.importance,
                        "at": _db_time(at),
                    },
                ).scalar_one()
                for old in fact.replaces:
                    conn.execute(_SUPERSEDE, {"old": old, "new": fid, "uid": scope.user_id})
                new_ids.append(int(fid))
            return new_ids

        new_ids = await self.db.run(store)
        self.enqueue(("fact", i) for i in new_ids)
        return result

    async def summarise(
        self, scope: MemoryScope, persona_id: str, backend: LLMBackend, *, now: datetime
    ) -> int | None:
        """Summarise the person's messages since the last summary; returns its id."""
        rows = await self.db.run(lambda conn: _unsummarised_rows(conn, scope, 400))
        if len(rows) < 4:
            return None
        transcript = "\n".join(f"{r.speaker}: {r.text}" for r in rows)[-12000:]
        from bot.llm.base import ChatMessage, ChatRequest, Sampling

        request = ChatRequest(
            messages=(
                ChatMessage(
                    "system",
                    "Summarise this stretch of conversation in at most five sentences, "
                    "from the companion's point of view: what the person shared, plans, "
                    "feelings, anything to follow up on. Plain text.",
                ),
                ChatMessage("user", transcript),
            ),
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
            if len(_existing_messages(conn, [r.id for r in rows])) < len(rows):
                return None  # a message of the stretch was forgotten meanwhile
            return int(
                conn.execute(
                    _INSERT_SUMMARY,
                    {
                        "uid": scope.user_id,
                        "persona": persona_id,
                        "cid": scope.conversation_id,
                        "text": summary,
                        "first": rows[0].id,
                        "last": rows[-1].id,
                        "start": _db_time(rows[0].created_at),
                        "end": _db_time(rows[-1].created_at),
                        "at": _db_time(now),
                    },
                ).scalar_one()
            )

        sid = await self.db.run(store)
        if sid is not None:
            self.enqueue([("summary", sid)])
        return sid

    async def summarise_quiet(self, now: datetime) -> list[int]:
        """For the scheduler: summarise conversations quiet for `quiet_after` that have
        unsummarised messages. Returns the new summary ids."""
        if self.backend_for is None:
            return []
        cutoff = _aware(now) - self.quiet_after
        pending = await self.db.run(
            lambda conn: list(conn.execute(_QUIET, {"cutoff": _db_time(cutoff)}))
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
                    _COUNT_UNSUMMARISED, {"uid": scope.user_id, "cid": scope.conversation_id}
                ).scalar_one()
            )
        )

    async def _latest_summaries(self, scope: MemoryScope, n: int) -> list[MemoryHit]:
        def work(conn: Connection) -> list[MemoryHit]:
            rows = conn.execute(
                _LATEST_SUMMARIES, {"uid": scope.user_id, "cid": scope.conversation_id, "n": n}
            ).all()
            return [
                MemoryHit("summary", r.id, r.text, 0.0, _parse_dt(r.end_at), "", ())
                for r in reversed(rows)
            ]

        return await self.db.read(work)

    # -- people in control -----------------------------------------------------------------

    async def find_user(self, platform: str, platform_user_id: str) -> int | None:
        """The user row id of a person, or None if we never met them."""
        if any(0xD800 <= ord(c) <= 0xDFFF for c in platform + platform_user_id):
            return None  # not encodable, so never stored: nobody has that id
        return await self.db.run(
            lambda conn: conn.execute(
                text("SELECT id FROM users WHERE platform = :p AND platform_user_id = :u"),
                {"p": platform, "u": platform_user_id},
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
                    at=_parse_dt(r.updated_at),
                    persona_id=r.persona_id,
                    source_ids=tuple(json.loads(r.source_ids)),
                    confidence=r.confidence,
                )
                for r in conn.execute(_LIST_FACTS, params)
            ]
            items += [
                MemoryItem(
                    ref=f"s{r.id}",
                    kind="summary",
                    text=r.text,
                    at=_parse_dt(r.end_at),
                    persona_id=r.persona_id,
                    source_ids=(r.first_message_id, r.last_message_id),
                )
                for r in conn.execute(_LIST_SUMMARIES, params)
            ]
            return sorted(items, key=lambda i: i.at, reverse=True)

        return await self.db.run(work)

    async def forget(
        self, user_id: int, target: str, *, persona_id: str | None = None
    ) -> dict[str, int]:
        """Delete one memory (`f12`, `s3`, `m45`) or `all` of a person's memories, and
        leave no byte of it behind: see `bot.memory.forget` for what goes with each.

        Returns counts per table, plus `reembedded`: the turns after a forgotten
        message, embedded again with their new context. Raises `ForgetRefused`
        (deleting nothing) for an id that is not the person's, `KeyError` for one
        that does not exist, `ValueError` for one that is not an id, and
        `StorageError` when the write-ahead log could not be truncated after the
        deletion (the rows are gone; old page images stay in it until the next
        checkpoint).
        """
        parsed = parse_target(target)
        done: Forgotten | None = None
        try:
            # No embedding batch may run meanwhile: one that read a forgotten text
            # before the delete would store its vector after it.
            async with self._embed_lock:
                done = await self.db.run(
                    lambda conn: forget_rows(conn, user_id, parsed, persona_id)
                )
                # On the thread that scans them, so no search is mid-scan of a wipe.
                loop = asyncio.get_running_loop()
                await loop.run_in_executor(self._thread, self._drop_cached, user_id)
                counts = dict(done.counts)
                counts["reembedded"] = await self._reembed(done.neighbours)
        finally:
            if done is not None:  # something was deleted: its old pages leave the WAL
                await self.db.checkpoint()
        log.info("memory.forgot", user_id=user_id, target=parsed.ref, **counts)
        return counts

    def _drop_cached(self, user_id: int) -> None:
        """Zero and drop the person's cached vectors (not just unreference them)."""
        for key in [k for k in self._cache if k[0] == user_id]:
            self._drop_scope(key)

    def _drop_scope(self, key: tuple[int, int]) -> None:
        vectors = self._cache.pop(key, None)
        if vectors is not None:
            vectors.wipe()

    async def _reembed(self, message_ids: Sequence[int]) -> int:
        if self.embedder is None or not message_ids:
            return 0
        try:
            await self._embed([("message", i) for i in message_ids])
        except EmbeddingUnavailable as exc:
            # Their old vectors are gone either way; BM25 still finds them.
            self._dense_unavailable(exc)
            return 0
        except Exception as exc:  # the forget itself is done; its vectors can wait
            log.warning("memory.reembed_failed", error=str(exc), items=len(message_ids))
            return 0
        return len(message_ids)

    # -- lifecycle -----------------------------------------------------------------------

    async def aclose(self) -> None:
        """Embed what is queued if the model is already loaded, then stop the worker."""
        loaded = getattr(self.embedder, "loaded", True)
        if self._pending and loaded:
            await self.flush()
        elif self._pending:
            # Loading a model only to shut down is slow; these stay BM25-searchable.
            log.info("memory.embeddings_skipped_at_close", items=len(self._pending))
            self._pending.clear()
        if self._worker is not None:
            self._worker.cancel()
            with suppress(asyncio.CancelledError):
                await self._worker
        self._thread.shutdown(wait=False, cancel_futures=True)


# -- packing -----------------------------------------------------------------------------


async def _both(first: Awaitable[A], second: Awaitable[B]) -> tuple[A, B]:
    """Both results, awaited concurrently; a failure is raised once both are done
    (so neither is left running unobserved)."""
    a, b = await asyncio.gather(first, second, return_exceptions=True)
    for outcome in (a, b):
        if isinstance(outcome, BaseException):
            raise outcome
    return cast(A, a), cast(B, b)


def _date(at: datetime) -> str:
    return at.strftime("%Y-%m-%d")


def pack_memories(
    hits: Sequence[MemoryHit],
    summaries: Sequence[MemoryHit],
    budget_tokens: int,
    tokens: TokenCounter,
) -> str:
    """Memory text for the system message: facts, then summaries, then recalled
    messages, each dated, most relevant first within each part; what does not fit
    in `budget_tokens` is left out (least relevant first)."""
    if budget_tokens <= 0:
        return ""
    sections: list[tuple[str, list[str]]] = [
        ("Things you know about this person:", [
            f"- ({_date(h.at)}) {h.text}" for h in hits if h.kind == "fact"
        ]),
        ("Earlier conversations, summarised:", [
            f"- ({_date(h.at)}) {h.text}" for h in summaries
        ]),
        ("Things said before that may matter now:", [
            f"- ({_date(h.at)}) {h.speaker or 'someone'}: {h.text}"
            for h in hits if h.kind == "message"
        ]),
    ]  # fmt: skip
    out: list[str] = []
    used = 0
    for header, lines in sections:
        if not lines:
            continue
        cost = tokens.count_text(header) + 1
        taken = []
        for line in lines:
            line_cost = tokens.count_text(line) + 1
            if used + cost + line_cost > budget_tokens:
                break
            taken.append(line)
            cost += line_cost
        if taken:
            out.append(header)
            out.extend(taken)
            used += cost
    return "\n".join(out)


# -- SQL (run on the database thread) ----------------------------------------------------

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
_MESSAGE_SCOPE = (
    "m.user_id = :uid AND m.conversation_id = :cid AND m.deleted_at IS NULL "
    f"AND m.kind IN {_SPOKEN}"
)
_FACT_SCOPE = "f.user_id = :uid AND f.conversation_id = :cid AND f.superseded_by IS NULL"


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
    ("message", "words"): _fts_statement("messages_fts", "messages", "m", _MESSAGE_SCOPE),
    ("message", "tri"): _fts_statement("messages_fts_tri", "messages", "m", _MESSAGE_SCOPE),
    ("fact", "words"): _fts_statement("facts_fts", "facts", "f", _FACT_SCOPE),
    ("fact", "tri"): _fts_statement("facts_fts_tri", "facts", "f", _FACT_SCOPE),
}
_FTS_RANKED = {
    key: _fts_ranked(f"{key[0]}s_fts{'_tri' if key[1] == 'tri' else ''}") for key in _FTS
}
_IN_SCOPE = {
    "message": _in_scope("messages", "m", _MESSAGE_SCOPE),
    "fact": _in_scope("facts", "f", _FACT_SCOPE),
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
        f"SELECT m.id FROM messages m WHERE {_MESSAGE_SCOPE} AND instr(m.text, :s) > 0 "
        "ORDER BY m.id DESC LIMIT :n"
    ),
    "fact": text(
        f"SELECT f.id FROM facts f WHERE {_FACT_SCOPE} AND instr(f.text, :s) > 0 "
        "ORDER BY f.id DESC LIMIT :n"
    ),
}


def _lexical(
    conn: Connection,
    scope: MemoryScope,
    kinds: Sequence[Kind],
    fts: str | None,
    tri: str | None,
    short_cjk: Sequence[str],
    n: int,
    held: int | None = None,
) -> list[list[tuple[str, int]]]:
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
    lists: list[list[tuple[str, int]]] = []
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


def _details(
    conn: Connection, scope: MemoryScope, keys: Sequence[tuple[str, int]]
) -> dict[tuple[str, int], dict[str, Any]]:
    """Text, time and speaker of candidates, re-checking scope (a stale vector cache
    or a deleted row can never smuggle anything in)."""
    out: dict[tuple[str, int], dict[str, Any]] = {}
    params = {"uid": scope.user_id, "cid": scope.conversation_id}
    message_ids = [i for kd, i in keys if kd == "message"]
    fact_ids = [i for kd, i in keys if kd == "fact"]
    summary_ids = [i for kd, i in keys if kd == "summary"]
    for chunk in _chunks(message_ids):
        rows = conn.execute(
            text(
                "SELECT m.id, m.text, m.created_at, m.direction, m.persona_id, u.display_name "
                "FROM messages m LEFT JOIN users u ON u.id = m.user_id "
                f"WHERE m.id IN ({','.join(map(str, chunk))}) AND {_MESSAGE_SCOPE}"
            ),
            params,
        )
        for r in rows:
            out[("message", r.id)] = {
                "text": r.text,
                "at": _parse_dt(r.created_at),
                "speaker": (r.display_name or "them") if r.direction == "in" else "you",
                "name": ((r.display_name or "") if r.direction == "in" else r.persona_id).lower(),
                "importance": 0.0,
                "sources": (r.id,),
            }
    for chunk in _chunks(fact_ids):
        rows = conn.execute(
            text(
                "SELECT f.id, f.text, f.updated_at, f.importance, f.source_ids FROM facts f "
                f"WHERE f.id IN ({','.join(map(str, chunk))}) AND {_FACT_SCOPE}"
            ),
            params,
        )
        for r in rows:
            out[("fact", r.id)] = {
                "text": r.text,
                "at": _parse_dt(r.updated_at),
                "speaker": "",
                "name": "",
                "importance": float(r.importance),
                "sources": tuple(json.loads(r.source_ids)),
            }
    for chunk in _chunks(summary_ids):
        rows = conn.execute(
            text(
                "SELECT s.id, s.text, s.end_at, s.first_message_id, s.last_message_id "
                f"FROM summaries s WHERE s.id IN ({','.join(map(str, chunk))}) "
                "AND s.user_id = :uid AND s.conversation_id = :cid"
            ),
            params,
        )
        for r in rows:
            out[("summary", r.id)] = {
                "text": r.text,
                "at": _parse_dt(r.end_at),
                "speaker": "",
                "name": "",
                "importance": 0.5,
                "sources": (r.first_message_id, r.last_message_id),
            }
    return out


def _chunks(ids: Sequence[int], size: int = 500) -> Iterable[Sequence[int]]:
    for i in range(0, len(ids), size):
        yield [int(x) for x in ids[i : i + size]]


def _spread_to_neighbours(
    fused: dict[tuple[str, int], float],
    details: dict[tuple[str, int], dict[str, Any]],
    share: float,
) -> None:
    """A message inherits part of the score of the message before and after it among
    the candidates (a question and its answer belong together). Only ids already in
    scope and among the candidates take part, so nothing new can enter."""
    ids = sorted(i for kd, i in fused if kd == "message" and ("message", i) in details)
    base = {i: fused[("message", i)] for i in ids}
    for pos, i in enumerate(ids):
        around = []
        if pos > 0 and ids[pos - 1] >= i - 1:
            around.append(base[ids[pos - 1]])
        if pos + 1 < len(ids) and ids[pos + 1] <= i + 1:
            around.append(base[ids[pos + 1]])
        if around:
            fused[("message", i)] += share * max(around)


_PREVIOUS_TURN = text(
    "SELECT m.text, m.direction, m.persona_id, u.display_name FROM messages m "
    "LEFT JOIN users u ON u.id = m.user_id WHERE m.conversation_id = :cid AND m.id < :id "
    f"AND m.user_id = :uid AND m.deleted_at IS NULL AND m.kind IN {_SPOKEN} "
    "ORDER BY m.id DESC LIMIT 1"
)


def _texts_for(
    conn: Connection, batch: Sequence[tuple[Kind, int]], context_turns: int = 0
) -> list[dict[str, Any]]:
    """What to embed: a message with its speaker's name (the name matters to queries
    like "what did Anna say about..."), after the turn before it when `context_turns`
    (an answer means little without its question); a fact or a summary."""
    out: list[dict[str, Any]] = []
    message_ids = [i for kd, i in batch if kd == "message"]
    for chunk in _chunks(message_ids):
        rows = conn.execute(
            text(
                "SELECT m.id, m.text, m.direction, m.user_id, m.conversation_id, m.persona_id, "
                "u.display_name FROM messages m LEFT JOIN users u ON u.id = m.user_id "
                f"WHERE m.id IN ({','.join(map(str, chunk))}) AND m.user_id IS NOT NULL"
            )
        )
        for r in rows:
            name = (r.display_name or "") if r.direction == "in" else r.persona_id
            body = f"{name}: {r.text}" if name else r.text
            if context_turns:
                prev = conn.execute(
                    _PREVIOUS_TURN, {"cid": r.conversation_id, "id": r.id, "uid": r.user_id}
                ).first()
                if prev is not None:
                    who = (prev.display_name or "") if prev.direction == "in" else prev.persona_id
                    body = f"{who}: {prev.text[:300]}\n{body}"
            out.append(
                {
                    "kind": "message",
                    "id": r.id,
                    "text": body,
                    "user_id": r.user_id,
                    "conversation_id": r.conversation_id,
                }
            )
    for kind, table in (("fact", "facts"), ("summary", "summaries")):
        ids = [i for kd, i in batch if kd == kind]
        for chunk in _chunks(ids):
            rows = conn.execute(
                text(
                    f"SELECT id, text, user_id, conversation_id FROM {table} "
                    f"WHERE id IN ({','.join(map(str, chunk))})"
                )
            )
            out += [
                {
                    "kind": kind,
                    "id": r.id,
                    "text": r.text,
                    "user_id": r.user_id,
                    "conversation_id": r.conversation_id,
                }
                for r in rows
            ]
    return out


_INSERT_FACT = text(
    "INSERT INTO facts (user_id, persona_id, conversation_id, is_direct, text, source_ids, "
    "confidence, importance, created_at, updated_at) VALUES (:uid, :persona, :cid, :direct, "
    ":text, :sources, :confidence, :importance, :at, :at) RETURNING id"
)
_TOUCH_FACT = text(
    "UPDATE facts SET updated_at = :at, confidence = max(confidence, :confidence) WHERE id = :id"
)
_SUPERSEDE = text(
    "UPDATE facts SET superseded_by = :new, updated_at = updated_at "
    "WHERE id = :old AND user_id = :uid AND superseded_by IS NULL"
)
_INSERT_SUMMARY = text(
    "INSERT INTO summaries (user_id, persona_id, conversation_id, text, first_message_id, "
    "last_message_id, start_at, end_at, created_at) VALUES (:uid, :persona, :cid, :text, "
    ":first, :last, :start, :end, :at) RETURNING id"
)
_LAST_SUMMARISED = (
    "(SELECT coalesce(max(s.last_message_id), 0) FROM summaries s "
    "WHERE s.user_id = m.user_id AND s.conversation_id = m.conversation_id)"
)
_COUNT_UNSUMMARISED = text(
    f"SELECT count(*) FROM messages m WHERE {_MESSAGE_SCOPE} AND m.id > {_LAST_SUMMARISED}"
)
_QUIET = text(
    "SELECT c.id AS conversation_id, c.persona_id, m.user_id FROM conversations c "
    "JOIN messages m ON m.conversation_id = c.id "
    "WHERE c.last_message_at < :cutoff AND m.user_id IS NOT NULL AND m.deleted_at IS NULL "
    f"AND m.id > {_LAST_SUMMARISED} GROUP BY c.id, m.user_id HAVING count(*) >= 4"
)
_LATEST_SUMMARIES = text(
    "SELECT id, text, end_at FROM summaries WHERE user_id = :uid AND conversation_id = :cid "
    "ORDER BY id DESC LIMIT :n"
)
_LIST_FACTS = text(
    "SELECT id, text, updated_at, persona_id, source_ids, confidence FROM facts "
    "WHERE user_id = :uid AND superseded_by IS NULL "
    "AND (:persona IS NULL OR persona_id = :persona) ORDER BY id DESC"
)
_LIST_SUMMARIES = text(
    "SELECT id, text, end_at, persona_id, first_message_id, last_message_id FROM summaries "
    "WHERE user_id = :uid AND (:persona IS NULL OR persona_id = :persona) ORDER BY id DESC"
)


def _existing_messages(conn: Connection, ids: Sequence[int]) -> set[int]:
    if not ids:
        return set()
    rows = conn.execute(
        text("SELECT id FROM messages WHERE id IN (SELECT value FROM json_each(:ids))"),
        {"ids": json.dumps(sorted(set(ids)))},
    ).scalars()
    return {int(i) for i in rows}


@dataclass(frozen=True, slots=True)
class _Row:
    id: int
    speaker: str
    text: str
    created_at: datetime


def _unsummarised_rows(conn: Connection, scope: MemoryScope, limit: int) -> list[_Row]:
    rows = conn.execute(
        text(
            "SELECT m.id, m.text, m.created_at, m.direction, m.persona_id, u.display_name "
            "FROM messages m LEFT JOIN users u ON u.id = m.user_id "
            f"WHERE {_MESSAGE_SCOPE} AND m.id > {_LAST_SUMMARISED} ORDER BY m.id LIMIT :n"
        ),
        {"uid": scope.user_id, "cid": scope.conversation_id, "n": limit},
    ).all()
    return [
        _Row(
            r.id,
            (r.display_name or "them") if r.direction == "in" else r.persona_id,
            r.text,
            _parse_dt(r.created_at),
        )
        for r in rows
    ]


def _extraction_input(
    conn: Connection, scope: MemoryScope, persona_id: str, recent: int
) -> tuple[list[SourceMessage], list[KnownFact], bool]:
    params = {"uid": scope.user_id, "cid": scope.conversation_id, "n": recent}
    rows = conn.execute(
        text(
            "SELECT m.id, m.text, m.direction, m.persona_id, u.display_name "
            "FROM messages m LEFT JOIN users u ON u.id = m.user_id "
            f"WHERE {_MESSAGE_SCOPE} ORDER BY m.id DESC LIMIT :n"
        ),
        params,
    ).all()
    shown = [
        SourceMessage(
            id=r.id,
            speaker=(r.display_name or "them") if r.direction == "in" else r.persona_id,
            text=r.text[:2000],
            from_person=r.direction == "in",
        )
        for r in reversed(rows)
    ]
    known = [
        KnownFact(r.id, r.text)
        for r in conn.execute(
            text(
                f"SELECT f.id, f.text FROM facts f WHERE {_FACT_SCOPE} ORDER BY f.id DESC LIMIT 50"
            ),
            params,
        )
    ]
    is_direct = bool(
        conn.execute(text("SELECT is_direct FROM conversations WHERE id = :cid"), params).scalar()
    )
    return shown, known, is_direct
