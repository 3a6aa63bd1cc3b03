"""The seam between the memory and its database: one `SearchBackend` per engine.

`Memory` (store.py) owns everything that is the same everywhere: the embedding
queue, fusion and scoring (ranking.py), facts and summaries, forgetting's rules.
A backend owns what its engine does its own way:

- `lexical`: ranked id lists for the query's words (and CJK runs) in one scope;
- `dense`: the scope's nearest vectors to the query;
- `store_vectors`: writing embedding rows (and any engine-only vector column);
- `forgotten` / `scrub`: after a forget, dropping cached copies and making sure
  no byte of the deleted rows is left in the engine's files.

`search_backend_for(db, ...)` picks the implementation by the engine's dialect:
`FTS5Search` (sqlite_search.py) or `PostgresSearch` (pg_search.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from sqlalchemy import Connection

from bot.db import Database
from bot.memory.types import Kind, MemoryScope

__all__ = ["DenseRows", "Lexical", "QueryVector", "SearchBackend", "search_backend_for"]

#: Ranked (kind, id) lists, best first, one per index that found something.
Lexical = list[list[tuple[str, int]]]
#: Work a backend may run inside the transaction of its dense read, on what it found
#: as (kind, id, cosine): the search reads the candidates' rows there, not in a
#: round trip of its own after fusion.
DenseRows = Callable[[Connection, Sequence[tuple[str, int, float]]], None]


class QueryVector:
    """The query's embedding, computed at most once: at once when `eager` (the model
    is loaded, so it overlaps the database's work), else when a backend asks."""

    def __init__(self, make: Callable[[], Awaitable[Any]], *, eager: bool) -> None:
        self._make = make
        self._future: asyncio.Future[Any] | None = None
        if eager:
            self.start()

    @property
    def started(self) -> bool:
        """Whether the embedding was asked for."""
        return self._future is not None

    def start(self) -> None:
        """Begin embedding the query (once)."""
        if self._future is None:
            self._future = asyncio.ensure_future(self._make())

    async def get(self) -> Any:
        """The vector, or None when this query cannot be embedded."""
        self.start()
        assert self._future is not None
        return await self._future

    def cancel(self) -> None:
        """Stop an embedding nobody will await."""
        if self._future is not None and not self._future.done():
            self._future.cancel()


class SearchBackend(Protocol):
    """What a database engine provides to the memory (see the module docstring)."""

    def lexical(
        self, scope: MemoryScope, kinds: Sequence[Kind], query: str, n: int
    ) -> Callable[[Connection], Lexical]:
        """Work for `Database.read`: the best `n` ids per index for `query` in `scope`.
        Built on the event loop (it may read the backend's state there)."""
        ...

    async def dense(
        self, scope: MemoryScope, query: QueryVector, n: int, *, rows: DenseRows | None = None
    ) -> list[tuple[str, int, float]] | None:
        """The scope's `n` nearest vectors as (kind, id, cosine), best first; None when
        there is nothing to compare (no vectors in scope, or no query vector). A
        backend whose vectors are read in a transaction may call `rows` in it with
        what it found (on a retried transaction, again); one that does not, need not:
        the caller reads what `rows` was not called for."""
        ...

    def store_vectors(self, conn: Connection, values: Sequence[dict[str, Any]]) -> None:
        """Insert or replace embedding rows (kind, item_id, user_id, conversation_id,
        model, dim, vector as float32 bytes, created_at)."""
        ...

    async def forgotten(self, user_id: int) -> None:
        """A forget of this person committed: drop any copy of their vectors held in
        this process."""
        ...

    async def scrub(self, tables: Sequence[str]) -> None:
        """After a forget's transaction: leave no byte of the deleted rows of `tables`
        in the engine's files (raises `StorageError` when it could not)."""
        ...


def search_backend_for(
    db: Database,
    *,
    model: str | None,
    thread: ThreadPoolExecutor,
    cache_vectors: int = 2_000_000,
) -> SearchBackend:
    """The backend for `db`'s engine; `model` names the embedder whose vectors dense
    search compares (None: no dense search); `thread` runs in-process scans, and
    `cache_vectors` bounds the vectors SQLite's backend keeps in memory."""
    if db.engine.dialect.name == "postgresql":
        from bot.memory.pg_search import PostgresSearch

        return PostgresSearch(db, model=model)
    from bot.memory.sqlite_search import FTS5Search

    return FTS5Search(db, model=model, thread=thread, cache_vectors=cache_vectors)
