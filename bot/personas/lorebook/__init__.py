"""The SillyTavern-style lorebook: schema, key matching, the engine, worlds, timers.

    schema   `Lore`, `LoreEntry`, `World`: the persona's `lore` section and world files
    keys     `KeyMatcher`: plain, CJK and bounded regex keys
    book     `LoreBook.evaluate`: what fires, why, what fits, where it goes
    result   `LoreScan`, `LoreResult`, `FiredEntry`, `TimerState`: its input and output
    worlds   `load_worlds`: shared world files by id, cycles refused
    timers   `LoreTimers`: sticky / cooldown state per conversation (table lore_timers)
"""

from bot.personas.lorebook.book import (
    LORE_HEADING,
    DepthNote,
    FiredEntry,
    LoreBlock,
    LoreBook,
    LoreResult,
    LoreScan,
    TimerState,
)
from bot.personas.lorebook.keys import MAX_SCAN_CHARS
from bot.personas.lorebook.schema import Lore, LoreEntry, Position, SelectiveLogic, World

__all__ = [
    "LORE_HEADING",
    "MAX_SCAN_CHARS",
    "DepthNote",
    "FiredEntry",
    "Lore",
    "LoreBlock",
    "LoreBook",
    "LoreEntry",
    "LoreResult",
    "LoreScan",
    "Position",
    "SelectiveLogic",
    "TimerState",
    "World",
]
