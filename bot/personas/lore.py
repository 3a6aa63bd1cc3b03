"""Choosing a persona's lore for one prompt (kept for its importers): the engine is
`bot.personas.lorebook`; this module re-exports its public face."""

from __future__ import annotations

from bot.personas.lorebook import (
    LORE_HEADING,
    MAX_SCAN_CHARS,
    DepthNote,
    FiredEntry,
    LoreBlock,
    LoreBook,
    LoreResult,
    LoreScan,
    TimerState,
)

__all__ = [
    "LORE_HEADING",
    "MAX_SCAN_CHARS",
    "DepthNote",
    "FiredEntry",
    "LoreBlock",
    "LoreBook",
    "LoreResult",
    "LoreScan",
    "TimerState",
]
