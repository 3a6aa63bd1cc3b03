"""The deny list: names that must never reach training data, whatever their context."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

from bot.export.scrub._spans import Span

__all__ = ["DenyList"]

_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af]")
_WORD = re.compile(r"\w")


class DenyList:
    """Finds `names` case-insensitively: as whole words, or anywhere for names in CJK
    scripts (written without spaces). Longer names win ("Anna Maria" over "Anna")."""

    def __init__(self, names: Iterable[str]) -> None:
        cleaned = {unicodedata.normalize("NFC", n.strip()) for n in names} - {""}
        self._anywhere = frozenset(n.lower() for n in cleaned if _CJK.search(n))
        ordered = sorted({n.lower() for n in cleaned}, key=len, reverse=True)
        # Led by the names' literals (no look-behind), so the search skips quickly
        # through text; word boundaries are checked on the few hits.
        self._fast = re.compile("|".join(map(re.escape, ordered))) if ordered else None
        words = [re.escape(n) for n in ordered if n not in self._anywhere]
        alternatives = [r"(?<!\w)(?:" + "|".join(words) + r")(?!\w)"] if words else []
        if self._anywhere:
            alternatives.append("|".join(re.escape(n) for n in ordered if n in self._anywhere))
        # For the rare text whose lower-casing changes its length ("İ" -> "i̇").
        self._slow = re.compile("|".join(alternatives), re.IGNORECASE) if alternatives else None

    def __bool__(self) -> bool:
        return self._fast is not None

    def find(self, probe: str, low: str, out: list[Span]) -> None:
        """Report every listed name in `probe` (`low` is `probe.lower()`)."""
        if self._fast is None or self._slow is None:
            return
        if len(low) != len(probe):
            out.extend((m.start(), m.end(), "<NAME>") for m in self._slow.finditer(probe))
            return
        pos = 0
        while (match := self._fast.search(low, pos)) is not None:
            start, end = match.span()
            if match.group() in self._anywhere or not (
                (start and _WORD.match(low, start - 1)) or _WORD.match(low, end)
            ):
                out.append((start, end, "<NAME>"))
                pos = end
            else:  # inside a longer word: a shorter name may still start here or later
                pos = start + 1
                shorter = self._slow.match(probe, start)
                if shorter is not None and shorter.end() > start:
                    out.append((start, shorter.end(), "<NAME>"))
                    pos = shorter.end()
