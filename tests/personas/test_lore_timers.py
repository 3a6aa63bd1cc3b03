"""The lore timer store, on a SQLite file and on PostgreSQL: per conversation and
persona, updated in place, the clock counted from the conversation's messages."""

from __future__ import annotations

from bot.db import Database
from bot.memory.ledger import Ledger
from bot.messages import Actor, Incoming, Scope
from bot.personas.lorebook import TimerState
from bot.personas.lorebook.timers import LoreTimers


def scope(user: str, persona: str = "tess") -> Scope:
    return Scope(platform="test", channel=f"dm-{user}", user=user, persona=persona)


async def test_timers_are_kept_per_conversation_and_persona(database_url: str) -> None:
    db = Database.open(database_url)
    try:
        ledger = Ledger(db)
        timers = LoreTimers(db)
        a = await ledger.conversation_id(scope("a"))
        b = await ledger.conversation_id(scope("b"))
        assert await timers.load(a, "tess") == (0, {})
        await timers.save(a, "tess", {"storm": TimerState(5, 9), "world:w/x": TimerState(0, 3)})
        await timers.save(a, "tess", {"storm": TimerState(7, 11)})  # updated in place
        await timers.save(a, "other", {"storm": TimerState(1, 1)})
        await timers.save(a, "tess", {})  # nothing to write: no transaction
        length, states = await timers.load(a, "tess")
        assert length == 0  # no message yet
        assert states == {"storm": TimerState(7, 11), "world:w/x": TimerState(0, 3)}
        assert await timers.load(b, "tess") == (0, {})
        assert (await timers.load(a, "other"))[1] == {"storm": TimerState(1, 1)}
        # The clock: messages in the conversation.
        actor = Actor(platform="test", id="a", display_name="A")
        for text in ("one", "two", "three"):
            await ledger.record_incoming(Incoming(scope=scope("a"), actor=actor, text=text), text)
        assert (await timers.load(a, "tess"))[0] == 3
    finally:
        await db.aclose()
    # Stored: a new process sees the same timers.
    again = Database.open(database_url)
    try:
        assert (await LoreTimers(again).load(a, "tess"))[1]["storm"] == TimerState(7, 11)
    finally:
        await again.aclose()
