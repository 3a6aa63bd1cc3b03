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
    between them, on word boundaries unless it contains CJK characters."""
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
    if re.match(_WORD, key):
        words[0] = f"{words[0]}(?<!{_WORD}{words[0]})"
    end = f"(?!{_WORD})" if re.match(_WORD, key[-1]) else ""
    return r"\s+".join(words) + end


@dataclass(frozen=True, slots=True)
class KeyMatcher:
    """A set of keys (an entry's primary or secondary keys), compiled once.

    Plain keys form one alternation whose groups say which key matched; a cheap
    substring test of each key's longest word runs first, so entries whose words are
    absent (most of them, most turns) cost next to nothing.
    """

    keys: tuple[str, ...]  # plain keys as written, in group order
    pattern: re.Pattern[str] | None
    words: tuple[str, ...]
    folded: bool
    regexes: tuple[tuple[str, regex.Pattern[str]], ...]

    @classmethod
    def build(cls, keys: Sequence[str], *, case_sensitive: bool, whole_words: bool) -> KeyMatcher:
        plain: list[str] = []
        normal: list[str] = []
        regexes: list[tuple[str, regex.Pattern[str]]] = []
        for key in keys:
            if is_regex_key(key):
                regexes.append((key, _compile_regex(key)))
                continue
            norm = unicodedata.normalize("NFKC", key).strip()
            if not case_sensitive:
                norm = norm.casefold()
            if norm.split():
                plain.append(key)
                normal.append(norm)
        pattern = (
            re.compile("|".join(f"({_key_pattern(k, whole_words)})" for k in normal))
            if normal
            else None
        )
        return cls(
            keys=tuple(plain),
            pattern=pattern,
            words=tuple(max(k.split(), key=len) for k in normal),
            folded=not case_sensitive,
            regexes=tuple(regexes),
        )

    @property
    def empty(self) -> bool:
        return self.pattern is None and not self.regexes

    def first(
        self, text: str, folded: str, allowance: RegexAllowance
    ) -> tuple[str, int] | None:
        """The first key found, with the offset of its match (in `folded` for plain
        case-insensitive keys, else in `text`); None if no key occurs. Raises
        `KeyTimeout` when a regex key runs out of time."""
        found = self._plain(folded if self.folded else text)
        if found is not None:
            return found
        for key, pattern in self.regexes:
            match = self._regex(pattern, text, allowance)
            if match is not None:
                return key, match
        return None

    def every(self, text: str, folded: str, allowance: RegexAllowance) -> tuple[str, ...]:
        """Every key that occurs (for and_all / not_all)."""
        found: list[str] = []
        haystack = folded if self.folded else text
        if self.pattern is not None:
            seen = {m.lastindex for m in self.pattern.finditer(haystack) if m.lastindex}
            found.extend(self.keys[i - 1] for i in sorted(seen))
        for key, pattern in self.regexes:
            if self._regex(pattern, text, allowance) is not None:
                found.append(key)
        return tuple(found)

    @property
    def count(self) -> int:
        return len(self.keys) + len(self.regexes)

    def _plain(self, haystack: str) -> tuple[str, int] | None:
        if self.pattern is None or not any(word in haystack for word in self.words):
            return None
        match = self.pattern.search(haystack)
        if match is None or match.lastindex is None:
            return None
        return self.keys[match.lastindex - 1], match.start()

    @staticmethod
    def _regex(pattern: regex.Pattern[str], text: str, allowance: RegexAllowance) -> int | None:
        timeout = allowance.timeout()
        started = time.perf_counter()
        try:
            match = pattern.search(text, timeout=timeout)
        except TimeoutError:
            raise KeyTimeout(f"the regular expression ran past {timeout:g} s") from None
        finally:
            allowance.spent += time.perf_counter() - started
        return None if match is None else match.start()
