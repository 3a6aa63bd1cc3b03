"""Helpers for the memory tests: a migrated database, a ledger, and a fake embedder."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import structlog

from bot.db import Database
from bot.memory.ledger import Ledger, ReplyRecord
from bot.memory.store import MemoryScope, SQLiteMemory
from bot.messages import Actor, Incoming, Scope

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _structlog_config() -> Iterator[None]:
    """A CLI run configures structlog to write to the (captured) stream of the moment;
    put back what was there, so no later test logs into a closed file."""
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


class HashEmbedder:
    """A deterministic bag-of-words embedder: shared words make vectors close."""

    name = "hash-test"

    def __init__(self, dim: int = 64) -> None:
        self.dim = dim
        self.calls: list[int] = []

    def embed(self, texts: Sequence[str]) -> Any:
        self.calls.append(len(texts))
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in text.lower().split():
                h = int(hashlib.md5(word.strip(".,!?:").encode()).hexdigest(), 16)
                out[row, h % self.dim] += 1.0
            norm = np.linalg.norm(out[row])
            if norm:
                out[row] /= norm
            else:
                out[row, 0] = 1.0
        return out


class BrokenEmbedder:
    """An embedder whose model cannot be loaded."""

    name = "broken"

    def __init__(self) -> None:
        self.calls = 0

    def embed(self, texts: Sequence[str]) -> Any:
        from bot.memory.embeddings import EmbeddingUnavailable

        self.calls += 1
        raise EmbeddingUnavailable("model files missing")


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    """A migrated database, once on a SQLite file and once on PostgreSQL: the memory's
    tests that take it are the contract both backends keep."""
    database = await asyncio.to_thread(Database.open, database_url)
    yield database
    await database.aclose()


@pytest.fixture
async def sqlite_db(tmp_path: Path) -> AsyncIterator[Database]:
    """A migrated SQLite file, for what only SQLite's backend has (FTS5, its WAL)."""
    database = Database.open(f"sqlite:///{tmp_path}/mem.db")
    yield database
    await database.aclose()


@pytest.fixture
def ledger(db: Database) -> Ledger:
    return Ledger(db)


def scope_for(user: str, channel: str | None = None, persona: str = "p") -> Scope:
    """A DM (no channel given) or a server channel scope."""
    if channel is None:
        return Scope(platform="t", channel=f"dm-{user}", user=user, persona=persona)
    return Scope(platform="t", space="guild", channel=channel, user=user, persona=persona)


async def say(
    ledger: Ledger,
    scope: Scope,
    text: str,
    *,
    at: datetime = T0,
    reply: str | None = None,
    name: str | None = None,
) -> tuple[MemoryScope, int, int | None]:
    """Store a message (and a persona reply) as a live turn would."""
    actor = Actor(platform=scope.platform, id=scope.user, display_name=name or scope.user)
    stored = await ledger.record_incoming(
        Incoming(scope=scope, actor=actor, text=text, received_at=at), text
    )
    reply_id = None
    if reply is not None:
        reply_id = await ledger.record_reply(
            ReplyRecord(
                conversation_id=stored.conversation_id,
                user_id=stored.user_id,
                reply_to_id=stored.message_id,
                text=reply,
                persona_id=scope.persona,
                created_at=at + timedelta(seconds=1),
            )
        )
    return MemoryScope(stored.user_id, stored.conversation_id), stored.message_id, reply_id


@pytest.fixture
async def memory(db: Database) -> AsyncIterator[SQLiteMemory]:
    mem = SQLiteMemory(db)
    yield mem
    await mem.aclose()
