"""Where detectors look (a probe of the text) and how their findings are applied.

Detectors never edit text. Each reads the *probe*, a copy of the text of exactly the
same length in which full-width forms (`＠`, `１３８`, `．`), every other script's
decimal digits and the typographic dashes (`0151–2345678`) are their ASCII selves,
and reports spans `(start, end, placeholder)`. The spans are merged (overlaps
become one span, so no part of anything found is left behind) and applied to the
original text: what is not personal data stays exactly as it was written.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["Span", "apply", "needles", "probe", "words"]

Span = tuple[int, int, str]


def words(text: str) -> frozenset[str]:
    """The whitespace-separated words of `text`: word lists written as prose."""
    return frozenset(text.split())


_Trie = dict[str, "_Trie"]


def needles(*literals: str) -> re.Pattern[str]:
    """A search for whether any of `literals` occurs: the cheap test before a pattern.

    The literals are merged into a trie ("p(?:ass|in)|…"), so each position of the
    text tries a branch per first character rather than one per literal.
    """
    trie: _Trie = {}
    for literal in literals:
        node = trie
        for char in literal:
            node = node.setdefault(char, {})
        node[""] = {}
    return re.compile(_trie_pattern(trie))


def _trie_pattern(node: _Trie) -> str:
    if "" in node:  # a literal ends here: what could follow does not matter
        return ""
    branches = [re.escape(char) + _trie_pattern(node[char]) for char in sorted(node)]
    return branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"


def _table() -> dict[int, int]:
    table = {cp: cp - 0xFEE0 for cp in range(0xFF01, 0xFF5F)}  # full-width ASCII
    table[0x3000] = 0x20  # ideographic space
    table[0xFE6B] = 0x40  # small commercial at
    for dash in (*range(0x2010, 0x2016), 0x2212, 0xFE58, 0xFE63):  # hyphens, dashes, minus
        table[dash] = 0x2D
    for block in (range(0x80, 0x10000), range(0x1D7CE, 0x1D800), range(0x1FBF0, 0x1FBFA)):
        for cp in block:
            value = unicodedata.decimal(chr(cp), None)
            if value is not None:
                table[cp] = 0x30 + value
    return table


_TABLE = _table()


def probe(text: str) -> str:
    """`text` with look-alike digits and symbols made ASCII; same length, same offsets."""
    return text if text.isascii() else text.translate(_TABLE)


def apply(text: str, spans: list[Span]) -> str:
    """`text` with every span replaced by its placeholder; overlapping spans merge.

    A merged span takes the placeholder of its longest part.
    """
    if not spans:
        return text
    spans.sort()
    out: list[str] = []
    pos = 0
    start, end, label = spans[0]
    best = end - start
    for s, e, lab in spans[1:]:
        if s < end:  # overlaps (or nests in) the current one: grow it
            if e - s > best:
                best, label = e - s, lab
            end = max(end, e)
            continue
        out.append(text[pos:start])
        out.append(label)
        pos = end
        start, end, label, best = s, e, lab, e - s
    out.append(text[pos:start])
    out.append(label)
    out.append(text[end:])
    return "".join(out)
