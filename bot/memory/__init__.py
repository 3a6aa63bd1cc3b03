"""Memory: the conversation ledger (and, later, facts, summaries and retrieval)."""

from bot.memory.ledger import HistoryTurn, Ledger, ReplyRecord, StoredIncoming

__all__ = ["HistoryTurn", "Ledger", "ReplyRecord", "StoredIncoming"]
