"""`Leadership`: exactly one worker polls Telegram and runs the scheduler.

The leader is whoever holds the leader advisory lock (`ClusterNode.try_leader`).
Every worker that is not the leader asks for it every `poll_s`; the lock is held
for as long as the leader's connection lives, so when the leader dies (kill -9
included) the server frees it and the next worker to ask, within `poll_s`, leads.
A leader never steps down while it runs: if its connection fails, the node's
`failed` is set and the whole process stops (it cannot tell whether someone else
already took over). Duties start with `on_elected` callbacks and the `elected`
event; a single process on SQLite is simply always the leader (`Leadership.solo`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import suppress

import structlog

from bot.aio import wait_for
from bot.cluster.node import ClusterNode

__all__ = ["Leadership"]

log = structlog.get_logger("bot.cluster")

OnElected = Callable[[], Awaitable[None]]


class Leadership:
    """Whether this worker leads; `run` campaigns until elected (or stopped)."""

    def __init__(self, node: ClusterNode | None, *, poll_s: float = 1.0) -> None:
        self.node = node
        self.poll_s = poll_s
        #: Set once this worker leads (for the rest of its life).
        self.elected = asyncio.Event()
        self.on_elected: list[OnElected] = []

    @classmethod
    def solo(cls) -> Leadership:
        """One process alone (SQLite): the leader from the start."""
        leadership = cls(None)
        leadership.elected.set()
        return leadership

    @property
    def is_leader(self) -> bool:
        """Whether this worker leads now."""
        return self.elected.is_set()

    async def run(self, stop: asyncio.Event) -> None:
        """Ask for the leader lock every `poll_s` until it is ours or `stop` is set;
        then run the `on_elected` callbacks (each failure logged, none fatal)."""
        node = self.node
        if node is None or self.elected.is_set():
            return
        while not stop.is_set() and not node.failed.is_set():
            try:
                if await node.try_leader():
                    break
            except Exception as exc:  # the node is failing: `bot run` stops
                log.warning("cluster.campaign_failed", error=str(exc)[:300])
            with suppress(TimeoutError):
                await wait_for(stop.wait(), timeout=self.poll_s)
        else:
            return
        self.elected.set()
        log.info("cluster.elected", worker=node.id, name=node.name)
        for callback in list(self.on_elected):
            try:
                await callback()
            except Exception as exc:
                log.error("cluster.duty_failed", error=str(exc)[:300])

    async def wait(self, stop: asyncio.Event) -> bool:
        """Wait until this worker leads (True) or `stop` is set (False)."""
        if self.elected.is_set():
            return True
        elected = asyncio.ensure_future(self.elected.wait())
        stopped = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({elected, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            elected.cancel()
            stopped.cancel()
        return self.elected.is_set()
