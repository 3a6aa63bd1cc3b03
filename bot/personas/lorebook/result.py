"""What a lore evaluation takes and gives: the scan, the timers, the result.

Plain values, so the engine, the store and `bot personas preview` pass them around
without knowing how the book decides.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from bot.personas.lorebook.schema import Position

__all__ = ["DepthNote", "FiredEntry", "LoreBlock", "LoreResult", "LoreScan", "TimerState"]


@dataclass(frozen=True, slots=True)
class TimerState:
    """An entry's timed effects in one conversation, as conversation lengths (messages):
    it stays, keys or not, until the length passes `sticky_until`, and then cannot
    fire until the length passes `cooldown_until` (0: no such effect). Fired at length
    L, `sticky: N` keeps it through L + N, and `cooldown: M` blocks it through
    L + N + M, as SillyTavern counts chat messages."""

    sticky_until: int = 0
    cooldown_until: int = 0


@dataclass(frozen=True, slots=True)
class LoreScan:
    """What one evaluation looks at.

    `messages`: the new message (or a proactive turn's instruction) first, then the
    history newest to oldest; each entry searches the first 1 + its scan depth.
    `chat_length`: messages in the conversation, the new one included (the timers'
    clock). `timers`: the stored states by entry key.
    """

    messages: Sequence[str]
    chat_length: int = 0
    timers: Mapping[str, TimerState] = field(default_factory=dict)
    #: Search every message given, whatever the scan depths (the legacy `block`).
    scan_all: bool = False


@dataclass(frozen=True, slots=True)
class FiredEntry:
    """An entry in the prompt: where, why, and what it costs alone (tokens)."""

    key: str
    label: str
    position: Position
    depth: int
    reason: str
    tokens: int


@dataclass(frozen=True, slots=True)
class DepthNote:
    """Lore for the conversation itself: a system note `depth` messages from its end."""

    depth: int
    text: str


@dataclass(frozen=True, slots=True)
class LoreResult:
    """The lore of one prompt: a block per position, what fired, the timers to store.

    `left_out`: fired but did not fit the budget. `skipped`: (label, reason) of entries
    not evaluated this turn (a regex key that ran out of time). `timers`: the new state
    of each entry whose timers changed. `tokens`: the blocks' total, never more than
    the budget."""

    before: str = ""
    after: str = ""
    notes: tuple[DepthNote, ...] = ()
    fired: tuple[FiredEntry, ...] = ()
    left_out: tuple[str, ...] = ()
    skipped: tuple[tuple[str, str], ...] = ()
    timers: Mapping[str, TimerState] = field(default_factory=dict)
    tokens: int = 0

    @property
    def empty(self) -> bool:
        return not (self.before or self.after or self.notes)


@dataclass(frozen=True, slots=True)
class LoreBlock:
    """The legacy view: all the lore chosen for one prompt as one text.

    `shown` and `left_out` name the entries (their `name`, else `entries.N`)."""

    text: str
    shown: tuple[str, ...] = ()
    left_out: tuple[str, ...] = ()
