"""`Indexer`: the embedding queue of the memory, the same on every backend.

Items (a message, fact or summary) are queued as they are stored; a background task
embeds them in batches (one model call for many turns) and stores the vectors
through the backend (`SearchBackend.store_vectors`). A forget holds `lock`, so no
batch that read a forgotten text before the delete can store its vector after it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from datetime import UTC, datetime

import structlog
from sqlalchemy import Connection

from bot.aio import wait_for
from bot.db import Database
from bot.memory import rows
from bot.memory.backend import SearchBackend
from bot.memory.embeddings import Embedder, EmbeddingUnavailable
from bot.memory.types import Kind, db_time

__all__ = ["Indexer"]

log = structlog.get_logger("bot.memory")


class Indexer:
    """Embeds queued items in the background, in batches (see the module docstring)."""

    def __init__(
        self,
        db: Database,
        embedder: Embedder | None,
        backend: SearchBackend,
        thread: ThreadPoolExecutor,
        *,
        delay_s: float = 1.0,
        batch: int = 256,
        context_turns: int = 1,
        on_unavailable: Callable[[BaseException], None] = lambda exc: None,
    ) -> None:
        self.db = db
        self.embedder = embedder
        self.backend = backend
        self.delay_s = delay_s
        self.batch = batch
        self.context_turns = context_turns
        self._thread = thread
        self._on_unavailable = on_unavailable
        self._pending: list[tuple[Kind, int]] = []
        self._wake = asyncio.Event()
        self._batch_ready = asyncio.Event()
        self._flush_requested = False
        self._idle = asyncio.Event()
        self._idle.set()
        self._worker: asyncio.Task[None] | None = None
        #: Held by a batch while it embeds and stores, and by a forget while it deletes.
        self.lock = asyncio.Lock()

    def enqueue(self, items: Iterable[tuple[Kind, int]]) -> None:
        """Queue items; a background task embeds them. Without an embedder, nothing."""
        if self.embedder is None:
            return
        self._pending.extend(items)
        if not self._pending:
            return
        self._idle.clear()
        self._wake.set()
        if len(self._pending) >= self.batch:
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
            if len(self._pending) < self.batch and not self._flush_requested:
                # Let a batch gather: one model call for many turns is far cheaper.
                self._batch_ready.clear()
                with suppress(TimeoutError):
                    await wait_for(self._batch_ready.wait(), self.delay_s)
            batch = self._pending[: self.batch]
            del self._pending[: self.batch]
            try:
                async with self.lock:
                    await self.embed(batch)
            except EmbeddingUnavailable as exc:
                self._on_unavailable(exc)
                self._pending.clear()
            except Exception as exc:  # a bad batch must not stop indexing for good
                log.warning("memory.embed_failed", error=str(exc), items=len(batch))

    async def embed(self, batch: Sequence[tuple[Kind, int]]) -> None:
        """Embed `batch` now and store the vectors (the caller holds `lock`)."""
        embedder = self.embedder
        if embedder is None or not batch:
            return
        found = await self.db.run(lambda conn: rows.texts_for(conn, batch, self.context_turns))
        if not found:
            return
        loop = asyncio.get_running_loop()
        vectors = await loop.run_in_executor(
            self._thread, embedder.embed, [r["text"] for r in found]
        )
        now = datetime.now(UTC)

        def store(conn: Connection) -> None:
            stamp = db_time(now, conn.dialect.name)
            values = [
                {
                    "kind": r["kind"],
                    "item_id": r["id"],
                    "user_id": r["user_id"],
                    "conversation_id": r["conversation_id"],
                    "model": embedder.name,
                    "dim": int(vectors.shape[1]),
                    "vector": vectors[i].astype("<f4").tobytes(),
                    "created_at": stamp,
                }
                for i, r in enumerate(found)
            ]
            self.backend.store_vectors(conn, values)

        await self.db.run(store)

    async def reembed(self, message_ids: Sequence[int]) -> int:
        """Embed these messages again (after a forget changed their context); how many.
        Failures are logged, not raised: the forget itself is done."""
        if self.embedder is None or not message_ids:
            return 0
        try:
            await self.embed([("message", i) for i in message_ids])
        except EmbeddingUnavailable as exc:
            # Their old vectors are gone either way; full-text still finds them.
            self._on_unavailable(exc)
            return 0
        except Exception as exc:
            log.warning("memory.reembed_failed", error=str(exc), items=len(message_ids))
            return 0
        return len(message_ids)

    async def aclose(self) -> None:
        """Embed what is queued if the model is already loaded, then stop the worker."""
        loaded = getattr(self.embedder, "loaded", True)
        if self._pending and loaded:
            await self.flush()
        elif self._pending:
            # Loading a model only to shut down is slow; these stay full-text searchable.
            log.info("memory.embeddings_skipped_at_close", items=len(self._pending))
            self._pending.clear()
        if self._worker is not None:
            self._worker.cancel()
            with suppress(asyncio.CancelledError):
                await self._worker
