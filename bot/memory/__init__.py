"""Memory: the conversation ledger, facts, summaries and hybrid retrieval.

`Ledger` stores every message; `Memory` (older name `SQLiteMemory`) is the
engine's `MemorySource` (recall and observe) and the API people control their
memories through, on SQLite or PostgreSQL (one `SearchBackend` per engine).
"""

from bot.memory.ledger import HistoryTurn, Ledger, ReplyRecord, StoredIncoming
from bot.memory.store import (
    ForgetRefused,
    Memory,
    MemoryHit,
    MemoryItem,
    MemoryScope,
    SearchWeights,
    SQLiteMemory,
)

__all__ = [
    "ForgetRefused",
    "HistoryTurn",
    "Ledger",
    "Memory",
    "MemoryHit",
    "MemoryItem",
    "MemoryScope",
    "ReplyRecord",
    "SQLiteMemory",
    "SearchWeights",
    "StoredIncoming",
]
