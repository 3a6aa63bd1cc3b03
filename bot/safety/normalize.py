"""Text as the safety patterns see it: one folded form, however it was typed.

`fold` undoes the tricks that hide a phrase from a plain search, within reason:
full-width and other compatibility forms (NFKC), case (casefold), accents, zero-width
and other invisible characters, letters spaced out or dotted apart ("k i l l",
"k.i.l.l"), digits and symbols standing in for letters ("k1ll mys3lf") and letters
stretched out ("diiiie"). `variants` gives the forms a pattern is tried on. Every
step is linear in the text, and `window` bounds how much of a message is looked at.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["fold", "fold_pattern", "variants", "window"]

#: Characters that render as nothing (or almost), removed before matching.
_INVISIBLE = dict.fromkeys(
    [
        *range(0x200B, 0x2010),  # zero-width space/joiners, direction marks
        *range(0x202A, 0x202F),  # embeddings and overrides
        *range(0x2060, 0x2070),  # word joiner, invisible operators, isolates
        0x00AD,  # soft hyphen
        0x034F,  # combining grapheme joiner
        0x061C,  # Arabic letter mark
        0x115F,
        0x1160,
        0x3164,  # Hangul fillers
        0x180E,  # Mongolian vowel separator
        0xFEFF,  # BOM / zero-width no-break space
    ]
)

_LEET = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a",
                       "$": "s", "!": "i", "|": "l", "+": "t"})  # fmt: skip

# Typographic apostrophes as the ASCII one patterns are written with.
_QUOTES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "\u00b4": "'", "`": "'"})

_SPACE = re.compile(r"\s+")
# Single letters kept apart by one separator each: "k i l l", "k.i.l.l", "k-i-l-l".
_SPACED = re.compile(r"(?<![^\W\d_])(?:[^\W\d_][ .\-_*]){2,}[^\W\d_](?![^\W\d_])")
# A letter typed three or more times in a row.
_STRETCH3 = re.compile(r"([^\W\d_])\1{2,}")
# A leet character between letters (so "k1ll" maps, but "10 pills" keeps its digits).
_LEET_IN_WORD = re.compile(r"(?<=[^\W\d_])[013457@$!|+]+(?=[^\W\d_])|(?<=\s)[4@](?=[^\W\d_])")


def window(text: str, limit: int) -> str:
    """At most `limit` characters of `text` to scan: all of it when short, else its
    head and tail (where a long paste's own words usually are)."""
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]}\n{text[-half:]}"


def _strip_marks(text: str) -> str:
    decomposed = unicodedata.normalize("NFD", text)
    kept = "".join(c for c in decomposed if not unicodedata.combining(c))
    return unicodedata.normalize("NFC", kept)


def fold(text: str) -> str:
    """The base form: NFKC, invisible characters removed, accents stripped,
    casefolded, runs of whitespace as one space."""
    text = unicodedata.normalize("NFKC", text).translate(_INVISIBLE)
    text = _strip_marks(text).casefold().translate(_QUOTES)
    return _SPACE.sub(" ", text).strip()


def fold_pattern(pattern: str) -> str:
    """A pattern's source in the same form as `fold` makes text (accents, width,
    case), so that patterns are written as the words are spelled."""
    return _strip_marks(unicodedata.normalize("NFKC", pattern)).casefold()


def _unspace(match: re.Match[str]) -> str:
    return re.sub(r"[ .\-_*]", "", match.group(0))


def _deleet(match: re.Match[str]) -> str:
    return match.group(0).translate(_LEET)


def variants(text: str) -> tuple[str, ...]:
    """The forms of an already folded text that patterns are tried on: as typed,
    and with spacing, leetspeak and stretched letters undone (stretched runs as two
    letters and as one, since either may be the word: "killll", "diiie")."""
    undone = _SPACED.sub(_unspace, text)
    undone = _LEET_IN_WORD.sub(_deleet, undone)
    double = _STRETCH3.sub(r"\1\1", undone)
    single = _STRETCH3.sub(r"\1", undone)
    out = [text]
    for form in (double, single):
        if form not in out:
            out.append(form)
    return tuple(out)
