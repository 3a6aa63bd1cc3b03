"""Lore keys: how a key (a word, a phrase, or a `/regex/flags`) finds itself in a text.

Plain keys are escaped into one stdlib regex per entry, matched on whole words with
Unicode case folding and NFKC; keys with CJK characters match where they occur (those
scripts have no word breaks), and CJK characters count as a word boundary for Latin
keys ("我在学Python" mentions "python").

Regex keys are written by moderators and card authors: hostile until proven
otherwise. `check_key` refuses at load one that does not compile or that runs away on
probe texts; at match time every regex search has a timeout (the `regex` package's),
and a turn has a total regex allowance, so a pattern the probes missed costs at most
that, never a hang.

Pure: no I/O.
"""

from __future__ import annotations

import re
import time
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field

import regex

__all__ = [
    "MAX_SCAN_CHARS",
    "REGEX_TIMEOUT_S",
    "Haystack",
    "KeyMatcher",
    "KeyTimeout",
    "RegexAllowance",
    "check_key",
    "is_regex_key",
    "scan_text",
]

#: At most this many characters of each message are searched for keys: the first and
#: the last half. Bounds the work per turn whatever people paste.
MAX_SCAN_CHARS = 4000

#: Longest one regex key may search one text.
REGEX_TIMEOUT_S = 0.05

#: Regex flags a key may carry after its closing slash.
_FLAGS = {"i": regex.IGNORECASE, "s": regex.DOTALL, "m": regex.MULTILINE, "x": regex.VERBOSE}
_REGEX_KEY = re.compile(r"^/(?P<body>.+)/(?P<flags>[imsxu]*)$", re.DOTALL)

# Scripts written without spaces between words (Han, kana) or with particles glued to
# nouns (Hangul).
_CJK = (
    "\u1100-\u11ff"  # Hangul Jamo
    "\u3040-\u30ff"  # Hiragana, Katakana
    "\u3130-\u318f"  # Hangul compatibility Jamo
    "\u31f0-\u31ff"  # Katakana phonetic extensions
    "\u3400-\u4dbf"  # CJK extension A
    "\u4e00-\u9fff"  # CJK unified ideographs
    "\uac00-\ud7af"  # Hangul syllables
    "\uf900-\ufaff"  # CJK compatibility ideographs
    "\uff66-\uff9f"  # half-width Katakana
    "\U00020000-\U0003134f"  # CJK extensions B to G
)
_HAS_CJK = re.compile(f"[{_CJK}]")
# A letter or digit of a space-separated script: what must not touch a whole-word key.
_WORD = f"[^\\W{_CJK}]"

#: Joins the scanned texts; matches neither \w nor \s, so no key (a phrase's `\s+`
#: included) matches across two messages. `scan_text` drops it from messages.
SEPARATOR = "\x00"


class KeyTimeout(Exception):
    """A regex key ran out of time (or the turn's regex allowance) on this text."""


@dataclass
class RegexAllowance:
    """The regex time one evaluation may spend, all keys together (seconds)."""

    seconds: float = 0.25
    spent: float = field(default=0.0)

    def timeout(self) -> float:
        left = self.seconds - self.spent
        if left <= 0:
            raise KeyTimeout("the turn's regex allowance is spent")
        return min(REGEX_TIMEOUT_S, left)


def is_regex_key(key: str) -> bool:
    """True for a key written `/pattern/flags`."""
    return _REGEX_KEY.match(key) is not None


def _compile_regex(key: str) -> regex.Pattern[str]:
    found = _REGEX_KEY.match(key)
    assert found is not None
    flags = regex.V0
    for flag in found["flags"]:
        flags |= _FLAGS.get(flag, 0)
    return regex.compile(found["body"], flags)


#: Length of each probe text and the time a probe may take. Nested repetition is
#: exponential: a few dozen characters already run for ages, so short probes find it
#: and keep the check cheap (a sane pattern takes microseconds); a merely quadratic
#: pattern passes and is cut off at match time by REGEX_TIMEOUT_S.
_PROBE_CHARS = 256
_PROBE_TIMEOUT_S = 0.02


# Probe texts: runs of one character (what nested repetition chokes on) and of the
# pattern's own literal characters, each ending in a character that fails the match.
def _probes(body: str) -> list[str]:
    chars = ["a", "0", " ", "\n", "aa ", "a0"]
    for char in body:
        if char.isalnum() and char not in chars:
            chars.append(char)
        if len(chars) >= 10:
            break
    return [char * (_PROBE_CHARS // len(char)) + "\x00!" for char in chars]


def check_key(key: str) -> str:
    """Why `key` cannot be used ("" when it can): a regex key that does not compile,
    matches the empty string everywhere, or runs past its time on a probe text."""
    if not is_regex_key(key):
        return ""
    try:
        pattern = _compile_regex(key)
    except (regex.error, OverflowError, RecursionError, ValueError) as exc:
        return f"not a valid regular expression: {exc}"
    if pattern.search("") is not None and pattern.fullmatch("") is not None:
        return "this regular expression matches empty text, so it would fire on every message"
    found = _REGEX_KEY.match(key)
    assert found is not None
    for probe in _probes(found["body"]):
        try:
            pattern.search(probe, timeout=_PROBE_TIMEOUT_S)
        except TimeoutError:
            return (
                "this regular expression takes too long on long text (nested repetition "
                "such as (a+)+ or (a|aa)*?); simplify it"
            )
    return ""


def scan_text(text: str) -> str:
    """The part of a message searched for keys, normalised like the keys."""
    text = text.replace(SEPARATOR, " ")
    if len(text) > MAX_SCAN_CHARS:
        half = MAX_SCAN_CHARS // 2
        text = text[:half] + SEPARATOR + text[-half:]
    # NFKC so that full-width letters (ＣＡＴ) and compatibility forms match plain keys.
    return unicodedata.normalize("NFKC", text)


def _key_pattern(key: str, whole_words: bool) -> str:
    """A regex for one (normalised) plain key: its words in order with any whitespace
    between them, on word boundaries unless it contains CJK characters.

    Keys without CJK characters are searched in the text's Latin view, where every CJK
    character is a mark (`Haystack`), so their boundaries are plain `\\w` tests: a
    class of all CJK ranges costs milliseconds to compile for every key."""
    words = [re.escape(word) for word in key.split()]
    if _HAS_CJK.search(key):
        # CJK text rarely has spaces: "北京 大学" also matches "北京大学". Whole words
        # are not marked in these scripts, so the key matches where it occurs; its
        # Latin ends, if any, still must not touch a Latin word.
        body = r"\s*".join(words)
        if not whole_words:
            return body
        start = f"(?<!{_WORD})" if re.match(_WORD, key) else ""
        end = f"(?!{_WORD})" if re.match(_WORD, key[-1]) else ""
        return start + body + end
    if not whole_words:
        return r"\s+".join(words)
    # A boundary only at an end that is a letter or digit: "C++" and "#tag" match
    # whatever follows or precedes their symbol. The start is checked by a lookbehind
    # after the first word, not before it: a pattern that starts with a literal lets
    # the regex engine skip ahead to where that literal occurs (several times faster).
    if re.match(r"\w", key):
        words[0] = f"{words[0]}(?<!\\w{words[0]})"
    end = r"(?!\w)" if re.match(r"\w", key[-1]) else ""
    return r"\s+".join(words) + end


_CJK_CHAR = re.compile(f"[{_CJK}]")
# What a CJK character becomes in the Latin view: neither a word character nor space.
_MARK = "\x01"


@dataclass(frozen=True, slots=True)
class Haystack:
    """The scanned text in the views the matchers search, up to `end` (raw) and
    `fend` (folded): raw and case-folded, each also as a Latin view whose CJK
    characters are marks (same length, so offsets agree)."""

    raw: str
    folded: str
    raw_latin: str
    folded_latin: str
    end: int
    fend: int

    @classmethod
    def of(cls, raw: str, folded: str) -> Haystack:
        raw_latin = _CJK_CHAR.sub(_MARK, raw)
        folded_latin = raw_latin if folded is raw else _CJK_CHAR.sub(_MARK, folded)
        return cls(raw, folded, raw_latin, folded_latin, len(raw), len(folded))

    def upto(self, end: int, fend: int) -> Haystack:
        """The same texts, searched only up to these ends."""
        return Haystack(self.raw, self.folded, self.raw_latin, self.folded_latin, end, fend)


@dataclass(frozen=True, slots=True)
class _Plain:
    """Plain keys of one kind (Latin or CJK) as one alternation; group i is key i."""

    keys: tuple[str, ...]
    pattern: re.Pattern[str]
    words: tuple[str, ...]  # each key's longest word, for a cheap substring test first

    def first(self, text: str, end: int) -> tuple[str, int] | None:
        if not any(text.find(word, 0, end) >= 0 for word in self.words):
            return None
        match = self.pattern.search(text, 0, end)
        if match is None or match.lastindex is None:
            return None
        return self.keys[match.lastindex - 1], match.start()

    def every(self, text: str, end: int) -> list[str]:
        seen = {m.lastindex for m in self.pattern.finditer(text, 0, end) if m.lastindex}
        return [self.keys[i - 1] for i in sorted(seen)]


def _plain(pairs: list[tuple[str, str]], whole_words: bool) -> _Plain | None:
    if not pairs:
        return None
    return _Plain(
        keys=tuple(key for key, _ in pairs),
        pattern=re.compile("|".join(f"({_key_pattern(n, whole_words)})" for _, n in pairs)),
        words=tuple(max(n.split(), key=len) for _, n in pairs),
    )


@dataclass(frozen=True, slots=True)
class KeyMatcher:
    """A set of keys (an entry's primary or secondary keys), compiled once.

    Plain keys form an alternation per kind whose groups say which key matched; a
    substring test of each key's longest word runs first, so entries whose words are
    absent (most of them, most turns) cost next to nothing. Regex keys search the raw
    text within the turn's `RegexAllowance`.
    """

    latin: _Plain | None
    cjk: _Plain | None
    folded: bool
    regexes: tuple[tuple[str, regex.Pattern[str]], ...]

    @classmethod
    def build(cls, keys: Sequence[str], *, case_sensitive: bool, whole_words: bool) -> KeyMatcher:
        latin: list[tuple[str, str]] = []
        cjk: list[tuple[str, str]] = []
        regexes: list[tuple[str, regex.Pattern[str]]] = []
        for key in keys:
            if is_regex_key(key):
                regexes.append((key, _compile_regex(key)))
                continue
            norm = unicodedata.normalize("NFKC", key).strip()
            if not case_sensitive:
                norm = norm.casefold()
            if norm.split():
                (cjk if _HAS_CJK.search(norm) else latin).append((key, norm))
        return cls(
            latin=_plain(latin, whole_words),
            cjk=_plain(cjk, whole_words),
            folded=not case_sensitive,
            regexes=tuple(regexes),
        )

    @property
    def empty(self) -> bool:
        return self.latin is None and self.cjk is None and not self.regexes

    @property
    def count(self) -> int:
        return sum(len(p.keys) for p in (self.latin, self.cjk) if p) + len(self.regexes)

    def plain_keys(self) -> frozenset[str]:
        """The plain keys (their offsets are in the folded text when `folded`)."""
        return frozenset(k for p in (self.latin, self.cjk) if p for k in p.keys)

    def _views(self, hay: Haystack) -> tuple[tuple[str, str, int], ...]:
        if self.folded:
            return ((hay.folded_latin, hay.folded, hay.fend),)
        return ((hay.raw_latin, hay.raw, hay.end),)

    def first(self, hay: Haystack, allowance: RegexAllowance) -> tuple[str, int] | None:
        """The first key found, with the offset of its match (in the folded text for
        plain case-insensitive keys, else in the raw text); None if no key occurs.
        Raises `KeyTimeout` when a regex key runs out of time."""
        for latin_text, text, end in self._views(hay):
            if self.latin is not None:
                found = self.latin.first(latin_text, end)
                if found is not None:
                    return found
            if self.cjk is not None:
                found = self.cjk.first(text, end)
                if found is not None:
                    return found
        for key, pattern in self.regexes:
            match = self._regex(pattern, hay, allowance)
            if match is not None:
                return key, match
        return None

    def every(self, hay: Haystack, allowance: RegexAllowance) -> tuple[str, ...]:
        """Every key that occurs (for and_all / not_all)."""
        found: list[str] = []
        for latin_text, text, end in self._views(hay):
            if self.latin is not None:
                found.extend(self.latin.every(latin_text, end))
            if self.cjk is not None:
                found.extend(self.cjk.every(text, end))
        for key, pattern in self.regexes:
            if self._regex(pattern, hay, allowance) is not None:
                found.append(key)
        return tuple(found)

    @staticmethod
    def _regex(pattern: regex.Pattern[str], hay: Haystack, allowance: RegexAllowance) -> int | None:
        timeout = allowance.timeout()
        started = time.perf_counter()
        try:
            match = pattern.search(hay.raw, 0, hay.end, timeout=timeout)
        except TimeoutError:
            raise KeyTimeout(f"the regular expression ran past {timeout:g} s") from None
        finally:
            allowance.spent += time.perf_counter() - started
        return None if match is None else match.start()
