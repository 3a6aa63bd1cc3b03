"""`ClusterClaims`: the inbox worker's lanes shared with the other workers.

It joins the node's chat locks (`ClusterNode.try_chat`) to the inbox queries of
`bot.cluster.claims`, as the `bot.inbox.worker.ChatClaims` the worker asks for.

A chat whose lane drained is let go `linger_s` later, not at once: in a burst its
next message usually comes within that time, and finds the lock still held (no
round trip to take it again, none to let it go in between). Chats whose time is up
are let go together, in one statement, by the next call that passes by (discovery
runs several times a second). Meanwhile no other worker takes the chat; this one's
discovery finds its new events as before, so they wait no longer than they would
for a lock taken anew.
"""

from __future__ import annotations

import time
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
        linger_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.node = node
        self.db = db
        self.platform = platform
        self.linger_s = linger_s
        self._stale = stale
        self._clock = clock
        #: Chats released by their lane, still locked: chat -> when to let it go.
        self._lingering: dict[str, float] = {}

    @property
    def me(self) -> int:
        """This worker's id."""
        return self.node.id

    async def discover(self, *, limit: int, skip: list[str]) -> list[str]:
        """Chats with pending events no other worker holds, oldest first."""
        await self._let_go()
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
        if self._lingering.pop(chat, None) is not None:
            return True  # still ours: released by its lane, not yet let go
        return await self.node.try_chat(self.platform, chat)

    async def release(self, chat: str) -> None:
        """Let the chat go (`linger_s` from now; at once with `linger_s=0`)."""
        if self.linger_s <= 0:
            await self.node.release_chat(self.platform, chat)
            return
        self._lingering[chat] = self._clock() + self.linger_s
        await self._let_go()

    @property
    def lingering(self) -> int:
        """How many chats are released by their lanes and still locked."""
        return len(self._lingering)

    async def _let_go(self) -> None:
        now = self._clock()
        due = [chat for chat, at in self._lingering.items() if at <= now]
        if not due:
            return
        for chat in due:
            del self._lingering[chat]
        await self.node.release_chats(self.platform, due)

    async def pull(self, chat: str, *, skip: list[int]) -> claims.Pulled | None:
        """The chat's oldest pending event, claimed."""
        return await claims.pull(self.db, self.platform, chat, me=self.me, skip=skip)

    async def stale(self, chat: str) -> None:
        """Finish what a dead worker left unfinished in `chat` (we hold its lock)."""
        await self._stale(chat)
