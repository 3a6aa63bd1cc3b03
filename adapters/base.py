"""What every platform adapter shares: the delivery policy around a raw send.

`Adapter.send` is the template method: it splits a reply to the platform's length
limit, delivers each part through the platform's `_deliver`, and records the outcome
in the ledger. Platforms implement only `_deliver` and `run`.
"""

from __future__ import annotations

import abc
import asyncio
import re
from typing import final

import structlog

from bot.engine import PersonaEngine
from bot.messages import Outgoing

__all__ = ["Adapter", "split_message"]

log = structlog.get_logger("adapters")

_SENTENCE_END = re.compile(r"(?<=[.!?。！？…])\s+")


def split_message(text: str, limit: int) -> list[str]:
    """Parts of at most `limit` characters, cut at paragraph, then line, then sentence,
    then word boundaries; never inside a word unless a single word is longer than
    `limit`."""
    if limit <= 0:
        raise ValueError("limit must be positive")
    parts: list[str] = []
    rest = text.strip()
    while len(rest) > limit:
        window = rest[:limit]
        cut = -1
        for sep in ("\n\n", "\n"):
            at = window.rfind(sep)
            if at > limit // 3:
                cut = at
                break
        if cut == -1:
            ends = [m.end() for m in _SENTENCE_END.finditer(window)]
            ends = [e for e in ends if e > limit // 3]
            cut = ends[-1] if ends else window.rfind(" ")
        if cut <= 0:
            cut = limit
        parts.append(rest[:cut].rstrip())
        rest = rest[cut:].lstrip()
    if rest:
        parts.append(rest)
    return parts


class Adapter(abc.ABC):
    """A platform connection: turns platform events into `Incoming` for the engine and
    delivers the engine's `Outgoing`."""

    #: The platform's name, as used in `Scope.platform`.
    platform: str
    #: The longest text one platform message may carry.
    max_message_length: int = 4000

    def __init__(self, engine: PersonaEngine) -> None:
        self.engine = engine

    @abc.abstractmethod
    async def run(self, stop: asyncio.Event) -> None:
        """Receive and answer messages until `stop` is set."""

    @abc.abstractmethod
    async def _deliver(self, outgoing: Outgoing, text: str) -> str | None:
        """Send one part of a reply; returns the platform's message id if it has one."""

    @final
    async def send(self, outgoing: Outgoing) -> list[str | None]:
        """Deliver a reply in as many parts as the platform needs, and record it."""
        ids: list[str | None] = []
        try:
            for part in split_message(outgoing.text, self.max_message_length):
                ids.append(await self._deliver(outgoing, part))
        except Exception as exc:
            log.warning("deliver.failed", error=str(exc), message_id=outgoing.message_id)
            if outgoing.message_id is not None:
                await self.engine.ledger.record_failure(
                    stage="deliver", error=exc, message_id=outgoing.message_id
                )
                await self.engine.ledger.mark_delivered(outgoing.message_id, None, delivered=False)
            raise
        if outgoing.message_id is not None:
            await self.engine.ledger.mark_delivered(outgoing.message_id, ids[0] if ids else None)
        return ids
