"""`ClusterClaims`: the inbox worker's lanes shared with the other workers.

It joins the node's chat locks (`ClusterNode.try_chat`) to the inbox queries of
`bot.cluster.claims`, as the `bot.inbox.worker.ChatClaims` the worker asks for.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from bot.cluster import claims
from bot.cluster.node import ClusterNode
from bot.db import Database
from bot.inbox.store import InboxEvent

__all__ = ["ClusterClaims"]


class ClusterClaims:
    """One platform's chats, shared through `node` with every other worker."""

    def __init__(
        self,
        node: ClusterNode,
        db: Database,
        platform: str,
        *,
        stale: Callable[[str], Awaitable[object]],
    ) -> None:
        self.node = node
        self.db = db
        self.platform = platform
        self._stale = stale

    @property
    def me(self) -> int:
        """This worker's id."""
        return self.node.id

    async def discover(self, *, limit: int, skip: list[str]) -> list[str]:
        """Chats with pending events no other worker holds, oldest first."""
        return await claims.discover(
            self.db, self.platform, me_pid=self.node.backend_pid, limit=limit, skip=skip
        )

    async def unordered(self, *, limit: int) -> list[InboxEvent]:
        """Claim pending events that have no chat."""
        if limit <= 0:
            return []
        return await claims.claim_unordered(self.db, self.platform, me=self.me, limit=limit)

    async def acquire(self, chat: str) -> bool:
        """Take the chat's lock (False: another worker has it)."""
        return await self.node.try_chat(self.platform, chat)

    async def release(self, chat: str) -> None:
        """Let the chat go."""
        await self.node.release_chat(self.platform, chat)

    async def pull(self, chat: str, *, skip: list[int]) -> claims.Pulled | None:
        """The chat's oldest pending event, claimed."""
        return await claims.pull(self.db, self.platform, chat, me=self.me, skip=skip)

    async def stale(self, chat: str) -> None:
        """Finish what a dead worker left unfinished in `chat` (we hold its lock)."""
        await self._stale(chat)
