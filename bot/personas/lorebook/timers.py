"""Where lore timers live between turns: the `lore_timers` table, per conversation.

Timed effects are counted in messages, as SillyTavern counts them: the clock is the
number of messages in the conversation (`chat_length`), so a test moves time by
adding messages, never by sleeping.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import structlog
from sqlalchemy import Connection, text

from bot.db import Database
from bot.llm.base import TokenCounter
from bot.personas.lorebook.book import LoreBook, LoreResult, TimerState

__all__ = ["LoreTimers", "lore_turn"]

log = structlog.get_logger("bot.lore")


class LoreTimers:
    """Reads and writes the timers of a persona's lore entries in one conversation."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def load(
        self, conversation_id: int, persona_id: str
    ) -> tuple[int, dict[str, TimerState]]:
        """The conversation's length in messages and the stored timer states."""

        def work(conn: Connection) -> tuple[int, dict[str, TimerState]]:
            length = conn.execute(
                text("SELECT count(*) FROM messages WHERE conversation_id = :c"),
                {"c": conversation_id},
            ).scalar_one()
            rows = conn.execute(
                text(
                    "SELECT entry_key, sticky_until, cooldown_until FROM lore_timers "
                    "WHERE conversation_id = :c AND persona_id = :p"
                ),
                {"c": conversation_id, "p": persona_id},
            ).all()
            return int(length), {r[0]: TimerState(int(r[1]), int(r[2])) for r in rows}

        return await self.db.read(work)

    async def save(
        self, conversation_id: int, persona_id: str, changed: Mapping[str, TimerState]
    ) -> None:
        """Store the states that changed this turn (one transaction)."""
        if not changed:
            return

        def work(conn: Connection) -> None:
            for key, state in changed.items():
                params = {
                    "c": conversation_id,
                    "p": persona_id,
                    "k": key[:200],
                    "s": state.sticky_until,
                    "d": state.cooldown_until,
                }
                conn.execute(
                    text(
                        "INSERT INTO lore_timers (conversation_id, persona_id, entry_key, "
                        "sticky_until, cooldown_until) VALUES (:c, :p, :k, :s, :d) "
                        "ON CONFLICT (conversation_id, persona_id, entry_key) DO UPDATE SET "
                        "sticky_until = excluded.sticky_until, "
                        "cooldown_until = excluded.cooldown_until"
                    ),
                    params,
                )

        await self.db.run(work)


def lore_turn(
    book: LoreBook,
    latest: str,
    history: Sequence[str],
    tokens: TokenCounter,
    chat_length: int,
    timers: Mapping[str, TimerState],
) -> LoreResult:
    """Evaluate `book` for one turn and log what was left out or skipped: the one
    call the engine and `bot personas preview` share."""
    result = book.evaluate(
        book.scan(latest, history, chat_length=chat_length, timers=timers), tokens
    )
    if result.left_out:
        log.info(
            "lore.over_budget",
            shown=tuple(f.label for f in result.fired),
            left_out=result.left_out,
        )
    for label, reason in result.skipped:
        log.warning("lore.entry_skipped", entry=label, reason=reason)
    return result
