"""Choosing a persona's lore for one prompt: which entries fire, why, and what fits.

A `LoreBook` is built once per persona version (it compiles the key matchers, its
own entries and those of its worlds) and then asked, on every turn, to `evaluate` a
`LoreScan`: the new message and the history, newest first, the conversation's length
in messages (the clock of the timed effects) and the entries' timer states. The result
has a block for each position (before and after the persona's prompt, a note per
depth), the entries that fired with the reason, and the timer states to store.

Order of work, each step bounded:

1. eligibility: enabled; not delayed (`delay` messages); not cooling down;
2. activation: sticky entries, constant entries, then keys (primary, then secondary by
   `selective_logic`) in the entry's scan window; then, with `recursive`, up to
   `max_recursion` rounds over the text of the entries just fired (capped in size);
3. budget: sticky, constant, then by `priority`, packed greedily within
   `budget_tokens` counted with the model's tokenizer over every position's block;
4. layout: within a position, by `order` (higher later), constant entries first among
   equals, so the start of a block is the same from turn to turn.

A regex key that times out skips its entry for this turn (listed in `skipped`). Pure:
no I/O; the timers come in and go out as values.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from bot.llm.base import TokenCounter
from bot.personas.lorebook.keys import (
    SEPARATOR,
    Haystack,
    KeyMatcher,
    KeyTimeout,
    RegexAllowance,
    scan_text,
)
from bot.personas.lorebook.result import (
    DepthNote,
    FiredEntry,
    LoreBlock,
    LoreResult,
    LoreScan,
    TimerState,
)
from bot.personas.lorebook.schema import POSITIONS, Lore, LoreEntry, Position, World

__all__ = [
    "LORE_HEADING",
    "MAX_RECURSION_CHARS",
    "DepthNote",
    "FiredEntry",
    "LoreBlock",
    "LoreBook",
    "LoreResult",
    "LoreScan",
    "TimerState",
]

#: The first line of every lore block.
LORE_HEADING = "What you know (lore):"

#: Says where a key matched, from its offset (in the folded text or not).
_Where = Callable[[int, bool], str]

#: Most characters of fired entries' text searched in one recursion round.
MAX_RECURSION_CHARS = 16_000


@dataclass(frozen=True, slots=True)
class _Compiled:
    entry: LoreEntry
    key: str  # what its timers are stored under
    label: str
    line: str
    index: int
    primary: KeyMatcher
    secondary: KeyMatcher

    @property
    def pick(self) -> tuple[int, int]:
        return (-self.entry.priority, self.index)

    @property
    def layout(self) -> tuple[int, bool, int, int]:
        e = self.entry
        return (e.order, not e.is_constant, -e.priority, self.index)

    @property
    def slot(self) -> tuple[Position, int]:
        e = self.entry
        return (e.position, e.depth if e.position == "at_depth" else 0)


class _Texts:
    """The scanned messages joined once, with where each begins (raw and folded)."""

    def __init__(self, messages: Iterable[str], folded: bool) -> None:
        parts = [scan_text(m) for m in messages]
        text = SEPARATOR.join(parts)
        self.starts = _starts(parts)
        fparts = [p.casefold() for p in parts] if folded else parts
        self.fstarts = _starts(fparts)
        self.hay = Haystack.of(text, SEPARATOR.join(fparts) if folded else text)

    def window(self, count: int) -> Haystack:
        """The first `count` messages."""
        if count >= len(self.starts):
            return self.hay
        return self.hay.upto(self.starts[count] - 1, self.fstarts[count] - 1)

    def which(self, offset: int, in_folded: bool) -> int:
        return bisect_right(self.fstarts if in_folded else self.starts, offset) - 1


def _starts(parts: Sequence[str]) -> list[int]:
    starts, at = [], 0
    for part in parts:
        starts.append(at)
        at += len(part) + 1
    return starts


def _entry_line(text: str) -> str:
    # A bullet per entry; the lines of a multi-line text are indented under it so the
    # model reads them as one item. Blank lines stay blank (no trailing spaces).
    first, *rest = text.strip().splitlines()
    return "\n".join([f"- {first}", *(f"  {line}" if line.strip() else "" for line in rest)])


def _render(lines: Sequence[str]) -> str:
    return "\n".join([LORE_HEADING, *lines])


class LoreBook:
    """A persona's lore with its worlds, matchers compiled; build once per version.

    Thread-safe and reusable: `evaluate` keeps no state between calls."""

    def __init__(self, lore: Lore, worlds: Sequence[World] = ()) -> None:
        self.lore = lore
        self.worlds = tuple(worlds)
        compiled: list[_Compiled] = []
        sources: list[tuple[str, str, Sequence[LoreEntry]]] = [("", "", lore.entries)]
        sources.extend((f"world:{w.id}/", f"{w.id}: ", w.entries) for w in worlds)
        for key_prefix, label_prefix, entries in sources:
            for i, entry in enumerate(entries):
                if not entry.enabled:
                    continue
                label = label_prefix + (entry.name or f"entries.{i}")
                compiled.append(
                    _Compiled(
                        entry=entry,
                        key=key_prefix + (entry.name or f"entries.{i}"),
                        label=label,
                        line=_entry_line(entry.text),
                        index=len(compiled),
                        primary=KeyMatcher.build(
                            entry.keys,
                            case_sensitive=entry.case_sensitive,
                            whole_words=entry.match_whole_words,
                        ),
                        secondary=KeyMatcher.build(
                            entry.secondary_keys,
                            case_sensitive=entry.case_sensitive,
                            whole_words=entry.match_whole_words,
                        ),
                    )
                )
        self._entries = tuple(compiled)
        self._folded = any(not c.entry.case_sensitive for c in compiled)
        self.max_scan_depth = max(
            [lore.scan_depth, *(c.entry.scan_depth or 0 for c in compiled)], default=0
        )

    @property
    def timed(self) -> bool:
        """True when an entry has a timed effect (sticky, cooldown or delay): only then
        does an evaluation need the conversation's length and timers."""
        return any(c.entry.sticky or c.entry.cooldown or c.entry.delay for c in self._entries)

    @property
    def active(self) -> bool:
        """False when the book can never produce lore (no entries, or no budget)."""
        return bool(self._entries) and self.lore.budget_tokens > 0

    def scan(
        self,
        latest: str,
        history: Sequence[str],
        *,
        chat_length: int = 0,
        timers: Mapping[str, TimerState] | None = None,
    ) -> LoreScan:
        """The scan of one turn: `latest` (the new message or a proactive instruction)
        and the history (oldest first, as stored) as far back as any entry looks."""
        depth = self.max_scan_depth
        recent = list(history[-depth:])[::-1] if depth else []
        return LoreScan((latest, *recent), chat_length, timers or {})

    def matching(self, texts: Iterable[str]) -> tuple[LoreEntry, ...]:
        """The entries that apply to `texts` (constant ones included), in layout order,
        before the budget and timers."""
        fired, _ = self._activate(LoreScan(tuple(texts), scan_all=True), RegexAllowance())
        ordered = sorted(fired, key=lambda cr: cr[0].layout)
        return tuple(c.entry for c, _ in ordered)

    def block(self, texts: Iterable[str], tokens: TokenCounter) -> LoreBlock:
        """All lore for `texts` as one text (every position together), within budget."""
        result = self.evaluate(LoreScan(tuple(texts), scan_all=True), tokens)
        parts = [result.before, result.after, *(n.text for n in result.notes)]
        text = "\n\n".join(p for p in parts if p)
        return LoreBlock(text, tuple(f.label for f in result.fired), result.left_out)

    def evaluate(self, scan: LoreScan, tokens: TokenCounter) -> LoreResult:
        """The lore for one prompt; see the module docstring. Never raises on any text."""
        if not self.active:
            return LoreResult()
        allowance = RegexAllowance()
        fired, skipped = self._activate(scan, allowance)
        return self._pack(fired, skipped, scan, tokens)

    # -- activation -----------------------------------------------------------------

    def _activate(
        self, scan: LoreScan, allowance: RegexAllowance
    ) -> tuple[list[tuple[_Compiled, str]], list[tuple[str, str]]]:
        now = scan.chat_length
        texts = _Texts(scan.messages, self._folded)
        fired: list[tuple[_Compiled, str]] = []
        skipped: list[tuple[str, str]] = []
        waiting: list[_Compiled] = []
        for c in self._entries:
            entry = c.entry
            state = scan.timers.get(c.key)
            if state is not None and state.sticky_until and now <= state.sticky_until:
                fired.append((c, f"sticky ({state.sticky_until - now} more messages)"))
                continue
            if now < entry.delay and not scan.scan_all:
                continue
            if state is not None and state.cooldown_until and now <= state.cooldown_until:
                continue
            if entry.is_constant:
                fired.append((c, "constant"))
                continue
            if scan.scan_all:
                window = len(scan.messages)
            else:
                depth = self.lore.scan_depth if entry.scan_depth is None else entry.scan_depth
                window = 1 + depth
            try:
                why = self._why(
                    c, texts.window(window), allowance, lambda o, f: _where(texts, o, f)
                )
            except KeyTimeout as exc:
                skipped.append((c.label, str(exc)))
                continue
            if why:
                fired.append((c, why))
            elif not entry.exclude_recursion:
                waiting.append(c)
        if self.lore.recursive:
            self._recurse(fired, waiting, skipped, allowance)
        return fired, skipped

    def _recurse(
        self,
        fired: list[tuple[_Compiled, str]],
        waiting: list[_Compiled],
        skipped: list[tuple[str, str]],
        allowance: RegexAllowance,
    ) -> None:
        fresh = [c for c, _ in fired if not c.entry.prevent_recursion]
        for _ in range(self.lore.max_recursion):
            if not fresh or not waiting:
                return
            sources: list[_Compiled] = []
            size = 0
            for c in fresh:
                size += len(c.entry.text)
                if size > MAX_RECURSION_CHARS:
                    break
                sources.append(c)
            texts = _Texts((c.entry.text for c in sources), self._folded)
            where = _in_entry(texts, [c.label for c in sources])
            fresh, still = [], []
            for c in waiting:
                try:
                    why = self._why(c, texts.hay, allowance, where)
                except KeyTimeout as exc:
                    skipped.append((c.label, str(exc)))
                    continue
                if why:
                    fired.append((c, why))
                    if not c.entry.prevent_recursion:
                        fresh.append(c)
                else:
                    still.append(c)
            waiting = still

    @staticmethod
    def _why(c: _Compiled, hay: Haystack, allowance: RegexAllowance, where: _Where) -> str:
        """Why the entry fires on this text ("" when it does not)."""
        found = c.primary.first(hay, allowance)
        if found is None:
            return ""
        key, offset = found
        in_folded = c.primary.folded and key in c.primary.plain_keys()
        why = f"key {key!r} {where(offset, in_folded)}"
        second = c.secondary
        if second.empty:
            return why
        logic = c.entry.selective_logic
        if logic == "and_any":
            hit = second.first(hay, allowance)
            return f"{why}, and secondary key {hit[0]!r}" if hit else ""
        if logic == "not_any":
            return "" if second.first(hay, allowance) else f"{why}, no secondary key"
        present = second.every(hay, allowance)
        if logic == "and_all":
            return f"{why}, and every secondary key" if len(present) == second.count else ""
        # NOT_ALL
        return f"{why}, not every secondary key" if len(present) < second.count else ""

    # -- budget and layout ----------------------------------------------------------

    def _pack(
        self,
        fired: list[tuple[_Compiled, str]],
        skipped: list[tuple[str, str]],
        scan: LoreScan,
        tokens: TokenCounter,
    ) -> LoreResult:
        budget = self.lore.budget_tokens

        def rank(item: tuple[_Compiled, str]) -> tuple[int, int, int, int]:
            c, why = item
            return (not why.startswith("sticky"), not c.entry.is_constant, *c.pick)

        slots: dict[tuple[Position, int], list[_Compiled]] = {}
        costs: dict[tuple[Position, int], int] = {}
        total = 0
        reasons: dict[str, str] = {}
        left_out: list[str] = []
        for c, why in sorted(fired, key=rank):
            members = slots.get(c.slot, [])
            trial = sorted([*members, c], key=lambda m: m.layout)
            cost = tokens.count_text(_render([m.line for m in trial]))
            new_total = total - costs.get(c.slot, 0) + cost
            if new_total > budget:
                left_out.append(c.label)
                continue
            slots[c.slot] = trial
            costs[c.slot] = cost
            total = new_total
            reasons[c.key] = why
        shown: list[FiredEntry] = []
        texts: dict[tuple[Position, int], str] = {}
        order = sorted(slots, key=lambda s: (POSITIONS.index(s[0]), -s[1]))
        for slot in order:
            texts[slot] = _render([m.line for m in slots[slot]])
            shown.extend(
                FiredEntry(
                    key=m.key,
                    label=m.label,
                    position=m.entry.position,
                    depth=slot[1],
                    reason=reasons[m.key],
                    tokens=tokens.count_text(m.line),
                )
                for m in slots[slot]
            )
        return LoreResult(
            before=texts.get(("before_char", 0), ""),
            after=texts.get(("after_char", 0), ""),
            notes=tuple(
                DepthNote(slot[1], texts[slot]) for slot in order if slot[0] == "at_depth"
            ),
            fired=tuple(shown),
            left_out=tuple(left_out),
            skipped=tuple(skipped),
            timers=_timers(slots, reasons, scan),
            tokens=total,
        )


def _timers(
    slots: Mapping[tuple[Position, int], list[_Compiled]],
    reasons: Mapping[str, str],
    scan: LoreScan,
) -> dict[str, TimerState]:
    """New timer states of the entries shown this turn: a sticky one keeps its state;
    any other with a sticky or cooldown starts them now."""
    now = scan.chat_length
    changed: dict[str, TimerState] = {}
    for members in slots.values():
        for c in members:
            e = c.entry
            if reasons[c.key].startswith("sticky") or not (e.sticky or e.cooldown):
                continue
            sticky_until = now + e.sticky if e.sticky else 0
            cooldown_until = now + e.sticky + e.cooldown if e.cooldown else 0
            changed[c.key] = TimerState(sticky_until, cooldown_until)
    return changed


def _where(texts: _Texts, offset: int, in_folded: bool) -> str:
    index = texts.which(offset, in_folded)
    return "in the new message" if index == 0 else f"in history message -{index}"


def _in_entry(texts: _Texts, labels: Sequence[str]) -> _Where:
    def where(offset: int, in_folded: bool) -> str:
        return f"in the text of entry {labels[texts.which(offset, in_folded)]!r} (recursion)"

    return where
