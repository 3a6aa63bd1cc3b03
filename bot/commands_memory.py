"""What `/memory` and `/forget` need of the memory part (`MemoryControl`), and the
implementation over the long-term store (`StoreMemoryControl`); `bot.commands`
re-exports them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

__all__ = ["MemoryControl", "MemoryItem", "StoreMemoryControl"]


@dataclass(frozen=True, slots=True)
class MemoryItem:
    """One thing the persona remembers about a person, as `/memory` lists it."""

    id: str
    text: str
    at: datetime


class MemoryControl(Protocol):
    """What `/memory` and `/forget` need of the memory part."""

    async def list_memories(self, platform: str, user_id: str, persona: str) -> list[MemoryItem]:
        """What the persona remembers about this person."""
        ...

    async def forget(self, platform: str, user_id: str, persona: str, item: str) -> int:
        """Delete one memory by id, or everything with "all"; returns how many went.

        Raises `KeyError` for an id that does not exist or belongs to someone else.
        """
        ...


class StoreMemoryControl:
    """`MemoryControl` over the long-term memory store (`bot.memory.SQLiteMemory`):
    looks the person up by platform id and maps its refs and refusals."""

    def __init__(self, store: Any) -> None:
        self.store = store

    async def list_memories(self, platform: str, user_id: str, persona: str) -> list[MemoryItem]:
        """The person's facts and summaries with this persona, newest first."""
        uid = await self.store.find_user(platform, user_id)
        if uid is None:
            return []
        items = await self.store.list_memories(uid, persona_id=persona)
        return [MemoryItem(id=i.ref, text=i.text, at=i.at) for i in items]

    async def forget(self, platform: str, user_id: str, persona: str, item: str) -> int:
        """Delete one memory or all; `KeyError` for ids not theirs or not ids."""
        uid = await self.store.find_user(platform, user_id)
        if uid is None:
            if item == "all":
                return 0
            raise KeyError(item)
        try:
            counts = await self.store.forget(uid, item, persona_id=persona)
        except (PermissionError, ValueError) as exc:  # ForgetRefused is a PermissionError
            raise KeyError(item) from exc
        if not isinstance(counts, dict):
            return int(counts)
        # What the person asked about; embeddings, re-embedded turns and the like are
        # the store's bookkeeping.
        return sum(int(counts.get(k, 0)) for k in ("messages", "facts", "summaries"))
