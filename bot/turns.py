"""The order of a conversation's turns, and the "sorry, I was away" notice.

Two small pieces of the turn's state machine that the engine uses but that know
nothing of prompts or models.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from bot.memory.ledger import Ledger, ReplyRecord
from bot.messages import Outgoing, Scope
from bot.personas import LoadedPersona

__all__ = ["ConversationLine", "Place", "away_notice"]


@dataclass
class Place:
    """One turn's place in its conversation's line (see `ConversationLine.join`)."""

    #: The turn before this one, still running; None: nothing to wait for.
    previous: asyncio.Future[None] | None
    _mine: asyncio.Future[None]
    _line: ConversationLine
    _key: str
    waited: bool = field(default=False)

    async def wait(self) -> None:
        """Wait for the turn before this one (its result does not matter)."""
        if self.previous is not None:
            await asyncio.shield(self.previous)
        self.waited = True

    def release(self) -> None:
        """Let the next turn go. A turn that did not wait for the one before it (an
        unaddressed message, a redelivery, a cancelled wait) lets the next go only
        when that one finishes, so the chain is never broken."""
        previous = self.previous
        if previous is not None and not self.waited and not previous.done():
            previous.add_done_callback(lambda _: self._done())
        else:
            self._done()

    def _done(self) -> None:
        if not self._mine.done():
            self._mine.set_result(None)
        self._line._forget(self._key, self._mine)


class ConversationLine:
    """Turns of one conversation in arrival order (a chain of futures per key);
    different conversations do not wait for each other. Keys nobody waits on are
    forgotten at once."""

    def __init__(self) -> None:
        self._tails: dict[str, asyncio.Future[None]] = {}

    def join(self, key: str) -> Place:
        """Take the next place in `key`'s line; `release()` it when the turn is done."""
        previous = self._tails.get(key)
        mine: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._tails[key] = mine
        return Place(previous, mine, self, key)

    def __len__(self) -> int:
        return len(self._tails)

    def _forget(self, key: str, mine: asyncio.Future[None]) -> None:
        if self._tails.get(key) is mine:
            del self._tails[key]


async def away_notice(
    ledger: Ledger,
    loaded: LoadedPersona,
    scope: Scope,
    conversation_id: int,
    user_id: int,
    *,
    reply_to_id: int | None = None,
) -> Outgoing | None:
    """The persona's `safety.away_message` for a person whose messages expired,
    stored as an `away` reply; None when the persona has none, or the last thing it
    said to this person here was already one (never twice in a row)."""
    text = loaded.persona.safety.away_message
    if not text or await ledger.away_sent(conversation_id, user_id):
        return None
    message_id = await ledger.record_reply(
        ReplyRecord(
            conversation_id=conversation_id,
            user_id=user_id,
            reply_to_id=reply_to_id,
            text=text,
            persona_id=loaded.persona.id,
            persona_hash=loaded.content_hash,
            kind="away",
        )
    )
    return Outgoing(scope=scope, text=text, message_id=message_id, persona_hash=loaded.content_hash)
