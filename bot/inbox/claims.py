"""What the inbox worker asks of whoever shares its chats with other processes.

`bot.cluster.lanes.ClusterClaims` is the one implementation (several workers on
PostgreSQL); without one (`claims=None`) the worker is alone and reads pending
events by cursor.
"""

from __future__ import annotations

from typing import Protocol

from bot.inbox.store import InboxEvent

__all__ = ["ChatClaims", "Pull"]


class Pull(Protocol):
    """What `ChatClaims.pull` returns: an event and who had claimed it before."""

    @property
    def event(self) -> InboxEvent: ...

    @property
    def previous(self) -> int | None: ...

    @property
    def more(self) -> bool: ...


class ChatClaims(Protocol):
    """How lanes share chats with other processes (`bot.cluster.lanes.ClusterClaims`)."""

    @property
    def me(self) -> int:
        """This worker's id (`claimed_by` of the events it takes)."""
        ...

    async def discover(self, *, limit: int, skip: list[str]) -> list[str]:
        """Chats with pending events that no other worker holds, oldest first."""
        ...

    async def unordered(self, *, limit: int) -> list[InboxEvent]:
        """Claim pending events without a chat."""
        ...

    async def acquire(self, chat: str) -> bool:
        """Take the chat's lock; False when another worker holds it."""
        ...

    async def release(self, chat: str) -> None:
        """Let the chat's lock go."""
        ...

    async def pull(self, chat: str, *, skip: list[int]) -> Pull | None:
        """Claim the chat's oldest pending event (not one of `skip`)."""
        ...

    async def stale(self, chat: str) -> None:
        """A dead worker had this chat's event in hand: finish its turn first."""
        ...
