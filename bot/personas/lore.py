"""Choosing a persona's lore for one prompt: which entries apply, and what fits.

A `LoreBook` is built once per persona version (it compiles the key matchers) and
then asked, on every turn, for the lore block of the texts being answered: the new
message and the last `scan_depth` messages of history. The block is

    What you know (lore):
    - <always-on entries, by priority>
    - <entries whose keys occur in the texts, by priority>

within `Lore.budget_tokens`, counted with the model's tokenizer. Always-on entries
come first, so the start of the block is the same from turn to turn and the model
server's prefix cache keeps working. Lore comes from the persona file only: the
texts decide which entries are shown, never what they say.

Pure: no I/O, no state beyond the compiled matchers.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

from bot.llm.base import TokenCounter
from bot.personas.schema import Lore, LoreEntry

__all__ = ["LORE_HEADING", "MAX_SCAN_CHARS", "LoreBlock", "LoreBook"]

#: The first line of the lore block.
LORE_HEADING = "What you know (lore):"

#: At most this many characters of each message are searched for keys: the first and
#: the last half. Bounds the work per turn whatever people paste.
MAX_SCAN_CHARS = 4000

# Scripts written without spaces between words (Han, kana) or with particles glued to
# nouns (Hangul): a key there matches anywhere, and these characters also count as a
# word boundary for Latin keys ("我在学Python" mentions "python").
_CJK = (
    "\u1100-\u11ff"  # Hangul Jamo
    "\u3040-\u30ff"  # Hiragana, Katakana
    "\u3130-\u318f"  # Hangul compatibility Jamo
    "\u31f0-\u31ff"  # Katakana phonetic extensions
    "\u3400-\u4dbf"  # CJK extension A
    "\u4e00-\u9fff"  # CJK unified ideographs
    "\uac00-\ud7af"  # Hangul syllables
    "\uf900-\ufaff"  # CJK compatibility ideographs
    "\U00020000-\U0003134f"  # CJK extensions B to G
)
_HAS_CJK = re.compile(f"[{_CJK}]")
# A letter or digit of a space-separated script: what must not touch a whole-word key.
_WORD = f"[^\\W{_CJK}]"

# Joins the scanned texts; matches neither \w nor \s, so no key (a phrase's `\s+`
# included) matches across two messages. Messages never contain it: text is cleaned
# of control characters before it reaches the engine, and `_scan_text` drops it too.
_SEPARATOR = "\x00"


@dataclass(frozen=True, slots=True)
class LoreBlock:
    """The lore chosen for one prompt.

    `text` is the block for the system message ("" when nothing applies or fits);
    `shown` and `left_out` name the entries (their `name`, else `entries.N`) that were
    shown, and that applied but did not fit the budget.
    """

    text: str
    shown: tuple[str, ...] = ()
    left_out: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class _Compiled:
    label: str
    line: str  # the entry as rendered in the block
    always: bool
    priority: int
    index: int  # position in the file: the tie-break after priority
    matcher: _Matcher | None  # None for always-on entries


@dataclass(frozen=True, slots=True)
class _Matcher:
    """An entry's keys as one regex, with a cheap test that must pass first."""

    pattern: re.Pattern[str]
    # The longest word of each key: a key can only match where that word occurs
    # verbatim, and a substring test is far cheaper than the regex over long text, so
    # entries whose words are absent (most of them, most turns) cost next to nothing.
    words: tuple[str, ...]
    folded: bool  # matches the case-folded text (case-insensitive entries)

    def search(self, text: str, folded: str) -> bool:
        haystack = folded if self.folded else text
        if not any(word in haystack for word in self.words):
            return False
        return self.pattern.search(haystack) is not None


class LoreBook:
    """A persona's lore, with its key matchers compiled; build once per persona version.

    Thread-safe and reusable: `block` keeps no state between calls.
    """

    def __init__(self, lore: Lore) -> None:
        self.lore = lore
        compiled = [_compile(i, entry) for i, entry in enumerate(lore.entries)]
        # Always-on first (a stable prefix), then by priority, then in file order.
        compiled.sort(key=lambda c: (not c.always, -c.priority, c.index))
        self._entries = tuple(compiled)
        self._always = tuple(c for c in compiled if c.always)
        self._triggered = tuple(c for c in compiled if not c.always)
        self._any_folded = any(c.matcher and c.matcher.folded for c in self._triggered)

    @property
    def active(self) -> bool:
        """False when the book can never produce a block (no entries, or no budget)."""
        return bool(self._entries) and self.lore.budget_tokens > 0

    def matching(self, texts: Iterable[str]) -> tuple[LoreEntry, ...]:
        """The entries that apply to `texts` (always-on ones included), in block order,
        before the budget is applied."""
        return tuple(self.lore.entries[c.index] for c in self._applicable(texts))

    def block(self, texts: Iterable[str], tokens: TokenCounter) -> LoreBlock:
        """The lore block for a prompt whose new message and recent history are `texts`.

        Pass the new message and at most `lore.scan_depth` history messages (the
        caller knows which are recent). Entries are packed greedily in block order: one
        that would take the block over `lore.budget_tokens` is left out and the next
        ones are still tried. Never raises on any text.
        """
        if not self.active:
            return LoreBlock("")
        budget = self.lore.budget_tokens
        lines: list[str] = []
        shown: list[str] = []
        left_out: list[str] = []
        for entry in self._applicable(texts):
            candidate = _render([*lines, entry.line])
            if tokens.count_text(candidate) <= budget:
                lines.append(entry.line)
                shown.append(entry.label)
            else:
                left_out.append(entry.label)
        return LoreBlock(_render(lines) if lines else "", tuple(shown), tuple(left_out))

    def _applicable(self, texts: Iterable[str]) -> list[_Compiled]:
        applicable = list(self._always)
        if self._triggered:
            text = _SEPARATOR.join(_scan_text(t) for t in texts)
            # Case-insensitive keys are case-folded too (not re.IGNORECASE, which makes
            # every search several times slower); casefold also matches "straße" to
            # "STRASSE".
            folded = text.casefold() if self._any_folded else text
            # _entries is sorted, so keeping the order of _triggered keeps block order.
            applicable.extend(
                c
                for c in self._triggered
                if c.matcher is not None and c.matcher.search(text, folded)
            )
        return applicable


def _render(lines: list[str]) -> str:
    return "\n".join([LORE_HEADING, *lines])


def _entry_line(text: str) -> str:
    # A bullet per entry; the lines of a multi-line text are indented under it so the
    # model reads them as one item. Blank lines stay blank (no trailing spaces).
    first, *rest = text.strip().splitlines()
    return "\n".join([f"- {first}", *(f"  {line}" if line.strip() else "" for line in rest)])


def _scan_text(text: str) -> str:
    """The part of a message searched for keys, normalised like the keys."""
    text = text.replace(_SEPARATOR, " ")
    if len(text) > MAX_SCAN_CHARS:
        half = MAX_SCAN_CHARS // 2
        text = text[:half] + _SEPARATOR + text[-half:]
    # NFKC so that full-width letters (ＣＡＴ) and compatibility forms match plain keys.
    return unicodedata.normalize("NFKC", text)


def _key_pattern(key: str) -> str:
    """A regex for one (normalised) key: its words in order with any whitespace
    between them, on word boundaries unless it contains CJK characters."""
    words = [re.escape(word) for word in key.split()]
    if _HAS_CJK.search(key):
        # CJK text rarely has spaces: "北京 大学" also matches "北京大学".
        return r"\s*".join(words)
    # A boundary only at an end that is a letter or digit: "C++" and "#tag" match
    # whatever follows or precedes their symbol. The start is checked by a lookbehind
    # after the first word, not before it: a pattern that starts with a literal lets
    # the regex engine skip ahead to where that literal occurs (several times faster).
    if re.match(_WORD, key):
        words[0] = f"{words[0]}(?<!{_WORD}{words[0]})"
    end = f"(?!{_WORD})" if re.match(_WORD, key[-1]) else ""
    return r"\s+".join(words) + end


def _matcher(entry: LoreEntry) -> _Matcher:
    keys = [unicodedata.normalize("NFKC", key).strip() for key in entry.keys]
    if not entry.case_sensitive:
        keys = [key.casefold() for key in keys]
    keys = [key for key in keys if key.split()]
    return _Matcher(
        pattern=re.compile("|".join(f"(?:{_key_pattern(key)})" for key in keys) or "(?!)"),
        words=tuple(max(key.split(), key=len) for key in keys),
        folded=not entry.case_sensitive,
    )


def _compile(index: int, entry: LoreEntry) -> _Compiled:
    return _Compiled(
        label=entry.name or f"entries.{index}",
        line=_entry_line(entry.text),
        always=entry.always,
        priority=entry.priority,
        index=index,
        matcher=None if entry.always else _matcher(entry),
    )
