"""Memory: the conversation ledger, facts, summaries and hybrid retrieval.

`Ledger` stores every message; `SQLiteMemory` is the engine's `MemorySource`
(recall and observe) and the API people control their memories through.
"""

from bot.memory.ledger import HistoryTurn, Ledger, ReplyRecord, StoredIncoming
from bot.memory.store import (
    ForgetRefused,
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
    "MemoryHit",
    "MemoryItem",
    "MemoryScope",
    "ReplyRecord",
    "SQLiteMemory",
    "SearchWeights",
    "StoredIncoming",
]
